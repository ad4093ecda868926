// Parallel spiking neurons (PSN, masked PSN, sliding PSN) on CUDA: formulas in csrc/core/psn.h,
// structure of csrc/cpu/psn_kernels_cpu.h (the ground truth this file mirrors formula for formula).
//
// Forward: one thread owns VEC consecutive neurons and loads their X columns (T_in steps) once into
// registers: the loops over time are unrolled to a compile-time bucket TB (8, 16, 32, 64 >= T) and
// guarded by the run-time T, so the column is indexed by constants only (no local memory). W^T and b
// sit in shared memory; kRows = 4 output rows are charged together (one broadcast float4 of W^T per
// input step, four independent FMA chains); chunks of four inputs outside every row's band are
// skipped by a warp-uniform branch. Each H[t] is b[t] plus the band's W[t, i] X[i] in ascending i, one
// fmaf per term: the CPU's charge_row (bitwise where the CPU build contracts to FMA, as -march=native
// does), and the streaming window step agrees bitwise with the multi-step op.
//
// Backward: one block of NT threads walks chunks of NT neurons. Phase 1 (a thread per neuron) loads
// the X column into registers and grad_spike into the thread's row of a shared gH tile, recomputes H
// as the forward did, overwrites gS with gH = gS g'(H) and, when asked, sums grad_X[i] = sum over t
// (ascending) of W[t, i] gH[t] in registers. Phase 2 (with the partials) reads the chunk's X and gH
// tiles from shared memory like a small GEMM: each thread owns a 4 x MI tile of grad_W (plus grad_b for
// column-0 tiles) and a fixed slice of the chunk's neurons, sums that slice in float, then adds it to
// double accumulators. A block owns one partition of kPSNPartition neurons (the CPU's layout), so its
// partial row is written without atomics; a fixed tree adds the slices at the end and a second kernel
// adds the partitions in order (as reduce_partials). Every summation order depends only on the shapes,
// never on the grid, the SM count or timing: results are bitwise identical from run to run.
// With fewer partitions than SMs, grad_X is computed by a separate grid over all neurons instead, so
// the partition blocks (the long pole) only recompute gH and reduce.
//
// Nothing here allocates or synchronises with the host; everything is queued on ex.stream (CUDA-graph
// capturable). All index arithmetic over neurons is 64-bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "core/psn.h"
#include "cuda/cuda_common.cuh"

