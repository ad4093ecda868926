// The CPU neuron kernel skeleton shared by neuron_cpu.cpp (forward) and neuron_backward_cpu.cpp
// (backward), which are compiled with different vector-width preferences (CMakeLists.txt).
// Everything sits in an anonymous namespace: each of the two translation units instantiates its own
// copies, so the linker never merges a 512-bit copy into the 256-bit file or the reverse.
//
// Multi-step neurons on CPU: one kernel skeleton for every model of csrc/core/neuron.h, whose
// step functions (the dynamics) it calls per neuron.
//
// Work is split into chunks of chunk_for(T) neurons (OpenMP, static schedule). A chunk
// keeps its state, coefficients and gradients in small row arrays and walks the T steps; every step
// touches one contiguous row of the chunk's neurons per tensor, so the inner loops are element-wise
// loops over compute-type arrays that the compiler vectorises (the model's flags are loop invariants:
// GCC unswitches the loops on them). Half-precision rows are converted in separate loops. Chunk
// boundaries depend only on N, never on the thread count, so results are bitwise identical for any
// number of threads.
//
// Backward recomputes the chunk's forward from x into an L2-resident buffer of the saved values (the
// default: x is the only [T, N] tensor kept), or reads the saved values the forward wrote.
#pragma once
#include <algorithm>
#include <cstring>
#include <utility>
#include <type_traits>
#include <vector>

#include "core/half_bits.h"
#include "core/neuron.h"
#include "cpu/cpu_common.h"

