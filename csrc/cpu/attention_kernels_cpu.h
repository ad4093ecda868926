// Kernel body (cpu/isa_variants_cpu.h: compiled once per instruction-set variant; attention_cpu.cpp calls
// a variant's entry points at the end of this file): spike-driven attention on CPU (forwards, and SSA's
// backward), fused with the attention LIF (contracts in csrc/core/attention.h).
//
// Work is split over the B slices (OpenMP; SSA hands them out one at a time, a dynamic schedule: its backward
// was 2-4% faster so on the 2-vCPU EPYC, whose two threads do not always run at the same speed); a slice keeps its
// LIF state in a local array and walks the T steps, so each (t, b) slice of the inputs is read once and the
// pre-activation of the [T, B, N, D] result is never stored. Results do not depend on the thread count or on
// which thread takes a slice (each slice is computed by one thread in a fixed order).

// The attention LIF's flags as compile-time constants: a copy of the coefficients with them fixed (as pinned() in
// cpu/neuron_kernels_cpu.h), so that the row loops below fold them away. Read at run time, GCC left those loops
// scalar and branchy (the data-dependent spikes mispredict): lif_row was a third of SSA's forward on the Xeon.
// The attention neuron has no coefficient slot (it divides by tau) and is never the I-LIF's keep form.
template <bool HARD, bool DECAY, bool LEAK, typename C>
NeuronCoeffs<C> lif_pinned(NeuronCoeffs<C> q) {
  q.hard = HARD;
  q.decay = DECAY;
  q.leak = LEAK;
  q.divide = true;
  q.keep_form = false;
  return q;
}

// Calls f(HARD, DECAY, LEAK), each a std::integral_constant<bool, ..>, for the attention LIF's flags (8 variants).
template <typename C, typename F>
void dispatch_lif(const NeuronCoeffs<C>& q, F&& f) {
  using Yes = std::true_type;
  using No = std::false_type;
  if (q.hard) {
    if (q.decay) {
      q.leak ? f(Yes{}, Yes{}, Yes{}) : f(Yes{}, Yes{}, No{});
    } else {
      q.leak ? f(Yes{}, No{}, Yes{}) : f(Yes{}, No{}, No{});
    }
  } else {
    if (q.decay) {
      q.leak ? f(No{}, Yes{}, Yes{}) : f(No{}, Yes{}, No{});
    } else {
      q.leak ? f(No{}, No{}, Yes{}) : f(No{}, No{}, No{});
    }
  }
}

// The attention LIF over a row of n neurons (csrc/core/neuron.h's lif_step): state v, input x * scale -> out,
// the spikes S (0 or 1), or with H the charge H. Restrict-qualified arrays and the flags fixed (lif_pinned) let the
// compiler vectorise it.
template <bool HARD, bool DECAY, bool LEAK, bool H, typename C>
void lif_row_pinned(C* __restrict v, const C* __restrict x, C* __restrict out, C scale, const NeuronCoeffs<C>& coeffs,
                    int64_t n) {
  const NeuronCoeffs<C> lif = lif_pinned<HARD, DECAY, LEAK>(coeffs);
  for (int64_t j = 0; j < n; ++j) {
    C hj;
    const C sj = lif_step(lif, v[j], x[j] * scale, hj);
    out[j] = H ? hj : sj;
  }
}
template <bool H, typename C>
void lif_row(C* v, const C* x, C* out, C scale, const NeuronCoeffs<C>& lif, int64_t n) {
  dispatch_lif(lif, [&](auto ha, auto de, auto le) {
    lif_row_pinned<decltype(ha)::value, decltype(de)::value, decltype(le)::value, H>(v, x, out, scale, lif, n);
  });
}

// One backward step of the attention LIF over a row (csrc/core/neuron.h's sj_backward, no v_init, no dH/dk):
// H, g' at H - v_th and dL/dS in; gv = dL/dV[t] in, dL/dV[t-1] out; -> gp = dL/dX * scale, X the
// pre-activation. Flags fixed as in lif_row.
template <bool HARD, bool DECAY, bool LEAK, typename C>
void lif_backward_row_pinned(const C* __restrict h, const C* __restrict sg, const C* __restrict gs, C* __restrict gv,
                             C* __restrict gp, C scale, const NeuronCoeffs<C>& coeffs, int64_t n) {
  const NeuronCoeffs<C> lif = lif_pinned<HARD, DECAY, LEAK>(coeffs);
  for (int64_t e = 0; e < n; ++e) {
    const C sv[kMaxSaved] = {h[e]}, g[2] = {sg[e], C(0)};
    C gst[kMaxStates] = {gv[e]}, gk = C(0);
    gp[e] = sj_backward<NeuronModel::lif>(lif, lif.inv_tau, sv, C(0), C(0), gs[e], g, gst, gk, false) * scale;
    gv[e] = gst[0];
  }
}
template <typename C>
void lif_backward_row(const C* h, const C* sg, const C* gs, C* gv, C* gp, C scale, const NeuronCoeffs<C>& lif,
                      int64_t n) {
  dispatch_lif(lif, [&](auto ha, auto de, auto le) {
    lif_backward_row_pinned<decltype(ha)::value, decltype(de)::value, decltype(le)::value>(h, sg, gs, gv, gp, scale,
                                                                                           lif, n);
  });
}

