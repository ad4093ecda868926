// CPU kernels of the spike-propagation family (csrc/core/spike.h).
//
// Linear: the gather-accumulate wants W's column W[:, k] as a contiguous vector, but W is [N, K]
// row-major and transposing all of it costs more than the sparse product (a 4096 x 4096 float32
// transpose took 34 ms on 2 EPYC cores, the dense GEMM 117 ms). So the kernels work on tiles of
// kTile = 16 output features: a thread transposes W[n0:n0+16, :] into a [K, 16] buffer (256 KiB at
// K = 4096: it stays in L2), then for every row m adds one 64-byte line of that buffer per active
// input. W is read from memory exactly once, and each event costs one cache line. grad_weight is the
// mirror image: the tile accumulates [K, 16] from 16 columns of grad_y, then is written back
// transposed. Active inputs are listed once per call (CSR: row offsets, column indices, values),
// found 64 elements at a time with a bit mask and count-trailing-zeros.
//
// Conv2d (groups == 1): the same tile kernels on the implicit im2col matrix, whose rows are (sample, output
// pixel) and whose columns are (input channel, kernel tap): the lists are built straight from the events
// (see build_conv_lists), never as a dense im2col. Grouped convs (and lists too large to hold) take scatter
// kernels: each active input (ci, y, x) adds one W vector per tap into a channels-last output buffer, one
// input channel at a time over a block of samples (its weights stay in L1), and grad_weight is the mirror
// image over a channels-last copy of grad_y. Every sum runs in a fixed order: results do not depend on the
// thread count.
#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "core/spike.h"
#include "cpu/cpu_common.h"

namespace spikeforge {
namespace {

using cpu::threads_of;

constexpr int64_t kTile = 16;  // output features per tile: one 64-byte line of float32

// ---- finding the active inputs of a row --------------------------------------------------------

// Bit j set where p[j] != 0 (NaN counts as non-zero), j < n <= 64. With AVX2 a full float32 chunk
// is 8 compares + movemasks instead of 64 scalar compares and shifts.
template <typename T>
inline uint64_t nonzero_mask(const T* p, int64_t n) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    if (n == 64) {
      uint64_t m = 0;
      const __m256 z = _mm256_setzero_ps();
      for (int j = 0; j < 8; ++j) {
        const __m256 v = _mm256_loadu_ps(p + 8 * j);
        m |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, z, _CMP_NEQ_UQ))) << (8 * j);
      }
      return m;
    }
  }
#endif
  uint64_t m = 0;
  for (int64_t j = 0; j < n; ++j) m |= static_cast<uint64_t>(p[j] != T(0)) << j;
  return m;
}

// Bit j set where p[j] is 0 or 1.
template <typename T>
inline uint64_t binary_mask(const T* p, int64_t n) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    if (n == 64) {
      uint64_t m = 0;
      const __m256 z = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
      for (int j = 0; j < 8; ++j) {
        const __m256 v = _mm256_loadu_ps(p + 8 * j);
        const __m256 ok = _mm256_or_ps(_mm256_cmp_ps(v, z, _CMP_EQ_OQ), _mm256_cmp_ps(v, one, _CMP_EQ_OQ));
        m |= static_cast<uint64_t>(_mm256_movemask_ps(ok)) << (8 * j);
      }
      return m;
    }
  }
#endif
  uint64_t m = 0;
  for (int64_t j = 0; j < n; ++j) m |= static_cast<uint64_t>(p[j] == T(0) || p[j] == T(1)) << j;
  return m;
}

// Calls f(k, value) for each non-zero of row[0..K), in increasing k.
template <typename T, typename F>
inline void for_each_nonzero(const T* row, int64_t K, F&& f) {
  for (int64_t k0 = 0; k0 < K; k0 += 64) {
    const int64_t n = std::min<int64_t>(64, K - k0);
    uint64_t mask = nonzero_mask(row + k0, n);
    while (mask) {
      const int j = __builtin_ctzll(mask);
      mask &= mask - 1;
      f(k0 + j, row[k0 + j]);
    }
  }
}

// Calls f(k, 1) for each set bit of a packed row of `words` 64-bit words.
template <typename T, typename F>
inline void for_each_bit(const int64_t* words, int64_t nwords, F&& f) {
  for (int64_t w = 0; w < nwords; ++w) {
    uint64_t mask = static_cast<uint64_t>(words[w]);
    while (mask) {
      const int j = __builtin_ctzll(mask);
      mask &= mask - 1;
      f(w * 64 + j, T(1));
    }
  }
}

// std::allocator whose value-initialising construct (what vector::resize calls) leaves trivial types
// uninitialised: the lists are filled completely right after, and zeroing them first was a full extra
// pass over up to hundreds of MB.
template <typename T>
struct NoInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = NoInitAllocator<U>;
  };
  NoInitAllocator() = default;
  template <typename U>
  NoInitAllocator(const NoInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* ptr) noexcept {
    ::new (static_cast<void*>(ptr)) U;
  }
  template <typename U, typename... Args>
  void construct(U* ptr, Args&&... args) {
    ::new (static_cast<void*>(ptr)) U(std::forward<Args>(args)...);
  }
};

// Active inputs of a [R, K] input as CSR; binary says every value is 1 (then vals stays empty).
template <typename T>
struct ActiveLists {
  std::vector<int64_t> rowptr;
  std::vector<int32_t, NoInitAllocator<int32_t>> idx;  // every entry is written by the builder: no zeroing
  std::vector<T, NoInitAllocator<T>> vals;
  bool binary = true;
};