namespace spikeforge {
namespace {

using cpu::chunk_count;
using cpu::chunk_for;
using cpu::dispatch_dtype;
using cpu::load_row;
using cpu::out_row;
using cpu::store_row;
using cpu::threads_of;

// The model's step functions behind one interface (the family decides which of csrc/core/neuron.h).
template <NeuronModel M>
struct Step {
  static constexpr bool kSnn = is_snntorch_family(M);
  static constexpr bool kNorse = M == NeuronModel::norse_lif;
  template <typename C>
  SF_HD static C forward(const NeuronCoeffs<C>& q, const NeuronSlots<C>& sl, C (&st)[kMaxStates], C x,
                         C (&sv)[kMaxSaved]) {
    if constexpr (kNorse) {
      return norse_forward(q, sl, st, x, sv);
    } else if constexpr (kSnn) {
      return snn_forward<M>(q, sl, st, x, sv);
    } else {
      return sj_forward<M>(q, sl.v[0], st, x, sv);
    }
  }
  template <typename C>
  SF_HD static void state_after(const NeuronCoeffs<C>& q, const C (&sv)[kMaxSaved], C (&st)[kMaxStates]) {
    if constexpr (kNorse) {
      (void)q;
      norse_state_after(sv, st);
    } else if constexpr (kSnn) {
      (void)q;
      snn_state_after<M>(sv, st);
    } else {
      sj_state_after<M>(q, sv, st);
    }
  }
  template <typename C>
  SF_HD static C backward(const NeuronCoeffs<C>& q, const NeuronSlots<C>& sl, const C (&sv)[kMaxSaved],
                          const C (&st_prev)[kMaxStates], C x, C gs, const C (&g)[2], C (&gst)[kMaxStates],
                          C (&gsl)[kMaxParams], bool want_gk) {
    if constexpr (kNorse) {
      (void)want_gk;
      return norse_backward(q, sl, sv, st_prev, x, gs, g, gst, gsl);
    } else if constexpr (kSnn) {
      (void)want_gk;
      return snn_backward<M>(q, sl, sv, st_prev, x, gs, g, gst, gsl);
    } else {
      return sj_backward<M>(q, backward_leak(q, sl.v[0]), sv, st_prev[0], x, gs, g, gst, gsl[0], want_gk);
    }
  }
};

// Row scratch of the threads of one call, carved from a cache owned by the calling thread (grown as
// needed, never shrunk): no allocation per call, and none inside an OpenMP region, where a failure
// would end the process.
template <typename C>
C* scratch(size_t count) {
  static thread_local std::vector<C> cache;
  constexpr size_t kAlign = 64 / sizeof(C);
  if (cache.size() < count + kAlign) cache.resize(count + kAlign);
  C* p = cache.data();
  const size_t mis = (reinterpret_cast<uintptr_t>(p) % 64) / sizeof(C);
  return mis ? p + (kAlign - mis) : p;  // rows start on cache lines
}

// The rows one thread uses for a chunk of at most blk neurons.
template <typename C>
struct Rows {
  C* st[kMaxStates];      // state
  C* sl[kMaxParams];      // coefficient slots
  C* tmp[2];              // converted input rows
  C* out[kMaxSaved + 1];  // computed rows before conversion (saved values, then the spike / grad_x)
  C* gst[kMaxStates];     // backward: state gradients
  C* gsl[kMaxParams];     // backward: slot gradients
  C* prev[kMaxStates];    // backward: the state before the step
  C* init[kMaxStates];    // backward: the initial state
  C* conv[kMaxSaved];     // backward: step t-1's saved values converted
  C* sg[2];               // backward: the surrogate's arguments, then its values
  C* svbuf;               // backward (recompute): [NSV, T, blk] saved values
  static constexpr int kRows = kMaxStates + kMaxParams + 2 + kMaxSaved + 1;      // forward
  static constexpr int kGradRows = 3 * kMaxStates + kMaxParams + kMaxSaved + 2;  // backward only
  // Rows are blk + a cache line apart: at exactly blk * sizeof(C) (a multiple of 4 KiB) the loads of one row
  // and the stores of another share their low 12 address bits, which the CPU's store-to-load
  // disambiguation takes for a possible dependence (4K aliasing) and stalls on.
  static int64_t stride(int64_t blk) { return blk + 64 / static_cast<int64_t>(sizeof(C)); }
  static size_t size(int64_t blk, int64_t svbuf, bool backward) {
    return static_cast<size_t>((kRows + (backward ? kGradRows : 0)) * stride(blk) + svbuf);
  }
  Rows(C* base, int64_t blk, bool backward) {
    auto take = [&]() {
      C* r = base;
      base += stride(blk);
      return r;
    };
    for (auto& r : st) r = take();
    for (auto& r : sl) r = take();
    for (auto& r : tmp) r = take();
    for (auto& r : out) r = take();
    for (auto& r : gst) r = backward ? take() : nullptr;
    for (auto& r : gsl) r = backward ? take() : nullptr;
    for (auto& r : prev) r = backward ? take() : nullptr;
    for (auto& r : init) r = backward ? take() : nullptr;
    for (auto& r : conv) r = backward ? take() : nullptr;
    for (auto& r : sg) r = backward ? take() : nullptr;
    svbuf = base;
  }
};

// The coefficient slots of the chunk [i0, i0 + n): entry (i / S) % C of each slot tensor.
template <typename C>
void fill_slots(const Rows<C>& r, const C* const* slots, const NeuronParams& p, int nslots, int64_t i0, int64_t n) {
  for (int s = 0; s < nslots; ++s) {
    C* dst = r.sl[s];
    if (!slots[s]) {
      std::fill(dst, dst + n, C(0));
      continue;
    }
    const int64_t Cs = p.layout[s].C, Ss = p.layout[s].S;
    if (Cs == 1) {
      std::fill(dst, dst + n, slots[s][0]);
      continue;
    }
    // walk (channel, position in its run) forward from i0: two divisions per chunk instead of per neuron
    const int64_t q0 = i0 / Ss;
    int64_t rr = i0 - q0 * Ss, c = q0 % Cs;
    for (int64_t j = 0; j < n; ++j) {
      dst[j] = slots[s][c];
      if (++rr == Ss) {
        rr = 0;
        if (++c == Cs) c = 0;
      }
    }
  }
}

// Initial states: the given rows, else V = v_reset (hard reset, SpikingJelly family) and 0 elsewhere.
template <NeuronModel M, typename S, typename C>
void fill_init(C* const* st, C* tmp, const S* const* init, const NeuronCoeffs<C>& q, int64_t i0, int64_t n) {
  constexpr int NS = neuron_states(M);
  for (int s = 0; s < NS; ++s) {
    if (init[s]) {
      const C* row = load_row(init[s] + i0, tmp, n);
      std::copy(row, row + n, st[s]);
    } else {
      const bool vr = s == 0 && !neuron_reads_prev_state(M) && q.hard && M != NeuronModel::ilif;
      std::fill(st[s], st[s] + n, vr ? q.vr : C(0));
    }
  }
}

// Stores a row of saved values. H of the binary LIF in a 16-bit dtype: a rounded H that crossed v_th is
// moved back one ulp (core/half_bits.h), so backward's S = (H >= v_th) is the forward's decision.
template <typename S>
void store_saved_row(S* dst, const compute_t<S>* v, compute_t<S> vth, int64_t n) {
  if constexpr (std::is_same_v<S, compute_t<S>>) {
    std::copy(v, v + n, dst);
  } else {
    for (int64_t j = 0; j < n; ++j) {
      S r = from_compute<S>(v[j]);
      if ((to_float(r) >= vth) != (v[j] >= vth)) {
        uint16_t bits;
        std::memcpy(&bits, &r, 2);
        bits = half_bits_step(bits, v[j] >= vth);
        std::memcpy(&r, &bits, 2);
      }
      dst[j] = r;
    }
  }
}

// Whether a kernel's [T, N] output of S is written with streaming stores (cpu::stream_row): float32, where the
// CPU streams, from cpu::kStreamBytes on. The forward's spike and state sequences and the backward's grad_x.
template <typename S>
bool streams_output(int64_t values) {
  return cpu::kCanStream && std::is_same_v<S, float> && values * static_cast<int64_t>(sizeof(S)) >= cpu::kStreamBytes;
}

// Finishes an output row computed in `row` (compute type): streamed into dst when `stream` (float32 only:
// cpu::stream_row), else stored (16-bit: converted) unless row is dst itself (out_row gave the memory).
template <typename S>
void write_row(S* dst, const compute_t<S>* row, int64_t n, bool stream) {
  if constexpr (std::is_same_v<S, float>) {
    if (stream) {
      cpu::stream_row(dst, row, n);
      return;
    }
  }
  if constexpr (std::is_same_v<S, compute_t<S>>) {
    if (row != dst) std::copy(row, row + n, dst);
  } else {
    store_row(dst, row, n);
  }
}

// The flags a model's backward step branches on, fixed at compile time: GCC vectorises a loop only after
// unswitching it on such flags, which its size limits refuse for the larger steps (measured: the LIF
// backward twice as slow, scalar). Variant bits: the reset (hard: SpikingJelly family; subtract / zero /
// none: snnTorch family), two-sided ternary surrogate, reset_delay, and for LIF whether dL/dk is
// accumulated and with decay_input.
struct Variant {
  static constexpr int kHard = 1, kTwoSided = 2, kGk = 4, kDecay = 8, kDelay = 16, kResetShift = 5;
};

// The variants a model is compiled for (each one is an instantiation of the row).
template <NeuronModel M>
constexpr bool variant_exists(int v) {
  const int reset = v >> Variant::kResetShift, low = v & ((1 << Variant::kResetShift) - 1);
  if constexpr (M == NeuronModel::lif) {
    return reset == 0 && (low & ~(Variant::kHard | Variant::kGk | Variant::kDecay)) == 0 &&
           ((low & Variant::kGk) || !(low & Variant::kDecay));
  } else if constexpr (M == NeuronModel::alif) {
    return reset == 0 && (low & ~Variant::kHard) == 0;
  } else if constexpr (M == NeuronModel::ternary) {
    return reset == 0 && (low & ~(Variant::kHard | Variant::kTwoSided)) == 0;
  } else if constexpr (M == NeuronModel::ilif) {
    return v == 0;
  } else if constexpr (M == NeuronModel::alpha) {
    return reset <= 2 && low == 0;
  } else if constexpr (M == NeuronModel::norse_lif) {
    return v == 0;  // detach_reset is a run-time coefficient (q.nd)
  } else {          // leaky, synaptic
    return reset <= 2 && (low & ~Variant::kDelay) == 0;
  }
}

template <NeuronModel M>
int variant_of(const NeuronParams& p, bool want_gk) {
  if (M == NeuronModel::ilif || M == NeuronModel::norse_lif) return 0;
  if (is_snntorch_family(M)) {
    return (static_cast<int>(p.reset) << Variant::kResetShift) |
           (M != NeuronModel::alpha && p.reset_delay ? Variant::kDelay : 0);
  }
  int v = p.hard_reset ? Variant::kHard : 0;
  if (M == NeuronModel::ternary && p.two_sided) v |= Variant::kTwoSided;
  if (M == NeuronModel::lif && want_gk) v |= Variant::kGk | (p.decay_input ? Variant::kDecay : 0);
  return v;
}

// The call's coefficients with the variant's flags as constants (a local copy: after inlining the
// compiler folds them).
template <NeuronModel M, int V, typename C>
NeuronCoeffs<C> pinned(NeuronCoeffs<C> q) {
  if constexpr (Step<M>::kNorse) {
    // no compile-time flags
  } else if constexpr (Step<M>::kSnn) {
    q.reset = static_cast<ResetMechanism>(V >> Variant::kResetShift);
    q.reset_delay = (V & Variant::kDelay) != 0;
  } else {
    q.hard = (V & Variant::kHard) != 0;
    q.two_sided = (V & Variant::kTwoSided) != 0;
    if (V & Variant::kGk) q.decay = (V & Variant::kDecay) != 0;
  }
  return q;
}

// Calls f(std::integral_constant<int, v>) for the variant v of a call (one test per variant of the model).
template <NeuronModel M, int V, typename F>
void try_variant(int v, F& f, bool& done) {
  if constexpr (variant_exists<M>(V)) {
    if (!done && v == V) {
      f(std::integral_constant<int, V>{});
      done = true;
    }
  }
}
template <NeuronModel M, typename F, int... I>
void dispatch_variant_in(int v, F& f, std::integer_sequence<int, I...>) {
  bool done = false;
  (try_variant<M, I>(v, f, done), ...);
  SF_CHECK_ARG(done, "neuron backward: unsupported combination of options for this model");
}
template <NeuronModel M, typename F>
void dispatch_variant(int v, F&& f) {
  dispatch_variant_in<M>(v, f, std::make_integer_sequence<int, 3 << Variant::kResetShift>{});
}

// What a forward row stores besides the states (forward_chunk's keep): the spikes, the saved values.
constexpr int kKeepSpike = 1, kKeepSaved = 2;

// Neuron j of forward_row's step (always inlined into its loops, which the compiler vectorises as one).
template <NeuronModel M, int V, bool UNI, int KEEP, typename C>
[[gnu::always_inline]] inline void forward_elem(const NeuronCoeffs<C>& q, int64_t j, const C* __restrict x,
                                                C* __restrict spike, C* __restrict st0, C* __restrict st1,
                                                C* __restrict st2, const C* __restrict sl0, const C* __restrict sl1,
                                                const C* __restrict sl2, const C* __restrict sl3, C* __restrict sv0,
                                                C* __restrict sv1, C* __restrict sv2) {
  constexpr int NS = neuron_states(M), NSV = neuron_saved(M), NSL = neuron_slots(M);
  C st[kMaxStates] = {st0[j], NS > 1 ? st1[j] : C(0), NS > 2 ? st2[j] : C(0)};
  C sv[kMaxSaved] = {};
  const NeuronSlots<C> sl{{NSL > 0 ? sl0[UNI ? 0 : j] : C(0), NSL > 1 ? sl1[UNI ? 0 : j] : C(0),
                           NSL > 2 ? sl2[UNI ? 0 : j] : C(0), NSL > 3 ? sl3[UNI ? 0 : j] : C(0)}};
  const C s = Step<M>::forward(q, sl, st, x[j], sv);
  if constexpr (KEEP & kKeepSpike) spike[j] = s;
  st0[j] = st[0];
  if constexpr (NS > 1) st1[j] = st[1];
  if constexpr (NS > 2) st2[j] = st[2];
  if constexpr (KEEP & kKeepSaved) {
    sv0[j] = sv[0];
    if constexpr (NSV > 1) sv1[j] = sv[1];
    if constexpr (NSV > 2) sv2[j] = sv[2];
  }
}

// The rows of the step that comes after a forward row: their lines are asked for while the row computes (see
// forward_row). x, spike and the state sequences' rows seq[s] point at the stored elements (es bytes each;
// nullptr: nothing to ask for), n of them.
struct NextRows {
  const char* x = nullptr;
  const char* spike = nullptr;
  const char* seq[kMaxStates] = {};
  int64_t es = 0;
  int64_t n = 0;
};

// One step of a row of n neurons. Every row is its own restrict-qualified parameter, so the compiler knows
// they do not overlap and vectorises the loop without run-time overlap checks (with the model's 10+ rows
// those exceed its limit and the loop stayed scalar). Rows past the model's counts are not touched. UNI: the
// slots hold one value for all neurons (kUniformRows); KEEP: which of the spikes and saved values to store.
//
// With each cache line of the row, the same line of the next step's rows (x, spikes, state sequences) is asked
// for into L2: a chunk's rows are pieces of one page (1024 float32) of rows N elements apart, and the hardware
// prefetcher learns each page's stream anew (a stream stops at its page's end), so without this every row
// started with misses to memory. Forward alone with the caches dirtied before each call (Intel Xeon, 2
// threads, N = 2^20, T = 32): LIF 11.3-11.6 -> 10.0-10.5 ms (about the copy bandwidth), ALIF 11.5-12.0 ->
// 10.5-10.6, Synaptic 11.6-12.2 -> 10.4-10.5. The snnTorch Synaptic drop-in's forward at T = 4, which also
// writes both state sequences, took 3.0-3.8 ms with only the first 1 KiB of their rows asked for, 2.8-3.2 ms
// with every line. Asking for the whole next row at once before the row was slower than not asking; its first
// 1 KiB alone (0.5, 2 and 4 KiB were slower) gained a third of this.
template <NeuronModel M, int V, bool UNI, int KEEP, typename C>
SF_CPU_CLONES void forward_row(const NeuronCoeffs<C>& coeffs, int64_t n, const C* __restrict x, C* __restrict spike,
                               C* __restrict st0, C* __restrict st1, C* __restrict st2, const C* __restrict sl0,
                               const C* __restrict sl1, const C* __restrict sl2, const C* __restrict sl3,
                               C* __restrict sv0, C* __restrict sv1, C* __restrict sv2, const NextRows& next) {
  // a local copy: the row stores could otherwise alias the coefficients, which would be reloaded per element;
  // with V's flags fixed, as in backward_row (the snnTorch models' forward stayed scalar with run-time reset
  // flags: Leaky 3x slower than the LIF)
  const NeuronCoeffs<C> q = pinned<M, V>(coeffs);
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(C));
  const char* nx = next.x;
  const char* ns = next.spike;
  const char *nq0 = next.seq[0], *nq1 = next.seq[1], *nq2 = next.seq[2];
  const int64_t es = next.es, lines = nx ? std::min(n, next.n) / kLine * kLine : 0;
  int64_t j0 = 0;
  for (; j0 < lines; j0 += kLine) {
    __builtin_prefetch(nx + j0 * es, 0, 2);
    if (ns) __builtin_prefetch(ns + j0 * es, 1, 2);
    if (nq0) __builtin_prefetch(nq0 + j0 * es, 1, 2);
    if (nq1) __builtin_prefetch(nq1 + j0 * es, 1, 2);
    if (nq2) __builtin_prefetch(nq2 + j0 * es, 1, 2);
    // not unrolled, as in backward_row's surrogate pass: one vectorised loop over the line
#pragma GCC unroll 1
    for (int64_t j = j0; j < j0 + kLine; ++j)
      forward_elem<M, V, UNI, KEEP, C>(q, j, x, spike, st0, st1, st2, sl0, sl1, sl2, sl3, sv0, sv1, sv2);
  }
  for (int64_t j = j0; j < n; ++j)
    forward_elem<M, V, UNI, KEEP, C>(q, j, x, spike, st0, st1, st2, sl0, sl1, sl2, sl3, sv0, sv1, sv2);
}

// g' over a row: sg0 (and sg1, the ternary spike's second argument) hold the surrogate's arguments and get
// its values. g' is arithmetic only (no memory traffic), so this loop also asks for the cache lines of this
// row's gradient rows that backward_row's step loop reads (gs) and writes (gx): they stream in while the
// surrogate computes instead of after it.
//
// A function of its own so that it alone is compiled with multiply-add contraction (SF_FP_CONTRACT): FMA
// where the code path has it (a native build on such a CPU, the x86-64-v3 / v4 clones of a portable one).
// The surrogate is a gradient, which no peer's bits constrain (the forward and its recompute keep one rounding
// per operation), and contraction makes its exp more accurate, not less. On Zen 3 (AMD EPYC, AVX2) the LIF
// backward spent more than half of its time in this pass (perf, data in cache): the sigmoid's exp is a chain of
// multiply-adds, and the backward is compute-bound there (as fast with cold caches as with warm ones). With FMA
// (2 threads, N = 2^20, caches dirtied before each call, best of 7 calls, four alternated runs): LIF's backward
// 24.9-26.3 -> 21.2-23.6 ms at T = 32 and 6.5-7.2 -> 5.8-6.1 ms at T = 8, ALIF's 29.4-30.6 -> 26.1-28.0 ms, the
// ternary neuron's 29.5-32.0 -> 26.0-26.7 ms (T = 32); the forward is untouched.
//
// SHIFTED: the argument is src[j] - shift (a saved row less a constant: the LIF family's H - v_th, the snnTorch
// models' U - thr with uniform slots), read here instead of from an arguments pass over the row: the backward
// 6-7% faster for LIF / PLIF (AMD EPYC Zen 3, 2 threads, T = 4 / 32, bench/neuron_ab.py, whose A/A noise was
// 3% there), 0-6% for the snnTorch models and norse_lif; bit for bit the same gradients.
template <Surrogate SG, int NA, bool SHIFTED, typename C>
SF_CPU_CLONES SF_FP_CONTRACT void surrogate_grad_row(const NeuronCoeffs<C>& q, int64_t n, const C* __restrict src,
                                                     C shift, C* __restrict sg0, C* __restrict sg1, const C* gs,
                                                     C* gx) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(C));
  // the two-sided ternary spike with the sigmoid: both g' from one exp (core/surrogate.h)
  constexpr bool kPairable = NA > 1 && SG == Surrogate::sigmoid && std::is_same_v<C, float>;
  bool paired = false;
  if constexpr (kPairable) {
    const float c = -2.0f * q.vth;  // sg1 = c - sg0
    if (q.two_sided && sigmoid_pair_ok(q.sg_a, c)) {
      const float k = vexp(-q.sg_a * c);
      int64_t j0 = 0;
      for (; j0 + kLine <= n; j0 += kLine) {
        __builtin_prefetch(gs + j0, 0, 2);
        __builtin_prefetch(gx + j0, 1, 2);
#pragma GCC unroll 1
        for (int64_t i = j0; i < j0 + kLine; ++i) sigmoid_grad_pair(sg0[i], q.sg_a, k, sg0[i], sg1[i]);
      }
      for (int64_t j = j0; j < n; ++j) sigmoid_grad_pair(sg0[j], q.sg_a, k, sg0[j], sg1[j]);
      paired = true;
    }
  }
  if (!paired) {
    int64_t j0 = 0;
    for (; j0 + kLine <= n; j0 += kLine) {
      __builtin_prefetch(gs + j0, 0, 2);
      __builtin_prefetch(gx + j0, 1, 2);
      // not unrolled: GCC unrolled this 16-trip loop completely and then vectorised only part of the
      // straight-line code (the atan surrogate stayed 23 scalar divisions per line, the Leaky backward 1.3x slower)
#pragma GCC unroll 1
      for (int64_t k = 0; k < kLine; ++k) {
        const C arg = SHIFTED ? src[j0 + k] - shift : sg0[j0 + k];
        sg0[j0 + k] = SurrogateFn<SG>::grad(arg, q.sg_a, q.sg_b);
      }
    }
    for (int64_t j = j0; j < n; ++j) sg0[j] = SurrogateFn<SG>::grad(SHIFTED ? src[j] - shift : sg0[j], q.sg_a, q.sg_b);
    if (NA > 1 && q.two_sided) {
      for (int64_t j = 0; j < n; ++j) sg1[j] = SurrogateFn<SG>::grad(sg1[j], q.sg_a, q.sg_b);
    }
  }
}

