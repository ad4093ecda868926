// Kernel body (cpu/isa_variants_cpu.h: compiled once per instruction-set variant; spike_linear_cpu.cpp
// checks the arguments and calls a variant's entry points at the end of this file). spike_linear
// (csrc/core/spike.h): forward and grad_weight run the tile kernels of spike_tiles_cpu.h over the
// active-input lists of the input rows; the masked grad_input runs them in reverse over the mask's lists.
// Each has a fix-up pass for non-finite values (csrc/core/spike.h "Non-finite values") that runs only when
// the kernel met an inf or NaN.
#include "cpu/spike_events_cpu.h"
#include "cpu/spike_tiles_cpu.h"

template <typename T>
constexpr T kNaN = std::numeric_limits<T>::quiet_NaN();

// Whether input k of row m is zero: from the packed event bits, or from the values.
template <typename T>
inline bool zero_input(const int64_t* bits, const T* s, int64_t m, int64_t K, int64_t k) {
  if (bits) return ((static_cast<uint64_t>(bits[m * spike_words(K) + (k >> 6)]) >> (k & 63)) & 1u) == 0;
  return s[m * K + k] == T(0);
}

// Forward fix-up: y[m, n] = NaN where a non-finite w[n, k] meets a zero s[m, k] (0 * inf = NaN in the dense
// product; the event sum skipped it). Products with active inputs are in the event sum already. Output
// features over the threads (disjoint columns of y).
template <typename T>
void linear_forward_nonfinite(const T* s, const T* w, T* y, int64_t M, int64_t N, int64_t K, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 16)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      if (std::isfinite(w[n * K + k])) continue;
      for (int64_t m = 0; m < M; ++m)
        if (s[m * K + k] == T(0)) y[m * N + n] = kNaN<T>;
    }
  }
}

template <typename T>
void linear_forward_impl(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                         int nthreads) {
  const int64_t M = s.shape[0], K = s.shape[1], N = w.shape[0];
  if (M == 0 || N == 0) return;
  const ActiveLists<T> a = build_lists<T>(nullptr, nullptr, s.ptr<T>(), M, K, nthreads);
  if (!gather_forward(a, w.ptr<T>(), bias ? bias->ptr<T>() : nullptr, y.ptr<T>(), M, N, K, RowLayout{N, 0}, nthreads))
    linear_forward_nonfinite(s.ptr<T>(), w.ptr<T>(), y.ptr<T>(), M, N, K, nthreads);
}

// grad_weight fix-up: grad_w[n, k] = NaN where a non-finite grad_y[m, n] meets a zero input (m, k).
template <typename T>
void linear_grad_weight_nonfinite(const int64_t* bits, const T* s, const T* gy, T* gw, int64_t M, int64_t N, int64_t K,
                                  int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 16)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t m = 0; m < M; ++m) {
      if (std::isfinite(gy[m * N + n])) continue;
      for (int64_t k = 0; k < K; ++k)
        if (zero_input(bits, s, m, K, k)) gw[n * K + k] = kNaN<T>;
    }
  }
}

template <typename T>
void linear_grad_weight_impl(const TensorView* bits, const TensorView* signs, const TensorView* s,
                             const TensorView& grad_y, const TensorView& grad_w, int nthreads) {
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = grad_w.shape[1];
  if (N == 0 || K == 0) return;
  const int64_t* bp = bits ? bits->ptr<int64_t>() : nullptr;
  const T* sp = s ? s->ptr<T>() : nullptr;
  const ActiveLists<T> a = build_lists<T>(bp, signs ? signs->ptr<int64_t>() : nullptr, sp, M, K, nthreads);
  if (!scatter_grad_weight(a, grad_y.ptr<T>(), grad_w.ptr<T>(), M, N, K, RowLayout{N, 0}, nthreads))
    linear_grad_weight_nonfinite(bp, sp, grad_y.ptr<T>(), grad_w.ptr<T>(), M, N, K, nthreads);
}

