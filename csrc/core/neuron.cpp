// The neuron family's entry points: argument checks shared by both devices, then the device router.
// Python validates first with friendlier messages; these checks are the native safety net.
#include "neuron.h"

#include <cmath>
#include <string>

#include "dispatch.h"
#include "index.h"

namespace spikeforge {
namespace {

// The names users know for a model's coefficient slots and state variables (csrc/core/neuron.h).
std::string slot_name(NeuronModel m, int s) {
  static const char* const lif[] = {"k (PLIF's sigmoid(w))", "slot 1", "slot 2", "slot 3"};
  static const char* const leaky[] = {"beta", "threshold", "graded_spikes_factor", "slot 3"};
  static const char* const synaptic[] = {"beta", "threshold", "alpha", "slot 3"};
  static const char* const alpha[] = {"beta", "threshold", "alpha", "tau_alpha"};
  static const char* const norse[] = {"dt * tau_mem_inv", "dt * tau_syn_inv", "v_leak", "v_th"};
  const char* const* names = m == NeuronModel::leaky       ? leaky
                             : m == NeuronModel::synaptic  ? synaptic
                             : m == NeuronModel::alpha     ? alpha
                             : m == NeuronModel::norse_lif ? norse
                                                           : lif;
  return names[s];
}
std::string state_name(NeuronModel m, int s, const char* what) {
  static const char* const sj[] = {"v", "b", "state 2"};
  static const char* const snn[] = {"mem", "syn", "state 2"};
  static const char* const alpha[] = {"mem", "syn_exc", "syn_inh"};
  static const char* const norse[] = {"v", "i", "state 2"};
  const char* const* names = m == NeuronModel::alpha       ? alpha
                             : is_snntorch_family(m)       ? snn
                             : m == NeuronModel::norse_lif ? norse
                                                           : sj;
  const std::string w(what);
  if (w == "state_init") return std::string(names[s]) + "_init";
  return std::string(names[s]) + " (" + w + ")";
}

// Returns T * N, formed without overflow (sizes come from the caller; core/index.h).
int64_t check_params(const NeuronParams& p) {
  const int m = static_cast<int>(p.model);
  SF_CHECK_ARG(m >= 0 && m < kNumNeuronModels, "neuron model: unknown id " + std::to_string(m));
  SF_CHECK_ARG(p.T >= 0 && p.N >= 0, "x_seq: negative size");
  const int64_t TN = checked_mul(p.T, p.N, "x_seq");
  for (int s = 0; s < kMaxParams; ++s) {
    const std::string name = slot_name(p.model, s);
    SF_CHECK_ARG(p.layout[s].C >= 1 && p.layout[s].S >= 1, name + ": layout must be positive");
    const int64_t CS = checked_mul(p.layout[s].C, p.layout[s].S, name.c_str());
    SF_CHECK_ARG(p.N == 0 || p.N % CS == 0, name + ": its layout does not divide the neurons");
  }
  SF_CHECK_ARG(std::isfinite(p.tau) && p.tau >= 0.0, "tau must be a finite number > 0");
  SF_CHECK_ARG(std::isfinite(p.v_threshold), "v_threshold must be finite");
  SF_CHECK_ARG(std::isfinite(p.v_reset), "v_reset must be finite");
  SF_CHECK_ARG(std::isfinite(p.beta_a) && std::isfinite(p.rho), "beta_a and rho must be finite");
  SF_CHECK_ARG(p.levels >= 1 && p.levels <= (int64_t(1) << 22), "D (the largest spike count) must be in [1, 2^22]");
  SF_CHECK_ARG(p.model != NeuronModel::ilif || p.v_threshold != 0.0, "v_threshold must be non-zero for ilif");
  // the ternary spike is |H| >= v_th (sj_fire), which is (H >= v_th) - (-H >= v_th) for v_th > 0 in float32 too
  SF_CHECK_ARG(p.model != NeuronModel::ternary || static_cast<float>(p.v_threshold) > 0.0f,
               "v_threshold must be > 0 for ternary spikes (at least 1e-45, the smallest float32)");
  const int r = static_cast<int>(p.reset);
  SF_CHECK_ARG(r >= 0 && r <= 2, "reset_mechanism: unknown id " + std::to_string(r));
  SF_CHECK_ARG(std::isfinite(p.alpha) && p.alpha > 0.0 && std::isfinite(p.beta_sg),
               "alpha (the surrogate's parameter) must be a finite number > 0, its second parameter finite");
  const int s = static_cast<int>(p.surrogate);
  SF_CHECK_ARG(s >= 0 && s < kNumSurrogates, "surrogate: unknown id " + std::to_string(s));
  SF_CHECK_ARG(
      p.model == NeuronModel::ilif || surrogate_allowed(p.model, p.surrogate),
      "surrogate: id " + std::to_string(s) +
          " is not available for this neuron model (the SpikingJelly "
          "models take SpikingJelly's surrogates, the snnTorch models snntorch.surrogate's and atan / sigmoid, "
          "norse_lif fast_sigmoid, disabled, triangle, sigmoid, erf and atan)");
  return TN;
}

void check_like(const TensorView& t, const TensorView& ref, int64_t n, const std::string& name, const char* ref_name) {
  check_dense(t, name.c_str());
  check_same_dtype(ref, t, ref_name, name.c_str());
  check_same_device(ref, t, ref_name, name.c_str());
  check_numel(t, n, name.c_str());
}

// compute type of an activation dtype: float32, or float64 for float64
DType compute_dtype(DType d) {
  return d == DType::f64 ? DType::f64 : DType::f32;
}

void check_states(const TensorView* const* states, const TensorView& ref, const NeuronParams& p, int64_t TN,
                  const char* what, bool seq_ok) {
  const int ns = neuron_states(p.model);
  for (int s = 0; s < kMaxStates; ++s) {
    const std::string name = state_name(p.model, s, what);
    if (s >= ns) {
      SF_CHECK_ARG(!states[s], name + ": the model has " + std::to_string(ns) + " state variable(s)");
      continue;
    }
    if (!states[s]) continue;
    const int64_t n = states[s]->numel();
    SF_CHECK_ARG(n == p.N || (seq_ok && n == TN), name + " has " + std::to_string(n) + " elements, expected " +
                                                      std::to_string(p.N) +
                                                      (seq_ok ? " or " + std::to_string(TN) : std::string()));
    check_like(*states[s], ref, n, name, "x_seq");
  }
}

void check_slots(const TensorView* const* slots, const TensorView& ref, const NeuronParams& p) {
  const int nsl = neuron_slots(p.model);
  const DType want = compute_dtype(ref.dtype);
  for (int s = 0; s < kMaxParams; ++s) {
    const std::string name = slot_name(p.model, s);
    if (s >= nsl) {
      SF_CHECK_ARG(!slots[s], name + ": the model reads " + std::to_string(nsl) + " coefficient slot(s)");
      continue;
    }
    if (!slots[s]) {
      SF_CHECK_ARG(p.model == NeuronModel::lif, name + " is required by this neuron model");
      continue;
    }
    check_dense(*slots[s], name.c_str());
    check_same_device(ref, *slots[s], "x_seq", name.c_str());
    SF_CHECK_ARG(slots[s]->dtype == want, name + " must be " + dtype_name(want));
    check_numel(*slots[s], p.layout[s].C, name.c_str());
  }
}

void check_saved(const TensorView* saved, const TensorView& ref, const NeuronParams& p, int64_t TN) {
  if (!saved) return;
  const DType want = neuron_saves_in_activation_dtype(p.model) ? ref.dtype : compute_dtype(ref.dtype);
  check_dense(*saved, "saved");
  check_same_device(ref, *saved, "x_seq", "saved");
  SF_CHECK_ARG(saved->dtype == want, std::string("saved must be ") + dtype_name(want));
  check_numel(*saved, checked_mul(neuron_saved(p.model), TN, "saved"), "saved");
}

}  // namespace

void check_neuron_forward_args(const TensorView& x, const TensorView* const* state_init, const TensorView* const* slots,
                               const TensorView& spike, const TensorView* const* state_out, const TensorView* saved,
                               const TensorView* const* state_last, const NeuronParams& p) {
  const int64_t TN = check_params(p);
  check_dense(x, "x_seq");
  check_numel(x, TN, "x_seq");
  check_states(state_init, x, p, TN, "state_init", false);
  // norse_lif has no constant to start from (Norse starts V at v_leak, a per-neuron slot): the caller passes V
  SF_CHECK_ARG(p.model != NeuronModel::norse_lif || state_init[0], "v_init is required by the norse_lif model");
  check_slots(slots, x, p);
  check_like(spike, x, TN, "spike_seq", "x_seq");
  check_states(state_out, x, p, TN, "state_out", true);
  check_saved(saved, x, p, TN);
  check_states(state_last, x, p, TN, "state_last", false);
}

void check_neuron_backward_args(const TensorView& grad_spike, const TensorView* const* grad_state_out,
                                const TensorView* x, const TensorView* saved, const TensorView* const* state_init,
                                const TensorView* const* slots, const TensorView& grad_x,
                                const TensorView* const* grad_state_init, const TensorView* const* grad_slot_ws,
                                const TensorView* const* grad_slots, const NeuronParams& p) {
  const int64_t TN = check_params(p);
  const TensorView& ref = grad_spike;
  check_like(grad_spike, ref, TN, "grad_spike", "grad_spike");
  check_states(grad_state_out, ref, p, TN, "grad_state_out", true);
  SF_CHECK_ARG(x || saved, "backward needs the saved values or x_seq");
  const bool has_k = slots[0] != nullptr && p.model == NeuronModel::lif;
  bool any_slot_grad = false;
  for (int s = 0; s < kMaxParams; ++s) any_slot_grad = any_slot_grad || grad_slots[s] != nullptr;
  SF_CHECK_ARG(x || !neuron_backward_reads_x(p, has_k) || (!any_slot_grad && !neuron_always_reads_x(p.model)),
               "this neuron's backward needs x_seq");
  if (x) check_like(*x, ref, TN, "x_seq", "grad_spike");
  check_saved(saved, ref, p, TN);
  check_states(state_init, ref, p, TN, "state_init", false);
  SF_CHECK_ARG(p.model != NeuronModel::norse_lif || state_init[0], "v_init is required by the norse_lif model");
  check_slots(slots, ref, p);
  check_like(grad_x, ref, TN, "grad_x", "grad_spike");
  check_states(grad_state_init, ref, p, TN, "grad_state_init", false);
  const DType want = compute_dtype(ref.dtype);
  for (int s = 0; s < kMaxParams; ++s) {
    if (!grad_slots[s]) continue;
    const std::string name = "grad_slots (" + slot_name(p.model, s) + ")";
    SF_CHECK_ARG(slots[s], name + " needs the coefficient itself");
    SF_CHECK_ARG(grad_slot_ws[s], name + " needs its per-neuron workspace grad_slot_ws");
    check_dense(*grad_slots[s], name.c_str());
    check_same_device(ref, *grad_slots[s], "grad_spike", name.c_str());
    SF_CHECK_ARG(grad_slots[s]->dtype == want, name + " must be " + dtype_name(want));
    check_numel(*grad_slots[s], p.layout[s].C, name.c_str());
    const std::string ws = "grad_slot_ws (" + slot_name(p.model, s) + ")";
    check_dense(*grad_slot_ws[s], ws.c_str());
    check_same_device(ref, *grad_slot_ws[s], "grad_spike", ws.c_str());
    SF_CHECK_ARG(grad_slot_ws[s]->dtype == want, ws + " must be " + dtype_name(want));
    check_numel(*grad_slot_ws[s], p.N, ws.c_str());
  }
}

void neuron_forward(const TensorView& x, const TensorView* const* state_init, const TensorView* const* slots,
                    const TensorView& spike, const TensorView* const* state_out, const TensorView* saved,
                    const TensorView* const* state_last, const NeuronParams& p, const ExecConfig& ex) {
  check_neuron_forward_args(x, state_init, slots, spike, state_out, saved, state_last, p);
  SF_ROUTE(x.device, neuron_forward, x, state_init, slots, spike, state_out, saved, state_last, p, ex);
}

void neuron_backward(const TensorView& grad_spike, const TensorView* const* grad_state_out, const TensorView* x,
                     const TensorView* saved, const TensorView* const* state_init, const TensorView* const* slots,
                     const TensorView& grad_x, const TensorView* const* grad_state_init,
                     const TensorView* const* grad_slot_ws, const TensorView* const* grad_slots, const NeuronParams& p,
                     const ExecConfig& ex) {
  check_neuron_backward_args(grad_spike, grad_state_out, x, saved, state_init, slots, grad_x, grad_state_init,
                             grad_slot_ws, grad_slots, p);
  SF_ROUTE(grad_spike.device, neuron_backward, grad_spike, grad_state_out, x, saved, state_init, slots, grad_x,
           grad_state_init, grad_slot_ws, grad_slots, p, ex);
}

}  // namespace spikeforge