// Bit i % 64 of words[i / 64] is row[i] == 1, for a row of D values. Returns false when a value is
// neither 0 nor 1 (words then unspecified): only spikes can be read as a list of events.
template <typename S>
bool row_bits(const S* __restrict row, int64_t D, uint64_t* __restrict words) {
  using C = compute_t<S>;
  unsigned bad = 0;
  for (int64_t w = 0; w * 64 < D; ++w) {
    const int64_t i0 = w * 64, i1 = std::min(D, i0 + 64);
    uint64_t m = 0;
    int64_t i = i0;
#if SF_ISA_AVX2
    // float32: 8 values per compare, their bits by movemask (the generic loop's per-value 64-bit shifts
    // were a third of SSA's forward time).
    if constexpr (std::is_same_v<S, float>) {
      const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
      for (; i + 8 <= i1; i += 8) {
        const __m256 x = _mm256_loadu_ps(row + i);
        const unsigned ones = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(x, one, _CMP_EQ_OQ)));
        const unsigned zeros = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(x, zero, _CMP_EQ_OQ)));
        m |= static_cast<uint64_t>(ones) << (i - i0);
        bad |= (ones | zeros) ^ 0xFFu;
      }
    }
#endif
    for (; i < i1; ++i) {
      const C x = static_cast<C>(to_float(row[i]));
      m |= static_cast<uint64_t>(x == C(1)) << (i - i0);
      bad |= static_cast<unsigned>(x != C(0)) & static_cast<unsigned>(x != C(1));
    }
    words[w] = m;
  }
  return bad == 0;
}

#if SF_ISA_AVX
// dst[j0, j0 + 8 NV) += rows[i, j0 ..] for every set bit i < P of words, in increasing i, in NV registers
// (rows of D values). ZERO: dst starts from zeros (not read).
template <int NV, bool ZERO = false>
inline void add_spike_rows_avx(const uint64_t* words, int64_t P, int64_t D, const float* rows, float* dst, int64_t j0) {
  __m256 acc[NV];
  for (int r = 0; r < NV; ++r) acc[r] = ZERO ? _mm256_setzero_ps() : _mm256_loadu_ps(dst + j0 + 8 * r);
  for (int64_t w = 0; w * 64 < P; ++w) {
    for (uint64_t m = words[w]; m != 0; m &= m - 1) {
      const float* src = rows + (w * 64 + __builtin_ctzll(m)) * D + j0;
      for (int r = 0; r < NV; ++r) acc[r] = _mm256_add_ps(acc[r], _mm256_loadu_ps(src + 8 * r));
    }
  }
  for (int r = 0; r < NV; ++r) _mm256_storeu_ps(dst + j0 + 8 * r, acc[r]);
}

// add_spike_rows_avx<nv> over the whole row (nv = D / 8 registers, NV..12), found by recursion on NV: false
// when nv is past 12.
template <int NV, bool ZERO>
inline bool add_spike_rows_one_pass(int64_t nv, const uint64_t* words, int64_t P, int64_t D, const float* rows,
                                    float* dst) {
  if (nv == NV) {
    add_spike_rows_avx<NV, ZERO>(words, P, D, rows, dst, 0);
    return true;
  }
  if constexpr (NV < 12) {
    return add_spike_rows_one_pass<NV + 1, ZERO>(nv, words, P, D, rows, dst);
  } else {
    return false;
  }
}
#endif

// dst[0, D) += rows[i, 0, D) for every set bit i < P of words, in increasing i: the event-driven form of
// a row of P spikes times a [P, D] matrix (each spike adds one row; zeros cost nothing). Exact against the dense
// product in the same order whenever the matrix is finite (0 * x = 0 for finite x). ZERO: dst = the sum instead
// (dst not read).
template <bool ZERO = false, typename C>
void add_rows_at_spikes(const uint64_t* words, int64_t P, int64_t D, const C* __restrict rows, C* __restrict dst) {
#if SF_ISA_AVX
  if constexpr (std::is_same_v<C, float>) {
    // Columns held in vector registers across all the spikes (the generic loop loads and stores dst once per
    // spike); every element still sums its spikes in increasing i. A row of up to 96 columns in one pass over
    // the spikes (the attention head sizes 32-96: 4-12 of the 16 registers), else blocks of 32, 16 and 8.
    if (D % 8 == 0 && D >= 32 && D <= 96 && add_spike_rows_one_pass<4, ZERO>(D / 8, words, P, D, rows, dst)) return;
  }
#endif
  if constexpr (ZERO) std::fill(dst, dst + D, C(0));
#if SF_ISA_AVX
  if constexpr (std::is_same_v<C, float>) {
    int64_t j0 = 0;
    for (; j0 + 32 <= D; j0 += 32) add_spike_rows_avx<4>(words, P, D, rows, dst, j0);
    if (j0 + 16 <= D) {
      add_spike_rows_avx<2>(words, P, D, rows, dst, j0);
      j0 += 16;
    }
    if (j0 + 8 <= D) {
      add_spike_rows_avx<1>(words, P, D, rows, dst, j0);
      j0 += 8;
    }
    for (int64_t w = 0; w * 64 < P && j0 < D; ++w) {
      for (uint64_t m = words[w]; m != 0; m &= m - 1) {
        const float* __restrict src = rows + (w * 64 + __builtin_ctzll(m)) * D;
        for (int64_t j = j0; j < D; ++j) dst[j] += src[j];
      }
    }
    return;
  }
#endif
  for (int64_t w = 0; w * 64 < P; ++w) {
    for (uint64_t m = words[w]; m != 0; m &= m - 1) {
      const C* __restrict src = rows + (w * 64 + __builtin_ctzll(m)) * D;
      for (int64_t j = 0; j < D; ++j) dst[j] += src[j];
    }
  }
}

