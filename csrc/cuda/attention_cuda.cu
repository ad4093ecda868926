// Spike-driven attention forward on CUDA, fused with the attention LIF: contracts in
// csrc/core/attention.h, the LIF of csrc/core/neuron.h (lif_step), as csrc/cpu/attention_kernels_cpu.h.
//
// SSA is two launches: K^T V per (t, b) slice into a caller-provided float32 workspace [T, B, D, D]
// (one block per slice, thread per (i, j), tokens summed in order), then one thread per 4 elements of
// a slice's [N, D] output keeps their LIF states in registers across the T steps and forms
// Q (K^T V) row by row from the workspace (L1/L2-resident). token_reduce runs one thread per (b, d)
// column over T; channel_reduce one warp per (b, n) row, the lane sums reduced by shuffles and
// broadcast from lane 0 so every lane steps the same state. All sums run in a fixed order (no
// atomics): results are identical from run to run. Nothing allocates or synchronises with the host.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "core/attention.h"
#include "core/index.h"
#include "cuda/cuda_common.cuh"

namespace spikeforge {
namespace {

using namespace cuda_detail;

constexpr int kElemsPerThread = 4;  // SSA: LIF states a thread keeps in registers
constexpr unsigned int kMaxGridY = 65535;

template <typename S>
__device__ __forceinline__ float load_f(const void* base, int64_t i) {
  return StorageTraits<S>::to_float(static_cast<const typename StorageTraits<S>::Bits*>(base)[i]);
}
template <typename S>
__device__ __forceinline__ void store_f(void* base, int64_t i, float f) {
  static_cast<typename StorageTraits<S>::Bits*>(base)[i] = StorageTraits<S>::from_float(f);
}

// The attention LIF: csrc/core/neuron.h's lif_step with float32 coefficients.
using AttnLif = NeuronCoeffs<float>;

template <typename S>
__global__ void ssa_ktv_kernel(const void* k, const void* v, float* ktv, int64_t N, int64_t D, int64_t slices) {
  for (int64_t slice = blockIdx.x; slice < slices; slice += gridDim.x) {
    const int64_t off = slice * N * D;
    float* dst = ktv + slice * D * D;
    for (int64_t e = threadIdx.x; e < D * D; e += blockDim.x) {
      const int64_t i = e / D, j = e % D;
      float s = 0.0f;
      for (int64_t n = 0; n < N; ++n) s += load_f<S>(k, off + n * D + i) * load_f<S>(v, off + n * D + j);
      dst[e] = s;
    }
  }
}

template <typename S>
__global__ void ssa_lif_kernel(const void* q, const float* ktv, void* out, int64_t T, int64_t B, int64_t N, int64_t D,
                               float scale, AttnLif lif) {
  const int64_t ND = N * D;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x * kElemsPerThread + threadIdx.x;
  // this thread's (token, channel) pairs: the same at every t and b (64-bit divisions out of the loops)
  int64_t row[kElemsPerThread], col[kElemsPerThread];
#pragma unroll
  for (int r = 0; r < kElemsPerThread; ++r) {
    const int64_t e = base + static_cast<int64_t>(r) * blockDim.x;
    row[r] = e / D;
    col[r] = e - row[r] * D;
  }
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    float state[kElemsPerThread];
#pragma unroll
    for (int r = 0; r < kElemsPerThread; ++r) state[r] = lif_v_init(lif);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t slice = t * B + b, off = slice * ND;
      const float* kt = ktv + slice * D * D;
#pragma unroll
      for (int r = 0; r < kElemsPerThread; ++r) {
        const int64_t e = base + static_cast<int64_t>(r) * blockDim.x;
        if (e >= ND) continue;
        const int64_t n = row[r], j = col[r];
        float acc = 0.0f;
        for (int64_t i = 0; i < D; ++i) acc += load_f<S>(q, off + n * D + i) * kt[i * D + j];
        store_f<S>(out, off + e, lif_step(lif, state[r], acc * scale));
      }
    }
  }
}

template <typename S, bool HAS_B>
__global__ void token_reduce_kernel(const void* a, const void* b2, const void* m, void* out, float* pre, float* mask,
                                    int64_t T, int64_t B, int64_t N, int64_t D, AttnLif lif) {
  const int64_t ND = N * D;
  for (int64_t col = first_group(); col < B * D; col += group_stride()) {
    const int64_t b = col / D, d = col % D;
    float v = lif_v_init(lif);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = (t * B + b) * ND + d;
      float s = 0.0f;
      for (int64_t n = 0; n < N; ++n) {
        if constexpr (HAS_B) {
          s += load_f<S>(a, off + n * D) * load_f<S>(b2, off + n * D);
        } else {
          s += load_f<S>(a, off + n * D);
        }
      }
      const int64_t small = (t * B + b) * D + d;
      const float mk = lif_step(lif, v, s);
      pre[small] = s;
      mask[small] = mk;
      for (int64_t n = 0; n < N; ++n) store_f<S>(out, off + n * D, load_f<S>(m, off + n * D) * mk);
    }
  }
}

