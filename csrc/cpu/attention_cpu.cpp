// Spike-driven attention forward on CPU, fused with the attention LIF: contracts in csrc/core/attention.h.
//
// Work is split over the B slices (OpenMP, static schedule); a slice keeps its LIF state in a local
// array and walks the T steps, so each (t, b) slice of the inputs is read once and the pre-activation
// of the [T, B, N, D] result is never stored. Results do not depend on the thread count (each slice is
// computed by one thread in a fixed order).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/attention.h"
#include "core/index.h"
#include "cpu/cpu_common.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace spikeforge {
namespace {

using cpu::dispatch_dtype;
using cpu::load_row;
using cpu::threads_of;

// The attention LIF: one neuron step with the expressions of csrc/cpu/neuron_cpu.cpp's
// charge_fire_reset (scalar k), so spikes equal spikeforge.ops.lif's on the same pre-activation.
template <typename C>
struct AttnLif {
  C k, vth, vr, vr_c;
  bool hard, decay;
  explicit AttnLif(const AttentionParams& p)
      : k(static_cast<C>(p.k)), vth(static_cast<C>(p.v_threshold)), vr(static_cast<C>(p.v_reset)),
        vr_c(p.hard_reset ? static_cast<C>(p.v_reset) : C(0)), hard(p.hard_reset), decay(p.decay_input) {}
  C v_init() const { return hard ? vr : C(0); }
  // Updates the membrane v with input x; returns the spike (0 or 1).
  inline C step(C& v, C x) const {
    const C xa = decay ? x : C(0), xb = decay ? C(0) : x;
    const C h = v + k * (xa - (v - vr_c)) + xb;
    const bool fire = h >= vth;
    v = fire ? (hard ? vr : h - vth) : h;
    return fire ? C(1) : C(0);
  }
};

// The attention LIF over a row of n neurons: state v, input x * scale -> spikes s (0 or 1).
// Separate restrict-qualified arrays and loop-invariant coefficients let the compiler vectorise it
// (the spike pattern is data-dependent, so a branchy loop would mispredict about every other step).
template <typename C>
void lif_row(C* __restrict v, const C* __restrict x, C* __restrict s, C scale, const AttnLif<C>& lif, int64_t n) {
  const C k = lif.k, vth = lif.vth, vr = lif.vr, vr_c = lif.vr_c;
  const bool hard = lif.hard, decay = lif.decay;
  for (int64_t j = 0; j < n; ++j) {
    const C xj = x[j] * scale;
    const C xa = decay ? xj : C(0), xb = decay ? C(0) : xj;
    const C h = v[j] + k * (xa - (v[j] - vr_c)) + xb;
    const bool fire = h >= vth;
    v[j] = fire ? (hard ? vr : h - vth) : h;
    s[j] = fire ? C(1) : C(0);
  }
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
#if defined(__AVX2__)
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

// dst[0, D) += rows[i, 0, D) for every set bit i of words, in increasing i: the event-driven form of
// a row of spikes times a matrix (each spike adds one row; zeros cost nothing). Exact against the dense
// product in the same order whenever the matrix is finite (0 * x = 0 for finite x).
template <typename C>
void add_rows_at_spikes(const uint64_t* words, int64_t D, const C* __restrict rows, C* __restrict dst) {
  for (int64_t w = 0; w * 64 < D; ++w) {
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

// ktv = K^T V for one [N, D] slice: ktv[i, :] = sum over tokens n, in order, of k[n, i] * v[n, :].
// Where k is a spike tensor and v finite, each spike of K adds one row of V (event-driven); any other
// slice takes the dense products (no zero skipped, so inf and NaN propagate as in a matmul).
// kwords: N * ceil(D / 64) scratch words (K's spike bits, row by row).
template <typename S>
void ktv_slice(const S* ks, const S* vs, compute_t<S>* ktv, compute_t<S>* vrow, uint64_t* kwords, int64_t N,
               int64_t D) {
  using C = compute_t<S>;
  const int64_t WD = ceil_div(D, 64);
  std::fill(ktv, ktv + D * D, C(0));
  bool events = true;
  for (int64_t e = 0; e < N * D && events; e += D) events = all_finite(load_row(vs + e, vrow, D), D);
  for (int64_t n = 0; n < N && events; ++n) events = row_bits(ks + n * D, D, kwords + n * WD);
  if (events) {
    for (int64_t n = 0; n < N; ++n) {
      const uint64_t* words = kwords + n * WD;
      const C* v_n = load_row(vs + n * D, vrow, D);
      for (int64_t w = 0; w < WD; ++w) {
        for (uint64_t m = words[w]; m != 0; m &= m - 1) {
          C* __restrict dst = ktv + (w * 64 + __builtin_ctzll(m)) * D;
          for (int64_t j = 0; j < D; ++j) dst[j] += v_n[j];
        }
      }
    }
    return;
  }
  for (int64_t n = 0; n < N; ++n) {
    const C* v_n = load_row(vs + n * D, vrow, D);
    for (int64_t i = 0; i < D; ++i) {
      const C kni = static_cast<C>(to_float(ks[n * D + i]));
      C* __restrict dst = ktv + i * D;
      for (int64_t j = 0; j < D; ++j) dst[j] += kni * v_n[j];
    }
  }
}

// pre = Q (K^T V) for one [N, D] slice: rows of Q that are spikes add the K^T V rows they select (when
// K^T V is finite); any other row takes the dense products in the same order.
template <typename S>
void q_times_ktv(const S* qs, const compute_t<S>* ktv, compute_t<S>* pre, compute_t<S>* qrow, uint64_t* words,
                 int64_t N, int64_t D) {
  using C = compute_t<S>;
  const bool finite = all_finite(ktv, D * D);
  std::fill(pre, pre + N * D, C(0));
  for (int64_t n = 0; n < N; ++n) {
    C* __restrict dst = pre + n * D;
    if (finite && row_bits(qs + n * D, D, words)) {
      add_rows_at_spikes(words, D, ktv, dst);
      continue;
    }
    const C* q_n = load_row(qs + n * D, qrow, D);
    for (int64_t i = 0; i < D; ++i) {
      const C* __restrict src = ktv + i * D;
      for (int64_t j = 0; j < D; ++j) dst[j] += q_n[i] * src[j];
    }
  }
}

template <typename S>
void ssa_impl(const TensorView& qv, const TensorView& kv, const TensorView& vv, const TensorView& ov,
              const AttentionParams& p, int nthreads) {
  using C = compute_t<S>;
  const int64_t T = p.T, B = p.B, N = p.N, D = p.D, ND = N * D;
  const S* q = qv.ptr<S>();
  const S* k = kv.ptr<S>();
  const S* v = vv.ptr<S>();
  S* out = ov.ptr<S>();
  const C scale = static_cast<C>(p.scale);
  const AttnLif<C> lif(p);
  (void)nthreads;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (B > 1)
  for (int64_t b = 0; b < B; ++b) {
    // Per slice: LIF states and one step's pre-activation (both [N, D], a few tens of KiB: cache-resident).
    std::vector<C> state(ND, lif.v_init()), pre(ND), spikes(std::is_same_v<S, C> ? 0 : ND), ktv(D * D), vrow(D),
        qrow(D);
    std::vector<uint64_t> words(ceil_div(D, 64)), kwords(N * ceil_div(D, 64));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = (t * B + b) * ND;
      ktv_slice<S>(k + off, v + off, ktv.data(), vrow.data(), kwords.data(), N, D);
      q_times_ktv<S>(q + off, ktv.data(), pre.data(), qrow.data(), words.data(), N, D);
      if constexpr (std::is_same_v<S, C>) {
        lif_row(state.data(), pre.data(), out + off, scale, lif, ND);
      } else {
        lif_row(state.data(), pre.data(), spikes.data(), scale, lif, ND);
        for (int64_t e = 0; e < ND; ++e) out[off + e] = from_compute<S>(spikes[e]);
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
  const AttnLif<C> lif(p);
  (void)nthreads;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (B > 1)
  for (int64_t b = 0; b < B; ++b) {
    std::vector<C> state(D, lif.v_init()), acc(D);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = (t * B + b) * ND, small = (t * B + b) * D;
      C* __restrict s = acc.data();
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
        mk[d] = lif.step(state[d], s[d]);
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
  const AttnLif<C> lif(p);
  (void)nthreads;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (B > 1)
  for (int64_t b = 0; b < B; ++b) {
    std::vector<C> state(N, lif.v_init());
    for (int64_t t = 0; t < T; ++t) {
      const int64_t off = (t * B + b) * ND, small = (t * B + b) * N;
      for (int64_t n = 0; n < N; ++n) {
        const C s = row_sum<S>(a + off + n * D, D);
        pre[small + n] = s;
        const C mk = lif.step(state[n], s);
        mask[small + n] = mk;
        const S* __restrict mr = m + off + n * D;
        S* __restrict orow = out + off + n * D;
        for (int64_t d = 0; d < D; ++d) orow[d] = from_compute<S>(static_cast<C>(to_float(mr[d])) * mk);
      }
    }
  }
}

bool empty(const AttentionParams& p) { return p.T == 0 || p.B == 0 || p.N == 0 || p.D == 0; }

}  // namespace

void ssa_forward_cpu(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     const AttentionParams& p, const ExecConfig& ex) {
  check_ssa_forward_args(q, k, v, out, p);
  SF_CHECK_ARG(q.device == DeviceKind::cpu, "q must be a CPU tensor for ssa_forward_cpu");
  if (empty(p)) return;  // the output is empty too
  const int nt = threads_of(ex);
  dispatch_dtype(q.dtype, [&](auto tag) { ssa_impl<decltype(tag)>(q, k, v, out, p, nt); });
}

void token_reduce_attention_forward_cpu(const TensorView& a, const TensorView* b2, const TensorView& m,
                                        const TensorView& out, const TensorView& pre, const TensorView& mask,
                                        const AttentionParams& p, const ExecConfig& ex) {
  check_reduce_attention_forward_args(a, b2, m, out, pre, mask, p, true);
  SF_CHECK_ARG(a.device == DeviceKind::cpu, "a must be a CPU tensor for token_reduce_attention_forward_cpu");
  // N == 0 still has a [T, B, D] mask to compute (the LIF of zero sums); only an empty mask is skipped.
  if (p.T == 0 || p.B == 0 || p.D == 0) return;
  const int nt = threads_of(ex);
  dispatch_dtype(a.dtype, [&](auto tag) { token_reduce_impl<decltype(tag)>(a, b2, m, out, pre, mask, p, nt); });
}

void channel_reduce_attention_forward_cpu(const TensorView& a, const TensorView& m, const TensorView& out,
                                          const TensorView& pre, const TensorView& mask, const AttentionParams& p,
                                          const ExecConfig& ex) {
  check_reduce_attention_forward_args(a, nullptr, m, out, pre, mask, p, false);
  SF_CHECK_ARG(a.device == DeviceKind::cpu, "a must be a CPU tensor for channel_reduce_attention_forward_cpu");
  if (p.T == 0 || p.B == 0 || p.N == 0) return;  // D == 0: sums of nothing, still a mask per token
  const int nt = threads_of(ex);
  dispatch_dtype(a.dtype, [&](auto tag) { channel_reduce_impl<decltype(tag)>(a, m, out, pre, mask, p, nt); });
}

}  // namespace spikeforge