template <typename C>
bool all_finite(const C* x, int64_t n) {
  unsigned ok = 1;
  for (int64_t e = 0; e < n; ++e) ok &= static_cast<unsigned>(std::isfinite(x[e]));
  return ok != 0;
}

// The spike bits of every row of an [N, D] slice (row_bits), found once for all the products that read the
// slice: SSA's backward reads q and k twice each. words: N * ceil(D / 64); ok[n]: row n is 0/1; all: every row is.
struct SliceBits {
  uint64_t* words;
  uint8_t* ok;
  bool all;
};
template <typename S>
SliceBits slice_bits(const S* xs, int64_t N, int64_t D, uint64_t* words, uint8_t* ok) {
  const int64_t WD = ceil_div(D, 64);
  bool all = true;
  for (int64_t n = 0; n < N; ++n) {
    ok[n] = row_bits(xs + n * D, D, words + n * WD) ? 1 : 0;
    all = all && ok[n] != 0;
  }
  return SliceBits{words, ok, all};
}

// Slice (x, t, b) of the spike bits a forward keeps for the backward (spike_bits, csrc/core/attention.h; x = 0,
// 1, 2 for q, k, v): the rows' words, then their flags.
struct KeptBits {
  uint64_t* base;
  int64_t T, B, N, WD, slice_words;
  uint64_t* words(int x, int64_t t, int64_t b) const { return base + ((x * T + t) * B + b) * slice_words; }
  uint8_t* ok(int x, int64_t t, int64_t b) const { return reinterpret_cast<uint8_t*>(words(x, t, b) + N * WD); }
  // slice_bits into slice (x, t, b), its padding bytes zeroed (the tensor's bytes depend on the inputs alone)
  template <typename S>
  SliceBits keep(const S* xs, int x, int64_t t, int64_t b, int64_t D) const {
    uint8_t* flags = ok(x, t, b);
    std::fill(flags + N, reinterpret_cast<uint8_t*>(words(x, t, b) + slice_words), uint8_t{0});
    return slice_bits(xs, N, D, words(x, t, b), flags);
  }
  SliceBits at(int x, int64_t t, int64_t b) const {
    const uint8_t* flags = ok(x, t, b);
    bool all = true;
    for (int64_t n = 0; n < N; ++n) all = all && flags[n] != 0;
    return SliceBits{words(x, t, b), ok(x, t, b), all};
  }
  // Whether slice (x, t, b) is a packing keep() could have written for rows of D columns: flags 0 or 1 and no
  // bit past column D. The kernels index rows by the bits (a bit past D names a row outside the D x D
  // products: out-of-bounds reads and writes), and a caller of the raw op ssa_bwd can pass any bits; a slice
  // that fails is found again from the values instead.
  bool valid(int x, int64_t t, int64_t b, int64_t D) const {
    const uint8_t* flags = ok(x, t, b);
    const uint64_t* w = words(x, t, b);
    const uint64_t pad = ~spikeforge::cpu::packed_tail_mask(D);
    for (int64_t n = 0; n < N; ++n) {
      if (flags[n] > 1 || (w[n * WD + WD - 1] & pad) != 0) return false;
    }
    return true;
  }
};
inline KeptBits kept_bits(const TensorView* bits, const AttentionParams& p) {
  return KeptBits{bits ? bits->ptr<uint64_t>() : nullptr, p.T, p.B, p.N, ceil_div(p.D, 64),
                  ssa_bits_slice_words(p.N, p.D)};
}