// The gradient row of the step that comes after a backward row (step t - 1, or the first row of the thread's next
// chunk after step 0): gs points at its first element (es bytes each; nullptr: nothing to ask for), n of them.
struct NextGrad {
  const char* gs = nullptr;
  int64_t es = 0;
  int64_t n = 0;
};

// One backward step of a row (see forward_row), in three passes: the surrogate's arguments into g0 (g1),
// g' over them in a loop of its own (an exp-based surrogate vectorises there; inside the step's selects
// GCC left the whole loop scalar, 2-3x slower), then the step. x may be null when the model does not
// read it.
template <NeuronModel M, Surrogate SG, int V, bool SLOTS, bool UNI, typename C>
SF_CPU_CLONES void backward_row(const NeuronCoeffs<C>& coeffs, int64_t n, const C* __restrict sv0,
                                const C* __restrict sv1, const C* __restrict sv2, const C* __restrict pv0,
                                const C* __restrict pv1, const C* __restrict pv2, const C* __restrict x,
                                const C* __restrict gs, C* __restrict gx, C* __restrict g0, C* __restrict g1,
                                C* __restrict g2, const C* __restrict sl0, const C* __restrict sl1,
                                const C* __restrict sl2, const C* __restrict sl3, C* __restrict gl0, C* __restrict gl1,
                                C* __restrict gl2, C* __restrict gl3, C* __restrict sg0, C* __restrict sg1,
                                bool want_slot_grad, const NextGrad& next) {
  constexpr int NS = neuron_states(M), NSV = neuron_saved(M), NSL = neuron_slots(M), NA = kSurrogateArgs<M>;
  // the snnTorch family and norse_lif always read the previous state (the reset decision, the current)
  // and alpha and norse_lif x; of the SpikingJelly family only PLIF's dH/dk reads them
  constexpr bool PREV = neuron_reads_prev_state(M) || (V & Variant::kGk);
  constexpr bool READ_X = neuron_always_reads_x(M) || ((V & Variant::kGk) && (V & Variant::kDecay));
  constexpr bool WANT_GK = (V & Variant::kGk) != 0;
  // SLOTS: the slot gradient rows are read and written (only when a slot gradient is wanted: otherwise the
  // per-neuron slot gradient arithmetic is dead code and the Leaky step moves 6 rows fewer)
  constexpr bool GSL = SLOTS && NSL > 0;
  const NeuronCoeffs<C> q = pinned<M, V>(coeffs);  // a local copy, as in forward_row, with V's flags fixed
  (void)want_slot_grad;
  // (no lambdas for the per-element loads below: GCC reloads the row pointers from a by-reference closure
  // each element and then does not vectorise)
  // the argument is a saved row less a constant: computed in the surrogate pass itself
  constexpr bool kShifted = M == NeuronModel::lif || (UNI && (M == NeuronModel::leaky || M == NeuronModel::synaptic ||
                                                              M == NeuronModel::alpha || M == NeuronModel::norse_lif));
  if constexpr (NA > 0 && kShifted) {
    const C shift = M == NeuronModel::lif ? q.vth : (M == NeuronModel::norse_lif ? sl3[0] : sl1[0]);
    surrogate_grad_row<SG, NA, true, C>(q, n, sv0, shift, sg0, sg1, gs, gx);
  } else if constexpr (NA > 0) {
    for (int64_t j = 0; j < n; ++j) {
      const C sv[kMaxSaved] = {sv0[j], NSV > 1 ? sv1[j] : C(0), NSV > 2 ? sv2[j] : C(0)};
      const NeuronSlots<C> sl{{NSL > 0 ? sl0[UNI ? 0 : j] : C(0), NSL > 1 ? sl1[UNI ? 0 : j] : C(0),
                               NSL > 2 ? sl2[UNI ? 0 : j] : C(0), NSL > 3 ? sl3[UNI ? 0 : j] : C(0)}};
      C a[2] = {C(0), C(0)};
      surrogate_args<M>(q, sl, sv, a);
      sg0[j] = a[0];
      if constexpr (NA > 1) sg1[j] = a[1];
    }
    surrogate_grad_row<SG, NA, false, C>(q, n, nullptr, C(0), sg0, sg1, gs, gx);
  }
  // The next step's gs row (next) is asked for here, a whole step ahead of its step loop. The surrogate pass asks for
  // this row's gs lines too, but only just before the step loop reads them: the ALIF step loop still spent 28% of its
  // samples on the gs load (perf, AMD EPYC Zen 4), and ilif, without a surrogate pass (straight-through), 77%.
  // bench/neuron_ab.py backward new / base (2 threads, N = 2^20, T = 4 / 8 / 32; two runs, the same gradients):
  // I-LIF 0.76 / 0.84 / 0.82, Leaky 0.85-0.86 / 0.91 / 0.92-0.95, Synaptic 0.79-0.81 / 0.83 / 0.91, Alpha
  // 0.83-0.90 / 0.90 / 0.89-0.92, norse_lif 0.88 (T = 4) / 0.98 (32), ALIF 0.98-0.99, ternary 0.96-0.98; LIF
  // 1.01-1.04 (IF / PLIF 0.9-1.01): not there. (Asking line by line inside the step loop, as forward_row does,
  // needed the loop in lines or the step as a function of its own: the first gave I-LIF 0.87-1.01, the second left
  // the Synaptic backward scalar, 1.4-1.8x slower.)
  if constexpr (M != NeuronModel::lif) {
    const int64_t bytes = next.gs ? std::min(n, next.n) * next.es : 0;
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(next.gs + b, 0, 2);
  }
  for (int64_t j = 0; j < n; ++j) {
    const C sv[kMaxSaved] = {sv0[j], NSV > 1 ? sv1[j] : C(0), NSV > 2 ? sv2[j] : C(0)};
    const NeuronSlots<C> sl{{NSL > 0 ? sl0[UNI ? 0 : j] : C(0), NSL > 1 ? sl1[UNI ? 0 : j] : C(0),
                             NSL > 2 ? sl2[UNI ? 0 : j] : C(0), NSL > 3 ? sl3[UNI ? 0 : j] : C(0)}};
    C prev[kMaxStates] = {};
    if constexpr (PREV) {
      prev[0] = pv0[j];
      if constexpr (NS > 1) prev[1] = pv1[j];
      if constexpr (NS > 2) prev[2] = pv2[j];
    }
    C gst[kMaxStates] = {g0[j], NS > 1 ? g1[j] : C(0), NS > 2 ? g2[j] : C(0)};
    C gsl[kMaxParams] = {};
    if constexpr (GSL) {
      gsl[0] = gl0[j];
      if constexpr (NSL > 1) gsl[1] = gl1[j];
      if constexpr (NSL > 2) gsl[2] = gl2[j];
      if constexpr (NSL > 3) gsl[3] = gl3[j];
    }
    const C g[2] = {NA > 0 ? sg0[j] : C(0), NA > 1 ? sg1[j] : C(0)};
    gx[j] = Step<M>::backward(q, sl, sv, prev, READ_X ? x[j] : C(0), gs[j], g, gst, gsl, WANT_GK);
    g0[j] = gst[0];
    if constexpr (NS > 1) g1[j] = gst[1];
    if constexpr (NS > 2) g2[j] = gst[2];
    if constexpr (GSL) {
      gl0[j] = gsl[0];
      if constexpr (NSL > 1) gl1[j] = gsl[1];
      if constexpr (NSL > 2) gl2[j] = gsl[2];
      if constexpr (NSL > 3) gl3[j] = gsl[3];
    }
  }
}

