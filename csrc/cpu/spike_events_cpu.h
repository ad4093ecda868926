// Kernel body (cpu/isa_variants_cpu.h: compiled once per instruction-set variant, no include guard, no
// system headers): finding the active inputs of a spike tensor on the CPU (csrc/core/spike.h). 64-element
// bit masks of the non-zeros (AVX2 compares + movemask for float32), iteration over their set bits with
// count-trailing-zeros, and the CSR lists (cpu/spike_lists_cpu.h) the tile kernels of spike_tiles_cpu.h
// consume. Shared by pack, linear and conv2d.

// Bit j set where p[j] != 0 (NaN counts as non-zero), j < n <= 64. With AVX2 a full float32 chunk
// is 8 compares + movemasks instead of 64 scalar compares and shifts.
template <typename T>
inline uint64_t nonzero_mask(const T* p, int64_t n) {
#if SF_ISA_AVX2
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
#if SF_ISA_AVX2
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

// Bit j set where p[j] is 0, 1 or -1 (a ternary spike).
template <typename T>
inline uint64_t ternary_mask(const T* p, int64_t n) {
#if SF_ISA_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (n == 64) {
      uint64_t m = 0;
      const __m256 z = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
      for (int j = 0; j < 8; ++j) {
        const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(p + 8 * j));  // |v|
        const __m256 ok = _mm256_or_ps(_mm256_cmp_ps(a, z, _CMP_EQ_OQ), _mm256_cmp_ps(a, one, _CMP_EQ_OQ));
        m |= static_cast<uint64_t>(_mm256_movemask_ps(ok)) << (8 * j);
      }
      return m;
    }
  }
#endif
  uint64_t m = 0;
  for (int64_t j = 0; j < n; ++j) m |= static_cast<uint64_t>(p[j] == T(0) || p[j] == T(1) || p[j] == T(-1)) << j;
  return m;
}

// Bit j set where p[j] < 0 (the sign words of a ternary tensor).
template <typename T>
inline uint64_t negative_mask(const T* p, int64_t n) {
#if SF_ISA_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (n == 64) {
      uint64_t m = 0;
      const __m256 z = _mm256_setzero_ps();
      for (int j = 0; j < 8; ++j)
        m |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p + 8 * j), z, _CMP_LT_OQ)))
             << (8 * j);
      return m;
    }
  }
#endif
  uint64_t m = 0;
  for (int64_t j = 0; j < n; ++j) m |= static_cast<uint64_t>(p[j] < T(0)) << j;
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

// Word w of a packed row of K columns (nwords = spike_words(K)) without the padding past column K
// (packed_tail_mask): the lists and tiles below index with every bit, so every index stays in range whatever
// the packing holds.
inline uint64_t packed_word(const int64_t* row, int64_t w, int64_t nwords, int64_t K) {
  uint64_t v = static_cast<uint64_t>(row[w]);
  if (w == nwords - 1) v &= spikeforge::cpu::packed_tail_mask(K);
  return v;
}

// Calls f(k, value) for each set bit k < K of a packed row of nwords 64-bit words: value 1, or -1 where the
// sign word (signs: the row's sign words, or null) has the bit set.
template <typename T, typename F>
inline void for_each_bit(const int64_t* words, const int64_t* signs, int64_t nwords, int64_t K, F&& f) {
  for (int64_t w = 0; w < nwords; ++w) {
    uint64_t mask = packed_word(words, w, nwords, K);
    const uint64_t neg = signs ? static_cast<uint64_t>(signs[w]) : 0;
    while (mask) {
      const int j = __builtin_ctzll(mask);
      mask &= mask - 1;
      f(w * 64 + j, (neg >> j) & 1u ? T(-1) : T(1));
    }
  }
}

// The events of CSR lists over [R, K] regrouped by input (list k: the rows m where input k is active, in
// increasing m; vals alongside): a counting sort, O(events + K). Rows must fit int32 (the callers check).
template <typename T>
ActiveLists<T> lists_by_input(const ActiveLists<T>& a, int64_t R, int64_t K) {
  ActiveLists<T> c;
  c.binary = a.binary;
  c.rowptr.assign(K + 1, 0);
  const int64_t E = a.rowptr[R];
  for (int64_t p = 0; p < E; ++p) ++c.rowptr[a.idx[p] + 1];
  for (int64_t k = 0; k < K; ++k) c.rowptr[k + 1] += c.rowptr[k];
  c.idx.resize(E);
  if (!a.binary) c.vals.resize(E);
  std::vector<int64_t> next(c.rowptr.begin(), c.rowptr.end() - 1);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t p = a.rowptr[r]; p < a.rowptr[r + 1]; ++p) {
      const int64_t q = next[a.idx[p]]++;
      c.idx[q] = static_cast<int32_t>(r);
      if (!a.binary) c.vals[q] = a.vals[p];
    }
  }
  return c;
}

template <typename T>
ActiveLists<T> build_lists(const int64_t* bits, const int64_t* signs, const T* s, int64_t R, int64_t K, int nthreads) {
  ActiveLists<T> a;
  a.rowptr.assign(R + 1, 0);
  const int64_t nwords = spike_words(K);
  // pass 1: counts per row (popcount of the packed words, or non-zeros of the values)
#pragma omp parallel for num_threads(nthreads) schedule(static) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    int64_t c = 0;
    if (bits) {
      for (int64_t w = 0; w < nwords; ++w) c += __builtin_popcountll(packed_word(bits + r * nwords, w, nwords, K));
    } else {
      const T* row = s + r * K;
      for (int64_t k = 0; k < K; ++k) c += row[k] != T(0);
    }
    a.rowptr[r + 1] = c;
  }
  for (int64_t r = 0; r < R; ++r) a.rowptr[r + 1] += a.rowptr[r];
  a.idx.resize(a.rowptr[R]);
  const bool valued = !bits || signs;  // values listed (then checked for all-ones below)
  if (valued) {
    a.vals.resize(a.rowptr[R]);
    a.binary = false;
  }
  // pass 2: fill
#pragma omp parallel for num_threads(nthreads) schedule(static) if (R > 1)
  for (int64_t r = 0; r < R; ++r) {
    int64_t p = a.rowptr[r];
    if (bits && signs) {
      for_each_bit<T>(bits + r * nwords, signs + r * nwords, nwords, K, [&](int64_t k, T v) {
        a.idx[p] = static_cast<int32_t>(k);
        a.vals[p++] = v;
      });
    } else if (bits) {
      for_each_bit<T>(bits + r * nwords, nullptr, nwords, K,
                      [&](int64_t k, T) { a.idx[p++] = static_cast<int32_t>(k); });
    } else {
      for_each_nonzero(s + r * K, K, [&](int64_t k, T v) {
        a.idx[p] = static_cast<int32_t>(k);
        a.vals[p++] = v;
      });
    }
  }
  // Values that are all 1 take the add-only inner loop.
  if (valued) {
    bool all_one = true;
    for (const T& v : a.vals) all_one &= (v == T(1));
    if (all_one) {
      a.vals.clear();
      a.binary = true;
    }
  }
  return a;
}