template <typename T>
ActiveLists<T> build_lists(const int64_t* bits, const T* s, int64_t R, int64_t K, int nthreads) {
  ActiveLists<T> a;
  a.rowptr.assign(R + 1, 0);
  const int64_t nwords = spike_words(K);
  // pass 1: counts per row (popcount of the packed words, or non-zeros of the values)
#pragma omp parallel for num_threads(nthreads) schedule(static) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    int64_t c = 0;
    if (bits) {
      for (int64_t w = 0; w < nwords; ++w) c += __builtin_popcountll(static_cast<uint64_t>(bits[r * nwords + w]));
    } else {
      const T* row = s + r * K;
      for (int64_t k = 0; k < K; ++k) c += row[k] != T(0);
    }
    a.rowptr[r + 1] = c;
  }
  for (int64_t r = 0; r < R; ++r) a.rowptr[r + 1] += a.rowptr[r];
  a.idx.resize(a.rowptr[R]);
  if (!bits) {
    a.vals.resize(a.rowptr[R]);
    a.binary = false;
  }
  // pass 2: fill
#pragma omp parallel for num_threads(nthreads) schedule(static) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    int64_t p = a.rowptr[r];
    if (bits) {
      for_each_bit<T>(bits + r * nwords, nwords, [&](int64_t k, T) { a.idx[p++] = static_cast<int32_t>(k); });
    } else {
      for_each_nonzero(s + r * K, K, [&](int64_t k, T v) {
        a.idx[p] = static_cast<int32_t>(k);
        a.vals[p++] = v;
      });
    }
  }
  // Values that are all 1 take the add-only inner loop.
  if (!bits) {
    bool all_one = true;
    for (const T& v : a.vals) all_one &= (v == T(1));
    if (all_one) {
      a.vals.clear();
      a.binary = true;
    }
  }
  return a;
}

// ---- pack / unpack -----------------------------------------------------------------------------

template <typename T>
void pack_impl(const TensorView& s, const TensorView& bits, const TensorView& info, int nthreads) {
  const int64_t R = s.shape[0], K = s.shape[1], nwords = spike_words(K);
  const T* sp = s.ptr<T>();
  int64_t* bp = bits.ptr<int64_t>();
  int64_t nnz = 0, kind = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : nnz) reduction(max : kind) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    const T* row = sp + r * K;
    for (int64_t w = 0; w < nwords; ++w) {
      const int64_t k0 = w * 64, n = std::min<int64_t>(64, K - k0);
      const uint64_t mask = nonzero_mask(row + k0, n);
      int64_t kmax = 0;
      const uint64_t full = n == 64 ? ~uint64_t(0) : ((uint64_t(1) << n) - 1);
      // the common case, all 0 / 1, costs two vector compares; only other chunks are classified
      if (binary_mask(row + k0, n) != full) {
        for (int64_t j = 0; j < n; ++j) {
        const T v = row[k0 + j];
        // 0 / 1: binary; integer in [0, 255]: counts; anything else (negative, fractional, NaN): other
        const int64_t c = (v == T(0) || v == T(1)) ? 0
                          : (v > T(0) && v <= T(kMaxSpikeCount) && v == static_cast<T>(static_cast<int64_t>(v))) ? 1
                                                                                                                 : 2;
        kmax = std::max(kmax, c);
        }
      }
      bp[r * nwords + w] = static_cast<int64_t>(mask);
      nnz += __builtin_popcountll(mask);
      kind = std::max(kind, kmax);
    }
  }
  info.ptr<int64_t>()[0] = nnz;
  info.ptr<int64_t>()[1] = kind;
}

template <typename T>
void unpack_impl(const TensorView& bits, const TensorView& out, int nthreads) {
  const int64_t R = out.shape[0], K = out.shape[1], nwords = spike_words(K);
  const int64_t* bp = bits.ptr<int64_t>();
  T* op = out.ptr<T>();
#pragma omp parallel for num_threads(nthreads) schedule(static) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      op[r * K + k] = static_cast<T>((static_cast<uint64_t>(bp[r * nwords + (k >> 6)]) >> (k & 63)) & 1u);
    }
  }
}

// ---- linear ------------------------------------------------------------------------------------

// A 64-byte aligned scratch buffer: tile rows are whole cache lines (aligned AVX loads).
template <typename T>
struct AlignedBuf {
  std::vector<T> v;
  T* p;
  explicit AlignedBuf(int64_t n) : v(static_cast<size_t>(n + 64 / sizeof(T))) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(v.data());
    p = v.data() + ((64 - a % 64) % 64) / sizeof(T);
  }
  T* data() { return p; }
};

// One tile buffer of `each` elements per thread, allocated before a parallel region (an allocation that
// fails inside one ends the process instead of raising). `each` is a multiple of kTile, so every slice
// stays 64-byte aligned.
template <typename T>
struct ThreadTiles {
  AlignedBuf<T> buf;
  int64_t each;
  ThreadTiles(int nthreads, int64_t each_) : buf(static_cast<int64_t>(nthreads) * each_), each(each_) {}
  T* mine() { return buf.data() + static_cast<int64_t>(cpu::thread_index()) * each; }
};

// buf[k * kTile + j] = w[(n0 + j) * K + k] for j < nt, 0 for nt <= j < kTile.
#if defined(__AVX2__)
// In-register 8 x 8 float transpose: rows r[i] = src + i * ld (8 floats each) -> dst + i * ldd.
inline void transpose8x8(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld), r2 = _mm256_loadu_ps(src + 2 * ld),
         r3 = _mm256_loadu_ps(src + 3 * ld), r4 = _mm256_loadu_ps(src + 4 * ld), r5 = _mm256_loadu_ps(src + 5 * ld),
         r6 = _mm256_loadu_ps(src + 6 * ld), r7 = _mm256_loadu_ps(src + 7 * ld);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
         u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
         u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
         u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

