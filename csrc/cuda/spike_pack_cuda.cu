// CUDA pack / unpack of spike tensors (csrc/core/spike.h "Packed form").
//
// pack: a warp reads 32 consecutive elements (coalesced) and __ballot_sync turns them into half a
// 64-bit word (and half a sign word). The non-zero count and the value classes go to `info` with one
// integer atomic per warp (integer sums / ORs are order-independent: the result is deterministic).
#include "cuda/spike_common_cuda.cuh"

namespace spikeforge {
namespace {

// signs: null, or the sign words to write (bit set where s < 0).
__global__ void pack_kernel(const float* __restrict__ s, int64_t* __restrict__ bits, int64_t* __restrict__ signs,
                            unsigned long long* __restrict__ info, int64_t R, int64_t K) {
  const int lane = threadIdx.x & 31;
  const int64_t nwords = spike_words(K), total = R * nwords;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarp = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  unsigned long long nnz = 0;
  int classes = 0;
  for (int64_t w = warp; w < total; w += nwarp) {
    const int64_t r = w / nwords, k0 = (w - r * nwords) * 64;
    uint32_t half[2], neg[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t k = k0 + 32 * h + lane;
      const float v = k < K ? s[r * K + k] : 0.0f;
      half[h] = __ballot_sync(0xffffffffu, v != 0.0f);
      neg[h] = __ballot_sync(0xffffffffu, v < 0.0f);
      classes |= static_cast<int>(spike_value_class(v));
    }
    if (lane == 0) {
      bits[w] = static_cast<int64_t>((static_cast<uint64_t>(half[1]) << 32) | half[0]);
      if (signs) signs[w] = static_cast<int64_t>((static_cast<uint64_t>(neg[1]) << 32) | neg[0]);
      nnz += __popc(half[0]) + __popc(half[1]);
    }
  }
  // warp OR by shuffles (__reduce_or_sync would need sm_80)
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) classes |= __shfl_xor_sync(0xffffffffu, classes, d);
  if (lane == 0) {
    if (nnz) atomicAdd(&info[0], nnz);
    if (classes) atomicOr(&info[1], static_cast<unsigned long long>(classes));
  }
}

__global__ void unpack_kernel(const int64_t* __restrict__ bits, const int64_t* __restrict__ signs,
                              float* __restrict__ out, int64_t R, int64_t K) {
  const int64_t nwords = spike_words(K);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < R * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / K, k = i - r * K;
    out[i] = spike_value(bits + r * nwords, signs ? signs + r * nwords : nullptr, k);
  }
}

}  // namespace

void spike_pack_cuda(const TensorView& s, const TensorView& bits, const TensorView& info, const TensorView* signs,
                     const ExecConfig& ex) {
  check_spike_pack_args(s, bits, info, signs);
  require_all_cuda({&s, &bits, &info, signs}, "spike_pack_cuda");
  const int64_t R = s.shape[0], K = s.shape[1];
  const DeviceGuard guard(s.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  // The kernel accumulates into info with atomics, and the ops allocate it uninitialised: zero it first
  // (an async memset on the stream: still no host synchronisation, still capturable).
  check_cuda(cudaMemsetAsync(info.data, 0, 2 * sizeof(int64_t), stream), "cudaMemsetAsync (info)");
  if (R == 0 || K == 0) return;
  const int64_t warps = R * spike_words(K);
  pack_kernel<<<grid_1d(warps * 32, s.device_index), kBlock, 0, stream>>>(
      s.ptr<const float>(), bits.ptr<int64_t>(), signs ? signs->ptr<int64_t>() : nullptr,
      reinterpret_cast<unsigned long long*>(info.ptr<int64_t>()), R, K);
  check_launch("spike pack_kernel");
}

void spike_unpack_cuda(const TensorView& bits, const TensorView* signs, const TensorView& out, const ExecConfig& ex) {
  check_spike_unpack_args(bits, signs, out);
  require_all_cuda({&bits, signs, &out}, "spike_unpack_cuda");
  const int64_t R = out.shape[0], K = out.shape[1];
  if (R == 0 || K == 0) return;
  const DeviceGuard guard(out.device_index);
  unpack_kernel<<<grid_1d(R * K, out.device_index), kBlock, 0, static_cast<cudaStream_t>(ex.stream)>>>(
      bits.ptr<const int64_t>(), signs ? signs->ptr<const int64_t>() : nullptr, out.ptr<float>(), R, K);
  check_launch("spike unpack_kernel");
}
}  // namespace spikeforge