// The states after a step from its saved values (the SpikingJelly family: V from H and the spike; alif B)
// over a row, with V's flags fixed as in backward_row: with the call's run-time flags this loop stayed scalar
// and cost PLIF's backward (the only one of the family that reads V[t-1]: dH/dk) 11 of its 50 ms at T = 32.
template <NeuronModel M, int V, typename C>
SF_CPU_CLONES void state_after_row(const NeuronCoeffs<C>& coeffs, int64_t n, const C* __restrict sv0,
                                   const C* __restrict sv1, const C* __restrict sv2, C* __restrict st0,
                                   C* __restrict st1, C* __restrict st2) {
  constexpr int NS = neuron_states(M), NSV = neuron_saved(M);
  const NeuronCoeffs<C> q = pinned<M, V>(coeffs);
  for (int64_t j = 0; j < n; ++j) {
    const C sv[kMaxSaved] = {sv0[j], NSV > 1 ? sv1[j] : C(0), NSV > 2 ? sv2[j] : C(0)};
    C st[kMaxStates] = {};
    Step<M>::state_after(q, sv, st);
    st0[j] = st[0];
    if constexpr (NS > 1) st1[j] = st[1];
    if constexpr (NS > 2) st2[j] = st[2];
  }
}

// Whether every coefficient slot holds one value for all neurons (or is absent, filled with 0).
template <typename C>
bool slots_uniform(const NeuronParams& p, int nslots, const C* const* slots) {
  bool uniform = true;
  for (int s = 0; s < nslots; ++s) uniform = uniform && (!slots[s] || p.layout[s].C == 1);
  return uniform;
}

