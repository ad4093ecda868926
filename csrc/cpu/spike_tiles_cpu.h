// Kernel body (cpu/isa_variants_cpu.h: compiled once per instruction-set variant, no include guard, no
// system headers): the tile kernels of the CPU spike propagation (csrc/core/spike.h), shared by
// spike_linear and by spike_conv2d's implicit-im2col path. Needs spike_events_cpu.h before it.
//
// The gather-accumulate wants W's column W[:, k] as a contiguous vector, but W is [N, K] row-major and
// transposing all of it costs more than the sparse product (a 4096 x 4096 float32 transpose took 34 ms on
// 2 EPYC cores, the dense GEMM 117 ms). So the kernels work on tiles of kTile = 16 output features: a
// thread transposes W[n0:n0+16, :] into a [K, 16] buffer (256 KiB at K = 4096: it stays in L2), then for
// every row m adds one 64-byte line of that buffer per active input. W is read from memory exactly once,
// and each event costs one cache line. grad_weight is the mirror image: the tile accumulates [K, 16] from
// 16 columns of grad_y (by input or by row, see scatter_grad_weight), then is written back transposed. The active
// inputs come as CSR lists (spike_events_cpu.h builds them).
//
// Non-finite values: the event sums skip the products of zero inputs, which the dense op forms (0 * inf
// = NaN). So the passes that read every weight (the tile transposes) and every grad_y value (the tile
// kernels' row loads) also report whether they met an inf or NaN, at the cost of a few vector adds; the
// callers (spike_linear_kernels_cpu.h, spike_conv2d_kernels_cpu.h) then run a fix-up pass that writes NaN where a
// skipped zero meets a non-finite value. Nothing extra happens on finite data.

#if SF_ISA_AVX2
// In-register 8 x 8 float transpose: rows r[i] = src + i * ld (8 floats each) -> dst + i * ldd. With nf,
// *nf accumulates (sum of the 64 values) * 0: it turns NaN if one of them is inf or NaN (or, harmlessly,
// if their sum overflows: the fix-up pass then checks each value and finds nothing to do). One add tree
// and one FMA per block keep the check off the transpose's critical path.
inline void transpose8x8(const float* src, int64_t ld, float* dst, int64_t ldd, __m256* nf = nullptr) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld), r2 = _mm256_loadu_ps(src + 2 * ld),
         r3 = _mm256_loadu_ps(src + 3 * ld), r4 = _mm256_loadu_ps(src + 4 * ld), r5 = _mm256_loadu_ps(src + 5 * ld),
         r6 = _mm256_loadu_ps(src + 6 * ld), r7 = _mm256_loadu_ps(src + 7 * ld);
  if (nf) {
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(r0, r1), _mm256_add_ps(r2, r3)),
                                     _mm256_add_ps(_mm256_add_ps(r4, r5), _mm256_add_ps(r6, r7)));
    *nf = _mm256_fmadd_ps(sum, _mm256_setzero_ps(), *nf);
  }
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

// buf[k * kTile + j] = w[(n0 + j) * K + k] for j < nt, 0 for nt <= j < kTile. Returns false when the
// tile's weights may hold an inf or NaN (see transpose8x8), true when they are all finite.
template <typename T>
bool load_tile_transposed(const T* w, int64_t K, int64_t n0, int64_t nt, T* buf) {
  T nfs = T(0);  // sum of value * 0 over the scalar part: NaN iff a value there is not finite
#if SF_ISA_AVX2
  // The scalar transpose cost more than the whole sparse product (48 ms of 72 at 5% firing):
  // 8 x 8 register transposes, for full tiles; the remainder of K goes through the scalar loop.
  int64_t kdone = 0;
  if constexpr (std::is_same_v<T, float>) {
    if (nt == kTile) {
      kdone = K / 8 * 8;
      __m256 nf0 = _mm256_setzero_ps(), nf1 = nf0;  // two chains: the two halves are independent
      for (int64_t k0 = 0; k0 < kdone; k0 += 8) {
        transpose8x8(w + n0 * K + k0, K, buf + k0 * kTile, kTile, &nf0);
        transpose8x8(w + (n0 + 8) * K + k0, K, buf + k0 * kTile + 8, kTile, &nf1);
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, _mm256_add_ps(nf0, nf1));
      for (float x : lanes) nfs += x;
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
        for (int64_t kk = 0; kk < kn; ++kk) {
          buf[(k0 + kk) * kTile + j] = src[kk];
          nfs += src[kk] * T(0);
        }
      } else {
        for (int64_t kk = 0; kk < kn; ++kk) buf[(k0 + kk) * kTile + j] = T(0);
      }
    }
  }
  return nfs == T(0);
}