// ktv = A^T B for one [N, D] slice pair: ktv[i, :] = sum over tokens n, in order, of a[n, i] * b[n, :].
// Where A holds spikes and B is finite, each spike of A adds one row of B (event-driven); any other
// slice takes the dense products (no zero skipped, so inf and NaN propagate as in a matmul).
// C is the compute type; A and B may be stored in another type (a spike input, or a C gradient).
// awords: N * ceil(D / 64) scratch words (A's spike bits, row by row); brow: D scratch values. abits: A's bits
// already found (SliceBits), else null (found here into awords). cwords: D * ceil(N / 64) scratch words for
// the by-output-row form (B in the compute type), or null. b_spikes: B is known to hold spikes only (its
// SliceBits' all), hence finite values, which spares the look at every value of B.
template <typename C, typename SA, typename SB>
void at_times_b(const SA* as, const SB* bs, C* ktv, C* brow, uint64_t* awords, int64_t N, int64_t D,
                const SliceBits* abits = nullptr, uint64_t* cwords = nullptr, bool b_spikes = false) {
  const int64_t WD = ceil_div(D, 64);
  std::fill(ktv, ktv + D * D, C(0));
  bool events = abits == nullptr || abits->all;
  for (int64_t e = 0; e < N * D && events && !b_spikes; e += D) events = all_finite(load_row(bs + e, brow, D), D);
  if (abits) {
    awords = abits->words;
  } else {
    for (int64_t n = 0; n < N && events; ++n) events = row_bits(as + n * D, D, awords + n * WD);
  }
  if constexpr (std::is_same_v<SB, C>) {
    if (events && cwords != nullptr) {
      // By output row: A's bits transposed (cwords[i]: the tokens n where A[n, i] = 1), so that each row of
      // ktv sums its rows of B in registers and is stored once (add_rows_at_spikes) instead of read and written
      // back for every spike. Each element still sums its tokens in increasing n: the same result.
      const int64_t WN = ceil_div(N, 64);
      std::fill(cwords, cwords + D * WN, uint64_t{0});
      for (int64_t n = 0; n < N; ++n) {
        const uint64_t* words = awords + n * WD;
        for (int64_t w = 0; w < WD; ++w) {
          for (uint64_t m = words[w]; m != 0; m &= m - 1) {
            cwords[(w * 64 + __builtin_ctzll(m)) * WN + n / 64] |= uint64_t{1} << (n % 64);
          }
        }
      }
      for (int64_t i = 0; i < D; ++i) add_rows_at_spikes(cwords + i * WN, N, D, bs, ktv + i * D);
      return;
    }
  }
  if (events) {
    for (int64_t n = 0; n < N; ++n) {
      const uint64_t* words = awords + n * WD;
      const C* b_n = load_row(bs + n * D, brow, D);
      for (int64_t w = 0; w < WD; ++w) {
        for (uint64_t m = words[w]; m != 0; m &= m - 1) {
          C* __restrict dst = ktv + (w * 64 + __builtin_ctzll(m)) * D;
          for (int64_t j = 0; j < D; ++j) dst[j] += b_n[j];
        }
      }
    }
    return;
  }
  for (int64_t n = 0; n < N; ++n) {
    const C* b_n = load_row(bs + n * D, brow, D);
    for (int64_t i = 0; i < D; ++i) {
      const C ani = static_cast<C>(to_float(as[n * D + i]));
      C* __restrict dst = ktv + i * D;
      for (int64_t j = 0; j < D; ++j) dst[j] += ani * b_n[j];
    }
  }
}

// Dense rows of X M go through a register tile: kTileRows rows at a time, i in order 0..D-1 for every
// element (so the result does not depend on the tiling or on which code path computed it).
constexpr int64_t kTileRows = 4, kTileCols = 16;

#if SF_ISA_AVX2
// float32: 8 accumulators (4 rows x 2 vectors of 8 columns) stay in registers and each loaded vector of
// M serves 4 rows. x: [4, D] rows, out: [4, D] rows, columns j0 .. j0 + 16.
inline void tile_4x16(const float* x, const float* m, float* out, int64_t D, int64_t j0) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  for (int64_t i = 0; i < D; ++i) {
    const __m256 m0 = _mm256_loadu_ps(m + i * D + j0), m1 = _mm256_loadu_ps(m + i * D + j0 + 8);
    __m256 xv = _mm256_broadcast_ss(x + i);
    a00 = _mm256_fmadd_ps(xv, m0, a00);
    a01 = _mm256_fmadd_ps(xv, m1, a01);
    xv = _mm256_broadcast_ss(x + D + i);
    a10 = _mm256_fmadd_ps(xv, m0, a10);
    a11 = _mm256_fmadd_ps(xv, m1, a11);
    xv = _mm256_broadcast_ss(x + 2 * D + i);
    a20 = _mm256_fmadd_ps(xv, m0, a20);
    a21 = _mm256_fmadd_ps(xv, m1, a21);
    xv = _mm256_broadcast_ss(x + 3 * D + i);
    a30 = _mm256_fmadd_ps(xv, m0, a30);
    a31 = _mm256_fmadd_ps(xv, m1, a31);
  }
  _mm256_storeu_ps(out + j0, a00);
  _mm256_storeu_ps(out + j0 + 8, a01);
  _mm256_storeu_ps(out + D + j0, a10);
  _mm256_storeu_ps(out + D + j0 + 8, a11);
  _mm256_storeu_ps(out + 2 * D + j0, a20);
  _mm256_storeu_ps(out + 2 * D + j0 + 8, a21);
  _mm256_storeu_ps(out + 3 * D + j0, a30);
  _mm256_storeu_ps(out + 3 * D + j0 + 8, a31);
}
#endif