// The models whose rows also come in a UNI instantiation, which reads each slot once per row instead of per
// neuron when slots_uniform(): the snnTorch models and Norse's LIF read 3-4 slots, and those rows (16 KiB at
// 1024 neurons) pushed the step's rows out of L1: uniform slots (snnTorch's defaults) made Alpha's
// forward + backward 8-19% faster at T = 32 / 4, Synaptic's 3-10% (Intel Xeon, 2 threads, 2^20 neurons). The
// SpikingJelly family reads at most PLIF's one slot and keeps one instantiation.
template <NeuronModel M>
constexpr bool kUniformRows = Step<M>::kSnn || Step<M>::kNorse;

// The chunk's forward over all T steps from the state in r.st (left holding the last state). Writes
// the spike rows (when spike is given), the rows of every state whose st_seq[s] is given (that state
// after each step, [T, N]), and the saved values either into
// `saved` ([NSV, T, N] of SV) or into r.svbuf ([NSV, T, blk], recompute). stream: the spike and state rows are
// written with streaming stores (streams_output<S>, so float32 only).
template <NeuronModel M, typename S, typename SV>
void forward_chunk(const Rows<compute_t<S>>& rows, const NeuronCoeffs<compute_t<S>>& q, const S* x, S* spike,
                   S* const* st_seq, SV* saved, bool to_svbuf, int64_t blk, const NeuronParams& p, bool uniform,
                   int64_t i0, int64_t n, bool stream) {
  using C = compute_t<S>;
  const Rows<C>& r = rows;
  constexpr int NS = neuron_states(M), NSV = neuron_saved(M), NSL = neuron_slots(M);
  constexpr bool kDirect = std::is_same_v<SV, C>;  // saved values written in place
  const int64_t T = p.T, N = p.N;
  // Rows nobody reads are not stored: the saved values are wanted by the backward (svbuf) or the caller (saved),
  // the spikes by the caller only (the backward's recompute derives them from H). A forward that keeps no saved
  // values (recompute, inference) wrote 5 rows per ALIF step instead of 3: its forward alone took 13.1-13.4 ms
  // instead of 12.4 (T = 32), Alpha's 15.6-17.8 instead of 14.0-14.2 (Intel Xeon, 2 threads, N = 2^20).
  const bool keep_sv = to_svbuf || saved != nullptr;
  const int keep = (spike ? kKeepSpike : 0) | (keep_sv ? kKeepSaved : 0);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t off = t * N + i0;
    // the rows that come next (forward_row): this chunk's step t + 1, or the next chunk's step 0 after the last
    // step (schedule(static) gives a thread consecutive chunks)
    const int64_t next = t + 1 < T ? off + N : i0 + blk;
    NextRows nr;
    nr.n = t + 1 < T ? n : std::max<int64_t>(0, std::min(blk, N - next));
    if (nr.n > 0) {
      nr.x = reinterpret_cast<const char*>(x + next);
      nr.es = static_cast<int64_t>(sizeof(S));
      if (!stream) {  // (a line asked for with intent to write is read: what the streaming stores avoid)
        nr.spike = spike ? reinterpret_cast<const char*>(spike + next) : nullptr;
        for (int s = 0; s < NS; ++s) {
          if (st_seq && st_seq[s]) nr.seq[s] = reinterpret_cast<const char*>(st_seq[s] + next);
        }
      }
    }
    const C* xr = load_row(x + off, r.tmp[0], n);
    C* s_dst = spike && !stream ? out_row(spike + off, r.out[kMaxSaved]) : r.out[kMaxSaved];
    C* sv_dst[kMaxSaved] = {};
    for (int k = 0; k < NSV; ++k) {
      if (to_svbuf) {
        sv_dst[k] = r.svbuf + (k * T + t) * blk;
      } else if (saved && kDirect) {
        sv_dst[k] = reinterpret_cast<C*>(saved) + (k * T + t) * N + i0;
      } else {
        sv_dst[k] = r.out[k];
      }
    }
    dispatch_variant<M>(variant_of<M>(p, false), [&](auto vc) {
      auto row = [&](auto uni, auto kept) {
        forward_row<M, decltype(vc)::value, decltype(uni)::value, decltype(kept)::value, C>(
            q, n, xr, s_dst, r.st[0], r.st[1], r.st[2], r.sl[0], r.sl[1], r.sl[2], r.sl[3], sv_dst[0], sv_dst[1],
            sv_dst[2], nr);
      };
      auto by_keep = [&](auto uni) {
        if (keep == kKeepSpike) {
          row(uni, std::integral_constant<int, kKeepSpike>{});
        } else if (keep == kKeepSaved) {
          row(uni, std::integral_constant<int, kKeepSaved>{});
        } else {
          row(uni, std::integral_constant < int, kKeepSpike | kKeepSaved > {});
        }
      };
      if (kUniformRows<M> && uniform) {
        by_keep(std::bool_constant<kUniformRows<M>>{});
      } else {
        by_keep(std::false_type{});
      }
    });
    if (spike) write_row(spike + off, s_dst, n, stream);
    if (saved && !kDirect) {
      for (int k = 0; k < NSV; ++k) store_saved_row(saved + (k * T + t) * N + i0, sv_dst[k], q.vth, n);
    }
    for (int s = 0; s < NS; ++s) {
      if (st_seq && st_seq[s]) write_row(st_seq[s] + off, r.st[s], n, stream);
    }
  }
}