namespace spikeforge {
namespace {

using namespace cuda_detail;

constexpr int kRows = 4;  // output rows handled together: one float4 of W^T (or of gH) per input step

__host__ __device__ __forceinline__ int imin(int a, int b) {
  return a < b ? a : b;
}
__host__ __device__ __forceinline__ int imax(int a, int b) {
  return a > b ? a : b;
}
__host__ __device__ __forceinline__ int round_up(int v, int m) {
  return (v + m - 1) / m * m;
}

// Row stride (floats) of a per-neuron shared row holding `width` floats read as float4: 4 x (odd), so
// the 16-byte accesses of eight consecutive threads fall in distinct banks.
__host__ __device__ __forceinline__ int row_stride(int width) {
  return 4 * ((round_up(width, 4) / 4) | 1);
}

// Compile-time bound of the loops over time: T rounded up to 8, 16, 32 or 64.
inline int bucket_of(int64_t T) {
  return T <= 8 ? 8 : T <= 16 ? 16 : T <= 32 ? 32 : 64;
}

template <typename F>
void dispatch_bucket(int tb, F&& f) {
  switch (tb) {
    case 8:
      return f(std::integral_constant<int, 8>{});
    case 16:
      return f(std::integral_constant<int, 16>{});
    case 32:
      return f(std::integral_constant<int, 32>{});
    default:
      return f(std::integral_constant<int, 64>{});
  }
}

// ------------------------------------------------------------------------------------------------
// the band (the CPU's band_of) and the charge / back-projection of four output rows
// ------------------------------------------------------------------------------------------------

struct Band {
  int T_in, T_out;
  int d;     // T_in - T_out
  int band;  // 0: dense
};

// Input range [lo, hi) that output row t reads.
__device__ __forceinline__ void band_of(const Band& b, int t, int& lo, int& hi) {
  if (b.band <= 0) {
    lo = 0;
    hi = b.T_in;
    return;
  }
  const int last = t + b.d;
  lo = imax(0, last - b.band + 1);
  hi = imin(b.T_in, last + 1);
}

// The bands of rows t0 .. t0 + kRows - 1 (rows past T_out read nothing), and the warp-uniform bounds
// that let a chunk of four inputs be skipped (outside every band) or taken without guards (inside all).
struct RowBands {
  int lo[kRows], hi[kRows];
  int lo_min, hi_max;  // union of the bands
  int lo_max, hi_min;  // intersection of the bands (empty when a row is past T_out)
};

__device__ __forceinline__ RowBands bands_of(const Band& b, int t0) {
  RowBands r;
  r.lo_min = 1 << 30;
  r.hi_max = 0;
  r.lo_max = 0;
  r.hi_min = 1 << 30;
#pragma unroll
  for (int k = 0; k < kRows; ++k) {
    int lo = 0, hi = 0;
    const bool real = t0 + k < b.T_out;
    if (real) band_of(b, t0 + k, lo, hi);
    r.lo[k] = lo;
    r.hi[k] = hi;
    if (real) {
      r.lo_min = imin(r.lo_min, lo);
      r.hi_max = imax(r.hi_max, hi);
    }
    r.lo_max = imax(r.lo_max, real ? lo : (1 << 30));
    r.hi_min = imin(r.hi_min, hi);
  }
  return r;
}

// h[r] += W[t0 + r, i] x[i] over the band of row t0 + r, i ascending (the CPU's charge_row). Every
// step is an explicit fmaf, so the rounding does not depend on the compiler's contraction choices.
// ws is W^T in shared memory: ws[i * TOB + t], TB rows (zero past T_in).
template <int TB, int VEC>
__device__ __forceinline__ void charge_rows(const float* __restrict__ ws, int TOB, const RowBands& rb, int t0,
                                            const float (&x)[TB][VEC], float (&h)[kRows][VEC]) {
#pragma unroll
  for (int c = 0; c < TB; c += 4) {
    if (c + 4 <= rb.lo_min || c >= rb.hi_max) continue;
    if (c >= rb.lo_max && c + 4 <= rb.hi_min) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float4 w4 = *reinterpret_cast<const float4*>(ws + (c + k) * TOB + t0);
        const float w[kRows] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
#pragma unroll
          for (int j = 0; j < VEC; ++j) h[r][j] = fmaf(w[r], x[c + k][j], h[r][j]);
        }
      }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int i = c + k;
        const float4 w4 = *reinterpret_cast<const float4*>(ws + i * TOB + t0);
        const float w[kRows] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (i >= rb.lo[r] && i < rb.hi[r]) {
#pragma unroll
            for (int j = 0; j < VEC; ++j) h[r][j] = fmaf(w[r], x[i][j], h[r][j]);
          }
        }
      }
    }
  }
}

// gx[i] += W[t0 + r, i] g[r] for the rows whose band holds i, rows ascending (the CPU's grad_X loop).
template <int TB>
__device__ __forceinline__ void back_rows(const float* __restrict__ ws, int TOB, const RowBands& rb, int t0,
                                          const float (&g)[kRows], float (&gx)[TB]) {
#pragma unroll
  for (int c = 0; c < TB; c += 4) {
    if (c + 4 <= rb.lo_min || c >= rb.hi_max) continue;
    if (c >= rb.lo_max && c + 4 <= rb.hi_min) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float4 w4 = *reinterpret_cast<const float4*>(ws + (c + k) * TOB + t0);
        const float w[kRows] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
        for (int r = 0; r < kRows; ++r) gx[c + k] = fmaf(w[r], g[r], gx[c + k]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int i = c + k;
        const float4 w4 = *reinterpret_cast<const float4*>(ws + i * TOB + t0);
        const float w[kRows] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (i >= rb.lo[r] && i < rb.hi[r]) gx[i] = fmaf(w[r], g[r], gx[i]);
        }
      }
    }
  }
}

// W^T and b into shared memory: ws[i * TOB + t] = W[t, i] (TB rows, zero outside T_in x T_out),
// bs[t] = b[t] (zero past T_out). TOB = T_out rounded up to 4.
template <int TB>
__device__ __forceinline__ void stage_params(const float* __restrict__ w, const float* __restrict__ b, float* ws,
                                             float* bs, const Band& bd, int TOB) {
  for (int e = threadIdx.x; e < TB * TOB; e += blockDim.x) {
    const int i = e / TOB, t = e - i * TOB;
    ws[e] = (i < bd.T_in && t < bd.T_out) ? w[t * bd.T_in + i] : 0.0f;
  }
  for (int t = threadIdx.x; t < TOB; t += blockDim.x) bs[t] = t < bd.T_out ? b[t] : 0.0f;
}