// out[rows[r], :] = x[rows[r], :] M for the listed rows (at most kTileRows); xbuf, obuf: kTileRows * D scratch.
template <typename C, typename SX>
void dense_rows(const SX* xs, const int64_t* rows, int64_t nrows, const C* m, C* out, C* xbuf, C* obuf, int64_t D) {
#if SF_ISA_AVX2
  if constexpr (std::is_same_v<C, float> && std::is_same_v<SX, float>) {
    // four consecutive float32 rows (a gradient's, all dense) straight from x into out: no copy either way
    if (nrows == kTileRows && rows[kTileRows - 1] == rows[0] + kTileRows - 1 && D % kTileCols == 0) {
      for (int64_t j0 = 0; j0 < D; j0 += kTileCols) tile_4x16(xs + rows[0] * D, m, out + rows[0] * D, D, j0);
      return;
    }
  }
#endif
  for (int64_t r = 0; r < nrows; ++r) {
    for (int64_t i = 0; i < D; ++i) xbuf[r * D + i] = static_cast<C>(to_float(xs[rows[r] * D + i]));
  }
  int64_t j0 = 0;
#if SF_ISA_AVX2
  if constexpr (std::is_same_v<C, float>) {
    if (nrows == kTileRows) {
      for (; j0 + kTileCols <= D; j0 += kTileCols) tile_4x16(xbuf, m, obuf, D, j0);
    }
  }
#endif
  for (int64_t r = 0; r < nrows; ++r) {
    for (int64_t j = j0; j < D; ++j) {
      C acc = C(0);
      for (int64_t i = 0; i < D; ++i) acc += xbuf[r * D + i] * m[i * D + j];
      obuf[r * D + j] = acc;
    }
    std::copy(obuf + r * D, obuf + (r + 1) * D, out + rows[r] * D);
  }
}

// out = X M for one [N, D] slice and a [D, D] matrix: rows of X that are spikes add the rows of M they
// select (when M is finite); any other row takes the dense products. tmp: 2 * kTileRows * D scratch
// values; words: ceil(D / 64) scratch words.
// xbits: X's bits already found (SliceBits), else null (found here row by row); dense: X is known not to be
// spikes (a gradient), so every row takes the dense products without a look at its values.
template <typename C, typename SX>
void x_times_m(const SX* xs, const C* m, C* out, C* tmp, uint64_t* words, int64_t N, int64_t D,
               const SliceBits* xbits = nullptr, bool dense = false) {
  const bool finite = !dense && all_finite(m, D * D);
  const int64_t WD = ceil_div(D, 64);
  int64_t pending[kTileRows];
  int64_t npending = 0;
  for (int64_t n = 0; n < N; ++n) {
    C* __restrict dst = out + n * D;
    const uint64_t* row_words = xbits ? xbits->words + n * WD : words;
    if (finite && (xbits ? xbits->ok[n] != 0 : row_bits(xs + n * D, D, words))) {
      add_rows_at_spikes<true>(row_words, D, D, m, dst);  // dst = the sum of m's rows at the spikes
      continue;
    }
    pending[npending++] = n;
    if (npending == kTileRows) {
      dense_rows(xs, pending, npending, m, out, tmp, tmp + kTileRows * D, D);
      npending = 0;
    }
  }
  if (npending > 0) dense_rows(xs, pending, npending, m, out, tmp, tmp + kTileRows * D, D);
}

template <typename C>
void transpose(const C* __restrict m, C* __restrict mt, int64_t D) {
  for (int64_t i = 0; i < D; ++i) {
    for (int64_t j = 0; j < D; ++j) mt[j * D + i] = m[i * D + j];
  }
}

// ktv_ws [T, B, D, D] (compute type) gets K^T V of every (t, b), and spike_bits (when given) the spike bits of q,
// k and v: the backward reads both back instead of forming them again.
template <typename S>
void ssa_impl(const TensorView& qv, const TensorView& kv, const TensorView& vv, const TensorView& ov,
              const TensorView& ktv_ws, const TensorView* spike_bits, const AttentionParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t T = p.T, B = p.B, N = p.N, D = p.D, ND = N * D, DD = D * D;
  const S* q = qv.ptr<S>();
  const S* k = kv.ptr<S>();
  const S* v = vv.ptr<S>();
  S* out = ov.ptr<S>();
  C* ktv_all = ktv_ws.ptr<C>();
  const KeptBits kept = kept_bits(spike_bits, p);
  const C scale = static_cast<C>(p.scale);
  const NeuronCoeffs<C> lif(p.neuron, false);
  // Per thread, reused for each of its slices (allocating per slice made glibc map and unmap the larger
  // buffers each time, a page-fault storm): LIF states and one step's pre-activation, [N, D] each.
  // Allocated here, before the parallel region: a std::bad_alloc inside it would terminate the process
  // instead of reaching Python as MemoryError. At most one set per slice (threads beyond B idle).
  struct Scratch {
    std::vector<C> state, pre, spikes, vrow, qrow;
    std::vector<uint64_t> words, kwords, cwords;
  };
  const int nthr = team_for(nthreads, B);
  std::vector<Scratch> scratch(nthr);
  for (Scratch& sc : scratch) {
    sc.state.resize(ND), sc.pre.resize(ND), sc.spikes.resize(std::is_same_v<S, C> ? 0 : ND);
    sc.vrow.resize(D), sc.qrow.resize(2 * kTileRows * D);
    sc.words.resize(ceil_div(D, 64)), sc.kwords.resize(N * ceil_div(D, 64)), sc.cwords.resize(D * ceil_div(N, 64));
  }
#pragma omp parallel num_threads(nthr) if (nthr > 1)
  {
    Scratch& sc = scratch[cpu::thread_index()];
    auto &state = sc.state, &pre = sc.pre, &spikes = sc.spikes, &vrow = sc.vrow, &qrow = sc.qrow;
    auto &words = sc.words, &kwords = sc.kwords, &cwords = sc.cwords;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b) {
      std::fill(state.begin(), state.end(), lif_v_init(lif));
      for (int64_t t = 0; t < T; ++t) {
        const int64_t off = (t * B + b) * ND;
        C* kt = ktv_all + (t * B + b) * DD;
        // with bits to keep, the products read them (the same decisions: they depend on the bits alone);
        // without, each product finds its rows' bits as it goes
        SliceBits qb{}, kb{}, vb{};
        if (kept.base) {
          qb = kept.keep(q + off, 0, t, b, D);
          kb = kept.keep(k + off, 1, t, b, D);
          vb = kept.keep(v + off, 2, t, b, D);
        }
        at_times_b<C>(k + off, v + off, kt, vrow.data(), kwords.data(), N, D, kept.base ? &kb : nullptr, cwords.data(),
                      vb.all);
        x_times_m<C>(q + off, kt, pre.data(), qrow.data(), words.data(), N, D, kept.base ? &qb : nullptr);
        if constexpr (std::is_same_v<S, C>) {
          lif_row<false>(state.data(), pre.data(), out + off, scale, lif, ND);
        } else {
          lif_row<false>(state.data(), pre.data(), spikes.data(), scale, lif, ND);
          for (int64_t e = 0; e < ND; ++e) out[off + e] = from_compute<S>(spikes[e]);
        }
      }
    }
  }
}

