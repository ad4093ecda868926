// Argument checks of the neuron family, shared by the CPU and CUDA entry points.
// Python validates first with friendlier messages; these are the native safety net.
#include "neuron.h"

#include <cmath>
#include <string>

#include "index.h"

namespace spikeforge {
namespace {

// Returns T * N, formed without overflow (sizes come from the caller; core/index.h).
int64_t check_params(const NeuronParams& p) {
  SF_CHECK_ARG(p.T >= 0 && p.N >= 0, "x_seq: negative size");
  const int64_t TN = checked_mul(p.T, p.N, "x_seq");
  SF_CHECK_ARG(p.C >= 1 && p.S >= 1, "w: channel layout must be positive");
  const int64_t CS = checked_mul(p.C, p.S, "w");
  SF_CHECK_ARG(p.N == 0 || p.N % CS == 0, "w: channel layout does not divide the neurons");
  SF_CHECK_ARG(std::isfinite(p.k) && p.k >= 0.0, "tau must be a finite number > 0");
  SF_CHECK_ARG(std::isfinite(p.v_threshold), "v_threshold must be finite");
  SF_CHECK_ARG(std::isfinite(p.v_reset), "v_reset must be finite");
  SF_CHECK_ARG(std::isfinite(p.alpha) && p.alpha > 0.0, "alpha must be a finite number > 0");
  const int s = static_cast<int>(p.surrogate);
  SF_CHECK_ARG(s >= 0 && s < kNumSurrogates, "surrogate: unknown id " + std::to_string(s));
  return TN;
}

void check_seq(const TensorView& t, const TensorView& x, int64_t TN, const char* name) {
  check_dense(t, name);
  check_same_dtype(x, t, "x_seq", name);
  check_same_device(x, t, "x_seq", name);
  check_numel(t, TN, name);
}

void check_state(const TensorView* t, const TensorView& x, const NeuronParams& p, const char* name) {
  if (!t) return;
  check_dense(*t, name);
  check_same_dtype(x, *t, "x_seq", name);
  check_same_device(x, *t, "x_seq", name);
  check_numel(*t, p.N, name);
}

void check_w(const TensorView* w, const TensorView& x, const NeuronParams& p, const char* name) {
  if (!w) return;
  check_dense(*w, name);
  check_same_device(x, *w, "x_seq", name);
  const DType want = x.dtype == DType::f64 ? DType::f64 : DType::f32;
  SF_CHECK_ARG(w->dtype == want, std::string(name) + " must be " + dtype_name(want));
  check_numel(*w, p.C, name);
}

}  // namespace

void check_neuron_forward_args(const TensorView& x, const TensorView* v_init, const TensorView* w,
                               const TensorView& spike, const TensorView* h_out, const TensorView& v_out,
                               const NeuronParams& p) {
  const int64_t TN = check_params(p);
  check_dense(x, "x_seq");
  check_numel(x, TN, "x_seq");
  check_state(v_init, x, p, "v_init");
  check_w(w, x, p, "w");
  check_seq(spike, x, TN, "spike_seq");
  if (h_out) check_seq(*h_out, x, TN, "h_seq");
  check_dense(v_out, "v_out");
  check_same_dtype(x, v_out, "x_seq", "v_out");
  check_same_device(x, v_out, "x_seq", "v_out");
  SF_CHECK_ARG(v_out.numel() == p.N || v_out.numel() == TN, "v_out must have N or T*N elements");
}

void check_neuron_backward_args(const TensorView& grad_spike, const TensorView* grad_v, const TensorView* x,
                                const TensorView* h, const TensorView* v_init, const TensorView* w,
                                const TensorView& grad_x, const TensorView* grad_v_init,
                                const TensorView* grad_k_ws, const TensorView* grad_w,
                                const NeuronParams& p) {
  const int64_t TN = check_params(p);
  const TensorView& ref = grad_spike;
  check_seq(grad_spike, ref, TN, "grad_spike");
  if (grad_v) {
    check_dense(*grad_v, "grad_v");
    check_same_dtype(ref, *grad_v, "grad_spike", "grad_v");
    check_same_device(ref, *grad_v, "grad_spike", "grad_v");
    SF_CHECK_ARG(grad_v->numel() == p.N || grad_v->numel() == TN,
                 "grad_v must have N or T*N elements");
  }
  SF_CHECK_ARG(x || h, "backward needs the saved h_seq or x_seq");
  SF_CHECK_ARG(x || !w || !p.decay_input, "PLIF with decay_input needs x_seq in backward");
  if (x) check_seq(*x, ref, TN, "x_seq");
  if (h) check_seq(*h, ref, TN, "h_seq");
  check_state(v_init, ref, p, "v_init");
  check_w(w, ref, p, "w");
  check_seq(grad_x, ref, TN, "grad_x");
  check_state(grad_v_init, ref, p, "grad_v_init");
  if (grad_w) {
    SF_CHECK_ARG(w && grad_k_ws, "grad_w needs w and grad_k_ws");
    check_w(grad_w, ref, p, "grad_w");
    check_dense(*grad_k_ws, "grad_k_ws");
    check_same_device(ref, *grad_k_ws, "grad_spike", "grad_k_ws");
    SF_CHECK_ARG(grad_k_ws->dtype == w->dtype, "grad_k_ws must have w's dtype");
    check_numel(*grad_k_ws, p.N, "grad_k_ws");
  }
}

}  // namespace spikeforge