template <typename T>
void load_tile_transposed(const T* w, int64_t K, int64_t n0, int64_t nt, T* buf) {
#if defined(__AVX2__)
  // The scalar transpose cost more than the whole sparse product (48 ms of 72 at 5% firing):
  // 8 x 8 register transposes, for full tiles; the remainder of K goes through the scalar loop.
  int64_t kdone = 0;
  if constexpr (std::is_same_v<T, float>) {
    if (nt == kTile) {
      kdone = K / 8 * 8;
      for (int64_t k0 = 0; k0 < kdone; k0 += 8) {
        transpose8x8(w + n0 * K + k0, K, buf + k0 * kTile, kTile);
        transpose8x8(w + (n0 + 8) * K + k0, K, buf + k0 * kTile + 8, kTile);
      }
    }
  }
#else
  const int64_t kdone = 0;
#endif
  constexpr int64_t kb = 16;
  for (int64_t k0 = kdone; k0 < K; k0 += kb) {
    const int64_t kn = std::min(kb, K - k0);
    for (int64_t j = 0; j < kTile; ++j) {
      if (j < nt) {
        const T* src = w + (n0 + j) * K + k0;
        for (int64_t kk = 0; kk < kn; ++kk) buf[(k0 + kk) * kTile + j] = src[kk];
      } else {
        for (int64_t kk = 0; kk < kn; ++kk) buf[(k0 + kk) * kTile + j] = T(0);
      }
    }
  }
}

// acc[0..kTile) += sum over the row's events of (value *) buf[idx]. Four independent accumulators hide
// the latency of the adds (a fixed order: the result does not depend on the thread count).
template <typename T, bool kBinary>
inline void gather_row(const int32_t* idx, const T* vals, int64_t n, const T* buf, T* acc) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float> && kTile == 16) {
    // 8 independent ymm accumulators (4 events in flight x 2 halves of the 16-float line)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
    int64_t p = 0;
    for (; p + 4 <= n; p += 4) {
      const float* r0 = buf + static_cast<int64_t>(idx[p]) * kTile;
      const float* r1 = buf + static_cast<int64_t>(idx[p + 1]) * kTile;
      const float* r2 = buf + static_cast<int64_t>(idx[p + 2]) * kTile;
      const float* r3 = buf + static_cast<int64_t>(idx[p + 3]) * kTile;
      if constexpr (kBinary) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(r0)); a1 = _mm256_add_ps(a1, _mm256_load_ps(r0 + 8));
        b0 = _mm256_add_ps(b0, _mm256_load_ps(r1)); b1 = _mm256_add_ps(b1, _mm256_load_ps(r1 + 8));
        c0 = _mm256_add_ps(c0, _mm256_load_ps(r2)); c1 = _mm256_add_ps(c1, _mm256_load_ps(r2 + 8));
        d0 = _mm256_add_ps(d0, _mm256_load_ps(r3)); d1 = _mm256_add_ps(d1, _mm256_load_ps(r3 + 8));
      } else {
        const __m256 v0 = _mm256_set1_ps(vals[p]), v1 = _mm256_set1_ps(vals[p + 1]);
        const __m256 v2 = _mm256_set1_ps(vals[p + 2]), v3 = _mm256_set1_ps(vals[p + 3]);
        a0 = _mm256_fmadd_ps(v0, _mm256_load_ps(r0), a0); a1 = _mm256_fmadd_ps(v0, _mm256_load_ps(r0 + 8), a1);
        b0 = _mm256_fmadd_ps(v1, _mm256_load_ps(r1), b0); b1 = _mm256_fmadd_ps(v1, _mm256_load_ps(r1 + 8), b1);
        c0 = _mm256_fmadd_ps(v2, _mm256_load_ps(r2), c0); c1 = _mm256_fmadd_ps(v2, _mm256_load_ps(r2 + 8), c1);
        d0 = _mm256_fmadd_ps(v3, _mm256_load_ps(r3), d0); d1 = _mm256_fmadd_ps(v3, _mm256_load_ps(r3 + 8), d1);
      }
    }
    for (; p < n; ++p) {
      const float* r0 = buf + static_cast<int64_t>(idx[p]) * kTile;
      const __m256 v0 = _mm256_set1_ps(kBinary ? 1.0f : vals[p]);
      a0 = _mm256_fmadd_ps(v0, _mm256_load_ps(r0), a0); a1 = _mm256_fmadd_ps(v0, _mm256_load_ps(r0 + 8), a1);
    }
    const __m256 lo = _mm256_add_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(c0, d0));
    const __m256 hi = _mm256_add_ps(_mm256_add_ps(a1, b1), _mm256_add_ps(c1, d1));
    _mm256_storeu_ps(acc, _mm256_add_ps(_mm256_loadu_ps(acc), lo));
    _mm256_storeu_ps(acc + 8, _mm256_add_ps(_mm256_loadu_ps(acc + 8), hi));
    return;
  }
#endif
  T a0[kTile] = {}, a1[kTile] = {}, a2[kTile] = {}, a3[kTile] = {};
  int64_t p = 0;
  for (; p + 4 <= n; p += 4) {
    const T* r0 = buf + static_cast<int64_t>(idx[p]) * kTile;
    const T* r1 = buf + static_cast<int64_t>(idx[p + 1]) * kTile;
    const T* r2 = buf + static_cast<int64_t>(idx[p + 2]) * kTile;
    const T* r3 = buf + static_cast<int64_t>(idx[p + 3]) * kTile;
    if constexpr (kBinary) {
      for (int j = 0; j < kTile; ++j) { a0[j] += r0[j]; a1[j] += r1[j]; a2[j] += r2[j]; a3[j] += r3[j]; }
    } else {
      const T v0 = vals[p], v1 = vals[p + 1], v2 = vals[p + 2], v3 = vals[p + 3];
      for (int j = 0; j < kTile; ++j) {
        a0[j] += v0 * r0[j]; a1[j] += v1 * r1[j]; a2[j] += v2 * r2[j]; a3[j] += v3 * r3[j];
      }
    }
  }
  for (; p < n; ++p) {
    const T* r0 = buf + static_cast<int64_t>(idx[p]) * kTile;
    const T v0 = kBinary ? T(1) : vals[p];
    for (int j = 0; j < kTile; ++j) a0[j] += v0 * r0[j];
  }
  for (int j = 0; j < kTile; ++j) acc[j] += (a0[j] + a1[j]) + (a2[j] + a3[j]);
}

