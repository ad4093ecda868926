// CUDA kernels of the spike-propagation family (csrc/core/spike.h), float32, launched on ex.stream.
//
// No host synchronisation anywhere (the ops are capturable in a CUDA graph): the number of active
// inputs is only ever known on the device, and every kernel is sized for the worst case and loops
// over the device-side counts.
//
// pack: a warp reads 32 consecutive elements (coalesced) and __ballot_sync turns them into half a
//   64-bit word. The non-zero count and the kind go to `info` with one integer atomic per warp
//   (integer sums / maxima are order-independent: the result is deterministic).
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
// conv2d forward: one thread per output element; it walks its receptive field and accumulates only
//   the non-zero inputs (zero-skipping direct convolution, fixed order). conv2d grad_weight: one
//   block per weight element reduces over (batch, output pixels) where the input is active, with a
//   fixed-shape tree reduction in shared memory (deterministic, no atomics).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "core/spike.h"
#include "cuda/cuda_common.cuh"

namespace spikeforge {
namespace {

using cuda_detail::check_cuda;
using cuda_detail::check_launch;
using cuda_detail::DeviceGuard;

constexpr int kBlock = 256;
constexpr int kWarps = kBlock / 32;
constexpr int kPerThread = 4;                     // output features per thread
constexpr int kCols = kBlock * kPerThread;        // output features per block
constexpr int kChunk = 4096;                      // inputs compacted per round (shared memory list)
constexpr int kPieces = kChunk / 32;              // 32-element pieces per round

__device__ __forceinline__ int spike_class(float v) {
  if (v == 0.0f || v == 1.0f) return 0;
  if (v > 0.0f && v <= static_cast<float>(kMaxSpikeCount) && v == truncf(v)) return 1;
  return 2;
}

__global__ void pack_kernel(const float* __restrict__ s, int64_t* __restrict__ bits,
                            unsigned long long* __restrict__ info, int64_t R, int64_t K) {
  const int lane = threadIdx.x & 31;
  const int64_t nwords = spike_words(K), total = R * nwords;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarp = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  unsigned long long nnz = 0;
  int kind = 0;
  for (int64_t w = warp; w < total; w += nwarp) {
    const int64_t r = w / nwords, k0 = (w - r * nwords) * 64;
    uint32_t half[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t k = k0 + 32 * h + lane;
      const float v = k < K ? s[r * K + k] : 0.0f;
      half[h] = __ballot_sync(0xffffffffu, v != 0.0f);
      kind = max(kind, spike_class(v));
    }
    if (lane == 0) {
      bits[w] = static_cast<int64_t>((static_cast<uint64_t>(half[1]) << 32) | half[0]);
      nnz += __popc(half[0]) + __popc(half[1]);
    }
  }
  // warp max by shuffles (__reduce_max_sync would need sm_80)
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) kind = max(kind, __shfl_xor_sync(0xffffffffu, kind, d));
  if (lane == 0) {
    if (nnz) atomicAdd(&info[0], nnz);
    if (kind) atomicMax(&info[1], static_cast<unsigned long long>(kind));
  }
}

__global__ void unpack_kernel(const int64_t* __restrict__ bits, float* __restrict__ out, int64_t R, int64_t K) {
  const int64_t nwords = spike_words(K);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < R * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / K, k = i - r * K;
    out[i] = static_cast<float>((static_cast<uint64_t>(bits[r * nwords + (k >> 6)]) >> (k & 63)) & 1u);
  }
}

// out[c, r] = in[r, c] for in [rows, cols]; 32 x 32 tiles through shared memory (padded: no bank conflicts).
__global__ void transpose_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t rows, int64_t cols) {
  __shared__ float tile[32][33];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32, r0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x][i];
  }
}

void transpose(const float* in, float* out, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  transpose_kernel<<<grid, dim3(32, 8), 0, stream>>>(in, out, rows, cols);
  check_launch("spike transpose_kernel");
}

// Element e (< n) of a compaction source: a dense row with stride, or bit (col) of packed rows.
struct Source {
  const float* vals = nullptr;   // values: vals[e * stride]
  int64_t stride = 1;
  const int64_t* bits = nullptr; // packed: bit `col` of row e (words per row: nwords)
  int64_t nwords = 0, col = 0;
  __device__ __forceinline__ float get(int64_t e) const {
    if (bits) return static_cast<float>((static_cast<uint64_t>(bits[e * nwords + (col >> 6)]) >> (col & 63)) & 1u);
    return vals[e * stride];
  }
};