// SSA backward for one dtype and surrogate: per slice, the forward is recomputed (H for all T steps, kept in
// per-thread scratch; K^T V read from the forward's ktv when given, else recomputed), then BPTT through the LIF
// runs t = T-1 .. 0 with
// csrc/core/neuron.h's sj_backward (no v_init), and the pre-activation gradient
// gP = gX * scale flows into
//   grad_q = gP (K^T V)^T      dense (gP has no zeros to skip)
//   gM     = Q^T gP            event-driven over Q's spikes
//   grad_k = V gM^T,  grad_v = K gM    event-driven over V's and K's spikes
// so of the five [N, D] x [D, D] products only grad_q's is dense.
template <typename S, Surrogate SG>
void ssa_backward_impl(const TensorView& gov, const TensorView& qv, const TensorView& kv, const TensorView& vv,
                       const TensorView* ktvv, const TensorView* spike_bits, const TensorView& gqv,
                       const TensorView& gkv, const TensorView& gvv, const AttentionParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t T = p.T, B = p.B, N = p.N, D = p.D, ND = N * D, DD = D * D, WD = ceil_div(D, 64);
  const S* go = gov.ptr<S>();
  const S* q = qv.ptr<S>();
  const S* k = kv.ptr<S>();
  const S* v = vv.ptr<S>();
  S* gq = gqv.ptr<S>();
  S* gk = gkv.ptr<S>();
  S* gv = gvv.ptr<S>();
  const C scale = static_cast<C>(p.scale);
  const NeuronCoeffs<C> lif(p.neuron, false);
  // The forward's K^T V of every (t, b): reading it back skipped a tenth of this backward (2 threads, AMD EPYC,
  // D = 384 / 12 heads, 15% spikes); without it, each slice recomputes its own.
  const C* ktv_saved = ktvv ? ktvv->ptr<C>() : nullptr;
  // The forward's spike bits of q, k and v: without them, each step's are found again from the inputs (a tenth of
  // this backward on the EPYC, most of it waiting for the inputs' cache lines).
  const KeptBits kept = kept_bits(spike_bits, p);
  // Per-thread scratch reused across slices, allocated before the parallel region (see ssa_impl): K^T V
  // (when recomputed) and H of all T steps, [N, D] rows.
  struct Scratch {
    std::vector<C> ktv, h, state, buf, gstate, g_pre, sg, mt, g_m, row, out_q, out_k, out_v;
    std::vector<uint64_t> words, awords, cwords, bits;  // bits: the SliceBits words of q, k and v at every step
    std::vector<uint8_t> ok;                            // and their rows' flags (when not kept by the forward)
    std::vector<SliceBits> found;                       // the SliceBits of q, k and v at every step
  };
  const int nthr = team_for(nthreads, B);
  std::vector<Scratch> scratch(nthr);
  for (Scratch& sc : scratch) {
    sc.ktv.resize(ktv_saved ? 0 : T * DD), sc.h.resize(T * ND), sc.row.resize(2 * kTileRows * D);
    // (with kept bits the scratch serves only a kept slice that is not a valid packing: KeptBits::valid)
    sc.bits.resize(3 * T * N * WD), sc.ok.resize(3 * T * N), sc.found.resize(3 * T);
    sc.cwords.resize(D * ceil_div(N, 64));
    for (std::vector<C>* nd_buf : {&sc.state, &sc.buf, &sc.gstate, &sc.g_pre, &sc.sg}) nd_buf->resize(ND);
    if (!std::is_same_v<S, C>) sc.out_q.resize(ND), sc.out_k.resize(ND), sc.out_v.resize(ND);
    sc.mt.resize(DD), sc.g_m.resize(DD), sc.words.resize(WD), sc.awords.resize(N * WD);
  }
#pragma omp parallel num_threads(nthr) if (nthr > 1)
  {
    Scratch& sc = scratch[cpu::thread_index()];
    auto &ktv = sc.ktv, &h = sc.h, &state = sc.state, &buf = sc.buf, &gstate = sc.gstate, &g_pre = sc.g_pre;
    auto &sg = sc.sg, &mt = sc.mt, &g_m = sc.g_m, &row = sc.row, &out_q = sc.out_q, &out_k = sc.out_k;
    auto &out_v = sc.out_v, &words = sc.words, &awords = sc.awords;
    // step t's bits of q (x = 0), k (1) and v (2) in slice b: the forward's, else found in the recompute; read
    // again by the backward's products
    auto find_bits = [&](const S* xs, int x, int64_t t, int64_t b) {
      const size_t i = static_cast<size_t>(x * T + t);
      sc.found[i] = kept.base && kept.valid(x, t, b, D)
                        ? kept.at(x, t, b)
                        : slice_bits(xs, N, D, sc.bits.data() + i * N * WD, sc.ok.data() + i * N);
      return sc.found[i];
    };
    auto bits_at = [&](int x, int64_t t) { return sc.found[static_cast<size_t>(x * T + t)]; };
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b) {
      std::fill(state.begin(), state.end(), lif_v_init(lif));
      std::fill(gstate.begin(), gstate.end(), C(0));
      // forward recompute: H[t] of every step (the spikes are H >= v_th)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t off = (t * B + b) * ND;
        const SliceBits qb = find_bits(q + off, 0, t, b), kb = find_bits(k + off, 1, t, b);
        const SliceBits vb = find_bits(v + off, 2, t, b);
        const C* kt = ktv_saved ? ktv_saved + (t * B + b) * DD : ktv.data() + t * DD;
        if (!ktv_saved) {
          at_times_b<C>(k + off, v + off, ktv.data() + t * DD, row.data(), awords.data(), N, D, &kb, sc.cwords.data(),
                        vb.all);
        }
        x_times_m<C>(q + off, kt, buf.data(), row.data(), words.data(), N, D, &qb);
        C* ht = h.data() + t * ND;
        lif_row<true>(state.data(), buf.data(), ht, scale, lif, ND);  // H: the backward's spikes are H >= v_th
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t off = (t * B + b) * ND;
        const C* ht = h.data() + t * ND;
        const C* g_s = load_row(go + off, buf.data(), ND);
        // the surrogate in a loop of its own, so its exp vectorises (as in csrc/cpu/neuron_kernels_cpu.h)
        const C vth = lif.vth;
        for (int64_t e = 0; e < ND; ++e) sg[e] = SurrogateFn<SG>::grad(ht[e] - vth, lif.sg_a, lif.sg_b);
        lif_backward_row(ht, sg.data(), g_s, gstate.data(), g_pre.data(), scale, lif, ND);
        // float32 / float64: the products land in the gradients themselves (a copying pass over three [N, D]
        // slices per step was 6% of the backward); 16-bit dtypes go through compute-type rows
        C *dq = out_q.data(), *dk = out_k.data(), *dv = out_v.data();
        if constexpr (std::is_same_v<S, C>) dq = gq + off, dk = gk + off, dv = gv + off;
        const C* kt = ktv_saved ? ktv_saved + (t * B + b) * DD : ktv.data() + t * DD;
        transpose(kt, mt.data(), D);
        const SliceBits qb = bits_at(0, t), kb = bits_at(1, t), vb = bits_at(2, t);
        x_times_m<C>(g_pre.data(), mt.data(), dq, row.data(), words.data(), N, D, nullptr, true);  // dense gP
        at_times_b<C>(q + off, g_pre.data(), g_m.data(), row.data(), awords.data(), N, D, &qb, sc.cwords.data());
        x_times_m<C>(k + off, g_m.data(), dv, row.data(), words.data(), N, D, &kb);
        transpose(g_m.data(), mt.data(), D);
        x_times_m<C>(v + off, mt.data(), dk, row.data(), words.data(), N, D, &vb);
        if constexpr (!std::is_same_v<S, C>) {
          for (int64_t e = 0; e < ND; ++e) {
            gq[off + e] = from_compute<S>(out_q[e]);
            gk[off + e] = from_compute<S>(out_k[e]);
            gv[off + e] = from_compute<S>(out_v[e]);
          }
        }
      }
    }
  }
}

