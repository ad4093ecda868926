// CUDA kernels of spike_linear (csrc/core/spike.h).
//
// linear forward: W is transposed into the wt workspace ([K, N], a tiled shared-memory transpose) so
//   that an active input's weights are one contiguous row. A block owns one input row m and 1024
//   output features. Active-index compaction by prefix sums: each warp ballots 32-element pieces of
//   the row, the per-piece counts are scanned (warp shuffles) into offsets, and each warp writes its
//   active indices and values to shared memory at offset + popc(ballot below its lane). Then the
//   gather-accumulate: each thread adds wt[k, n] for its features over the active list (consecutive
//   lanes read consecutive n: coalesced), in list order. No atomics: the sum order is fixed.
// linear grad_weight: the mirror image on columns: a block owns one input feature k and 1024 output
//   features, compacts the active rows m of column k (from the packed bits or the values), gathers
//   rows of grad_y, writes ws[k, :]; a transpose writes grad_w = ws^T.
// masked grad_input: one warp per entry (see masked_grad_input_kernel).
// Non-finite values (csrc/core/spike.h): the W transposes set the nonfinite flag; fix-up kernels, launched
// always (no host read), return at once unless there is an inf or NaN to account for, then write the NaN of
// the products the event sums skipped. grad_y is not read whole by the event kernels: its fix-up scans it.
#include "cuda/spike_common_cuda.cuh"

namespace spikeforge {
namespace {

// y[row, n] (or, transposed use, out[row, n]) = bias[n] + sum over active e of src(e) * table[e, n].
// Linear forward: row = m, source = s[m, :], table = wt [K, N].
// Linear grad_weight: row = k, source = column k of s / bits, table = grad_y [M, N], out = ws [K, N].
__global__ void __launch_bounds__(kBlock)
    gather_kernel(Source src, int64_t n_src, int64_t row_stride_vals, int64_t row_step_col,
                  const float* __restrict__ table, const float* __restrict__ bias, float* __restrict__ out, int64_t N) {
  __shared__ int idx[kChunk];
  __shared__ float val[kChunk];
  __shared__ int piece_off[kPieces + 1];
  const int64_t row = blockIdx.x;
  Source rs = src;
  if (rs.bits) {
    rs.col = row * row_step_col;
  } else {
    rs.vals = src.vals + row * row_stride_vals;
  }
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kCols;
  float acc[kPerThread];
#pragma unroll
  for (int q = 0; q < kPerThread; ++q) {
    const int64_t n = n0 + threadIdx.x + q * kBlock;
    acc[q] = (bias && n < N) ? bias[n] : 0.0f;
  }
  for (int64_t e0 = 0; e0 < n_src; e0 += kChunk) {
    const int n = static_cast<int>(n_src - e0 < kChunk ? n_src - e0 : int64_t(kChunk));
    const int count = compact(rs, e0, n, idx, val, piece_off);
    for (int j = 0; j < count; ++j) {
      const float* trow = table + (e0 + idx[j]) * N;
      const float v = val[j];
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        const int64_t nn = n0 + threadIdx.x + q * kBlock;
        if (nn < N) acc[q] = fmaf(v, trow[nn], acc[q]);
      }
    }
    __syncthreads();  // the list is rewritten by the next round
  }
#pragma unroll
  for (int q = 0; q < kPerThread; ++q) {
    const int64_t n = n0 + threadIdx.x + q * kBlock;
    if (n < N) out[row * N + n] = acc[q];
  }
}

// Masked grad_input: one warp per entry (m, k) of grad_s (grid-stride). An entry outside the mask is
// written 0 at once; inside, the warp reads grad_y[m, :] and wt[k, :] (W transposed: both rows
// contiguous, coalesced) and reduces the dot product with a fixed shuffle tree (deterministic, no atomics).
__global__ void masked_grad_input_kernel(const int64_t* __restrict__ mask, const float* __restrict__ gy,
                                         const float* __restrict__ wt, float* __restrict__ gs, int64_t M, int64_t N,
                                         int64_t K) {
  const int lane = threadIdx.x & 31;
  const int64_t nwords = spike_words(K);
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarp = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t e = warp; e < M * K; e += nwarp) {
    const int64_t m = e / K, k = e - m * K;
    const bool on = spike_bit(mask + m * nwords, k);
    float acc = 0.0f;
    if (on) {  // uniform across the warp: the shuffles below see every lane
      const float* g = gy + m * N;
      const float* r = wt + k * N;
      for (int64_t n = lane; n < N; n += 32) acc = fmaf(g[n], r[n], acc);
#pragma unroll
      for (int d = 16; d > 0; d >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, d);
    }
    if (lane == 0) gs[e] = acc;
  }
}