// Compacts the non-zeros of src elements [e0, e0 + n), n <= kChunk, into idx/val (shared memory) in
// increasing order; returns their count (the same in every thread). Prefix sums over 32-element pieces.
__device__ int compact(const Source& src, int64_t e0, int n, int* idx, float* val, int* piece_off) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int npieces = (n + 31) / 32;
  // pass 1: counts per piece
  for (int pc = warp; pc < npieces; pc += kWarps) {
    const int e = pc * 32 + lane;
    const float v = e < n ? src.get(e0 + e) : 0.0f;
    const unsigned b = __ballot_sync(0xffffffffu, v != 0.0f);
    if (lane == 0) piece_off[pc] = __popc(b);
  }
  __syncthreads();
  // exclusive scan of the piece counts by warp 0 (kPieces = 128: 4 per lane, then a shuffle scan)
  if (warp == 0) {
    int c[kPieces / 32], sum = 0;
#pragma unroll
    for (int j = 0; j < kPieces / 32; ++j) {
      const int pc = lane * (kPieces / 32) + j;
      c[j] = pc < npieces ? piece_off[pc] : 0;
      sum += c[j];
    }
    int incl = sum;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int t = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += t;
    }
    int run = incl - sum;
#pragma unroll
    for (int j = 0; j < kPieces / 32; ++j) {
      const int pc = lane * (kPieces / 32) + j;
      if (pc < npieces) piece_off[pc] = run;
      run += c[j];
    }
    if (lane == 31) piece_off[kPieces] = incl;
  }
  __syncthreads();
  // pass 2: write the active entries
  for (int pc = warp; pc < npieces; pc += kWarps) {
    const int e = pc * 32 + lane;
    const float v = e < n ? src.get(e0 + e) : 0.0f;
    const unsigned b = __ballot_sync(0xffffffffu, v != 0.0f);
    if (v != 0.0f) {
      const int at = piece_off[pc] + __popc(b & ((1u << lane) - 1u));
      idx[at] = e;
      val[at] = v;
    }
  }
  __syncthreads();
  const int count = piece_off[kPieces];
  return count;
}

// y[row, n] (or, transposed use, out[row, n]) = bias[n] + sum over active e of src(e) * table[e, n].
// Linear forward: row = m, source = s[m, :], table = wt [K, N].
// Linear grad_weight: row = k, source = column k of s / bits, table = grad_y [M, N], out = ws [K, N].
__global__ void __launch_bounds__(kBlock) gather_kernel(Source src, int64_t n_src, int64_t row_stride_vals,
                                                        int64_t row_step_col, const float* __restrict__ table,
                                                        const float* __restrict__ bias, float* __restrict__ out,
                                                        int64_t N) {
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
                                         const float* __restrict__ wt, float* __restrict__ gs, int64_t M,
                                         int64_t N, int64_t K) {
  const int lane = threadIdx.x & 31;
  const int64_t nwords = spike_words(K);
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarp = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t e = warp; e < M * K; e += nwarp) {
    const int64_t m = e / K, k = e - m * K;
    const bool on = (static_cast<uint64_t>(mask[m * nwords + (k >> 6)]) >> (k & 63)) & 1u;
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

struct ConvDev {
  int64_t B, Cin, H, W, Cout, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw, groups;
};
ConvDev to_dev(const SpikeConvParams& p) {
  return ConvDev{p.B, p.Cin, p.H, p.W, p.Cout, p.kh, p.kw, p.Ho, p.Wo, p.stride_h, p.stride_w,
                 p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups};
}

__global__ void conv_forward_kernel(const float* __restrict__ s, const float* __restrict__ w,
                                    const float* __restrict__ bias, float* __restrict__ y, ConvDev p) {
  const int64_t total = p.B * p.Cout * p.Ho * p.Wo;
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = i % p.Wo, oy = (i / p.Wo) % p.Ho, co = (i / (p.Wo * p.Ho)) % p.Cout,
                  b = i / (p.Wo * p.Ho * p.Cout);
    const int64_t g = co / cout_g;
    float acc = bias ? bias[co] : 0.0f;
    for (int64_t cl = 0; cl < cin_g; ++cl) {
      const float* sp = s + ((b * p.Cin + g * cin_g + cl) * p.H) * p.W;
      const float* wp = w + ((co * cin_g + cl) * p.kh) * p.kw;
      for (int64_t ky = 0; ky < p.kh; ++ky) {
        const int64_t yy = oy * p.sh - p.ph + ky * p.dh;
        if (yy < 0 || yy >= p.H) continue;
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          const int64_t xx = ox * p.sw - p.pw + kx * p.dw;
          if (xx < 0 || xx >= p.W) continue;
          const float v = sp[yy * p.W + xx];
          if (v != 0.0f) acc = fmaf(v, wp[ky * p.kw + kx], acc);  // only active inputs contribute
        }
      }
    }
    y[i] = acc;
  }
}