template <typename S>
void token_reduce_impl(const TensorView& av, const TensorView* b2v, const TensorView& mv, const TensorView& ov,
                       const TensorView& prev, const TensorView& maskv, const AttentionParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t T = p.T, B = p.B, N = p.N, D = p.D, ND = N * D;
  const S* a = av.ptr<S>();
  const S* b2 = b2v ? b2v->ptr<S>() : nullptr;
  const S* m = mv.ptr<S>();
  S* out = ov.ptr<S>();
  C* pre = prev.ptr<C>();
  C* mask = maskv.ptr<C>();
  const NeuronCoeffs<C> lif(p.neuron, false);
  const int team = team_for(nthreads, B);
  ThreadBuffers<C> rows(team, 2 * D);  // each thread's membranes and sums
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (int64_t b = 0; b < B; ++b) {
    C* state = rows.mine();
    C* acc = state + D;
    std::fill(state, state + D, lif_v_init(lif));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = (t * B + b) * ND, small = (t * B + b) * D;
      C* __restrict s = acc;
      std::fill(s, s + D, C(0));
      for (int64_t n = 0; n < N; ++n) {
        const S* __restrict ar = a + off + n * D;
        if (b2) {
          const S* __restrict br = b2 + off + n * D;
          for (int64_t d = 0; d < D; ++d) s[d] += static_cast<C>(to_float(ar[d])) * static_cast<C>(to_float(br[d]));
        } else {
          for (int64_t d = 0; d < D; ++d) s[d] += static_cast<C>(to_float(ar[d]));
        }
      }
      C* __restrict mk = mask + small;
      for (int64_t d = 0; d < D; ++d) {
        pre[small + d] = s[d];
        mk[d] = lif_step(lif, state[d], s[d]);
      }
      for (int64_t n = 0; n < N; ++n) {
        const S* __restrict mr = m + off + n * D;
        S* __restrict orow = out + off + n * D;
        for (int64_t d = 0; d < D; ++d) orow[d] = from_compute<S>(static_cast<C>(to_float(mr[d])) * mk[d]);
      }
    }
  }
}