// ------------------------------------------------------------------------------------------------
// forward
// ------------------------------------------------------------------------------------------------

struct ForwardArgs {
  const void* x;
  const float* w;
  const float* b;
  void* spike;
  void* h_out;  // or nullptr
  int64_t N;
  Band band;
  int TOB;
};

// Neurons per thread: a 16-byte access while the X column (TB * VEC floats) stays within 64 registers.
template <typename S, int TB>
constexpr int forward_vec() {
  return sizeof(S) == 4 ? (TB <= 16 ? 4 : 1) : (TB <= 8 ? 8 : 1);
}

template <typename S, int TB, int VEC>
__global__ void __launch_bounds__(kThreads) psn_forward_kernel(const ForwardArgs a) {
  using P = Packed<S, VEC>;
  extern __shared__ float4 psn_smem[];
  float* ws = reinterpret_cast<float*>(psn_smem);
  float* bs = ws + TB * a.TOB;
  stage_params<TB>(a.w, a.b, ws, bs, a.band, a.TOB);
  __syncthreads();

  const int64_t N = a.N, ngroups = N / VEC;
  const int T_in = a.band.T_in, T_out = a.band.T_out;
  for (int64_t g = first_group(); g < ngroups; g += group_stride()) {
    const int64_t n0 = g * VEC;
    float x[TB][VEC];
#pragma unroll
    for (int i = 0; i < TB; ++i) {
      if (i < T_in) {
        P::load_row(a.x, i * N + n0, x[i]);
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) x[i][j] = 0.0f;
      }
    }
    for (int t0 = 0; t0 < T_out; t0 += kRows) {
      const RowBands rb = bands_of(a.band, t0);
      const float4 b4 = *reinterpret_cast<const float4*>(bs + t0);
      const float bt[kRows] = {b4.x, b4.y, b4.z, b4.w};
      float h[kRows][VEC];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) h[r][j] = bt[r];
      }
      charge_rows<TB, VEC>(ws, a.TOB, rb, t0, x, h);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (t0 + r < T_out) {
          const int64_t off = (t0 + r) * N + n0;
          float s[VEC];
#pragma unroll
          for (int j = 0; j < VEC; ++j) s[j] = h[r][j] >= 0.0f ? 1.0f : 0.0f;
          P::store_row(a.spike, off, s);
          if (a.h_out) P::store_row(a.h_out, off, h[r]);
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// backward
// ------------------------------------------------------------------------------------------------

// Block shape of the backward for bucket TB. A chunk is NT neurons (one per thread in phase 1). In
// phase 2 thread tid owns the grad_W tile `tid % kTiles` (kRows rows x kMI columns) and the chunk
// slice `tid / kTiles` (kSliceLen consecutive neurons).
template <int TB>
struct BwdShape {
  static constexpr int kNT = TB == 64 ? 128 : 256;  // 128 keeps TB = 64 within 99 KB of shared memory
  static constexpr int kMI = TB == 64 ? 8 : 4;
  // Two blocks per SM (register cap 128) for TB <= 32: at TB = 32 one block per SM (168 registers,
  // 80 KB of shared memory) measured 12.5% occupancy on an H100 and ran the 256 partitions of
  // N = 2^22 in two waves; two resident blocks (160 KB of shared memory) take them in one.
  static constexpr int kMinBlocks = TB == 64 ? 1 : 2;
  static constexpr int kTT = TB / kRows;  // tile rows
  static constexpr int kTI = TB / kMI;    // tile columns
  static constexpr int kTiles = kTT * kTI;
  static constexpr int kSlices = kNT / kTiles;
  static constexpr int kSliceLen = kNT / kSlices;
  static_assert(kNT % kTiles == 0 && (kSlices & (kSlices - 1)) == 0, "slices must split the chunk evenly");
  static_assert(kTiles <= 32 || kTiles % 32 == 0, "warp-uniform grad_b flag needs whole warps of tiles");
};

// Dynamic shared memory of the backward, offsets in floats (each a multiple of 4: float4-aligned).
struct BwdLayout {
  int red;  // double[NT]: the slice tree (partials with kSlices > 1)
  int ws;   // W^T [TB][TOB]
  int bs;   // b [TOB]
  int gsm;  // per-neuron rows: gS, then gH [NT][GST]
  int xs;   // per-neuron rows: X [NT][XST] (partials only)
  int total;
};

__host__ __device__ __forceinline__ BwdLayout bwd_layout(int TB, int NT, int slices, bool part, int TOB, int GST,
                                                         int XST) {
  BwdLayout l;
  l.red = 0;
  l.ws = (part && slices > 1) ? 2 * NT : 0;
  l.bs = l.ws + TB * TOB;
  l.gsm = l.bs + TOB;
  l.xs = l.gsm + NT * GST;
  l.total = l.xs + (part ? NT * XST : 0);
  return l;
}

struct BackwardArgs {
  const void* grad_spike;
  const void* x;
  const float* w;
  const float* b;
  void* grad_x;  // or nullptr
  double* part;  // partials, or nullptr (then only grad_x)
  int64_t N;
  int64_t unit;  // neurons per block unit: kPSNPartition with partials (unit u = partition u), else NT
  int64_t nunits;
  Band band;
  int TOB, TIB;  // T_out rounded up to 4; X columns kept in the X tile (T_in rounded up to kMI)
  int GST, XST;  // row strides of the gH and X tiles
  float alpha;
};

// s[r][c] += gH[k][t0 + r] X[k][i0 + c] and sb[r] += gH[k][t0 + r] for the neurons k of [kb, ke), in order.
template <int MI, bool WITH_B>
__device__ __forceinline__ void gemm_slice(const float* gsm, const float* xs, int GST, int XST, int t0, int i0, int kb,
                                           int ke, float (&s)[kRows][MI], float (&sb)[kRows]) {
  for (int k = kb; k < ke; ++k) {
    const float4 g4 = *reinterpret_cast<const float4*>(gsm + k * GST + t0);
    const float g[kRows] = {g4.x, g4.y, g4.z, g4.w};
    float xv[MI];
#pragma unroll
    for (int q = 0; q < MI; q += 4) {
      const float4 x4 = *reinterpret_cast<const float4*>(xs + k * XST + i0 + q);
      xv[q] = x4.x;
      xv[q + 1] = x4.y;
      xv[q + 2] = x4.z;
      xv[q + 3] = x4.w;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < MI; ++c) s[r][c] = fmaf(g[r], xv[c], s[r][c]);
      if (WITH_B) sb[r] += g[r];
    }
  }
}