__global__ void __launch_bounds__(kBlock) conv_grad_weight_kernel(const float* __restrict__ s,
                                                                  const int64_t* __restrict__ bits,
                                                                  const float* __restrict__ gy,
                                                                  float* __restrict__ gw, ConvDev p) {
  __shared__ float red[kBlock];
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups;
  const int64_t wi = blockIdx.x;  // weight element [co, cl, ky, kx]
  const int64_t kx = wi % p.kw, ky = (wi / p.kw) % p.kh, cl = (wi / (p.kw * p.kh)) % cin_g,
                co = wi / (p.kw * p.kh * cin_g);
  const int64_t ci = (co / cout_g) * cin_g + cl;
  const int64_t K = p.Cin * p.H * p.W, nwords = spike_words(K), npix = p.Ho * p.Wo;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < p.B * npix; i += kBlock) {
    const int64_t b = i / npix, q = i - b * npix, oy = q / p.Wo, ox = q - oy * p.Wo;
    const int64_t yy = oy * p.sh - p.ph + ky * p.dh, xx = ox * p.sw - p.pw + kx * p.dw;
    if (yy < 0 || yy >= p.H || xx < 0 || xx >= p.W) continue;
    const int64_t e = (ci * p.H + yy) * p.W + xx;
    const float v = bits ? static_cast<float>((static_cast<uint64_t>(bits[b * nwords + (e >> 6)]) >> (e & 63)) & 1u)
                         : s[b * K + e];
    if (v != 0.0f) acc = fmaf(v, gy[(b * p.Cout + co) * npix + q], acc);
  }
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int d = kBlock / 2; d > 0; d >>= 1) {
    if (threadIdx.x < d) red[threadIdx.x] += red[threadIdx.x + d];
    __syncthreads();
  }
  if (threadIdx.x == 0) gw[wi] = red[0];
}

unsigned grid_1d(int64_t n, int device) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t cap = static_cast<int64_t>(cuda_detail::sm_count(device)) * 8;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
}

void require_all_cuda(std::initializer_list<const TensorView*> ts, const char* fn) {
  for (const TensorView* t : ts)
    if (t) SF_CHECK_ARG(t->device == DeviceKind::cuda, std::string("all tensors must be CUDA tensors for ") + fn);
}

}  // namespace