// Rows of an output (forward) or of grad_y (grad_weight) as strided vectors: feature n of row m sits at
// base(m) + n * stride. Linear: [M, N] row-major. Conv: NCHW with m = (sample, output pixel), so one row
// is a pixel's Cout values, npix apart.
struct RowLayout {
  int64_t N = 0, npix = 0;  // npix == 0: linear rows
  int64_t base(int64_t m) const { return npix ? (m / npix) * N * npix + m % npix : m * N; }
  int64_t stride() const { return npix ? npix : 1; }
};

// Y[m, :] = bias + sum over the active inputs of row m of value * W[:, k], for W [N, K] row-major.
template <typename T>
void gather_forward(const ActiveLists<T>& a, const T* wp, const T* bp, T* yp, int64_t M, int64_t N, int64_t K,
                    RowLayout rows, int nthreads) {
  const int64_t ntiles = (N + kTile - 1) / kTile, ys = rows.stride();
  // With fewer 16-feature tiles than threads the rows are split too (every output element is still summed
  // by one task, in the same order: the result does not depend on the split).
  const int64_t nrb = ntiles >= nthreads ? 1 : std::max<int64_t>(1, std::min((nthreads + ntiles - 1) / ntiles, M / 64));
  const int64_t rows_per = (M + nrb - 1) / nrb;
  ThreadTiles<T> tiles(nthreads, std::max<int64_t>(K, 1) * kTile);
#pragma omp parallel num_threads(nthreads) if (ntiles * nrb > 1)
  {
    T* buf = tiles.mine();
#pragma omp for schedule(static)
    for (int64_t task = 0; task < ntiles * nrb; ++task) {
      const int64_t t = task / nrb, m0 = task % nrb * rows_per, m1 = std::min(M, m0 + rows_per);
      const int64_t n0 = t * kTile, nt = std::min(kTile, N - n0);
      load_tile_transposed(wp, K, n0, nt, buf);
      for (int64_t m = m0; m < m1; ++m) {
        T acc[kTile];
        for (int j = 0; j < kTile; ++j) acc[j] = (bp && j < nt) ? bp[n0 + j] : T(0);
        const int64_t p0 = a.rowptr[m], n = a.rowptr[m + 1] - p0;
        if (a.binary) {
          gather_row<T, true>(a.idx.data() + p0, nullptr, n, buf, acc);
        } else {
          gather_row<T, false>(a.idx.data() + p0, a.vals.data() + p0, n, buf, acc);
        }
        T* out = yp + rows.base(m) + n0 * ys;
        for (int64_t j = 0; j < nt; ++j) out[j * ys] = acc[j];
      }
    }
  }
}

template <typename T>
void linear_forward_impl(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                         int nthreads) {
  const int64_t M = s.shape[0], K = s.shape[1], N = w.shape[0];
  if (M == 0 || N == 0) return;
  const ActiveLists<T> a = build_lists<T>(nullptr, s.ptr<T>(), M, K, nthreads);
  gather_forward(a, w.ptr<T>(), bias ? bias->ptr<T>() : nullptr, y.ptr<T>(), M, N, K, RowLayout{N, 0}, nthreads);
}

// grad_W[n, k] = sum over the rows m where input k is active of value * grad_y[m, n]; grad_W [N, K].
template <typename T>
void scatter_grad_weight(const ActiveLists<T>& a, const T* gy, T* gw, int64_t M, int64_t N, int64_t K,
                         RowLayout rows, int nthreads) {
  const int64_t ntiles = (N + kTile - 1) / kTile, gs = rows.stride();
  // split over the 16-feature tiles only: splitting the rows would need per-split partial sums, whose count
  // (and so the summation order) would depend on the thread count
  ThreadTiles<T> tiles(nthreads, K * kTile);
#pragma omp parallel num_threads(nthreads) if (ntiles > 1)
  {
    T* buf = tiles.mine();
#pragma omp for schedule(static)
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t n0 = t * kTile, nt = std::min(kTile, N - n0);
      std::fill(buf, buf + K * kTile, T(0));
      for (int64_t m = 0; m < M; ++m) {
        T g[kTile];
        const T* grow = gy + rows.base(m) + n0 * gs;
        for (int j = 0; j < kTile; ++j) g[j] = j < nt ? grow[j * gs] : T(0);
        const int64_t p0 = a.rowptr[m], p1 = a.rowptr[m + 1];
#if defined(__AVX2__)
        if constexpr (std::is_same_v<T, float>) {
          // one aligned 64-byte line read-modify-written per event (explicit: GCC kept it scalar)
          const __m256 g0 = _mm256_loadu_ps(g), g1 = _mm256_loadu_ps(g + 8);
          for (int64_t p = p0; p < p1; ++p) {
            float* r = buf + static_cast<int64_t>(a.idx[p]) * kTile;
            const __m256 v = _mm256_set1_ps(a.binary ? 1.0f : a.vals[p]);
            _mm256_store_ps(r, _mm256_fmadd_ps(v, g0, _mm256_load_ps(r)));
            _mm256_store_ps(r + 8, _mm256_fmadd_ps(v, g1, _mm256_load_ps(r + 8)));
          }
          continue;
        }
#endif
        for (int64_t p = p0; p < p1; ++p) {
          T* r = buf + static_cast<int64_t>(a.idx[p]) * kTile;
          if (a.binary) {
            for (int j = 0; j < kTile; ++j) r[j] += g[j];
          } else {
            const T v = a.vals[p];
            for (int j = 0; j < kTile; ++j) r[j] += v * g[j];
          }
        }
      }
      // write back transposed: grad_w[n0 + j, k] = buf[k, j] (8 x 8 register transposes, then blocks of 16 k)
      int64_t kdone = 0;
#if defined(__AVX2__)
      if constexpr (std::is_same_v<T, float>) {
        if (nt == kTile) {
          kdone = K / 8 * 8;
          for (int64_t k0 = 0; k0 < kdone; k0 += 8) {
            transpose8x8(buf + k0 * kTile, kTile, gw + n0 * K + k0, K);
            transpose8x8(buf + k0 * kTile + 8, kTile, gw + (n0 + 8) * K + k0, K);
          }
        }
      }
#endif
      for (int64_t k0 = kdone; k0 < K; k0 += 16) {
        const int64_t kn = std::min<int64_t>(16, K - k0);
        for (int64_t j = 0; j < nt; ++j) {
          T* dst = gw + (n0 + j) * K + k0;
          for (int64_t kk = 0; kk < kn; ++kk) dst[kk] = buf[(k0 + kk) * kTile + j];
        }
      }
    }
  }
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