// Runs body(rows, i0, n) over the chunks [i0, i0 + n) of blk neurons (chunk_count of them) in parallel (chunks never
// depend on the thread count), each thread with its own rows (forward's, plus backward's and an svbuf of that many
// values) carved from the calling thread's scratch, the chunk's coefficient slots already filled. Slots that hold one
// value for every neuron (or none) are filled once per thread: refilling them for every chunk was 4% of a
// Synaptic neuron's forward + backward (3 slots, Intel Xeon, T = 4). The kernels only read the slot rows.
template <typename C, typename F>
void for_each_chunk(const NeuronParams& p, int nslots, const C* const* slots, bool uniform, int64_t blk, int64_t svbuf,
                    bool backward, bool streams, int nthreads, F&& body) {
  const int64_t N = p.N, nchunks = chunk_count(N, blk);
  const int nrows = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, nchunks)));
  const size_t per_thread = Rows<C>::size(blk, svbuf, backward);
  C* slab = scratch<C>(per_thread * static_cast<size_t>(nrows));
#pragma omp parallel num_threads(nthreads) if (nchunks > 1)
  {
    bool filled = false;
#pragma omp for schedule(static) nowait
    for (int64_t ch = 0; ch < nchunks; ++ch) {
      const Rows<C> r(slab + per_thread * static_cast<size_t>(cpu::thread_index()), blk, backward);
      const int64_t i0 = ch * blk, n = std::min(blk, N - i0);
      if (!uniform) {
        fill_slots(r, slots, p, nslots, i0, n);
      } else if (!filled) {
        fill_slots(r, slots, p, nslots, 0, std::min(blk, N));
        filled = true;
      }
      body(r, i0, n);
    }
    if (streams) cpu::stream_fence();  // this thread's streaming stores, visible before the region's barrier
  }
}

struct ForwardTensors {
  const void* x;
  const void* init[kMaxStates];
  const void* slots[kMaxParams];
  void* spike;
  void* state_out[kMaxStates];
  void* saved;
  bool seq[kMaxStates];          // state_out[s] holds every step ([T, N]), else the last state ([N])
  void* state_last[kMaxStates];  // or nullptr: the last state ([N]) besides state_out
};