// Sum of a row in a fixed order: 8 interleaved partial sums (one vector register), then a fixed tree.
// A single running sum would be a chain of D dependent adds (the reduction cannot be vectorised
// without reassociating); this order is the same on every call and thread count, and exact on spikes.
template <typename S>
compute_t<S> row_sum(const S* __restrict row, int64_t D) {
  using C = compute_t<S>;
  C part[8] = {C(0), C(0), C(0), C(0), C(0), C(0), C(0), C(0)};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    for (int l = 0; l < 8; ++l) part[l] += static_cast<C>(to_float(row[d + l]));
  }
  for (int l = 0; d < D; ++d, ++l) part[l] += static_cast<C>(to_float(row[d]));
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

template <typename S>
void channel_reduce_impl(const TensorView& av, const TensorView& mv, const TensorView& ov, const TensorView& prev,
                         const TensorView& maskv, const AttentionParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t T = p.T, B = p.B, N = p.N, D = p.D, ND = N * D;
  const S* a = av.ptr<S>();
  const S* m = mv.ptr<S>();
  S* out = ov.ptr<S>();
  C* pre = prev.ptr<C>();
  C* mask = maskv.ptr<C>();
  const NeuronCoeffs<C> lif(p.neuron, false);
  const int team = team_for(nthreads, B);
  ThreadBuffers<C> rows(team, N);  // each thread's membranes
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (int64_t b = 0; b < B; ++b) {
    C* state = rows.mine();
    std::fill(state, state + N, lif_v_init(lif));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = (t * B + b) * ND, small = (t * B + b) * N;
      for (int64_t n = 0; n < N; ++n) {
        const C s = row_sum<S>(a + off + n * D, D);
        pre[small + n] = s;
        const C mk = lif_step(lif, state[n], s);
        mask[small + n] = mk;
        const S* __restrict mr = m + off + n * D;
        S* __restrict orow = out + off + n * D;
        for (int64_t d = 0; d < D; ++d) orow[d] = from_compute<S>(static_cast<C>(to_float(mr[d])) * mk);
      }
    }
  }
}

// The variant's entry points, one per dtype (and surrogate) dispatch.
void ssa_forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 const TensorView& ktv_ws, const TensorView* spike_bits, const AttentionParams& p, int nthreads) {
  dispatch_dtype(q.dtype, [&](auto tag) { ssa_impl<decltype(tag)>(q, k, v, out, ktv_ws, spike_bits, p, nthreads); });
}

void ssa_backward(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView* ktv, const TensorView* spike_bits, const TensorView& grad_q,
                  const TensorView& grad_k, const TensorView& grad_v, const AttentionParams& p, int nthreads) {
  dispatch_dtype(q.dtype, [&](auto tag) {
    using S = decltype(tag);
    dispatch_surrogate<kNumSpikingJellySurrogates>(p.neuron.surrogate, [&](auto sg) {
      ssa_backward_impl<S, decltype(sg)::value>(grad_out, q, k, v, ktv, spike_bits, grad_q, grad_k, grad_v, p,
                                                nthreads);
    });
  });
}

void token_reduce_forward(const TensorView& a, const TensorView* b2, const TensorView& m, const TensorView& out,
                          const TensorView& pre, const TensorView& mask, const AttentionParams& p, int nthreads) {
  dispatch_dtype(a.dtype, [&](auto tag) { token_reduce_impl<decltype(tag)>(a, b2, m, out, pre, mask, p, nthreads); });
}

void channel_reduce_forward(const TensorView& a, const TensorView& m, const TensorView& out, const TensorView& pre,
                            const TensorView& mask, const AttentionParams& p, int nthreads) {
  dispatch_dtype(a.dtype, [&](auto tag) { channel_reduce_impl<decltype(tag)>(a, m, out, pre, mask, p, nthreads); });
}