template <typename S>
__global__ void channel_reduce_kernel(const void* a, const void* m, void* out, float* pre, float* mask, int64_t T,
                                      int64_t B, int64_t N, int64_t D, AttnLif lif) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = first_group() >> 5, nwarps = group_stride() >> 5;
  for (int64_t row = warp; row < B * N; row += nwarps) {  // warp-uniform: the whole warp takes each row
    const int64_t b = row / N, n = row % N;
    float v = lif_v_init(lif);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = ((t * B + b) * N + n) * D;
      float s = 0.0f;
      for (int64_t d = lane; d < D; d += 32) s += load_f<S>(a, off + d);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
      s = __shfl_sync(0xffffffffu, s, 0);  // one sum for every lane, so all lanes step the same state
      const float mk = lif_step(lif, v, s);
      if (lane == 0) {
        pre[(t * B + b) * N + n] = s;
        mask[(t * B + b) * N + n] = mk;
      }
      for (int64_t d = lane; d < D; d += 32) store_f<S>(out, off + d, load_f<S>(m, off + d) * mk);
    }
  }
}

void require_all_cuda(std::initializer_list<std::pair<const TensorView*, const char*>> ts, const char* fn) {
  for (const auto& t : ts) require_cuda(t.first, t.second, fn);
}

}  // namespace

void ssa_forward_cuda(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                      const TensorView* ktv_ws_p, const TensorView* spike_bits, const AttentionParams& p,
                      const ExecConfig& ex) {
  // arguments checked by ssa_forward (csrc/core/attention.cpp), the workspace's size included; spike_bits is
  // nullptr there (the CPU forward's alone: the CUDA backward composes its products and needs no bits)
  (void)spike_bits;
  constexpr const char* fn = "ssa_forward_cuda";
  require_all_cuda({{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}, {ktv_ws_p, "ktv_ws"}}, fn);
  check_cuda_dtype(q.dtype, "q");
  if (p.T == 0 || p.B == 0 || p.N == 0 || p.D == 0) return;
  const TensorView& ktv_ws = *ktv_ws_p;
  const DeviceGuard guard(q.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  const AttnLif lif(p.neuron, false);
  const int64_t slices = p.T * p.B;
  const unsigned int ktv_blocks = static_cast<unsigned int>(std::min<int64_t>(slices, 1 << 30));
  const int64_t per_block = static_cast<int64_t>(kThreads) * kElemsPerThread;
  SF_CHECK_ARG((p.N * p.D + per_block - 1) / per_block <= 0x7fffffff, "q: a head's N * D is too large");
  const dim3 grid(static_cast<unsigned int>((p.N * p.D + per_block - 1) / per_block),
                  static_cast<unsigned int>(std::min<int64_t>(p.B, kMaxGridY)));
  dispatch_dtype(q.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    ssa_ktv_kernel<S><<<ktv_blocks, kThreads, 0, stream>>>(k.data, v.data, ktv_ws.ptr<float>(), p.N, p.D, slices);
    check_launch("ssa_ktv_kernel");
    ssa_lif_kernel<S><<<grid, kThreads, 0, stream>>>(q.data, ktv_ws.ptr<const float>(), out.data, p.T, p.B, p.N, p.D,
                                                     static_cast<float>(p.scale), lif);
    check_launch("ssa_lif_kernel");
  });
}

void token_reduce_attention_forward_cuda(const TensorView& a, const TensorView* b2, const TensorView& m,
                                         const TensorView& out, const TensorView& pre, const TensorView& mask,
                                         const AttentionParams& p, const ExecConfig& ex) {
  constexpr const char* fn = "token_reduce_attention_forward_cuda";
  require_all_cuda({{&a, "a"}, {b2, "b"}, {&m, "m"}, {&out, "out"}, {&pre, "pre"}, {&mask, "mask"}}, fn);
  check_cuda_dtype(a.dtype, "a");
  if (p.T == 0 || p.B == 0 || p.D == 0) return;
  const DeviceGuard guard(a.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  const AttnLif lif(p.neuron, false);
  const unsigned int blocks = grid_for(p.B * p.D, a.device_index);
  dispatch_dtype(a.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    if (b2) {
      token_reduce_kernel<S, true><<<blocks, kThreads, 0, stream>>>(
          a.data, b2->data, m.data, out.data, pre.ptr<float>(), mask.ptr<float>(), p.T, p.B, p.N, p.D, lif);
    } else {
      token_reduce_kernel<S, false><<<blocks, kThreads, 0, stream>>>(
          a.data, nullptr, m.data, out.data, pre.ptr<float>(), mask.ptr<float>(), p.T, p.B, p.N, p.D, lif);
    }
    check_launch("token_reduce_kernel");
  });
}

void channel_reduce_attention_forward_cuda(const TensorView& a, const TensorView& m, const TensorView& out,
                                           const TensorView& pre, const TensorView& mask, const AttentionParams& p,
                                           const ExecConfig& ex) {
  constexpr const char* fn = "channel_reduce_attention_forward_cuda";
  require_all_cuda({{&a, "a"}, {&m, "m"}, {&out, "out"}, {&pre, "pre"}, {&mask, "mask"}}, fn);
  check_cuda_dtype(a.dtype, "a");
  if (p.T == 0 || p.B == 0 || p.N == 0) return;
  const DeviceGuard guard(a.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  const AttnLif lif(p.neuron, false);
  const unsigned int blocks = grid_for(p.B * p.N * 32, a.device_index);  // one warp per row
  dispatch_dtype(a.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    channel_reduce_kernel<S><<<blocks, kThreads, 0, stream>>>(a.data, m.data, out.data, pre.ptr<float>(),
                                                              mask.ptr<float>(), p.T, p.B, p.N, p.D, lif);
    check_launch("channel_reduce_kernel");
  });
}

}  // namespace spikeforge