// Forward fix-up: y[m, n] = NaN where a non-finite w[n, k] meets a zero s[m, k]. Returns at once when the
// transpose saw no inf or NaN in W; otherwise a thread per weight, a loop over the rows for a non-finite one.
__global__ void linear_forward_nonfinite_kernel(const unsigned long long* __restrict__ nonfinite,
                                                const float* __restrict__ w, const float* __restrict__ s,
                                                float* __restrict__ y, int64_t M, int64_t N, int64_t K) {
  if (*nonfinite == 0) return;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (isfinite(w[i])) continue;
    const int64_t n = i / K, k = i - n * K;
    for (int64_t m = 0; m < M; ++m)
      if (s[m * K + k] == 0.0f) y[m * N + n] = spike_nan();
  }
}

// grad_weight fix-up, before ws is transposed into grad_w: ws[k, n] = NaN where a non-finite grad_y[m, n]
// meets a zero input (m, k) (from the packed bits or the values).
__global__ void linear_grad_weight_nonfinite_kernel(const int64_t* __restrict__ bits, const float* __restrict__ s,
                                                    const float* __restrict__ gy, float* __restrict__ ws, int64_t M,
                                                    int64_t N, int64_t K) {
  const int64_t nwords = spike_words(K);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < M * N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (isfinite(gy[i])) continue;
    const int64_t m = i / N, n = i - m * N;
    for (int64_t k = 0; k < K; ++k) {
      const bool zero = bits ? spike_bit(bits + m * nwords, k) == 0 : s[m * K + k] == 0.0f;
      if (zero) ws[k * N + n] = spike_nan();
    }
  }
}

// Masked grad_input fix-up: an entry outside the mask is 0 * (grad_y W)[m, k] in the dense op, NaN where row
// m of grad_y or column k of W holds an inf or NaN. grad_y is scanned always, W only when its transpose set
// the flag.
__global__ void masked_grad_input_nonfinite_kernel(const unsigned long long* __restrict__ nonfinite,
                                                   const int64_t* __restrict__ mask, const float* __restrict__ gy,
                                                   const float* __restrict__ w, float* __restrict__ gs, int64_t M,
                                                   int64_t N, int64_t K) {
  const int64_t nwords = spike_words(K);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < M * N; i += stride) {
    if (isfinite(gy[i])) continue;
    const int64_t m = i / N;
    for (int64_t k = 0; k < K; ++k)
      if (!spike_bit(mask + m * nwords, k)) gs[m * K + k] = spike_nan();
  }
  if (*nonfinite == 0) return;
  for (int64_t i = first; i < N * K; i += stride) {
    if (isfinite(w[i])) continue;
    const int64_t k = i % K;
    for (int64_t m = 0; m < M; ++m)
      if (!spike_bit(mask + m * nwords, k)) gs[m * K + k] = spike_nan();
  }
}

}  // namespace

// The gather kernels take one block per row (forward: the M rows of s) or column (grad_weight: the K inputs) in
// grid.x and one per kCols outputs in grid.y: CUDA caps them at 2^31 - 1 and 65535 blocks. Past that a launch
// fails (or, cast to unsigned, wraps and leaves rows unwritten): refused by name before anything runs.
static void check_gather_grid(int64_t blocks_x, const char* x_what, int64_t N) {
  SF_CHECK_ARG(blocks_x <= 2147483647,
               std::string(x_what) + ": more than 2^31 - 1 on CUDA (one block each); split the call");
  SF_CHECK_ARG((N + kCols - 1) / kCols <= 65535, "weight: more than " + std::to_string(int64_t(65535) * kCols) +
                                                     " output features on CUDA (grid.y limit); split the layer");
}