template <typename S, Surrogate SG, int TB>
__global__ void __launch_bounds__(BwdShape<TB>::kNT, BwdShape<TB>::kMinBlocks)
    psn_backward_kernel(const BackwardArgs a) {
  using Sh = BwdShape<TB>;
  constexpr int NT = Sh::kNT, MI = Sh::kMI, TT = Sh::kTT, TILES = Sh::kTiles, SLICES = Sh::kSlices,
                SLEN = Sh::kSliceLen;
  using Tr = StorageTraits<S>;
  using Bits = typename Tr::Bits;

  extern __shared__ float4 psn_smem[];
  const bool part = a.part != nullptr;
  const BwdLayout L = bwd_layout(TB, NT, SLICES, part, a.TOB, a.GST, a.XST);
  float* sm = reinterpret_cast<float*>(psn_smem);
  double* red = reinterpret_cast<double*>(sm + L.red);
  float* ws = sm + L.ws;
  float* bs = sm + L.bs;
  float* gsm = sm + L.gsm;
  float* xs = sm + L.xs;
  (void)red;

  const int tid = static_cast<int>(threadIdx.x);
  const int T_in = a.band.T_in, T_out = a.band.T_out, TOB = a.TOB, GST = a.GST, XST = a.XST;
  const int64_t N = a.N;
  const Bits* xg = static_cast<const Bits*>(a.x);
  const Bits* gsg = static_cast<const Bits*>(a.grad_spike);
  Bits* gxg = static_cast<Bits*>(a.grad_x);
  const float alpha = a.alpha;

  stage_params<TB>(a.w, a.b, ws, bs, a.band, TOB);
  __syncthreads();

  // Phase-2 role: tile rows [tr0, tr0 + 4), columns [tc0, tc0 + MI), neurons of chunk slice `slice`.
  const int tile = tid % TILES, slice = tid / TILES;
  const int tr0 = (tile % TT) * kRows, tc0 = (tile / TT) * MI;
  const bool active = part && tr0 < T_out && tc0 < imax(T_in, 1);
  // grad_b is summed by the column-0 tiles; the flag is uniform over the warp (the other threads of
  // such a warp sum it too and drop it), so no warp diverges inside the loop.
  const bool with_b = TILES <= 32 || ((tid & ~31) % TILES) == 0;

  for (int64_t u = blockIdx.x; u < a.nunits; u += gridDim.x) {
    const int64_t ubeg = u * a.unit, uend = ubeg + a.unit < N ? ubeg + a.unit : N;
    double acc[kRows][MI], accb[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      accb[r] = 0.0;
#pragma unroll
      for (int c = 0; c < MI; ++c) acc[r][c] = 0.0;
    }

    for (int64_t c0 = ubeg; c0 < uend; c0 += NT) {
      const int kvalid = uend - c0 < NT ? static_cast<int>(uend - c0) : NT;
      // ---- phase 1: this thread's neuron
      if (tid < kvalid) {
        const int64_t n = c0 + tid;
        float* grow = gsm + tid * GST;
        // gS into the neuron's row (float4 groups, zero past T_out): all loads in flight together
#pragma unroll
        for (int t = 0; t < TB; t += 4) {
          if (t < T_out) {
            float v[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) v[r] = t + r < T_out ? Tr::to_float(gsg[(t + r) * N + n]) : 0.0f;
            *reinterpret_cast<float4*>(grow + t) = make_float4(v[0], v[1], v[2], v[3]);
          }
        }
        float xr[TB][1];
#pragma unroll
        for (int i = 0; i < TB; ++i) xr[i][0] = i < T_in ? Tr::to_float(xg[i * N + n]) : 0.0f;
        if (part) {
          float* xrow = xs + tid * XST;
#pragma unroll
          for (int i = 0; i < TB; i += 4) {
            if (i < a.TIB) {
              *reinterpret_cast<float4*>(xrow + i) = make_float4(xr[i][0], xr[i + 1][0], xr[i + 2][0], xr[i + 3][0]);
            }
          }
        }
        // H recomputed as the forward computed it; gH = g'(H) gS replaces gS
        for (int t0 = 0; t0 < T_out; t0 += kRows) {
          const RowBands rb = bands_of(a.band, t0);
          const float4 b4 = *reinterpret_cast<const float4*>(bs + t0);
          float h[kRows][1] = {{b4.x}, {b4.y}, {b4.z}, {b4.w}};
          charge_rows<TB, 1>(ws, TOB, rb, t0, xr, h);
          const float4 s4 = *reinterpret_cast<const float4*>(grow + t0);
          const float gs[kRows] = {s4.x, s4.y, s4.z, s4.w};
          float gh[kRows];
#pragma unroll
          for (int r = 0; r < kRows; ++r)
            gh[r] = t0 + r < T_out ? SurrogateFn<SG>::grad(h[r][0], alpha, 0.0f) * gs[r] : 0.0f;
          *reinterpret_cast<float4*>(grow + t0) = make_float4(gh[0], gh[1], gh[2], gh[3]);
        }
        // grad_X[i] = sum over t ascending of W[t, i] gH[t] (the thread's own row: no barrier needed)
        if (gxg) {
          float gx[TB];
#pragma unroll
          for (int i = 0; i < TB; ++i) gx[i] = 0.0f;
          for (int t0 = 0; t0 < T_out; t0 += kRows) {
            const RowBands rb = bands_of(a.band, t0);
            const float4 g4 = *reinterpret_cast<const float4*>(grow + t0);
            const float g[kRows] = {g4.x, g4.y, g4.z, g4.w};
            back_rows<TB>(ws, TOB, rb, t0, g, gx);
          }
#pragma unroll
          for (int i = 0; i < TB; ++i) {
            if (i < T_in) gxg[i * N + n] = Tr::from_float(gx[i]);
          }
        }
      }
      // ---- phase 2: grad_W / grad_b of the chunk from the shared X and gH tiles
      if (part) {
        __syncthreads();
        if (active) {
          const int kb = slice * SLEN, ke = imin(kb + SLEN, kvalid);
          float s[kRows][MI], sb[kRows];
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            sb[r] = 0.0f;
#pragma unroll
            for (int c = 0; c < MI; ++c) s[r][c] = 0.0f;
          }
          if (with_b) {
            gemm_slice<MI, true>(gsm, xs, GST, XST, tr0, tc0, kb, ke, s, sb);
          } else {
            gemm_slice<MI, false>(gsm, xs, GST, XST, tr0, tc0, kb, ke, s, sb);
          }
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            accb[r] += static_cast<double>(sb[r]);
#pragma unroll
            for (int c = 0; c < MI; ++c) acc[r][c] += static_cast<double>(s[r][c]);
          }
        }
        __syncthreads();  // the tiles are rewritten by the next chunk
      }
    }

    if (part) {
      if constexpr (SLICES > 1) {
        // slice s of a tile adds into slice 0 by a fixed tree: (s, s + half) pairs, halves shrinking
        auto combine = [&](double& v) {
          red[tid] = v;
          __syncthreads();
          for (int half = SLICES / 2; half > 0; half >>= 1) {
            if (slice < half) red[tid] += red[tid + half * TILES];
            __syncthreads();
          }
          v = red[tid];
        };
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
#pragma unroll
          for (int c = 0; c < MI; ++c) combine(acc[r][c]);
          combine(accb[r]);
        }
      }
      if (slice == 0 && active) {
        double* row = a.part + u * static_cast<int64_t>(T_out) * (T_in + 1);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int t = tr0 + r;
          if (t < T_out) {
            int lo, hi;
            band_of(a.band, t, lo, hi);
#pragma unroll
            for (int c = 0; c < MI; ++c) {
              const int i = tc0 + c;
              if (i < T_in) row[t * T_in + i] = (i >= lo && i < hi) ? acc[r][c] : 0.0;
            }
            if (tc0 == 0) row[T_out * T_in + t] = accb[r];
          }
        }
      }
    }
  }
}