template <NeuronModel M, typename S>
void forward_impl(const ForwardTensors& a, const NeuronParams& p, int nthreads) {
  using C = compute_t<S>;
  using SV = std::conditional_t<neuron_saves_in_activation_dtype(M), S, C>;
  constexpr int NS = neuron_states(M), NSL = neuron_slots(M);
  const int64_t blk = chunk_for(p.T);
  const C* slots[kMaxParams] = {};
  for (int s = 0; s < NSL; ++s) slots[s] = static_cast<const C*>(a.slots[s]);
  const S* init[kMaxStates] = {};
  for (int s = 0; s < NS; ++s) init[s] = static_cast<const S*>(a.init[s]);
  const NeuronCoeffs<C> q(p, slots[0] != nullptr);
  S* st_seq[kMaxStates] = {};
  for (int s = 0; s < NS; ++s) st_seq[s] = a.seq[s] ? static_cast<S*>(a.state_out[s]) : nullptr;
  const bool uniform = slots_uniform(p, NSL, slots);
  // Large float32 spike and state sequences are written with streaming stores (cpu::stream_row), and their rows are
  // then not asked for ahead (forward_row's NextRows: a line asked for with intent to write is read, which is what
  // the streaming stores avoid; with the asking kept, the forward was 23-25% slower instead of faster).
  // bench/neuron_ab.py against the plain stores, 2 threads, N = 2^20 (AMD EPYC Zen 4), two runs: forward new / base
  // at T = 4 / 8 / 32 LIF 0.69-1.02 / 0.71-0.85 / 0.69-0.79, Leaky (spikes and the membrane sequence) 0.94-1.07 /
  // 0.81-0.85 / 0.71-0.72.
  const bool stream = streams_output<S>(p.T * p.N);
  const auto chunk = [&](const Rows<C>& r, int64_t i0, int64_t n) {
    fill_init<M, S>(r.st, r.tmp[0], init, q, i0, n);
    forward_chunk<M, S, SV>(r, q, static_cast<const S*>(a.x), static_cast<S*>(a.spike), st_seq,
                            static_cast<SV*>(a.saved), false, blk, p, uniform, i0, n, stream);
    for (int s = 0; s < NS; ++s) {
      for (void* last : {a.state_out[s] && !a.seq[s] ? a.state_out[s] : nullptr, a.state_last[s]}) {
        if (last) write_row(static_cast<S*>(last) + i0, r.st[s], n, false);
      }
    }
  };
  for_each_chunk<C>(p, NSL, slots, uniform, blk, 0, false, stream, nthreads, chunk);
}

struct BackwardTensors {
  const void* grad_spike;
  const void* grad_out[kMaxStates];
  bool seq[kMaxStates];  // grad_out[s] holds every step's gradient ([T, N]), else the last state's ([N])
  const void* x;
  const void* saved;
  const void* init[kMaxStates];
  const void* slots[kMaxParams];
  void* grad_x;
  void* grad_init[kMaxStates];
  void* slot_ws[kMaxParams];  // per-neuron slot gradients (compute type), or nullptr
  // for a slot of one value (layout C == 1): the sum of each chunk's slot gradients instead of slot_ws, one
  // double per chunk of chunk_for(T) neurons (neuron_backward_cpu adds them in chunk order)
  double* slot_sums[kMaxParams];
};