// ---- conv2d ------------------------------------------------------------------------------------

// The output taps an input pixel (y, x) feeds: for each (ky, kx) with oy*stride - pad + ky*dil == y.
// Calls f(tap, out_pixel) with tap = ky*kw + kx and out_pixel = oy*Wo + ox. Integer division is
// slow (tens of cycles) and this runs per event and tap: stride 1 skips it.
template <typename F>
inline void for_each_tap(const SpikeConvParams& p, int64_t y, int64_t x, F&& f) {
  const bool unit = p.stride_h == 1 && p.stride_w == 1;
  for (int64_t ky = 0; ky < p.kh; ++ky) {
    const int64_t ny = y + p.pad_h - ky * p.dil_h;
    if (ny < 0) continue;
    int64_t oy = ny;
    if (!unit) {
      if (ny % p.stride_h) continue;
      oy = ny / p.stride_h;
    }
    if (oy >= p.Ho) continue;
    for (int64_t kx = 0; kx < p.kw; ++kx) {
      const int64_t nx = x + p.pad_w - kx * p.dil_w;
      if (nx < 0) continue;
      int64_t ox = nx;
      if (!unit) {
        if (nx % p.stride_w) continue;
        ox = nx / p.stride_w;
      }
      if (ox >= p.Wo) continue;
      f(ky * p.kw + kx, oy * p.Wo + ox);
    }
  }
}

// n <= 64 bits of a packed row starting at bit `off`.
inline uint64_t extract_bits(const int64_t* words, int64_t off, int64_t n) {
  const int64_t w = off >> 6, sh = off & 63;
  uint64_t v = static_cast<uint64_t>(words[w]) >> sh;
  if (sh && sh + n > 64) v |= static_cast<uint64_t>(words[w + 1]) << (64 - sh);
  return n == 64 ? v : (v & ((uint64_t(1) << n) - 1));
}

// Calls f(i, value) for each active input i (index y * W + x) of plane (b, ci), in increasing i. The plane's
// H*W elements are contiguous: they are scanned 64 at a time (a 2x2 map costs one mask, not one per row).
template <typename T, typename F>
inline void for_each_active_index(const int64_t* bits, const T* s, const SpikeConvParams& p, int64_t b, int64_t ci,
                                  F&& f) {
  const int64_t plane = p.H * p.W, base = ci * plane, K = p.Cin * plane;
  const int64_t* words = bits ? bits + b * spike_words(K) : nullptr;
  const T* sb = s ? s + b * K + base : nullptr;
  for (int64_t i0 = 0; i0 < plane; i0 += 64) {
    const int64_t n = std::min<int64_t>(64, plane - i0);
    uint64_t mask = words ? extract_bits(words, base + i0, n) : nonzero_mask(sb + i0, n);
    while (mask) {
      const int64_t i = i0 + __builtin_ctzll(mask);
      mask &= mask - 1;
      f(i, words ? T(1) : sb[i]);
    }
  }
}

// Calls f(y, x, value) for each active input of plane (b, ci) in raster order; (y, x) advance with the
// index (no division).
template <typename T, typename F>
inline void for_each_active_in_plane(const int64_t* bits, const T* s, const SpikeConvParams& p, int64_t b,
                                     int64_t ci, F&& f) {
  int64_t y = 0, row_end = p.W;
  for_each_active_index<T>(bits, s, p, b, ci, [&](int64_t i, T v) {
    while (i >= row_end) {
      ++y;
      row_end += p.W;
    }
    f(y, i - (row_end - p.W), v);
  });
}

// dst[0..n) += v * src[0..n) (v == 1 for spikes: an add, no multiply). Vectorised by the compiler.
template <typename T>
inline void add_row(T* __restrict dst, const T* __restrict src, int64_t n, T v) {
  if (v == T(1)) {
    for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] += v * src[j];
  }
}

// Output channels per tile: the whole group unless there are too few tiles to keep the threads busy.
inline int64_t conv_chunk(int64_t channels, int64_t tiles, int nthreads) {
  int64_t chunks = 1;
  tiles = std::max<int64_t>(tiles, 1);
  if (tiles < 4 * nthreads) chunks = std::min((4 * nthreads + tiles - 1) / tiles, std::max<int64_t>(1, channels / 32));
  const int64_t width = (channels + chunks - 1) / chunks;
  return std::min(channels, (width + 7) / 8 * 8);  // whole AVX registers of float32
}

// The scatter forward loops over input channels outermost within a tile, so one channel's weights
// (taps x Cout/g values) stay in L1 while all of its events are added. Tiles are (block of samples whose
// channels-last output fits kConvBlockBytes) x (output-channel chunk); every output element is summed by
// one tile in a fixed order (input channel, then raster order): results do not depend on the thread count.
constexpr int64_t kConvBlockBytes = 256 * 1024;