// grad_W / grad_b from the partials, partitions summed in order (the CPU's reduce_partials).
__global__ void __launch_bounds__(kThreads)
    psn_reduce_kernel(const double* part, int64_t nparts, int row, int nw, float* grad_w, float* grad_b) {
  constexpr int kUnroll = 8;  // loads issued together before their (ordered) adds
  for (int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); e < row;
       e += static_cast<int>(gridDim.x * blockDim.x)) {
    double s = 0.0;
    int64_t pi = 0;
    for (; pi + kUnroll <= nparts; pi += kUnroll) {
      double v[kUnroll];
#pragma unroll
      for (int q = 0; q < kUnroll; ++q) v[q] = part[(pi + q) * row + e];
#pragma unroll
      for (int q = 0; q < kUnroll; ++q) s += v[q];
    }
    for (; pi < nparts; ++pi) s += part[pi * row + e];
    if (e < nw) {
      if (grad_w) grad_w[e] = static_cast<float>(s);
    } else if (grad_b) {
      grad_b[e - nw] = static_cast<float>(s);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// host side
// ------------------------------------------------------------------------------------------------

Band make_band(const PSNParams& p) {
  Band b;
  b.T_in = static_cast<int>(p.T_in);
  b.T_out = static_cast<int>(p.T_out);
  b.d = b.T_in - b.T_out;
  // A band wider than T_in + T_out reads the same inputs as that width; clamp it into int range.
  b.band = static_cast<int>(std::min<int64_t>(p.band, 1 << 20));
  return b;
}

void check_cuda_t(const PSNParams& p, const char* fn) {
  SF_CHECK_ARG(p.T_in <= kPSNMaxCudaT && p.T_out <= kPSNMaxCudaT,
               std::string(fn) + ": T_in = " + std::to_string(p.T_in) + ", T_out = " + std::to_string(p.T_out) +
                   "; the fused CUDA kernels take T <= " + std::to_string(kPSNMaxCudaT) +
                   " (larger T goes through the GEMM path in spikeforge.ops.psn)");
}

void check_f32(const TensorView* t, const char* name) {
  if (t) SF_CHECK_ARG(t->dtype == DType::f32, std::string(name) + " must be float32 on CUDA");
}

// Blocks for `units` block-sized work items: all of them within one wave, else a wave's worth shrunk
// so that every block makes the same number of grid-stride trips (as grid_for).
unsigned int grid_units(int64_t units, int threads, int device) {
  const int64_t cap = static_cast<int64_t>(sm_count(device)) * std::max(1, 2048 / threads);
  if (units <= cap) return static_cast<unsigned int>(units);
  const int64_t trips = (units + cap - 1) / cap;
  return static_cast<unsigned int>((units + trips - 1) / trips);
}

template <typename S, int TB>
void forward_launch(const ForwardArgs& a, int device, cudaStream_t stream) {
  constexpr int kVec = forward_vec<S, TB>();
  const size_t smem = static_cast<size_t>(TB * a.TOB + a.TOB) * sizeof(float);  // <= 16.25 KB
  if constexpr (kVec > 1) {
    if (a.N % kVec == 0 && aligned16(a.x) && aligned16(a.spike) && aligned16(a.h_out)) {
      psn_forward_kernel<S, TB, kVec><<<grid_for(a.N / kVec, device), kThreads, smem, stream>>>(a);
      check_launch("the PSN forward kernel");
      return;
    }
  }
  psn_forward_kernel<S, TB, 1><<<grid_for(a.N, device), kThreads, smem, stream>>>(a);
  check_launch("the PSN forward kernel");
}

// One launch of the backward kernel: with a.part, block u reduces partition u (grad_x too when
// a.grad_x is set); without, a grid-stride walk over chunks computes grad_x only.
template <typename S, Surrogate SG, int TB>
void backward_run(BackwardArgs a, int device, cudaStream_t stream) {
  using Sh = BwdShape<TB>;
  unsigned int grid;
  if (a.part) {
    a.unit = kPSNPartition;
    a.nunits = psn_num_partitions(a.N);
    grid = static_cast<unsigned int>(a.nunits);
  } else {
    a.unit = Sh::kNT;
    a.nunits = (a.N + Sh::kNT - 1) / Sh::kNT;
    grid = grid_units(a.nunits, Sh::kNT, device);
  }
  const BwdLayout l = bwd_layout(TB, Sh::kNT, Sh::kSlices, a.part != nullptr, a.TOB, a.GST, a.XST);
  const size_t smem = static_cast<size_t>(l.total) * sizeof(float);  // <= 84.3 KB
  if (smem > 48 * 1024) {
    check_cuda(cudaFuncSetAttribute(psn_backward_kernel<S, SG, TB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)),
               "cudaFuncSetAttribute (PSN backward shared memory)");
  }
  psn_backward_kernel<S, SG, TB><<<grid, Sh::kNT, smem, stream>>>(a);
  check_launch("the PSN backward kernel");
}

template <typename S, int TB>
void backward_launch(BackwardArgs a, double* part, void* grad_x, Surrogate sg, int device, cudaStream_t stream) {
  using Sh = BwdShape<TB>;
  a.TIB = imax(Sh::kMI, round_up(a.band.T_in, Sh::kMI));
  a.XST = row_stride(a.TIB);
  dispatch_surrogate<kNumSpikingJellySurrogates>(sg, [&](auto tag) {
    constexpr Surrogate SG = decltype(tag)::value;
    if (!part) {
      a.part = nullptr;
      a.grad_x = grad_x;
      backward_run<S, SG, TB>(a, device, stream);
      return;
    }
    // Few partitions leave SMs idle: grad_x then goes to its own grid over every neuron, and the
    // partition blocks (the long pole) skip it.
    const bool split = grad_x && psn_num_partitions(a.N) < sm_count(device);
    if (split) {
      a.part = nullptr;
      a.grad_x = grad_x;
      backward_run<S, SG, TB>(a, device, stream);
    }
    a.part = part;
    a.grad_x = split ? nullptr : grad_x;
    backward_run<S, SG, TB>(a, device, stream);
  });
}

void memset_async(void* p, size_t bytes, cudaStream_t stream, const char* what) {
  if (bytes == 0) return;
  check_cuda(cudaMemsetAsync(p, 0, bytes, stream), what);
}

}  // namespace