// Masked grad_input: the forward's tiles in reverse. For a tile of 16 output features (W transposed
// into L2, as in the forward) every masked entry (m, k) adds the 16-term dot product of grad_y[m, n0:n0+16]
// and the tile's line k to its accumulator. The accumulators are one float per masked entry (compact:
// 4 bytes x nnz, L2-resident next to the tile), one set per fixed partition of the tiles; the partitions
// are summed in order at the end, so the result does not depend on the thread count.
template <typename T>
inline T dot_tile(const T* g, const T* r) {
#if SF_ISA_AVX2
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

// Masked grad_input fix-up. The dense op masks by multiplying, (grad_y W) * mask, so an entry outside the
// mask is 0 * (grad_y W)[m, k]: NaN where that product is not finite, which is exactly where row m of grad_y
// or column k of W holds an inf or NaN (each such term is inf or NaN whatever the other factor). Entries
// inside the mask hold the full dot product already.
template <typename T>
void linear_grad_input_masked_nonfinite(const int64_t* mask, const T* gy, const T* w, T* gs, int64_t M, int64_t N,
                                        int64_t K, int nthreads) {
  std::vector<char> row_bad(static_cast<size_t>(M)), col_bad(static_cast<size_t>(K));
#pragma omp parallel num_threads(nthreads)
  {
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      bool bad = false;
      for (int64_t n = 0; n < N; ++n) bad |= !std::isfinite(gy[m * N + n]);
      row_bad[m] = bad;
    }
#pragma omp for schedule(static)
    for (int64_t k = 0; k < K; ++k) {
      bool bad = false;
      for (int64_t n = 0; n < N; ++n) bad |= !std::isfinite(w[n * K + k]);
      col_bad[k] = bad;
    }
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < K; ++k)
        if ((row_bad[m] || col_bad[k]) && zero_input<T>(mask, nullptr, m, K, k)) gs[m * K + k] = kNaN<T>;
    }
  }
}

template <typename T>
void linear_grad_input_masked_impl(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                   const TensorView& grad_s, int nthreads) {
  const int64_t M = grad_y.shape[0], N = grad_y.shape[1], K = w.shape[1];
  T* gs = grad_s.ptr<T>();
  std::fill(gs, gs + M * K, T(0));
  if (M == 0 || K == 0 || N == 0) return;
  const T* wp = w.ptr<T>();
  const T* gy = grad_y.ptr<T>();
  const ActiveLists<T> a = build_lists<T>(mask.ptr<int64_t>(), nullptr, nullptr, M, K, nthreads);
  const int64_t nnz = a.rowptr[M];
  if (nnz == 0) {  // nothing to compute inside the mask; outside it the dense op can still give NaN
    linear_grad_input_masked_nonfinite(mask.ptr<int64_t>(), gy, wp, gs, M, N, K, nthreads);
    return;
  }
  const int64_t ntiles = (N + kTile - 1) / kTile;
  const int64_t P = std::min<int64_t>(kSpikeMaskedPartitions, ntiles);
  std::vector<T> acc(static_cast<size_t>(P * nnz), T(0));
  ThreadBuffers<T> tiles(nthreads, K * kTile);
  TaskFlags finite(P);  // every weight and every grad_y value passes through the loop below
#pragma omp parallel num_threads(nthreads) if (P > 1)
  {
    T* buf = tiles.mine();
    alignas(64) T g[kTile];
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < P; ++pi) {
      T* ap = acc.data() + pi * nnz;
      bool part_finite = true;
      for (int64_t t = ntiles * pi / P; t < ntiles * (pi + 1) / P; ++t) {
        const int64_t n0 = t * kTile, nt = std::min(kTile, N - n0);
        const bool tile_finite = load_tile_transposed(wp, K, n0, nt, buf);
        FiniteRows<T> rows_finite;  // every row, also those without masked entries (their grad_s can be NaN)
        for (int64_t m = 0; m < M; ++m) {
          const int64_t p0 = a.rowptr[m], p1 = a.rowptr[m + 1];
          for (int j = 0; j < kTile; ++j) g[j] = j < nt ? gy[m * N + n0 + j] : T(0);
          rows_finite.add(g);
          for (int64_t p = p0; p < p1; ++p) ap[p] += dot_tile(g, buf + static_cast<int64_t>(a.idx[p]) * kTile);
        }
        part_finite = part_finite && tile_finite && rows_finite.finite();
      }
      finite.set(pi, part_finite);
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
  if (!finite.all()) linear_grad_input_masked_nonfinite(mask.ptr<int64_t>(), gy, wp, gs, M, N, K, nthreads);
}

// The variant's entry points, one per dtype dispatch.
void linear_forward(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                    int nthreads) {
  dispatch_f32_f64(s.dtype, "s", [&](auto t) { linear_forward_impl<decltype(t)>(s, w, bias, y, nthreads); });
}

void linear_grad_weight(const TensorView* bits, const TensorView* signs, const TensorView* s, const TensorView& grad_y,
                        const TensorView& grad_w, int nthreads) {
  dispatch_f32_f64(grad_y.dtype, "grad_out",
                   [&](auto t) { linear_grad_weight_impl<decltype(t)>(bits, signs, s, grad_y, grad_w, nthreads); });
}

void linear_grad_input_masked(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                              const TensorView& grad_s, int nthreads) {
  dispatch_f32_f64(grad_y.dtype, "grad_out",
                   [&](auto t) { linear_grad_input_masked_impl<decltype(t)>(mask, grad_y, w, grad_s, nthreads); });
}