template <typename T>
void conv_forward_scatter(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                       const SpikeConvParams& p, int nthreads) {
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, taps = p.kh * p.kw, npix = p.Ho * p.Wo;
  const int64_t C = p.Cout;
  // wt[((ci * taps) + tap) * cout_g + j] = w[g * cout_g + j, ci - g * cin_g, tap]
  std::vector<T> wt(static_cast<size_t>(p.Cin * taps * cout_g));
  const int64_t per_sample = std::max<int64_t>(1, npix * C * static_cast<int64_t>(sizeof(T)));
  const int64_t bt = std::clamp<int64_t>(kConvBlockBytes / per_sample, 1, std::max<int64_t>(p.B, 1));
  const int64_t nsb = (p.B + bt - 1) / bt;
  const int64_t cw0 = conv_chunk(C, nsb, nthreads), nch = (C + cw0 - 1) / cw0;
  std::vector<T> outs(static_cast<size_t>(nthreads) * bt * npix * cw0);  // per-thread channels-last tiles
  const T* wp = w.ptr<T>();
  const T* sp = s.ptr<T>();
  const T* bp = bias ? bias->ptr<T>() : nullptr;
  T* yp = y.ptr<T>();
#pragma omp parallel num_threads(nthreads)
  {
    // per group a [cout_g, cin_g * taps] -> [cin_g * taps, cout_g] transpose, in 16 x 16 blocks: the
    // element-wise loop read W with a stride of cin_g * taps, a cache miss per element (4608 x 512 took
    // longer than the event-driven product itself)
    const int64_t kg = cin_g * taps, nkb = (kg + 15) / 16;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < p.groups * nkb; ++t) {
      const int64_t g = t / nkb, k0 = t % nkb * 16, k1 = std::min(kg, k0 + 16);
      const T* src = wp + g * cout_g * kg;
      T* dst = wt.data() + g * kg * cout_g;
      for (int64_t j0 = 0; j0 < cout_g; j0 += 16) {
        const int64_t j1 = std::min(cout_g, j0 + 16);
        for (int64_t k = k0; k < k1; ++k)
          for (int64_t j = j0; j < j1; ++j) dst[k * cout_g + j] = src[j * kg + k];
      }
    }
    T* out = outs.data() + static_cast<int64_t>(cpu::thread_index()) * bt * npix * cw0;
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < nsb * nch; ++tile) {
      const int64_t b0 = tile / nch * bt, b1 = std::min(p.B, b0 + bt);
      const int64_t c0 = tile % nch * cw0, c1 = std::min(C, c0 + cw0), cw = c1 - c0;
      for (int64_t r = 0; r < (b1 - b0) * npix; ++r)
        for (int64_t j = 0; j < cw; ++j) out[r * cw + j] = bp ? bp[c0 + j] : T(0);
      for (int64_t ci = 0; ci < p.Cin; ++ci) {
        const int64_t g = ci / cin_g, lo = std::max(c0, g * cout_g), hi = std::min(c1, (g + 1) * cout_g);
        if (lo >= hi) continue;  // ci's group has no output channel in this chunk
        const T* wrow = wt.data() + ci * taps * cout_g + (lo - g * cout_g);
        for (int64_t b = b0; b < b1; ++b) {
          T* ob = out + (b - b0) * npix * cw + (lo - c0);
          for_each_active_in_plane<T>(nullptr, sp, p, b, ci, [&](int64_t yy, int64_t xx, T v) {
            for_each_tap(p, yy, xx, [&](int64_t tap, int64_t q) { add_row(ob + q * cw, wrow + tap * cout_g, hi - lo, v); });
          });
        }
      }
      // channels-last -> NCHW, in blocks of 16 pixels
      for (int64_t b = b0; b < b1; ++b) {
        const T* ob = out + (b - b0) * npix * cw;
        T* yb = yp + (b * C + c0) * npix;
        for (int64_t q0 = 0; q0 < npix; q0 += 16) {
          const int64_t qn = std::min<int64_t>(16, npix - q0);
          for (int64_t j = 0; j < cw; ++j)
            for (int64_t qq = 0; qq < qn; ++qq) yb[j * npix + q0 + qq] = ob[(q0 + qq) * cw + j];
        }
      }
    }
  }
}

// Samples per partition of the scatter grad_weight: each partition accumulates into its own copy of the
// weight gradient (a fixed count, not the thread count), summed in order at the end.
constexpr int64_t kConvPartition = 16;

template <typename T>
void conv_grad_weight_scatter(const TensorView* bits, const TensorView* s, const TensorView& grad_y,
                              const TensorView& grad_w, const SpikeConvParams& p, int nthreads) {
  const int64_t cin_g = p.Cin / p.groups, cout_g = p.Cout / p.groups, taps = p.kh * p.kw, npix = p.Ho * p.Wo;
  const int64_t nparts = (p.B + kConvPartition - 1) / kConvPartition, wsize = grad_w.numel();
  const int64_t* bitp = bits ? bits->ptr<int64_t>() : nullptr;
  const T* sp = s ? s->ptr<T>() : nullptr;
  const T* gy = grad_y.ptr<T>();
  T* gw = grad_w.ptr<T>();
  std::vector<T> partials(static_cast<size_t>(nparts * wsize));  // per partition, layout [Cin, taps, cout_g]
  // Per sample, not one input channel over all samples as the forward does: there each channel's events
  // re-read the whole channels-last grad_y (67 MB at [256, 64, 32, 32]) from memory, and forward+backward
  // took about twice as long (bench spikes --op conv, 5% firing).
  // per thread (one thread when there is a single partition): one sample's grad, channels-last
  std::vector<T> gcls(static_cast<size_t>(nparts > 1 ? nthreads : 1) * npix * p.Cout);
#pragma omp parallel num_threads(nthreads) if (nparts > 1)
  {
    T* gcl = gcls.data() + static_cast<int64_t>(cpu::thread_index()) * npix * p.Cout;
#pragma omp for schedule(static)
    for (int64_t pi = 0; pi < nparts; ++pi) {
      T* acc = partials.data() + pi * wsize;
      std::fill(acc, acc + wsize, T(0));
      const int64_t b1 = std::min(p.B, (pi + 1) * kConvPartition);
      for (int64_t b = pi * kConvPartition; b < b1; ++b) {
        const T* gb = gy + b * p.Cout * npix;
        for (int64_t q0 = 0; q0 < npix; q0 += 16) {
          const int64_t qn = std::min<int64_t>(16, npix - q0);
          for (int64_t co = 0; co < p.Cout; ++co)
            for (int64_t qq = 0; qq < qn; ++qq) gcl[(q0 + qq) * p.Cout + co] = gb[co * npix + q0 + qq];
        }
        for (int64_t ci = 0; ci < p.Cin; ++ci) {
          const int64_t g = ci / cin_g;
          T* arow = acc + ci * taps * cout_g;
          for_each_active_in_plane<T>(bitp, sp, p, b, ci, [&](int64_t yy, int64_t xx, T v) {
            for_each_tap(p, yy, xx, [&](int64_t tap, int64_t q) {
              add_row(arow + tap * cout_g, gcl + q * p.Cout + g * cout_g, cout_g, v);
            });
          });
        }
      }
    }
    // fixed-order sum of the partitions, back into the [Cout, Cin/g, kh, kw] layout
#pragma omp for schedule(static)
    for (int64_t ci = 0; ci < p.Cin; ++ci) {
      const int64_t g = ci / cin_g, cl = ci - g * cin_g;
      for (int64_t tap = 0; tap < taps; ++tap)
        for (int64_t j = 0; j < cout_g; ++j) {
          const int64_t src = (ci * taps + tap) * cout_g + j;
          T sum = T(0);
          for (int64_t pi = 0; pi < nparts; ++pi) sum += partials[pi * wsize + src];
          gw[((g * cout_g + j) * cin_g + cl) * taps + tap] = sum;
        }
    }
  }
  if (nparts == 0) std::fill(gw, gw + wsize, T(0));
}