// The sum of n values in double, in a fixed order (8 partial sums, then their pairwise sum): the order of a
// chunk's slot gradients is fixed by N alone, so the total does not depend on the thread count. One chain of
// dependent double adds over every neuron cost PLIF's forward + backward 0.4 ms at N = 2^20.
template <typename C>
double sum_in_double(const C* v, int64_t n) {
  double acc[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(v[j + l]);
  for (int l = 0; j < n; ++j, ++l) acc[l] += static_cast<double>(v[j]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <NeuronModel M, typename S, Surrogate SG>
void backward_impl(const BackwardTensors& a, const NeuronParams& p, int nthreads) {
  using C = compute_t<S>;
  using SV = std::conditional_t<neuron_saves_in_activation_dtype(M), S, C>;
  constexpr int NS = neuron_states(M), NSV = neuron_saved(M), NSL = neuron_slots(M);
  const int64_t T = p.T, N = p.N, blk = chunk_for(T);
  const C* slots[kMaxParams] = {};
  for (int s = 0; s < NSL; ++s) slots[s] = static_cast<const C*>(a.slots[s]);
  const S* init[kMaxStates] = {};
  for (int s = 0; s < NS; ++s) init[s] = static_cast<const S*>(a.init[s]);
  const NeuronCoeffs<C> q(p, slots[0] != nullptr);
  const bool recompute = a.saved == nullptr;
  bool want_slot_grad = false;
  for (int s = 0; s < NSL; ++s) want_slot_grad = want_slot_grad || a.slot_ws[s] != nullptr;
  // The SpikingJelly family reads V[t-1] only for dH/dk; the snnTorch family always reads the previous
  // state (its reset decision R).
  const bool need_prev = neuron_reads_prev_state(M) || want_slot_grad;
  // whether every state after a step is one of its saved values (no state_after pass over the row)
  constexpr bool kStatesSaved = neuron_state_saved_index(M, 0) >= 0;
  const int variant = variant_of<M>(p, want_slot_grad);
  const bool read_x = neuron_always_reads_x(M) || (want_slot_grad && neuron_backward_reads_x(p, slots[0] != nullptr));
  const S* x = static_cast<const S*>(a.x);
  const S* gs = static_cast<const S*>(a.grad_spike);
  const S* g_seq[kMaxStates] = {};
  for (int s = 0; s < NS; ++s) g_seq[s] = a.seq[s] ? static_cast<const S*>(a.grad_out[s]) : nullptr;
  S* gx = static_cast<S*>(a.grad_x);
  const SV* saved = static_cast<const SV*>(a.saved);
  const int64_t svbuf = recompute ? NSV * T * blk : 0;
  const bool uniform = slots_uniform(p, NSL, slots);
  // A large float32 grad_x is written with streaming stores (cpu::stream_row), as forward_impl's outputs: the step's
  // gx row is computed into an L1 row, then streamed out (surrogate_grad_row asks for that L1 row, not for gx's
  // lines). bench/neuron_ab.py, 2 threads, N = 2^20 (AMD EPYC Zen 4), two runs: LIF backward new / base 0.96-0.97 /
  // 0.87-0.93 / 0.80-0.84 at T = 4 / 8 / 32 (grad_x 16-128 MiB), the same gradients.
  const bool stream = streams_output<S>(T * N);
  const auto chunk = [&](const Rows<C>& r, int64_t i0, int64_t n) {
    fill_init<M, S>(r.init, r.tmp[0], init, q, i0, n);
    // The recompute asks only for its own next x rows (forward_row). Also asking for the gradient rows the step
    // loop below reads and writes first (gs, gx of step T - 1 - t while step t recomputes) measured within the
    // noise of an A/A run (0.92-1.10x, LIF / Leaky / Synaptic / Alpha backward, T = 4 / 8, AMD EPYC): not done.
    if (recompute) {
      for (int s = 0; s < NS; ++s) std::copy(r.init[s], r.init[s] + n, r.st[s]);
      forward_chunk<M, S, SV>(r, q, x, nullptr, nullptr, static_cast<SV*>(nullptr), true, blk, p, uniform, i0, n,
                              false);
    }
    for (int s = 0; s < NS; ++s) {
      if (a.grad_out[s] && !a.seq[s]) {  // the gradient of a returned last state
        const C* row = load_row(static_cast<const S*>(a.grad_out[s]) + i0, r.tmp[0], n);
        std::copy(row, row + n, r.gst[s]);
      } else {
        std::fill(r.gst[s], r.gst[s] + n, C(0));
      }
    }
    if (want_slot_grad) {  // else the rows go unread and unwritten
      for (int s = 0; s < NSL; ++s) std::fill(r.gsl[s], r.gsl[s] + n, C(0));
    }
    // step t's saved values as compute-type rows (converted into `into` when stored in 16 bits)
    auto saved_rows = [&](int64_t t, const C*(&dst)[kMaxSaved], C* const* into) {
      for (int k = 0; k < NSV; ++k) {
        dst[k] = recompute ? r.svbuf + (k * T + t) * blk : load_row(saved + (k * T + t) * N + i0, into[k], n);
      }
    };
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t off = t * N + i0;
      const C* svr[kMaxSaved] = {};
      saved_rows(t, svr, r.out);
      const C* pv[kMaxStates] = {r.prev[0], r.prev[1], r.prev[2]};  // the state before step t
      if (need_prev) {
        if (t > 0) {
          const C* sv_prev[kMaxSaved] = {};
          saved_rows(t - 1, sv_prev, r.conv);
          if constexpr (kStatesSaved) {  // step t-1's saved rows are the states: read them in place
            for (int s = 0; s < NS; ++s) pv[s] = sv_prev[neuron_state_saved_index(M, s)];
          } else {
            dispatch_variant<M>(variant, [&](auto vc) {
              state_after_row<M, decltype(vc)::value, C>(q, n, sv_prev[0], sv_prev[1], sv_prev[2], r.prev[0], r.prev[1],
                                                         r.prev[2]);
            });
          }
        } else {
          for (int s = 0; s < NS; ++s) pv[s] = r.init[s];
        }
      }
      for (int s = 0; s < NS; ++s) {  // the gradient of the returned state s after step t
        if (!g_seq[s]) continue;
        const C* row = load_row(g_seq[s] + off, r.tmp[0], n);
        for (int64_t j = 0; j < n; ++j) r.gst[s][j] += row[j];
      }
      const C* g_s = load_row(gs + off, r.tmp[0], n);
      const C* xr = read_x ? load_row(x + off, r.tmp[1], n) : nullptr;
      C* g_x = stream ? r.out[kMaxSaved] : out_row(gx + off, r.out[kMaxSaved]);
      // the gs row the next backward_row reads: step t - 1's, else step T - 1's of the thread's next chunk
      // (schedule(static): its chunks are consecutive)
      NextGrad next;
      if (t > 0) {
        next = {reinterpret_cast<const char*>(gs + off - N), int64_t(sizeof(S)), n};
      } else if (i0 + n < N) {
        next = {reinterpret_cast<const char*>(gs + (T - 1) * N + i0 + n), int64_t(sizeof(S)),
                std::min(blk, N - i0 - n)};
      }
      dispatch_variant<M>(variant, [&](auto vc) {
        constexpr int V = decltype(vc)::value;
        auto row = [&](auto slots, auto uni) {
          backward_row<M, SG, V, decltype(slots)::value, decltype(uni)::value, C>(
              q, n, svr[0], svr[1], svr[2], pv[0], pv[1], pv[2], xr, g_s, g_x, r.gst[0], r.gst[1], r.gst[2], r.sl[0],
              r.sl[1], r.sl[2], r.sl[3], r.gsl[0], r.gsl[1], r.gsl[2], r.gsl[3], r.sg[0], r.sg[1], want_slot_grad,
              next);
        };
        if constexpr (kUniformRows<M>) {  // slot gradients wanted: a run-time choice
          if (want_slot_grad) {
            row(std::true_type{}, std::false_type{});  // (learnable coefficients: no UNI instantiation)
          } else if (uniform) {
            row(std::false_type{}, std::true_type{});
          } else {
            row(std::false_type{}, std::false_type{});
          }
        } else {  // the SpikingJelly family's slot (PLIF's k) has its gradient exactly in the kGk variants
          row(std::bool_constant < (V & Variant::kGk) != 0 > {}, std::false_type{});
        }
      });
      write_row(gx + off, g_x, n, stream);
    }
    for (int s = 0; s < NS; ++s) {
      if (a.grad_init[s]) write_row(static_cast<S*>(a.grad_init[s]) + i0, r.gst[s], n, false);
    }
    for (int s = 0; s < NSL; ++s) {
      if (a.slot_sums[s]) {
        a.slot_sums[s][i0 / blk] = sum_in_double(r.gsl[s], n);
      } else if (a.slot_ws[s]) {
        std::copy(r.gsl[s], r.gsl[s] + n, static_cast<C*>(a.slot_ws[s]) + i0);
      }
    }
  };
  for_each_chunk<C>(p, NSL, slots, uniform, blk, svbuf, true, stream, nthreads, chunk);
}

// grad[c] = sum over the neurons i with (i / S) % C == c of ws[i], summed in double in a fixed order
// (independent of the thread count). Slots of one value (C == 1) are summed per chunk by the backward
// itself (BackwardTensors::slot_sums), without the workspace.
template <typename C>
void reduce_slot_grad(const C* ws, C* grad, const ParamLayout& L, int64_t N, int nthreads) {
  const int64_t Cn = L.C, Sn = L.S, B = Cn * Sn > 0 ? N / (Cn * Sn) : 0;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t c = 0; c < Cn; ++c) {
    double acc = 0.0;
    for (int64_t b = 0; b < B; ++b) {
      const C* row = ws + (b * Cn + c) * Sn;
      for (int64_t s = 0; s < Sn; ++s) acc += row[s];
    }
    grad[c] = static_cast<C>(acc);
  }
}

const void* data_of(const TensorView* t) {
  return t ? t->data : nullptr;
}
void* mdata_of(const TensorView* t) {
  return t ? t->data : nullptr;
}

// T == 0: the returned last states are the initial ones, and their gradients pass straight back.
void copy_or_fill(const TensorView* src, const TensorView& dst, double fill) {
  dispatch_dtype(dst.dtype, [&](auto tag) {
    using S = decltype(tag);
    S* out = dst.ptr<S>();
    const int64_t n = dst.numel();
    if (src && src->numel() == n) {
      std::copy(src->ptr<S>(), src->ptr<S>() + n, out);
    } else {
      std::fill(out, out + n, from_compute<S>(static_cast<compute_t<S>>(fill)));
    }
  });
}

}  // namespace
}  // namespace spikeforge