void spike_linear_forward_cuda(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                               const TensorView* wt, const TensorView* nonfinite, const ExecConfig& ex) {
  check_spike_linear_forward_args(s, w, bias, y, wt, nonfinite);
  require_all_cuda({&s, &w, bias, &y, wt, nonfinite}, "spike_linear_forward_cuda");
  SF_CHECK_ARG(wt != nullptr && nonfinite != nullptr, "wt, nonfinite: the CUDA forward needs both workspaces");
  const int64_t M = s.shape[0], K = s.shape[1], N = w.shape[0];
  if (M == 0 || N == 0) return;
  check_gather_grid(M, "s: rows", N);
  const DeviceGuard guard(s.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  auto* flag = reinterpret_cast<unsigned long long*>(nonfinite->ptr<int64_t>());
  check_cuda(cudaMemsetAsync(flag, 0, sizeof(int64_t), stream), "cudaMemsetAsync (nonfinite)");
  transpose(w.ptr<const float>(), wt->ptr<float>(), N, K, stream, 1, flag);
  Source src;
  src.vals = s.ptr<const float>();
  const dim3 grid(static_cast<unsigned>(M), static_cast<unsigned>((N + kCols - 1) / kCols));
  gather_kernel<<<grid, kBlock, 0, stream>>>(src, K, K, 0, wt->ptr<const float>(),
                                             bias ? bias->ptr<const float>() : nullptr, y.ptr<float>(), N);
  check_launch("spike gather_kernel (linear forward)");
  if (K == 0) return;  // no weights, nothing non-finite
  linear_forward_nonfinite_kernel<<<grid_1d(N * K, s.device_index), kBlock, 0, stream>>>(
      flag, w.ptr<const float>(), s.ptr<const float>(), y.ptr<float>(), M, N, K);
  check_launch("spike linear_forward_nonfinite_kernel");
}

void spike_linear_grad_weight_cuda(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                   const TensorView& grad_y, const TensorView& grad_w, const TensorView* ws,
                                   const ExecConfig& ex) {
  check_spike_linear_grad_weight_args(bits, signs, s, grad_y, grad_w, ws);
  require_all_cuda({bits, signs, s, &grad_y, &grad_w, ws}, "spike_linear_grad_weight_cuda");
  SF_CHECK_ARG(ws != nullptr, "ws: the CUDA grad_weight needs the [K, N] workspace");
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = grad_w.shape[1];
  if (N == 0 || K == 0) return;
  check_gather_grid(K, "s: input features", N);
  const DeviceGuard guard(grad_y.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  // block k compacts column k over the M rows: element m is s[m * K + k] or bit k of packed row m
  Source src;
  if (bits) {
    src.bits = bits->ptr<const int64_t>();
    src.signs = signs ? signs->ptr<const int64_t>() : nullptr;
    src.nwords = spike_words(K);
  } else {
    src.vals = s->ptr<const float>();
    src.stride = K;
  }
  const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>((N + kCols - 1) / kCols));
  gather_kernel<<<grid, kBlock, 0, stream>>>(src, M, 1, 1, grad_y.ptr<const float>(), nullptr, ws->ptr<float>(), N);
  check_launch("spike gather_kernel (linear grad_weight)");
  if (M > 0) {
    linear_grad_weight_nonfinite_kernel<<<grid_1d(M * N, grad_y.device_index), kBlock, 0, stream>>>(
        bits ? bits->ptr<const int64_t>() : nullptr, s ? s->ptr<const float>() : nullptr, grad_y.ptr<const float>(),
        ws->ptr<float>(), M, N, K);
    check_launch("spike linear_grad_weight_nonfinite_kernel");
  }
  transpose(ws->ptr<const float>(), grad_w.ptr<float>(), K, N, stream);
}

void spike_linear_grad_input_masked_cuda(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                         const TensorView& grad_s, const TensorView* ws, const TensorView* nonfinite,
                                         const ExecConfig& ex) {
  check_spike_linear_grad_input_masked_args(mask, grad_y, w, grad_s, ws, nonfinite);
  require_all_cuda({&mask, &grad_y, &w, &grad_s, ws, nonfinite}, "spike_linear_grad_input_masked_cuda");
  SF_CHECK_ARG(ws != nullptr && nonfinite != nullptr,
               "ws, nonfinite: the CUDA masked grad_input needs both workspaces");
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = w.shape[1];
  if (M == 0 || K == 0) return;
  const DeviceGuard guard(grad_y.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  auto* flag = reinterpret_cast<unsigned long long*>(nonfinite->ptr<int64_t>());
  check_cuda(cudaMemsetAsync(flag, 0, sizeof(int64_t), stream), "cudaMemsetAsync (nonfinite)");
  transpose(w.ptr<const float>(), ws->ptr<float>(), N, K, stream, 1, flag);
  masked_grad_input_kernel<<<grid_1d(M * K * 32, grad_y.device_index), kBlock, 0, stream>>>(
      mask.ptr<const int64_t>(), grad_y.ptr<const float>(), ws->ptr<const float>(), grad_s.ptr<float>(), M, N, K);
  check_launch("spike masked_grad_input_kernel");
  if (N == 0) return;  // grad_y W is 0: finite
  masked_grad_input_nonfinite_kernel<<<grid_1d((M > K ? M : K) * N, grad_y.device_index), kBlock, 0, stream>>>(
      flag, mask.ptr<const int64_t>(), grad_y.ptr<const float>(), w.ptr<const float>(), grad_s.ptr<float>(), M, N, K);
  check_launch("spike masked_grad_input_nonfinite_kernel");
}
}  // namespace spikeforge