// ---- conv2d as an event-driven linear layer over the implicit im2col (groups == 1) ---------------
// Row m = (sample b, output pixel q) of the im2col matrix has an entry k = ci * taps + tap for every active
// input in q's receptive field: W [Cout, Cin, kh, kw] is then exactly the linear layer's [N, K] and the
// linear tile kernels apply: the forward keeps 16 output channels of W transposed in L2 and accumulates each
// row in registers (no read-modify-write of the output per event), grad_weight accumulates 16 columns of
// grad_y into a [K, 16] tile. The lists are built from the events (each active input appends itself to the
// rows of the taps it feeds), sample by sample in input order, so every row lists its entries in increasing
// k and the sums run in a fixed order. They hold nnz * (taps an input feeds) entries: above
// kConvListLimit the scatter kernels above run instead (no list memory).
constexpr int64_t kConvListLimit = int64_t(1) << 25;  // entries: 128 MiB of int32 indices (+ 128 / 256 MiB of
                                                       // float32 / float64 values for non-binary inputs)

// Grouped convs keep the scatter kernels (one [N, K] matrix per group would be needed), and so do large
// feature maps: the tap table is H * W * taps entries per call whatever the firing rate (a 1024 x 1024 map
// with 2 channels at 0.1% firing took 2.4x (forward) to 5.6x (forward + backward) longer than the scatter
// kernels); the lists pay on small maps with many channels. List entries are int32.
constexpr int64_t kConvListMaxTaps = int64_t(1) << 16;  // H * W * taps: 64 x 64 maps with a 3 x 3 kernel

inline bool conv_lists_apply(const SpikeConvParams& p) {
  return p.groups == 1 && p.H * p.W * p.kh * p.kw <= kConvListMaxTaps && p.Cin * p.kh * p.kw < (int64_t(1) << 31);
}

// The (tap, output pixel) pairs each input pixel feeds, computed once per call for the plane geometry
// (the same for every sample and channel): the list builders then do no index arithmetic per event.
struct TapTable {
  std::vector<int32_t> start, tap, q;  // pixel i's pairs: [start[i], start[i + 1])
  explicit TapTable(const SpikeConvParams& p) {
    const int64_t plane = p.H * p.W;
    start.reserve(plane + 1);
    tap.reserve(plane * p.kh * p.kw);
    q.reserve(plane * p.kh * p.kw);
    start.push_back(0);
    for (int64_t i = 0; i < plane; ++i) {
      for_each_tap(p, i / p.W, i % p.W, [&](int64_t t, int64_t o) {
        tap.push_back(static_cast<int32_t>(t));
        q.push_back(static_cast<int32_t>(o));
      });
      start.push_back(static_cast<int32_t>(tap.size()));
    }
  }
};

template <typename T>
bool build_conv_lists(const int64_t* bits, const T* s, const SpikeConvParams& p, int nthreads, ActiveLists<T>& a) {
  const int64_t npix = p.Ho * p.Wo, taps = p.kh * p.kw, M = p.B * npix;
  const TapTable tt(p);
  const int32_t* ts = tt.start.data();
  const int32_t* tq = tt.q.data();
  const int32_t* ttap = tt.tap.data();
  a.rowptr.assign(M + 1, 0);
  int64_t* count = a.rowptr.data() + 1;
  // pass 1: entries per row, and whether any value differs from 1 (then the values are listed too)
  bool graded = false;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (p.B > 1) reduction(|| : graded)
  for (int64_t b = 0; b < p.B; ++b) {
    int64_t* cb = count + b * npix;
    bool g = false;
    for (int64_t ci = 0; ci < p.Cin; ++ci)
      for_each_active_index<T>(bits, s, p, b, ci, [&](int64_t i, T v) {
        g |= v != T(1);
        for (int32_t e = ts[i]; e < ts[i + 1]; ++e) ++cb[tq[e]];
      });
    graded = graded || g;
  }
  for (int64_t m = 0; m < M; ++m) a.rowptr[m + 1] += a.rowptr[m];
  if (a.rowptr[M] > kConvListLimit) return false;
  a.idx.resize(a.rowptr[M]);
  a.binary = !graded;
  if (graded) a.vals.resize(a.rowptr[M]);
  // pass 2: fill, each sample's rows from its own events (in input order: increasing k within a row).
  // Per-thread row cursors allocated here: an allocation failing inside the parallel region would end the
  // process instead of raising.
  std::vector<int64_t> cursors(static_cast<size_t>(nthreads) * npix);
#pragma omp parallel num_threads(nthreads) if (p.B > 1)
  {
    int64_t* c = cursors.data() + static_cast<int64_t>(cpu::thread_index()) * npix;
    int32_t* idx = a.idx.data();
    T* vals = graded ? a.vals.data() : nullptr;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < p.B; ++b) {
      std::copy(a.rowptr.begin() + b * npix, a.rowptr.begin() + (b + 1) * npix, c);
      for (int64_t ci = 0; ci < p.Cin; ++ci) {
        const int32_t k0 = static_cast<int32_t>(ci * taps);
        for_each_active_index<T>(bits, s, p, b, ci, [&](int64_t i, T v) {
          for (int32_t e = ts[i]; e < ts[i + 1]; ++e) {
            const int64_t at = c[tq[e]]++;
            idx[at] = k0 + ttap[e];
            if (vals) vals[at] = v;
          }
        });
      }
    }
  }
  return true;
}