// Whether the n contiguous values x are all finite: 8 independent lanes of value * 0 (vectorised), 0 or NaN.
template <typename T>
inline bool all_finite_values(const T* x, int64_t n) {
  T acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[i + l] * T(0);
  for (; i < n; ++i) acc[0] += x[i] * T(0);
  T sum = T(0);
  for (const T a : acc) sum += a;
  return sum == T(0);
}

// Whether the kTile-value rows g added to it were all finite: accumulates (pairwise sums of g) * 0, which
// stays 0 for finite values and turns NaN for an inf or NaN (or, harmlessly, when a pair's sum overflows: the
// caller's exact fix-up pass then finds nothing to do). One vector add and one FMA per row, no horizontal
// sum: cheap next to the events of the row.
template <typename T>
struct FiniteRows {
  T acc[kTile / 2] = {};
  void add(const T* g) {
    for (int j = 0; j < kTile / 2; ++j) acc[j] += (g[j] + g[j + kTile / 2]) * T(0);
  }
  bool finite() const {
    T sum = T(0);
    for (const T x : acc) sum += x;
    return sum == T(0);
  }
};
#if SF_ISA_AVX2
template <>
struct FiniteRows<float> {
  // A user-declared constructor: an implicit one would not carry the variant's target (GCC) and could not
  // inline the intrinsic.
  FiniteRows() : acc(_mm256_setzero_ps()) {}
  __m256 acc;
  void add(const float* g) { add(_mm256_loadu_ps(g), _mm256_loadu_ps(g + 8)); }
  void add(__m256 g0, __m256 g1) { acc = _mm256_fmadd_ps(_mm256_add_ps(g0, g1), _mm256_setzero_ps(), acc); }
  bool finite() const { return _mm256_movemask_ps(_mm256_cmp_ps(acc, acc, _CMP_UNORD_Q)) == 0; }
};
#endif

