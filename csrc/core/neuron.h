// Spiking neuron dynamics: the one definition of every neuron model's charge, fire and reset and of
// their derivatives. The CPU and CUDA kernels (csrc/cpu/neuron_kernels_cpu.h, csrc/cuda/neuron_cuda.cu) and
// the attention kernels' LIF call these functions; docs/neurons.md states the equations for users.
//
// A model is a family (state variables, firing rule: compile time) plus run-time coefficients. Two
// families cover the models people train.
//
// SpikingJelly conventions (fire and reset in the same step, Heaviside(0) = 1):
//   charge   H = V + (X - (V - vr_c)) / tau      LIF (decay_input)     H = V - (V - vr_c) / tau + X  (not)
//            H = V + (X - (V - vr_c)) * k        PLIF, k = sigmoid(w)  H = V - (V - vr_c) * k + X    (not)
//            H = V + X                           IF (tau = 0 and no k)
//            vr_c = v_reset for hard reset, 0 for soft reset
//   lif      S = H >= v_th;               V = S ? v_reset : H (hard) | H - S v_th (soft)
//   alif     theta = v_th + beta_a B[t-1] (B[-1] = 0);  S = H >= theta;  V = S ? v_reset : H | H - S theta;
//            B = rho B[t-1] + (1 - rho) S   (adaptive threshold, Bellec et al. 2018)
//   ilif     S = round(clamp(H / v_th, 0, D)) (half to even);  V = H - S v_th   (integer spikes)
//            charge as LIF, except decay_input=False: H = (1 - 1/tau) V + X with 1 - 1/tau rounded once
//            from double, as SpikingJelly 2.0's multi-step ILIFNode (its CPU / torch code) rounds it
//   ternary  S = [H >= v_th] - [-H >= v_th];  V = S != 0 ? v_reset : H (hard) | H - S v_th (soft)
// snnTorch 1.0 conventions (strict firing U - thr > 0; the reset of step t is decided by the previous
// membrane, R = [U[t-1] - thr > 0], and is detached):
//   leaky    subtract: U = beta U[t-1] + X - R thr   zero: U = beta ((1 - R) U[t-1]) + X   none: beta U + X
//   synaptic I = alpha I[t-1] + X;  U = beta U[t-1] + I;  subtract: U -= R thr   zero: U -= U R
//   alpha    E = a E[t-1] + X;  I = b I[t-1] - X;  U = tau_a (E + I)   (a = alpha, b = beta)
//            subtract: E -= thr R, I -= I R, U -= -I[t-1] R;   zero: E -= E R, I -= I R, U -= U R
//   S = [U - thr > 0] * gsf (leaky's graded_spikes_factor, else 1). reset_delay=False (leaky, synaptic)
//   also resets in the same step: U -= (S / gsf - R) thr (subtract) | U -= (S / gsf - R) U (zero), with
//   gradients through S.
// Norse 1.1 convention (norse.torch.functional.lif.lif_feed_forward_step, strict firing, same-step reset):
//   norse_lif  J = I[t-1] + X;  Vd = V[t-1] + a_m ((v_leak - V[t-1]) + J);  I = J - a_s J;
//              S = [Vd - v_th > 0];  V = (1 - S) Vd + S v_reset   (a_m = dt tau_mem_inv, a_s = dt tau_syn_inv)
//   The reset keeps its gradient through S (Norse's feed-forward step does not detach it; detach_reset cuts
//   it, as Norse's recurrent step does). V[-1] has no default here: the caller passes it (Norse: v_leak).
// Per-neuron coefficients (k, beta, thr, gsf, alpha, tau_a) arrive as parameter slots already computed
// by the caller the way the peer computes them (sigmoid(w), beta.clamp(0, 1), ln a / (ln b - ln a) + 1),
// so they are the peer's values bit for bit; the kernels return the gradient of each slot and autograd
// carries it back through those expressions.
//
// Every forward operation rounds once, in the peer's order: never contracted into a fused multiply-add
// (the CPU kernel files are compiled with -ffp-contract=off; device code uses the _rn intrinsics), so
// spikes and states equal the peer's bit for bit. Backward: BPTT over all T steps with the surrogate
// g'(H - theta) for dS/dH (csrc/core/surrogate.h); detach_reset (SpikingJelly) and the detached R
// (snnTorch) cut the spike's gradient through the reset. Tensors are flattened to [T, N].
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "macros.h"
#include "status.h"
#include "surrogate.h"
#include "tensor_view.h"

