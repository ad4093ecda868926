// CPU kernels of spike_linear (csrc/core/spike.h): forward and grad_weight run the tile kernels of
// spike_tiles_cpu.h over the active-input lists of the input rows; the masked grad_input runs them in
// reverse over the mask's lists.
#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "core/spike.h"
#include "cpu/cpu_common.h"
#include "cpu/spike_events_cpu.h"
#include "cpu/spike_tiles_cpu.h"

namespace spikeforge {
namespace {

using namespace cpu;

template <typename T>
void linear_forward_impl(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                         int nthreads) {
  const int64_t M = s.shape[0], K = s.shape[1], N = w.shape[0];
  if (M == 0 || N == 0) return;
  const ActiveLists<T> a = build_lists<T>(nullptr, s.ptr<T>(), M, K, nthreads);
  gather_forward(a, w.ptr<T>(), bias ? bias->ptr<T>() : nullptr, y.ptr<T>(), M, N, K, RowLayout{N, 0}, nthreads);
}

template <typename T>
void linear_grad_weight_impl(const TensorView* bits, const TensorView* s, const TensorView& grad_y,
                             const TensorView& grad_w, int nthreads) {
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = grad_w.shape[1];
  if (N == 0 || K == 0) return;
  const ActiveLists<T> a =
      build_lists<T>(bits ? bits->ptr<int64_t>() : nullptr, s ? s->ptr<T>() : nullptr, M, K, nthreads);
  scatter_grad_weight(a, grad_y.ptr<T>(), grad_w.ptr<T>(), M, N, K, RowLayout{N, 0}, nthreads);
}

// Masked grad_input: the forward's tiles in reverse. For a tile of 16 output features (W transposed
// into L2, as in the forward) every masked entry (m, k) adds the 16-term dot product of grad_y[m, n0:n0+16]
// and the tile's line k to its accumulator. The accumulators are one float per masked entry (compact:
// 4 bytes x nnz, L2-resident next to the tile), one set per fixed partition of the tiles; the partitions
// are summed in order at the end, so the result does not depend on the thread count.
template <typename T>
inline T dot_tile(const T* g, const T* r) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(g), _mm256_load_ps(r));
    v = _mm256_fmadd_ps(_mm256_loadu_ps(g + 8), _mm256_load_ps(r + 8), v);
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
  }
#endif
  T a0 = 0, a1 = 0;
  for (int j = 0; j < kTile; j += 2) {
    a0 += g[j] * r[j];
    a1 += g[j + 1] * r[j + 1];
  }
  return a0 + a1;
}

template <typename T>
void linear_grad_input_masked_impl(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                   const TensorView& grad_s, int nthreads) {
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = w.shape[1];
  T* gs = grad_s.ptr<T>();
  std::fill(gs, gs + M * K, T(0));
  if (M == 0 || K == 0 || N == 0) return;
  const ActiveLists<T> a = build_lists<T>(mask.ptr<int64_t>(), nullptr, M, K, nthreads);
  const int64_t nnz = a.rowptr[M];
  if (nnz == 0) return;
  const int64_t ntiles = (N + kTile - 1) / kTile;
  const int64_t P = std::min<int64_t>(kSpikeMaskedPartitions, ntiles);
  std::vector<T> acc(static_cast<size_t>(P * nnz), T(0));
  const T* wp = w.ptr<T>();
  const T* gy = grad_y.ptr<T>();
  ThreadTiles<T> tiles(nthreads, K * kTile);
#pragma omp parallel num_threads(nthreads) if (P > 1)
  {
    T* buf = tiles.mine();
    alignas(64) T g[kTile];
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < P; ++pi) {
      T* ap = acc.data() + pi * nnz;
      for (int64_t t = ntiles * pi / P; t < ntiles * (pi + 1) / P; ++t) {
        const int64_t n0 = t * kTile, nt = std::min(kTile, N - n0);
        load_tile_transposed(wp, K, n0, nt, buf);
        for (int64_t m = 0; m < M; ++m) {
          const int64_t p0 = a.rowptr[m], p1 = a.rowptr[m + 1];
          if (p0 == p1) continue;
          for (int j = 0; j < kTile; ++j) g[j] = j < nt ? gy[m * N + n0 + j] : T(0);
          for (int64_t p = p0; p < p1; ++p) ap[p] += dot_tile(g, buf + static_cast<int64_t>(a.idx[p]) * kTile);
        }
      }
    }
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t p = a.rowptr[m]; p < a.rowptr[m + 1]; ++p) {
        T sum = T(0);
        for (int64_t pi = 0; pi < P; ++pi) sum += acc[pi * nnz + p];
        gs[m * K + a.idx[p]] = sum;
      }
    }
  }
}

}  // namespace

void spike_linear_forward_cpu(const TensorView& s, const TensorView& w, const TensorView* bias,
                              const TensorView& y, const TensorView* wt, const ExecConfig& ex) {
  check_spike_linear_forward_args(s, w, bias, y, wt);
  dispatch_f32_f64(s.dtype, "s", [&](auto t) { linear_forward_impl<decltype(t)>(s, w, bias, y, threads_of(ex)); });
}

void spike_linear_grad_weight_cpu(const TensorView* bits, const TensorView* s, const TensorView& grad_y,
                                  const TensorView& grad_w, const TensorView* ws, const ExecConfig& ex) {
  check_spike_linear_grad_weight_args(bits, s, grad_y, grad_w, ws);
  dispatch_f32_f64(grad_y.dtype, "grad_out",
                   [&](auto t) { linear_grad_weight_impl<decltype(t)>(bits, s, grad_y, grad_w, threads_of(ex)); });
}

void spike_linear_grad_input_masked_cpu(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                        const TensorView& grad_s, const TensorView* ws, const ExecConfig& ex) {
  check_spike_linear_grad_input_masked_args(mask, grad_y, w, grad_s, ws);
  dispatch_f32_f64(grad_y.dtype, "grad_out", [&](auto t) {
    linear_grad_input_masked_impl<decltype(t)>(mask, grad_y, w, grad_s, threads_of(ex));
  });
}

}  // namespace spikeforge
