// Argument checks of the PSN family, shared by the CPU and CUDA entry points.
#include "psn.h"

#include <cmath>
#include <limits>
#include <string>

#include "index.h"

namespace spikeforge {
namespace {

// Element counts of the operands, formed without overflow (sizes come from the caller; core/index.h).
struct PSNCounts {
  int64_t x, out, w, partials;
};

PSNCounts check_params(const PSNParams& p) {
  SF_CHECK_ARG(p.T_out >= 0 && p.T_in >= 0 && p.N >= 0, "x_seq: negative size");
  SF_CHECK_ARG(p.T_in < std::numeric_limits<int64_t>::max(), "x_seq: T_in overflows 64-bit indexing");
  PSNCounts c;
  c.x = checked_mul(p.T_in, p.N, "x_seq");
  c.out = checked_mul(p.T_out, p.N, "spike_seq");
  c.w = checked_mul(p.T_out, p.T_in, "weight");
  c.partials = checked_mul(psn_num_partitions(p.N), checked_mul(p.T_out, p.T_in + 1, "partials"), "partials");
  SF_CHECK_ARG(p.band >= 0, "k must be >= 1");
  SF_CHECK_ARG(std::isfinite(p.alpha) && p.alpha > 0.0, "alpha must be a finite number > 0");
  const int s = static_cast<int>(p.surrogate);
  SF_CHECK_ARG(s >= 0 && s < kNumSpikingJellySurrogates, "surrogate: unknown id " + std::to_string(s));
  return c;
}

void check_param_tensor(const TensorView& t, const TensorView& x, int64_t numel, const char* name) {
  check_dense(t, name);
  check_same_device(x, t, "x_seq", name);
  const DType want = x.dtype == DType::f64 ? DType::f64 : DType::f32;
  SF_CHECK_ARG(t.dtype == want, std::string(name) + " must be " + dtype_name(want));
  check_numel(t, numel, name);
}

void check_act(const TensorView& t, const TensorView& x, int64_t numel, const char* name) {
  check_dense(t, name);
  check_same_dtype(x, t, "x_seq", name);
  check_same_device(x, t, "x_seq", name);
  check_numel(t, numel, name);
}

}  // namespace

void check_psn_forward_args(const TensorView& x, const TensorView& w, const TensorView& b, const TensorView& spike,
                            const TensorView* h_out, const PSNParams& p) {
  const PSNCounts c = check_params(p);
  check_dense(x, "x_seq");
  check_numel(x, c.x, "x_seq");
  check_param_tensor(w, x, c.w, "weight");
  check_param_tensor(b, x, p.T_out, "bias");
  check_act(spike, x, c.out, "spike_seq");
  if (h_out) check_act(*h_out, x, c.out, "h_seq");
}

void check_psn_backward_args(const TensorView& grad_spike, const TensorView& x, const TensorView& w,
                             const TensorView& b, const TensorView* grad_x, const TensorView* partials,
                             const TensorView* grad_w, const TensorView* grad_b, const PSNParams& p) {
  const PSNCounts c = check_params(p);
  check_dense(x, "x_seq");
  check_numel(x, c.x, "x_seq");
  check_act(grad_spike, x, c.out, "grad_spike");
  check_param_tensor(w, x, c.w, "weight");
  check_param_tensor(b, x, p.T_out, "bias");
  if (grad_x) check_act(*grad_x, x, c.x, "grad_x");
  if (grad_w) check_param_tensor(*grad_w, x, c.w, "grad_weight");
  if (grad_b) check_param_tensor(*grad_b, x, p.T_out, "grad_bias");
  if (grad_w || grad_b) {
    SF_CHECK_ARG(partials != nullptr, "grad_weight/grad_bias need the partials workspace");
    check_dense(*partials, "partials");
    check_same_device(x, *partials, "x_seq", "partials");
    SF_CHECK_ARG(partials->dtype == DType::f64, "partials must be float64");
    check_numel(*partials, c.partials, "partials");
  }
}

}  // namespace spikeforge