namespace spikeforge {

enum class NeuronModel : int {
  lif = 0,        // IF / LIF / PLIF
  alif = 1,       // adaptive threshold
  ilif = 2,       // integer (multi-level) spikes
  ternary = 3,    // spikes in {-1, 0, 1}
  leaky = 4,      // snnTorch Leaky
  synaptic = 5,   // snnTorch Synaptic
  alpha = 6,      // snnTorch Alpha
  norse_lif = 7,  // Norse's current-based LIF (feed-forward)
};
constexpr int kNumNeuronModels = 8;

// Calls f(std::integral_constant<NeuronModel, m>{}) for the model m (host code: the CPU and CUDA entry
// points instantiate their kernels per model through it).
template <typename F>
void dispatch_model(NeuronModel m, F&& f) {
  switch (m) {
    case NeuronModel::lif:
      return f(std::integral_constant<NeuronModel, NeuronModel::lif>{});
    case NeuronModel::alif:
      return f(std::integral_constant<NeuronModel, NeuronModel::alif>{});
    case NeuronModel::ilif:
      return f(std::integral_constant<NeuronModel, NeuronModel::ilif>{});
    case NeuronModel::ternary:
      return f(std::integral_constant<NeuronModel, NeuronModel::ternary>{});
    case NeuronModel::leaky:
      return f(std::integral_constant<NeuronModel, NeuronModel::leaky>{});
    case NeuronModel::synaptic:
      return f(std::integral_constant<NeuronModel, NeuronModel::synaptic>{});
    case NeuronModel::alpha:
      return f(std::integral_constant<NeuronModel, NeuronModel::alpha>{});
    case NeuronModel::norse_lif:
      return f(std::integral_constant<NeuronModel, NeuronModel::norse_lif>{});
  }
  throw ArgumentError("unknown neuron model id " + std::to_string(static_cast<int>(m)));
}

enum class ResetMechanism : int { subtract = 0, zero = 1, none = 2 };  // snnTorch's reset_mechanism

constexpr int kMaxStates = 3;  // state variables per neuron (alpha: U, E, I)
constexpr int kMaxSaved = 3;   // values per neuron and step that backward reads
constexpr int kMaxParams = 4;  // per-neuron coefficient slots

// How a slot's C values map onto the N neurons: neuron i reads entry (i / S) % C. A scalar is C = 1;
// one value per channel of x_seq [T, B, C, ...] is C, S = prod(dims after C); one per neuron C = N.
struct ParamLayout {
  int64_t C = 1;
  int64_t S = 1;
};

// Slots:  lif 0 = k (PLIF; absent: divide by tau)   leaky 0 = beta, 1 = thr, 2 = gsf
//         synaptic 0 = beta, 1 = thr, 2 = alpha      alpha 0 = beta, 1 = thr, 2 = alpha, 3 = tau_a
//         norse_lif 0 = a_m = dt tau_mem_inv, 1 = a_s = dt tau_syn_inv, 2 = v_leak, 3 = v_th
// alif, ilif and ternary read no slot. The snnTorch models and norse_lif need all their slots.
struct NeuronParams {
  NeuronModel model = NeuronModel::lif;
  int64_t T = 0;  // time steps
  int64_t N = 0;  // neurons per step
  ParamLayout layout[kMaxParams];
  // Constants are double so float64 runs keep them exact; kernels convert them to their compute type.
  double tau = 2.0;  // 0: IF (no leak) when slot 0 is absent
  double v_threshold = 1.0;
  double v_reset = 0.0;  // used when hard_reset
  bool hard_reset = true;
  bool decay_input = true;
  bool detach_reset = false;
  double beta_a = 1.8;     // alif
  double rho = 0.9;        // alif
  int64_t levels = 4;      // ilif: D, the largest spike count
  bool two_sided = false;  // ternary: dS/dH = g'(H - v_th) + g'(-H - v_th), else g'(|H| - v_th)
  ResetMechanism reset = ResetMechanism::subtract;  // snnTorch family
  bool reset_delay = true;
  Surrogate surrogate = Surrogate::sigmoid;  // dS/dH (ilif uses its straight-through window instead)
  double alpha = 4.0;                        // the surrogate's parameter
  double beta_sg = 1.0;                      // its second parameter (spike_rate_escape)
};

SF_HD constexpr bool is_snntorch_family(NeuronModel m) {
  return static_cast<int>(m) >= static_cast<int>(NeuronModel::leaky) &&
         static_cast<int>(m) <= static_cast<int>(NeuronModel::alpha);
}
// Models whose backward step always reads the state before the step (the snnTorch family's reset decision,
// norse_lif's current) and, of those, the ones that also always read X (alpha's E + I, norse_lif's jump).
SF_HD constexpr bool neuron_reads_prev_state(NeuronModel m) {
  return is_snntorch_family(m) || m == NeuronModel::norse_lif;
}
SF_HD constexpr bool neuron_always_reads_x(NeuronModel m) {
  return m == NeuronModel::alpha || m == NeuronModel::norse_lif;
}

// State variables of a model (state 0 is the membrane; alif 1 = B; synaptic 1 = I; alpha 1 = E, 2 = I;
// norse_lif 1 = I).
SF_HD constexpr int neuron_states(NeuronModel m) {
  return m == NeuronModel::alpha                                                                 ? 3
         : (m == NeuronModel::alif || m == NeuronModel::synaptic || m == NeuronModel::norse_lif) ? 2
                                                                                                 : 1;
}
// Values saved per neuron and step for backward (recomputed inside the CPU backward by default):
// SpikingJelly family H (alif: H, B[t-1]); leaky U before and after the same-step reset; synaptic those
// and I; alpha U, E, I; norse_lif Vd (before the reset), V, I.
SF_HD constexpr int neuron_saved(NeuronModel m) {
  switch (m) {
    case NeuronModel::alif:
      return 2;
    case NeuronModel::leaky:
      return 2;
    case NeuronModel::synaptic:
      return 3;
    case NeuronModel::alpha:
      return 3;
    case NeuronModel::norse_lif:
      return 3;
    default:
      return 1;
  }
}
// Which saved value is state s after a step, where every state is one (the snnTorch family and norse_lif:
// leaky, synaptic and norse_lif save the state after the step as value 1 (and I as 2), alpha saves U, E, I);
// -1 where a state is computed from the saved values (the SpikingJelly family: V from H and the spike).
SF_HD constexpr int neuron_state_saved_index(NeuronModel m, int s) {
  if (m == NeuronModel::alpha) return s;
  if (is_snntorch_family(m) || m == NeuronModel::norse_lif) return s + 1;
  return -1;
}
// Coefficient slots a model reads.
SF_HD constexpr int neuron_slots(NeuronModel m) {
  switch (m) {
    case NeuronModel::lif:
      return 1;
    case NeuronModel::leaky:
      return 3;
    case NeuronModel::synaptic:
      return 3;
    case NeuronModel::alpha:
      return 4;
    case NeuronModel::norse_lif:
      return 4;
    default:
      return 0;
  }
}
// The surrogates each model is compiled for: SpikingJelly's set (ids below kNumSpikingJellySurrogates) for
// its family, snnTorch's functions plus its atan and sigmoid for the snnTorch family, none for ilif (its
// spike has a straight-through gradient). Each (model, surrogate) pair is a kernel instantiation, so the
// sets keep the build quick; the entry points refuse other pairs.
SF_HD constexpr bool surrogate_allowed(NeuronModel m, Surrogate s) {
  const int id = static_cast<int>(s);
  if (m == NeuronModel::ilif) return id == 0;  // ignored; the one instantiation
  // norse_lif: the surrogates Norse's threshold methods map onto (docs/neurons.md): fast_sigmoid with
  // alpha 1 is its "super", disabled its "heaviside", triangle / sigmoid / erf its triangle (alpha 1),
  // tanh (alpha 2) and heavi_erfc (alpha 2); atan as every model has it.
  if (m == NeuronModel::norse_lif) {
    return s == Surrogate::fast_sigmoid || s == Surrogate::disabled || s == Surrogate::triangle ||
           s == Surrogate::sigmoid || s == Surrogate::erf || s == Surrogate::atan;
  }
  if (is_snntorch_family(m)) return id >= kNumSpikingJellySurrogates || s == Surrogate::atan || s == Surrogate::sigmoid;
  return id < kNumSpikingJellySurrogates;
}

// Whether saved values may be stored in the 16-bit activation dtype without changing what backward
// derives from them (core/half_bits.h keeps H on its side of the constant threshold): only the binary
// LIF; other models save them in the compute type (float32, or float64 for float64 activations).
SF_HD constexpr bool neuron_saves_in_activation_dtype(NeuronModel m) {
  return m == NeuronModel::lif;
}
// Whether backward reads X (besides the saved values): PLIF's dH/dk with decay_input, the alpha model,
// whose E + I before the reset is recomputed from X, and norse_lif, whose current jump I[t-1] + X is.
inline bool neuron_backward_reads_x(const NeuronParams& p, bool has_k) {
  return neuron_always_reads_x(p.model) || (p.model == NeuronModel::lif && has_k && p.decay_input);
}

// ------------------------------------------------------------------------------------------------
// Arithmetic in the peers' rounding: each operation rounds once and is never fused.
// ------------------------------------------------------------------------------------------------
#if defined(__CUDA_ARCH__)
SF_HD float rn_add(float a, float b) {
  return __fadd_rn(a, b);
}
SF_HD float rn_sub(float a, float b) {
  return __fsub_rn(a, b);
}
SF_HD float rn_mul(float a, float b) {
  return __fmul_rn(a, b);
}
SF_HD float rn_div(float a, float b) {
  return __fdiv_rn(a, b);
}
#else
SF_HD float rn_add(float a, float b) {
  return a + b;
}
SF_HD float rn_sub(float a, float b) {
  return a - b;
}
SF_HD float rn_mul(float a, float b) {
  return a * b;
}
SF_HD float rn_div(float a, float b) {
  return a / b;
}
#endif
SF_HD double rn_add(double a, double b) {
  return a + b;
}
SF_HD double rn_sub(double a, double b) {
  return a - b;
}
SF_HD double rn_mul(double a, double b) {
  return a * b;
}
SF_HD double rn_div(double a, double b) {
  return a / b;
}

// Round half to even for values in [0, 2^22] (ilif counts): the shifter form vectorises and agrees
// with torch.round there. NaN stays NaN.
template <typename C>
SF_HD C round_half_even_small(C x) {
  const C shifter = sizeof(C) == 4 ? C(12582912.0) : C(6755399441055744.0);  // 1.5 * 2^23, 1.5 * 2^52
  return rn_sub(rn_add(x, shifter), shifter);
}

// ------------------------------------------------------------------------------------------------
// Run-time constants of one call, in the compute type C (float, or double for float64).
// ------------------------------------------------------------------------------------------------
template <typename C>
struct NeuronCoeffs {
  C vth, vr, vr_c, nd, tau, inv_tau, keep, beta_a, rho, one_minus_rho, levels, sg_a, sg_b;
  bool hard, decay, leak, divide, keep_form, two_sided, reset_delay;
  ResetMechanism reset;
  NeuronCoeffs(const NeuronParams& p, bool has_k)
      : vth(static_cast<C>(p.v_threshold)),
        vr(static_cast<C>(p.v_reset)),
        vr_c(p.hard_reset ? static_cast<C>(p.v_reset) : C(0)),
        nd(p.detach_reset ? C(0) : C(1)),
        tau(static_cast<C>(p.tau)),
        inv_tau(p.tau != 0.0 ? static_cast<C>(1.0 / p.tau) : C(0)),
        keep(p.tau != 0.0 ? static_cast<C>(1.0 - 1.0 / p.tau) : C(1)),
        beta_a(static_cast<C>(p.beta_a)),
        rho(static_cast<C>(p.rho)),
        one_minus_rho(static_cast<C>(1.0 - p.rho)),
        levels(static_cast<C>(p.levels)),
        sg_a(static_cast<C>(p.alpha)),
        sg_b(static_cast<C>(p.beta_sg)),
        hard(p.hard_reset),
        decay(p.decay_input),
        // IF: H = V + X exactly (the general form would add 0 * (..), which is NaN once V is infinite)
        leak(has_k || p.tau != 0.0),
        divide(!has_k),
        // ilif without decay_input: H = keep V + X (SpikingJelly's ILIFNode), not V - V / tau + X
        keep_form(p.model == NeuronModel::ilif && !p.decay_input && !has_k && p.tau != 0.0),
        two_sided(p.two_sided),
        reset_delay(p.reset_delay),
        reset(p.reset) {}
};

// The coefficient slots of one neuron (unused ones are left at zero by the kernels).
template <typename C>
struct NeuronSlots {
  C v[kMaxParams];
};

// ================================================================================================
// SpikingJelly family: lif, alif, ilif, ternary.  State: V (alif: V, B). Saved: H (alif: H, B[t-1]).
// ================================================================================================
// The I-LIF's keep form is a compile-time branch: one more run-time flag in every model's step made GCC give
// up unswitching the CPU row loops on their flags, and the LIF loops ran scalar (forward 3.5x, backward 2x
// slower on an Intel Xeon, T=4..32, N=2^20).
template <NeuronModel M, typename C>
SF_HD C sj_charge(const NeuronCoeffs<C>& q, C k, C v, C x) {
  if (!q.leak) return rn_add(v, x);
  if constexpr (M == NeuronModel::ilif) {
    if (q.keep_form) return rn_add(rn_mul(q.keep, v), x);
  }
  if (q.decay) {
    const C d = rn_sub(x, rn_sub(v, q.vr_c));
    return rn_add(v, q.divide ? rn_div(d, q.tau) : rn_mul(d, k));
  }
  const C d = rn_sub(v, q.vr_c);
  return rn_add(rn_sub(v, q.divide ? rn_div(d, q.tau) : rn_mul(d, k)), x);
}

// The step's threshold: v_th, or v_th + beta_a B[t-1] (alif).
template <NeuronModel M, typename C>
SF_HD C sj_theta(const NeuronCoeffs<C>& q, C b_prev) {
  if constexpr (M == NeuronModel::alif) {
    return rn_add(q.vth, rn_mul(q.beta_a, b_prev));
  } else {
    (void)b_prev;
    return q.vth;
  }
}

template <NeuronModel M, typename C>
SF_HD C sj_fire(const NeuronCoeffs<C>& q, C h, C theta) {
  if constexpr (M == NeuronModel::ilif) {
    C r = rn_div(h, q.vth);
    r = r > q.levels ? q.levels : r;  // clamp to [0, D]; NaN passes through (both tests are false)
    r = r < C(0) ? C(0) : r;
    return round_half_even_small(r);
  } else if constexpr (M == NeuronModel::ternary) {
    // (H >= v_th) - (-H >= v_th): with v_th > 0 (checked in neuron.cpp) at most one holds, and either is |H| >=
    // v_th (NaN: neither). Written as that difference, the two compares' masks became 20 mask and blend
    // instructions per vector (GCC 12), and the ternary forward took twice the LIF's time.
    (void)theta;
    return sf_abs(h) >= q.vth ? sf_copysign(C(1), h) : C(0);
  } else {
    return h >= theta ? C(1) : C(0);
  }
}

// V after the reset: hard resets select v_reset where the neuron fired, soft resets subtract S theta.
template <NeuronModel M, typename C>
SF_HD C sj_reset(const NeuronCoeffs<C>& q, C h, C s, C theta) {
  if (M != NeuronModel::ilif && q.hard) return s != C(0) ? q.vr : h;
  return rn_sub(h, rn_mul(s, theta));
}

// A gradient term through the reset's dependence on the spike, which detach_reset cuts: the term itself, or 0
// outright (not the term times 0, which is NaN where it is infinite: (v_reset - H) g' at H = -inf, a neuron
// that never fires, whose SpikingJelly gradient is finite).
template <typename C>
SF_HD C reset_term(const NeuronCoeffs<C>& q, C term) {
  return q.nd != C(0) ? term : C(0);
}

// The k that sj_backward takes: PLIF's coefficient, else 1/tau (0 for IF).
template <typename C>
SF_HD C backward_leak(const NeuronCoeffs<C>& q, C k_slot) {
  return q.divide ? q.inv_tau : k_slot;
}

// One forward step: st = (V, B) before, updated in place; sv = (H, B[t-1]); returns S.
template <NeuronModel M, typename C>
SF_HD C sj_forward(const NeuronCoeffs<C>& q, C k, C (&st)[kMaxStates], C x, C (&sv)[kMaxSaved]) {
  const C h = sj_charge<M>(q, k, st[0], x);
  const C theta = sj_theta<M>(q, st[1]);
  const C s = sj_fire<M>(q, h, theta);
  sv[0] = h;
  if constexpr (M == NeuronModel::alif) {
    sv[1] = st[1];
    st[1] = rn_add(rn_mul(q.rho, st[1]), rn_mul(q.one_minus_rho, s));
  }
  st[0] = sj_reset<M>(q, h, s, theta);
  return s;
}

// The LIF of the attention kernels: one step on membrane v (no coefficient slot) -> S; `h` gets H.
template <typename C>
SF_HD C lif_step(const NeuronCoeffs<C>& q, C& v, C x, C& h) {
  C st[kMaxStates] = {v}, sv[kMaxSaved] = {};
  const C s = sj_forward<NeuronModel::lif>(q, C(0), st, x, sv);
  v = st[0];
  h = sv[0];
  return s;
}
template <typename C>
SF_HD C lif_step(const NeuronCoeffs<C>& q, C& v, C x) {
  C h;
  return lif_step(q, v, x, h);
}
// V[-1] of a neuron without an initial state: v_reset for the hard reset, 0 otherwise.
template <typename C>
SF_HD C lif_v_init(const NeuronCoeffs<C>& q) {
  return q.hard ? q.vr : C(0);
}

// The state after a step from its saved values (backward needs V[t-1] for dH/dk).
template <NeuronModel M, typename C>
SF_HD void sj_state_after(const NeuronCoeffs<C>& q, const C (&sv)[kMaxSaved], C (&st)[kMaxStates]) {
  const C theta = sj_theta<M>(q, sv[1]);
  const C s = sj_fire<M>(q, sv[0], theta);
  st[0] = sj_reset<M>(q, sv[0], s, theta);
  if constexpr (M == NeuronModel::alif) st[1] = rn_add(rn_mul(q.rho, sv[1]), rn_mul(q.one_minus_rho, s));
}

// One backward step. gst = (dL/dV[t], dL/dB[t]) in, (dL/dV[t-1], dL/dB[t-1]) out (without the
// gradient of a returned V[t-1], which the caller adds); gs = dL/dS[t]; g = g' of the surrogate at the
// arguments surrogate_args() gave for this step; k = the leak coefficient: PLIF's slot, 1/tau (q.inv_tau)
// for LIF, 0 for IF (backward_leak() gives it). Returns dL/dX[t]; adds dL/dk to gk (PLIF: v_prev = V[t-1],
// read only then).
template <NeuronModel M, typename C>
SF_HD C sj_backward(const NeuronCoeffs<C>& q, C k, const C (&sv)[kMaxSaved], C v_prev, C x, C gs, const C (&g)[2],
                    C (&gst)[kMaxStates], C& gk, bool want_gk) {
  const C h = sv[0];
  const C theta = sj_theta<M>(q, sv[1]);
  const C s = sj_fire<M>(q, h, theta);
  C ds_dh, dv_dh, ds_dth = C(0), dv_dth = C(0);
  if constexpr (M == NeuronModel::ilif) {
    // straight-through over the counting window: dS/dH = 1/v_th where 0 <= H / v_th <= D
    const C u = h / q.vth;
    ds_dh = (u >= C(0) && u <= q.levels) ? C(1) / q.vth : C(0);
    dv_dh = C(1) - reset_term(q, q.vth * ds_dh);
  } else if constexpr (M == NeuronModel::ternary) {
    C devent;  // derivative of the reset event (S != 0) in H
    if (q.two_sided) {
      ds_dh = g[0] + g[1];
      devent = g[0] - g[1];
    } else {
      ds_dh = h == C(0) ? C(0) : g[0];
      devent = h > C(0) ? g[0] : (h < C(0) ? -g[0] : C(0));
    }
    if (q.hard) {
      const C ev = s != C(0) ? C(1) : C(0);
      dv_dh = (C(1) - ev) + reset_term(q, (q.vr - h) * devent);
    } else {
      dv_dh = C(1) - reset_term(q, q.vth * ds_dh);
    }
  } else {
    ds_dh = g[0];
    if (q.hard) {
      dv_dh = (C(1) - s) + reset_term(q, (q.vr - h) * g[0]);
    } else {
      dv_dh = C(1) - reset_term(q, theta * g[0]);
    }
    if constexpr (M == NeuronModel::alif) {
      ds_dth = -g[0];
      // hard: V = S v_r + (1 - S) H;  soft: V = H - S theta (S itself, and theta through S unless detached)
      dv_dth = q.hard ? -reset_term(q, (q.vr - h) * g[0]) : -s + reset_term(q, theta * g[0]);
    }
  }
  C gs_tot = gs;
  if constexpr (M == NeuronModel::alif) gs_tot = gs + gst[1] * q.one_minus_rho;  // B[t] depends on S[t]
  const C gh = gs_tot * ds_dh + gst[0] * dv_dh;
  if constexpr (M == NeuronModel::alif) {
    const C gth = gs_tot * ds_dth + gst[0] * dv_dth;
    gst[1] = gst[1] * q.rho + gth * q.beta_a;
  }
  const C kk = k;
  if constexpr (M == NeuronModel::ilif) {  // compile time, as in sj_charge
    gst[0] = q.leak ? gh * (q.keep_form ? q.keep : C(1) - kk) : gh;
  } else {
    gst[0] = q.leak ? gh * (C(1) - kk) : gh;
  }
  if (want_gk) gk += gh * ((q.decay ? x : C(0)) - (v_prev - q.vr_c));
  return q.leak && q.decay ? gh * kk : gh;
}

// ================================================================================================
// snnTorch family: leaky, synaptic, alpha.
// State: U (synaptic: U, I; alpha: U, E, I). Saved: leaky (U, U') with U' after the same-step reset;
// synaptic (U, U', I); alpha (U, E, I) after the step.
// ================================================================================================
template <typename C>
SF_HD C snn_heaviside(C u, C thr) {
  return rn_sub(u, thr) > C(0) ? C(1) : C(0);
}

// One forward step: st before, updated in place; returns the spike; fills sv.
template <NeuronModel M, typename C>
SF_HD C snn_forward(const NeuronCoeffs<C>& q, const NeuronSlots<C>& sl, C (&st)[kMaxStates], C x, C (&sv)[kMaxSaved]) {
  const C beta = sl.v[0], thr = sl.v[1];
  const C u_prev = st[0];
  const C R = snn_heaviside(u_prev, thr);
  C u;
  if constexpr (M == NeuronModel::leaky) {
    if (q.reset == ResetMechanism::zero) {
      u = rn_add(rn_mul(beta, rn_mul(rn_sub(C(1), R), u_prev)), x);
    } else {
      u = rn_add(rn_mul(beta, u_prev), x);
      if (q.reset == ResetMechanism::subtract) u = rn_sub(u, rn_mul(R, thr));
    }
  } else if constexpr (M == NeuronModel::synaptic) {
    const C i = rn_add(rn_mul(sl.v[2], st[1]), x);
    u = rn_add(rn_mul(beta, u_prev), i);
    if (q.reset == ResetMechanism::subtract) u = rn_sub(u, rn_mul(R, thr));
    if (q.reset == ResetMechanism::zero) u = rn_sub(u, rn_mul(u, R));
    st[1] = i;
  } else {
    const C e_prev = st[1], i_prev = st[2];
    C e = rn_add(rn_mul(sl.v[2], e_prev), x);
    C i = rn_sub(rn_mul(beta, i_prev), x);
    u = rn_mul(sl.v[3], rn_add(e, i));
    if (q.reset == ResetMechanism::subtract) {
      e = rn_sub(e, rn_mul(thr, R));
      i = rn_sub(i, rn_mul(i, R));
      u = rn_sub(u, rn_mul(-i_prev, R));
    } else if (q.reset == ResetMechanism::zero) {
      e = rn_sub(e, rn_mul(e, R));
      i = rn_sub(i, rn_mul(i, R));
      u = rn_sub(u, rn_mul(u, R));
    }
    st[1] = e;
    st[2] = i;
  }
  const C step = snn_heaviside(u, thr);
  const C gsf = M == NeuronModel::leaky ? sl.v[2] : C(1);
  const C spike = rn_mul(step, gsf);
  sv[0] = u;
  if constexpr (M == NeuronModel::alpha) {
    sv[1] = st[1];
    sv[2] = st[2];
  } else {
    if (!q.reset_delay) {
      const C do_reset = rn_sub(rn_div(spike, gsf), R);  // spk / gsf - R, as snnTorch computes it
      if (q.reset == ResetMechanism::subtract) u = rn_sub(u, rn_mul(do_reset, thr));
      if (q.reset == ResetMechanism::zero) u = rn_sub(u, rn_mul(do_reset, u));
    }
    sv[1] = u;
    if constexpr (M == NeuronModel::synaptic) sv[2] = st[1];
  }
  st[0] = u;
  return spike;
}

template <NeuronModel M, typename C>
SF_HD void snn_state_after(const C (&sv)[kMaxSaved], C (&st)[kMaxStates]) {
  if constexpr (M == NeuronModel::alpha) {
    st[0] = sv[0];
    st[1] = sv[1];
    st[2] = sv[2];
  } else {
    st[0] = sv[1];
    if constexpr (M == NeuronModel::synaptic) st[1] = sv[2];
  }
}

// One backward step. st_prev: the state before step t. gst: dL/d(state after t) in, dL/d(state before
// t) out (the caller adds the gradient of a returned U[t-1]). gsl accumulates dL/d(slot) per neuron;
// gv[0] is g' at surrogate_args()'s argument. Returns dL/dX[t].
template <NeuronModel M, typename C>
SF_HD C snn_backward(const NeuronCoeffs<C>& q, const NeuronSlots<C>& sl, const C (&sv)[kMaxSaved],
                     const C (&st_prev)[kMaxStates], C x, C gs, const C (&gv)[2], C (&gst)[kMaxStates],
                     C (&gsl)[kMaxParams]) {
  const C beta = sl.v[0], thr = sl.v[1];
  const C u = sv[0];
  const C R = snn_heaviside(st_prev[0], thr);
  const C step = snn_heaviside(u, thr);
  const C g = gv[0];
  const C gsf = M == NeuronModel::leaky ? sl.v[2] : C(1);
  // dL/dU (the membrane the spike is fired from) and dL/dthr of this step
  C gu = gs * gsf * g;
  C gthr = -gs * gsf * g;
  if constexpr (M == NeuronModel::leaky) gsl[2] += gs * step;
  if (M != NeuronModel::alpha && !q.reset_delay && q.reset != ResetMechanism::none) {
    // U' = U - (step - R) thr | U - (step - R) U, step with gradient g in U and -g in thr
    if (q.reset == ResetMechanism::subtract) {
      gu += gst[0] * (C(1) - thr * g);
      gthr += gst[0] * (-(step - R) + thr * g);
    } else {
      gu += gst[0] * ((C(1) - step + R) - u * g);
      gthr += gst[0] * (u * g);
    }
  } else {
    gu += gst[0];
  }
  C gx;
  if constexpr (M == NeuronModel::leaky) {
    const bool zero = q.reset == ResetMechanism::zero;
    if (q.reset == ResetMechanism::subtract) gthr -= gu * R;
    const C carried = zero ? (C(1) - R) * st_prev[0] : st_prev[0];
    gsl[0] += gu * carried;
    gst[0] = gu * (zero ? beta * (C(1) - R) : beta);
    gx = gu;
  } else if constexpr (M == NeuronModel::synaptic) {
    if (q.reset == ResetMechanism::subtract) gthr -= gu * R;
    const C gu0 = q.reset == ResetMechanism::zero ? gu * (C(1) - R) : gu;  // U = U0 - U0 R
    gsl[0] += gu0 * st_prev[0];
    const C gi = gst[1] + gu0;  // I[t] feeds U0 now and I[t+1]
    gsl[2] += gi * st_prev[1];
    gst[0] = gu0 * beta;
    gst[1] = gi * sl.v[2];
    gx = gi;
  } else {  // alpha: U[t] reaches later steps only through the detached R, so gst[0] is not carried
    const C a = sl.v[2], tau_a = sl.v[3];
    const C e_prev = st_prev[1], i_prev = st_prev[2];
    const C e0 = rn_add(rn_mul(a, e_prev), x), i0 = rn_sub(rn_mul(beta, i_prev), x);
    const bool sub = q.reset == ResetMechanism::subtract, zero = q.reset == ResetMechanism::zero;
    const C keep = C(1) - R;
    const C gu0 = zero ? gu * keep : gu;
    const C ge0 = (zero ? gst[1] * keep : gst[1]) + gu0 * tau_a;
    const C gi0 = ((sub || zero) ? gst[2] * keep : gst[2]) + gu0 * tau_a;
    if (sub) gthr -= gst[1] * R;
    gsl[0] += gi0 * i_prev;
    gsl[2] += ge0 * e_prev;
    gsl[3] += gu0 * (e0 + i0);
    gst[0] = C(0);
    gst[1] = ge0 * a;
    gst[2] = gi0 * beta + (sub ? gu * R : C(0));
    gx = ge0 - gi0;
  }
  gsl[1] += gthr;
  return gx;
}

// ================================================================================================
// Norse: norse_lif. State: V, I. Saved: Vd (the decayed membrane the spike is fired from), V, I after
// the step. Slots: a_m, a_s, v_leak, v_th (NeuronParams.v_reset is v_reset).
// ================================================================================================
// One forward step in Norse's order of operations (lif_feed_forward_step): st before, updated in place.
template <typename C>
SF_HD C norse_forward(const NeuronCoeffs<C>& q, const NeuronSlots<C>& sl, C (&st)[kMaxStates], C x,
                      C (&sv)[kMaxSaved]) {
  const C am = sl.v[0], as = sl.v[1], vl = sl.v[2], th = sl.v[3];
  const C v = st[0];
  const C j = rn_add(st[1], x);                                  // i_new = i + x
  const C vd = rn_add(v, rn_mul(am, rn_add(rn_sub(vl, v), j)));  // v + dt tau_mem_inv ((v_leak - v) + i_new)
  const C i = rn_sub(j, rn_mul(as, j));                          // i_new + (-dt tau_syn_inv) i_new
  const C z = snn_heaviside(vd, th);                             // heaviside(v_dec - v_th): 0 at 0
  // (1 - z) v_dec + z v_reset as Norse writes it: both products are formed (so an infinite v_dec that
  // fired gives NaN there too), each rounding once
  const C vn = rn_add(rn_mul(rn_sub(C(1), z), vd), rn_mul(z, q.vr));
  sv[0] = vd;
  sv[1] = vn;
  sv[2] = i;
  st[0] = vn;
  st[1] = i;
  return z;
}

template <typename C>
SF_HD void norse_state_after(const C (&sv)[kMaxSaved], C (&st)[kMaxStates]) {
  st[0] = sv[1];
  st[1] = sv[2];
}

// One backward step (arguments as snn_backward's; gv[0] = g'(Vd - v_th)). dVd/dV[t-1] = 1 - a_m,
// dVd/dJ = a_m, dI/dJ = 1 - a_s, dV/dVd = (1 - S) + (v_reset - Vd) g' (the second term cut by
// detach_reset), dS/dv_th = -g'.
template <typename C>
SF_HD C norse_backward(const NeuronCoeffs<C>& q, const NeuronSlots<C>& sl, const C (&sv)[kMaxSaved],
                       const C (&st_prev)[kMaxStates], C x, C gs, const C (&gv)[2], C (&gst)[kMaxStates],
                       C (&gsl)[kMaxParams]) {
  const C am = sl.v[0], as = sl.v[1], vl = sl.v[2], th = sl.v[3];
  const C vd = sv[0];
  const C z = snn_heaviside(vd, th);
  const C v_prev = st_prev[0];
  const C j = rn_add(st_prev[1], x);                               // the forward's i_new, recomputed exactly
  const C w = (gs + reset_term(q, gst[0] * (q.vr - vd))) * gv[0];  // dL/dS through the spike and the reset, times g'
  const C gvd = w + gst[0] * (C(1) - z);
  const C gj = gvd * am + gst[1] * (C(1) - as);
  gsl[0] += gvd * ((vl - v_prev) + j);
  gsl[1] -= gst[1] * j;
  gsl[2] += gvd * am;
  gsl[3] -= w;
  gst[0] = gvd * (C(1) - am);
  gst[1] = gj;
  return gj;
}

// ================================================================================================
// The surrogate's arguments of a step: backward evaluates g' at these (kernels may do it in a pass of its
// own: on CPU, exp-based surrogates vectorise there and not inside the step's selects).
// ================================================================================================
template <NeuronModel M>
constexpr int kSurrogateArgs = M == NeuronModel::ilif      ? 0
                               : M == NeuronModel::ternary ? 2
                                                           : 1;

template <NeuronModel M, typename C>
SF_HD void surrogate_args(const NeuronCoeffs<C>& q, const NeuronSlots<C>& sl, const C (&sv)[kMaxSaved], C (&a)[2]) {
  if constexpr (M == NeuronModel::ternary) {
    const C h = sv[0];
    a[0] = q.two_sided ? h - q.vth : (h < C(0) ? -h : h) - q.vth;
    a[1] = -h - q.vth;
  } else if constexpr (M == NeuronModel::leaky || M == NeuronModel::synaptic || M == NeuronModel::alpha) {
    a[0] = sv[0] - sl.v[1];
  } else if constexpr (M == NeuronModel::norse_lif) {
    a[0] = sv[0] - sl.v[3];
  } else {
    a[0] = sv[0] - sj_theta<M>(q, sv[1]);
  }
}

// g' at a step's surrogate arguments (the second is read by the two-sided ternary spike only).
template <NeuronModel M, Surrogate SG, typename C>
SF_HD void surrogate_values(const NeuronCoeffs<C>& q, const NeuronSlots<C>& sl, const C (&sv)[kMaxSaved], C (&g)[2]) {
  C a[2] = {C(0), C(0)};
  surrogate_args<M>(q, sl, sv, a);
  g[0] = kSurrogateArgs<M> > 0 ? SurrogateFn<SG>::grad(a[0], q.sg_a, q.sg_b) : C(0);
  g[1] = kSurrogateArgs<M> > 1 && q.two_sided ? SurrogateFn<SG>::grad(a[1], q.sg_a, q.sg_b) : C(0);
}

// The attention LIF's backward step from its saved H: -> dL/dX; gv = dL/dV[t] in, dL/dV[t-1] out.
template <Surrogate SG, typename C>
SF_HD C lif_backward(const NeuronCoeffs<C>& q, C h, C gs, C& gv) {
  const C sv[kMaxSaved] = {h};
  const NeuronSlots<C> sl{};
  C g[2];
  surrogate_values<NeuronModel::lif, SG>(q, sl, sv, g);
  C gst[kMaxStates] = {gv}, gk = C(0);
  const C gx = sj_backward<NeuronModel::lif>(q, q.inv_tau, sv, C(0), C(0), gs, g, gst, gk, false);
  gv = gst[0];
  return gx;
}

// ================================================================================================
// Entry points (csrc/core/neuron.cpp checks the arguments and routes to the device: csrc/dispatch.h).
// ================================================================================================
// Forward over all T steps.
//   x            [T, N] activations (float32/float16/bfloat16; float64 on CPU)
//   state_init   kMaxStates entries, [N] in x's dtype or nullptr (V: v_reset for hard reset, else 0;
//                every other state 0; norse_lif requires V). Entries past neuron_states(model) must be
//                nullptr.
//   slots        kMaxParams entries, [layout.C] in the compute type (float32; float64 for float64 x), or
//                nullptr (only lif's slot 0 is optional)
//   spike        [T, N] out, x's dtype
//   state_out    kMaxStates entries, each [T, N] (that state after every step), [N] (after the last
//                step) or nullptr (not wanted); x's dtype. Every state may be asked per step: the
//                multi-state ops return a synaptic current sequence straight from the kernel instead
//                of the caller replaying the dynamics. (T == 1: both shapes are the last state.)
//   saved        [neuron_saved(model), T, N] out, or nullptr: the saved values for backward, in x's
//                dtype when neuron_saves_in_activation_dtype(model), else the compute type
//   state_last   kMaxStates entries, each [N] (that state after the last step, in a tensor of its own) or
//                nullptr. For callers that return a state sequence and also keep its last step apart
//                (snnTorch's modules store it, and their detach_hidden() detaches it in place): the
//                kernel writes it from registers instead of the caller copying row T - 1 back.
void neuron_forward(const TensorView& x, const TensorView* const* state_init, const TensorView* const* slots,
                    const TensorView& spike, const TensorView* const* state_out, const TensorView* saved,
                    const TensorView* const* state_last, const NeuronParams& p, const ExecConfig& ex);

// Backward over all T steps.
//   grad_spike      [T, N]
//   grad_state_out  kMaxStates entries shaped as state_out, or nullptr (no gradient reached that output):
//                   a [T, N] entry is the gradient of that state after each step
//   x               [T, N] or nullptr: needed when saved is nullptr (the CPU recomputes the forward from
//                   x) and when neuron_backward_reads_x()
//   saved           the forward's saved values, or nullptr (CPU only: recompute; on CUDA the caller
//                   runs the forward into a workspace first)
//   state_init, slots as in the forward
//   grad_x          [T, N] out
//   grad_state_init kMaxStates entries, [N] out or nullptr
//   grad_slot_ws    kMaxParams entries: [N] compute-type workspace, required where grad_slots is given (the
//                   CPU kernels leave it unused for a slot of one value: they sum each chunk's gradients)
//   grad_slots      kMaxParams entries: [layout.C] out in the compute type, or nullptr. Reduced over the
//                   neurons of each entry in a fixed order (deterministic, thread-count independent).
void neuron_backward(const TensorView& grad_spike, const TensorView* const* grad_state_out, const TensorView* x,
                     const TensorView* saved, const TensorView* const* state_init, const TensorView* const* slots,
                     const TensorView& grad_x, const TensorView* const* grad_state_init,
                     const TensorView* const* grad_slot_ws, const TensorView* const* grad_slots, const NeuronParams& p,
                     const ExecConfig& ex);

// Device implementations, mirrored (same arguments); called through neuron_forward / neuron_backward.
void neuron_forward_cpu(const TensorView& x, const TensorView* const* state_init, const TensorView* const* slots,
                        const TensorView& spike, const TensorView* const* state_out, const TensorView* saved,
                        const TensorView* const* state_last, const NeuronParams& p, const ExecConfig& ex);
void neuron_backward_cpu(const TensorView& grad_spike, const TensorView* const* grad_state_out, const TensorView* x,
                         const TensorView* saved, const TensorView* const* state_init, const TensorView* const* slots,
                         const TensorView& grad_x, const TensorView* const* grad_state_init,
                         const TensorView* const* grad_slot_ws, const TensorView* const* grad_slots,
                         const NeuronParams& p, const ExecConfig& ex);
void neuron_forward_cuda(const TensorView& x, const TensorView* const* state_init, const TensorView* const* slots,
                         const TensorView& spike, const TensorView* const* state_out, const TensorView* saved,
                         const TensorView* const* state_last, const NeuronParams& p, const ExecConfig& ex);
void neuron_backward_cuda(const TensorView& grad_spike, const TensorView* const* grad_state_out, const TensorView* x,
                          const TensorView* saved, const TensorView* const* state_init, const TensorView* const* slots,
                          const TensorView& grad_x, const TensorView* const* grad_state_init,
                          const TensorView* const* grad_slot_ws, const TensorView* const* grad_slots,
                          const NeuronParams& p, const ExecConfig& ex);

// Argument checks shared by both devices (csrc/core/neuron.cpp); they raise ArgumentError.
void check_neuron_forward_args(const TensorView& x, const TensorView* const* state_init, const TensorView* const* slots,
                               const TensorView& spike, const TensorView* const* state_out, const TensorView* saved,
                               const TensorView* const* state_last, const NeuronParams& p);
void check_neuron_backward_args(const TensorView& grad_spike, const TensorView* const* grad_state_out,
                                const TensorView* x, const TensorView* saved, const TensorView* const* state_init,
                                const TensorView* const* slots, const TensorView& grad_x,
                                const TensorView* const* grad_state_init, const TensorView* const* grad_slot_ws,
                                const TensorView* const* grad_slots, const NeuronParams& p);

}  // namespace spikeforge