template <typename T>
void conv_forward(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                  const SpikeConvParams& p, int nthreads) {
  ActiveLists<T> a;
  if (!conv_lists_apply(p) || !build_conv_lists<T>(nullptr, s.ptr<T>(), p, nthreads, a))
    return conv_forward_scatter<T>(s, w, bias, y, p, nthreads);
  gather_forward(a, w.ptr<T>(), bias ? bias->ptr<T>() : nullptr, y.ptr<T>(), p.B * p.Ho * p.Wo, p.Cout,
                 p.Cin * p.kh * p.kw, RowLayout{p.Cout, p.Ho * p.Wo}, nthreads);
}

template <typename T>
void conv_grad_weight(const TensorView* bits, const TensorView* s, const TensorView& grad_y,
                      const TensorView& grad_w, const SpikeConvParams& p, int nthreads) {
  ActiveLists<T> a;
  if (!conv_lists_apply(p) ||
      !build_conv_lists<T>(bits ? bits->ptr<int64_t>() : nullptr, s ? s->ptr<T>() : nullptr, p, nthreads, a))
    return conv_grad_weight_scatter<T>(bits, s, grad_y, grad_w, p, nthreads);
  scatter_grad_weight(a, grad_y.ptr<T>(), grad_w.ptr<T>(), p.B * p.Ho * p.Wo, p.Cout, p.Cin * p.kh * p.kw,
                      RowLayout{p.Cout, p.Ho * p.Wo}, nthreads);
}

template <typename F>
void dispatch_float(DType d, F&& f) {
  if (d == DType::f64) return f(double{});
  if (d == DType::f32) return f(float{});
  fail_arg("spike kernels take float32 or float64");
}

}  // namespace

void spike_pack_cpu(const TensorView& s, const TensorView& bits, const TensorView& info, const ExecConfig& ex) {
  check_spike_pack_args(s, bits, info);
  dispatch_float(s.dtype, [&](auto t) { pack_impl<decltype(t)>(s, bits, info, threads_of(ex)); });
}

void spike_unpack_cpu(const TensorView& bits, const TensorView& out, const ExecConfig& ex) {
  check_spike_unpack_args(bits, out);
  dispatch_float(out.dtype, [&](auto t) { unpack_impl<decltype(t)>(bits, out, threads_of(ex)); });
}

void spike_linear_forward_cpu(const TensorView& s, const TensorView& w, const TensorView* bias,
                              const TensorView& y, const TensorView* wt, const ExecConfig& ex) {
  check_spike_linear_forward_args(s, w, bias, y, wt);
  dispatch_float(s.dtype, [&](auto t) { linear_forward_impl<decltype(t)>(s, w, bias, y, threads_of(ex)); });
}

void spike_linear_grad_weight_cpu(const TensorView* bits, const TensorView* s, const TensorView& grad_y,
                                  const TensorView& grad_w, const TensorView* ws, const ExecConfig& ex) {
  check_spike_linear_grad_weight_args(bits, s, grad_y, grad_w, ws);
  dispatch_float(grad_y.dtype,
                 [&](auto t) { linear_grad_weight_impl<decltype(t)>(bits, s, grad_y, grad_w, threads_of(ex)); });
}

void spike_linear_grad_input_masked_cpu(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                        const TensorView& grad_s, const TensorView* ws, const ExecConfig& ex) {
  check_spike_linear_grad_input_masked_args(mask, grad_y, w, grad_s, ws);
  dispatch_float(grad_y.dtype, [&](auto t) {
    linear_grad_input_masked_impl<decltype(t)>(mask, grad_y, w, grad_s, threads_of(ex));
  });
}

void spike_conv2d_forward_cpu(const TensorView& s, const TensorView& w, const TensorView* bias,
                              const TensorView& y, const TensorView* wt, const TensorView* masks,
                              const SpikeConvParams& p, const ExecConfig& ex) {
  check_spike_conv2d_forward_args(s, w, bias, y, wt, masks, p);  // the CUDA workspaces are not used here
  dispatch_float(s.dtype, [&](auto t) { conv_forward<decltype(t)>(s, w, bias, y, p, threads_of(ex)); });
}

void spike_conv2d_grad_weight_cpu(const TensorView* bits, const TensorView* s, const TensorView& grad_y,
                                  const TensorView& grad_w, const TensorView* gyt, const TensorView* ws,
                                  const SpikeConvParams& p, const ExecConfig& ex) {
  check_spike_conv2d_grad_weight_args(bits, s, grad_y, grad_w, gyt, ws, p);  // CUDA workspaces: not used here
  dispatch_float(grad_y.dtype, [&](auto t) {
    conv_grad_weight<decltype(t)>(bits, s, grad_y, grad_w, p, threads_of(ex));
  });
}

}  // namespace spikeforge