// acc[0..kTile) += sum over the row's events of (value *) buf[idx]. Four independent accumulators hide
// the latency of the adds (a fixed order: the result does not depend on the thread count).
template <typename T, bool kBinary>
inline void gather_row(const int32_t* idx, const T* vals, int64_t n, const T* buf, T* acc) {
#if SF_ISA_AVX2
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
        a0 = _mm256_add_ps(a0, _mm256_load_ps(r0));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(r0 + 8));
        b0 = _mm256_add_ps(b0, _mm256_load_ps(r1));
        b1 = _mm256_add_ps(b1, _mm256_load_ps(r1 + 8));
        c0 = _mm256_add_ps(c0, _mm256_load_ps(r2));
        c1 = _mm256_add_ps(c1, _mm256_load_ps(r2 + 8));
        d0 = _mm256_add_ps(d0, _mm256_load_ps(r3));
        d1 = _mm256_add_ps(d1, _mm256_load_ps(r3 + 8));
      } else {
        const __m256 v0 = _mm256_set1_ps(vals[p]), v1 = _mm256_set1_ps(vals[p + 1]);
        const __m256 v2 = _mm256_set1_ps(vals[p + 2]), v3 = _mm256_set1_ps(vals[p + 3]);
        a0 = _mm256_fmadd_ps(v0, _mm256_load_ps(r0), a0);
        a1 = _mm256_fmadd_ps(v0, _mm256_load_ps(r0 + 8), a1);
        b0 = _mm256_fmadd_ps(v1, _mm256_load_ps(r1), b0);
        b1 = _mm256_fmadd_ps(v1, _mm256_load_ps(r1 + 8), b1);
        c0 = _mm256_fmadd_ps(v2, _mm256_load_ps(r2), c0);
        c1 = _mm256_fmadd_ps(v2, _mm256_load_ps(r2 + 8), c1);
        d0 = _mm256_fmadd_ps(v3, _mm256_load_ps(r3), d0);
        d1 = _mm256_fmadd_ps(v3, _mm256_load_ps(r3 + 8), d1);
      }
    }
    for (; p < n; ++p) {
      const float* r0 = buf + static_cast<int64_t>(idx[p]) * kTile;
      const __m256 v0 = _mm256_set1_ps(kBinary ? 1.0f : vals[p]);
      a0 = _mm256_fmadd_ps(v0, _mm256_load_ps(r0), a0);
      a1 = _mm256_fmadd_ps(v0, _mm256_load_ps(r0 + 8), a1);
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
      for (int j = 0; j < kTile; ++j) {
        a0[j] += r0[j];
        a1[j] += r1[j];
        a2[j] += r2[j];
        a3[j] += r3[j];
      }
    } else {
      const T v0 = vals[p], v1 = vals[p + 1], v2 = vals[p + 2], v3 = vals[p + 3];
      for (int j = 0; j < kTile; ++j) {
        a0[j] += v0 * r0[j];
        a1[j] += v1 * r1[j];
        a2[j] += v2 * r2[j];
        a3[j] += v3 * r3[j];
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

// Y[m, :] = bias + sum over the active inputs of row m of value * W[:, k], for W [N, K] row-major.
// Returns false when W may hold an inf or NaN (the caller's fix-up pass then writes the NaN of the skipped
// zero products), true when it is all finite.
template <typename T>
bool gather_forward(const ActiveLists<T>& a, const T* wp, const T* bp, T* yp, int64_t M, int64_t N, int64_t K,
                    RowLayout rows, int nthreads) {
  const int64_t ntiles = (N + kTile - 1) / kTile, ys = rows.stride();
  // With fewer 16-feature tiles than threads the rows are split too (every output element is still summed
  // by one task, in the same order: the result does not depend on the split).
  const int64_t nrb = ntiles >= nthreads ? 1 : std::max<int64_t>(1, std::min((nthreads + ntiles - 1) / ntiles, M / 64));
  const int64_t rows_per = (M + nrb - 1) / nrb;
  ThreadBuffers<T> tiles(nthreads, std::max<int64_t>(K, 1) * kTile);
  TaskFlags finite(ntiles * nrb);
#pragma omp parallel num_threads(nthreads) if (ntiles * nrb > 1)
  {
    T* buf = tiles.mine();
#pragma omp for schedule(static)
    for (int64_t task = 0; task < ntiles * nrb; ++task) {
      const int64_t t = task / nrb, m0 = task % nrb * rows_per, m1 = std::min(M, m0 + rows_per);
      const int64_t n0 = t * kTile, nt = std::min(kTile, N - n0);
      const bool tile_finite = load_tile_transposed(wp, K, n0, nt, buf);
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
      finite.set(task, tile_finite);
    }
  }
  return finite.all();
}

// grad_weight's tile buf [K, 16] = grad_W[n0:n0+16, :] transposed, from lists by input c (lists_by_input):
// grad_y's tile gyt [M, 16] is copied first (zero past nt), then line k is the sum of the lines of the rows
// listed for input k, formed in registers and stored once.
template <typename T>
void tile_grad_weight_by_input(const ActiveLists<T>& c, const T* gy, RowLayout rows, int64_t M, int64_t K, int64_t n0,
                               int64_t nt, T* buf, T* gyt, FiniteRows<T>& rows_finite) {
  const int64_t gs = rows.stride();
  for (int64_t m = 0; m < M; ++m) {
    const T* grow = gy + rows.base(m) + n0 * gs;
    T* g = gyt + m * kTile;
    for (int j = 0; j < kTile; ++j) g[j] = j < nt ? grow[j * gs] : T(0);
    rows_finite.add(g);
  }
  for (int64_t k = 0; k < K; ++k) {
    T* line = buf + k * kTile;
    for (int j = 0; j < kTile; ++j) line[j] = T(0);
    const int64_t p0 = c.rowptr[k], n = c.rowptr[k + 1] - p0;
    if (c.binary) {
      gather_row<T, true>(c.idx.data() + p0, nullptr, n, gyt, line);
    } else {
      gather_row<T, false>(c.idx.data() + p0, c.vals.data() + p0, n, gyt, line);
    }
  }
}

// The same tile from lists by row a: each event adds its row's grad_y line into line k of buf.
template <typename T>
void tile_grad_weight_by_row(const ActiveLists<T>& a, const T* gy, RowLayout rows, int64_t M, int64_t K, int64_t n0,
                             int64_t nt, T* buf, FiniteRows<T>& rows_finite) {
  const int64_t gs = rows.stride();
  std::fill(buf, buf + K * kTile, T(0));
  for (int64_t m = 0; m < M; ++m) {
    T g[kTile];
    const T* grow = gy + rows.base(m) + n0 * gs;
    for (int j = 0; j < kTile; ++j) g[j] = j < nt ? grow[j * gs] : T(0);
    const int64_t p0 = a.rowptr[m], p1 = a.rowptr[m + 1];
#if SF_ISA_AVX2
    if constexpr (std::is_same_v<T, float>) {
      // one aligned 64-byte line read-modify-written per event (explicit: GCC kept it scalar)
      const __m256 g0 = _mm256_loadu_ps(g), g1 = _mm256_loadu_ps(g + 8);
      rows_finite.add(g0, g1);
      for (int64_t p = p0; p < p1; ++p) {
        float* r = buf + static_cast<int64_t>(a.idx[p]) * kTile;
        const __m256 v = _mm256_set1_ps(a.binary ? 1.0f : a.vals[p]);
        _mm256_store_ps(r, _mm256_fmadd_ps(v, g0, _mm256_load_ps(r)));
        _mm256_store_ps(r + 8, _mm256_fmadd_ps(v, g1, _mm256_load_ps(r + 8)));
      }
      continue;
    }
#endif
    rows_finite.add(g);
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
}

// grad_W[n, k] = sum over the rows m where input k is active of value * grad_y[m, n]; grad_W [N, K].
// Returns false when grad_y may hold an inf or NaN (the caller's fix-up pass then writes the NaN of the
// skipped zero products), true when it is all finite.
//
// Two ways to form the tile [K, 16], for the one whose working set is smaller (each event touches one
// 64-byte line of it):
// - by input (M <= K, e.g. a linear layer: batch*T 256, K 4096): grad_y's tile [M, 16] is copied once (16 KiB
//   at M = 256: it stays in L1) and line k of the result is the sum over the events of input k of its lines,
//   in registers (gather_row, the forward's loop), stored once. Each event used to read-modify-write a
//   line of the 256 KiB [K, 16] tile in L2 instead: 13.9 -> 11.1 ms for 4096 x 4096, batch*T 256, 5% firing
//   (Intel Xeon, 2 threads; 41 -> 21 ms at 20%).
// - by row (M > K, e.g. a convolution's B*Ho*Wo rows against Cin*kh*kw inputs): each event adds grad_y's
//   line of its row into line k of the [K, 16] tile, which then stays in L1.
template <typename T>
bool scatter_grad_weight(const ActiveLists<T>& a, const T* gy, T* gw, int64_t M, int64_t N, int64_t K, RowLayout rows,
                         int nthreads) {
  const int64_t ntiles = (N + kTile - 1) / kTile;
  const bool by_input = M <= K;  // M <= K < 2^31 (idx is int32): the rows fit the lists' int32 entries
  // A large grad_w (beyond what caches hold: 64 MiB for 4096 x 4096) is written with streaming stores, whole
  // aligned lines: a plain store first reads each line it writes (8 x 8 transposes store half lines), which
  // doubled the write-back's traffic: 11.1 -> 8.5 ms at 5% firing, 6.2 -> 3.3 ms at 0% (a fill of the same
  // tensor: 1.8 ms).
  const bool stream = std::is_same_v<T, float> && N * K * static_cast<int64_t>(sizeof(T)) >= kStreamBytes &&
                      K % 16 == 0 && reinterpret_cast<uintptr_t>(gw) % 64 == 0;
  const ActiveLists<T> c = by_input ? lists_by_input(a, M, K) : ActiveLists<T>{};
  // split over the 16-feature tiles only: splitting the rows would need per-split partial sums, whose count
  // (and so the summation order) would depend on the thread count
  ThreadBuffers<T> tiles(nthreads, (K + (by_input ? M : 0)) * kTile);
  TaskFlags finite(ntiles);
#pragma omp parallel num_threads(nthreads) if (ntiles > 1)
  {
    T* buf = tiles.mine();
#pragma omp for schedule(static)
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t n0 = t * kTile, nt = std::min(kTile, N - n0);
      FiniteRows<T> rows_finite;  // every grad_y value of the tile passes through it
      if (by_input) {
        tile_grad_weight_by_input(c, gy, rows, M, K, n0, nt, buf, buf + K * kTile, rows_finite);
      } else {
        tile_grad_weight_by_row(a, gy, rows, M, K, n0, nt, buf, rows_finite);
      }
      finite.set(t, rows_finite.finite());
      // write back transposed: grad_w[n0 + j, k] = buf[k, j] (8 x 8 register transposes, then blocks of 16 k)
      int64_t kdone = 0;
#if SF_ISA_AVX2
      if constexpr (std::is_same_v<T, float>) {
        if (nt == kTile && stream) {
          kdone = K / 16 * 16;
          alignas(64) float block[kTile * 16];  // grad_w[n0:n0+16, k0:k0+16]
          for (int64_t k0 = 0; k0 < kdone; k0 += 16) {
            transpose8x8(buf + k0 * kTile, kTile, block, 16);
            transpose8x8(buf + (k0 + 8) * kTile, kTile, block + 8, 16);
            transpose8x8(buf + k0 * kTile + 8, kTile, block + 8 * 16, 16);
            transpose8x8(buf + (k0 + 8) * kTile + 8, kTile, block + 8 * 16 + 8, 16);
            for (int64_t j = 0; j < kTile; ++j) {  // one whole line per row, its two halves back to back
              float* dst = gw + (n0 + j) * K + k0;
              _mm256_stream_ps(dst, _mm256_load_ps(block + j * 16));
              _mm256_stream_ps(dst + 8, _mm256_load_ps(block + j * 16 + 8));
            }
          }
        } else if (nt == kTile) {
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
#if SF_ISA_AVX2
    if (stream) _mm_sfence();  // the streaming stores are visible to whoever reads grad_w after the region
#else
    (void)stream;  // no streaming stores without AVX
#endif
  }
  return finite.all();
}