void psn_forward_cuda(const TensorView& x, const TensorView& w, const TensorView& b, const TensorView& spike,
                      const TensorView* h_out, const PSNParams& p, const ExecConfig& ex) {
  check_psn_forward_args(x, w, b, spike, h_out, p);
  constexpr const char* fn = "psn_forward_cuda";
  require_cuda(&x, "x_seq", fn);
  require_cuda(&w, "weight", fn);
  require_cuda(&b, "bias", fn);
  require_cuda(&spike, "spike_seq", fn);
  require_cuda(h_out, "h_seq", fn);
  check_cuda_dtype(x.dtype, "x_seq");
  check_f32(&w, "weight");
  check_f32(&b, "bias");
  check_cuda_t(p, fn);
  if (p.T_out == 0 || p.N == 0) return;

  const DeviceGuard guard(x.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  ForwardArgs a;
  a.x = x.data;
  a.w = w.ptr<const float>();
  a.b = b.ptr<const float>();
  a.spike = spike.data;
  a.h_out = h_out ? h_out->data : nullptr;
  a.N = p.N;
  a.band = make_band(p);
  a.TOB = round_up(a.band.T_out, 4);
  const int tb = bucket_of(std::max(p.T_in, p.T_out));
  dispatch_dtype(x.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    dispatch_bucket(tb, [&](auto bucket) { forward_launch<S, decltype(bucket)::value>(a, x.device_index, stream); });
  });
}