void spike_pack_cuda(const TensorView& s, const TensorView& bits, const TensorView& info, const ExecConfig& ex) {
  check_spike_pack_args(s, bits, info);
  require_all_cuda({&s, &bits, &info}, "spike_pack_cuda");
  const int64_t R = s.shape[0], K = s.shape[1];
  const DeviceGuard guard(s.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  // The kernel accumulates into info with atomics, and the ops allocate it uninitialised: zero it first
  // (an async memset on the stream: still no host synchronisation, still capturable).
  check_cuda(cudaMemsetAsync(info.data, 0, 2 * sizeof(int64_t), stream), "cudaMemsetAsync (info)");
  if (R == 0 || K == 0) return;
  const int64_t warps = R * spike_words(K);
  pack_kernel<<<grid_1d(warps * 32, s.device_index), kBlock, 0, stream>>>(
      s.ptr<const float>(), bits.ptr<int64_t>(), reinterpret_cast<unsigned long long*>(info.ptr<int64_t>()), R, K);
  check_launch("spike pack_kernel");
}

void spike_unpack_cuda(const TensorView& bits, const TensorView& out, const ExecConfig& ex) {
  check_spike_unpack_args(bits, out);
  require_all_cuda({&bits, &out}, "spike_unpack_cuda");
  const int64_t R = out.shape[0], K = out.shape[1];
  if (R == 0 || K == 0) return;
  const DeviceGuard guard(out.device_index);
  unpack_kernel<<<grid_1d(R * K, out.device_index), kBlock, 0, static_cast<cudaStream_t>(ex.stream)>>>(
      bits.ptr<const int64_t>(), out.ptr<float>(), R, K);
  check_launch("spike unpack_kernel");
}

void spike_linear_forward_cuda(const TensorView& s, const TensorView& w, const TensorView* bias,
                               const TensorView& y, const TensorView* wt, const ExecConfig& ex) {
  check_spike_linear_forward_args(s, w, bias, y, wt);
  require_all_cuda({&s, &w, bias, &y, wt}, "spike_linear_forward_cuda");
  SF_CHECK_ARG(wt != nullptr, "wt: the CUDA forward needs the [K, N] workspace");
  const int64_t M = s.shape[0], K = s.shape[1], N = w.shape[0];
  if (M == 0 || N == 0) return;
  const DeviceGuard guard(s.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  transpose(w.ptr<const float>(), wt->ptr<float>(), N, K, stream);
  Source src;
  src.vals = s.ptr<const float>();
  const dim3 grid(static_cast<unsigned>(M), static_cast<unsigned>((N + kCols - 1) / kCols));
  gather_kernel<<<grid, kBlock, 0, stream>>>(src, K, K, 0, wt->ptr<const float>(),
                                             bias ? bias->ptr<const float>() : nullptr, y.ptr<float>(), N);
  check_launch("spike gather_kernel (linear forward)");
}

void spike_linear_grad_weight_cuda(const TensorView* bits, const TensorView* s, const TensorView& grad_y,
                                   const TensorView& grad_w, const TensorView* ws, const ExecConfig& ex) {
  check_spike_linear_grad_weight_args(bits, s, grad_y, grad_w, ws);
  require_all_cuda({bits, s, &grad_y, &grad_w, ws}, "spike_linear_grad_weight_cuda");
  SF_CHECK_ARG(ws != nullptr, "ws: the CUDA grad_weight needs the [K, N] workspace");
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = grad_w.shape[1];
  if (N == 0 || K == 0) return;
  const DeviceGuard guard(grad_y.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  // block k compacts column k over the M rows: element m is s[m * K + k] or bit k of packed row m
  Source src;
  if (bits) {
    src.bits = bits->ptr<const int64_t>();
    src.nwords = spike_words(K);
  } else {
    src.vals = s->ptr<const float>();
    src.stride = K;
  }
  const dim3 grid(static_cast<unsigned>(K), static_cast<unsigned>((N + kCols - 1) / kCols));
  gather_kernel<<<grid, kBlock, 0, stream>>>(src, M, 1, 1, grad_y.ptr<const float>(), nullptr, ws->ptr<float>(), N);
  check_launch("spike gather_kernel (linear grad_weight)");
  transpose(ws->ptr<const float>(), grad_w.ptr<float>(), K, N, stream);
}

void spike_linear_grad_input_masked_cuda(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                         const TensorView& grad_s, const TensorView* ws, const ExecConfig& ex) {
  check_spike_linear_grad_input_masked_args(mask, grad_y, w, grad_s, ws);
  require_all_cuda({&mask, &grad_y, &w, &grad_s, ws}, "spike_linear_grad_input_masked_cuda");
  SF_CHECK_ARG(ws != nullptr, "ws: the CUDA masked grad_input needs the [K, N] workspace");
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = w.shape[1];
  if (M == 0 || K == 0) return;
  const DeviceGuard guard(grad_y.device_index);
  const auto stream = static_cast<cudaStream_t>(ex.stream);
  transpose(w.ptr<const float>(), ws->ptr<float>(), N, K, stream);
  masked_grad_input_kernel<<<grid_1d(M * K * 32, grad_y.device_index), kBlock, 0, stream>>>(
      mask.ptr<const int64_t>(), grad_y.ptr<const float>(), ws->ptr<const float>(), grad_s.ptr<float>(), M, N, K);
  check_launch("spike masked_grad_input_kernel");
}

void spike_conv2d_forward_cuda(const TensorView& s, const TensorView& w, const TensorView* bias,
                               const TensorView& y, const SpikeConvParams& p, const ExecConfig& ex) {
  check_spike_conv2d_forward_args(s, w, bias, y, p);
  require_all_cuda({&s, &w, bias, &y}, "spike_conv2d_forward_cuda");
  const int64_t total = p.B * p.Cout * p.Ho * p.Wo;
  if (total == 0) return;
  const DeviceGuard guard(s.device_index);
  conv_forward_kernel<<<grid_1d(total, s.device_index), kBlock, 0, static_cast<cudaStream_t>(ex.stream)>>>(
      s.ptr<const float>(), w.ptr<const float>(), bias ? bias->ptr<const float>() : nullptr, y.ptr<float>(),
      to_dev(p));
  check_launch("spike conv_forward_kernel");
}

void spike_conv2d_grad_weight_cuda(const TensorView* bits, const TensorView* s, const TensorView& grad_y,
                                   const TensorView& grad_w,
                                   const SpikeConvParams& p, const ExecConfig& ex) {
  check_spike_conv2d_grad_weight_args(bits, s, grad_y, grad_w, p);
  require_all_cuda({bits, s, &grad_y, &grad_w}, "spike_conv2d_grad_weight_cuda");
  const int64_t nw = grad_w.numel();
  if (nw == 0) return;
  const DeviceGuard guard(grad_y.device_index);
  conv_grad_weight_kernel<<<static_cast<unsigned>(nw), kBlock, 0, static_cast<cudaStream_t>(ex.stream)>>>(
      s ? s->ptr<const float>() : nullptr, bits ? bits->ptr<const int64_t>() : nullptr,
      grad_y.ptr<const float>(), grad_w.ptr<float>(), to_dev(p));
  check_launch("spike conv_grad_weight_kernel");
}

}  // namespace spikeforge