void psn_backward_cuda(const TensorView& grad_spike, const TensorView& x, const TensorView& w, const TensorView& b,
                       const TensorView* grad_x, const TensorView* partials, const TensorView* grad_w,
                       const TensorView* grad_b, const PSNParams& p, const ExecConfig& ex) {
  check_psn_backward_args(grad_spike, x, w, b, grad_x, partials, grad_w, grad_b, p);
  constexpr const char* fn = "psn_backward_cuda";
  require_cuda(&grad_spike, "grad_spike", fn);
  require_cuda(&x, "x_seq", fn);
  require_cuda(&w, "weight", fn);
  require_cuda(&b, "bias", fn);
  require_cuda(grad_x, "grad_x", fn);
  require_cuda(partials, "partials", fn);
  require_cuda(grad_w, "grad_weight", fn);
  require_cuda(grad_b, "grad_bias", fn);
  check_cuda_dtype(x.dtype, "x_seq");
  check_f32(&w, "weight");
  check_f32(&b, "bias");
  check_f32(grad_w, "grad_weight");
  check_f32(grad_b, "grad_bias");
  check_cuda_t(p, fn);

  const bool want_params = grad_w || grad_b;
  const bool run_gx = grad_x && p.T_in > 0 && p.N > 0;
  if (!want_params && !run_gx) return;
  const DeviceGuard guard(x.device_index);
  const cudaStream_t stream = static_cast<cudaStream_t>(ex.stream);
  const int device = x.device_index;
  const size_t esize = x.dtype == DType::f32 ? 4 : 2;

  if (p.N == 0) {  // nothing reaches W or b
    if (grad_w)
      memset_async(grad_w->data, static_cast<size_t>(p.T_out * p.T_in) * 4, stream, "cudaMemsetAsync (grad_weight)");
    if (grad_b) memset_async(grad_b->data, static_cast<size_t>(p.T_out) * 4, stream, "cudaMemsetAsync (grad_bias)");
    return;
  }
  if (p.T_out == 0) {  // nothing reaches X; grad_w and grad_b are empty
    if (run_gx)
      memset_async(grad_x->data, static_cast<size_t>(p.T_in * p.N) * esize, stream, "cudaMemsetAsync (grad_x)");
    return;
  }

  BackwardArgs a{};
  a.grad_spike = grad_spike.data;
  a.x = x.data;
  a.w = w.ptr<const float>();
  a.b = b.ptr<const float>();
  a.N = p.N;
  a.band = make_band(p);
  a.TOB = round_up(a.band.T_out, 4);
  a.GST = row_stride(a.TOB);
  a.alpha = static_cast<float>(p.alpha);
  double* part = want_params ? partials->ptr<double>() : nullptr;
  void* gx = run_gx ? grad_x->data : nullptr;
  const int tb = bucket_of(std::max(p.T_in, p.T_out));
  dispatch_dtype(x.dtype, [&](auto tag) {
    using S = typename decltype(tag)::type;
    dispatch_bucket(tb, [&](auto bucket) {
      backward_launch<S, decltype(bucket)::value>(a, part, gx, p.surrogate, device, stream);
    });
  });
  if (want_params) {
    const int row = static_cast<int>(p.T_out * (p.T_in + 1)), nw = static_cast<int>(p.T_out * p.T_in);
    const unsigned int grid = static_cast<unsigned int>((row + kThreads - 1) / kThreads);
    psn_reduce_kernel<<<grid, kThreads, 0, stream>>>(part, psn_num_partitions(p.N), row, nw,
                                                     grad_w ? grad_w->ptr<float>() : nullptr,
                                                     grad_b ? grad_b->ptr<float>() : nullptr);
    check_launch("the PSN grad_weight/grad_bias reduction kernel");
  }
}

}  // namespace spikeforge
