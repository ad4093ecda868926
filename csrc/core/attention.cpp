// The attention family's entry points: argument checks shared by both devices, then the device router.
// Python validates first with friendlier messages; these are the native safety net.
#include "attention.h"

#include <cmath>
#include <string>

#include "dispatch.h"
#include "index.h"

namespace spikeforge {
namespace {

// Returns T * B * N * D, formed without overflow (sizes come from the caller; core/index.h).
int64_t check_params(const AttentionParams& p) {
  SF_CHECK_ARG(p.T >= 0 && p.B >= 0 && p.N >= 0 && p.D >= 0, "q: negative size");
  const int64_t numel = checked_mul(checked_mul(checked_mul(p.T, p.B, "q"), p.N, "q"), p.D, "q");
  SF_CHECK_ARG(std::isfinite(p.scale), "scale must be finite");
  const NeuronParams& n = p.neuron;
  SF_CHECK_ARG(n.model == NeuronModel::lif, "the attention neuron is a LIF");
  SF_CHECK_ARG(std::isfinite(n.tau) && n.tau > 0.0, "tau must be a finite number > 0");
  SF_CHECK_ARG(std::isfinite(n.v_threshold), "v_threshold must be finite");
  SF_CHECK_ARG(std::isfinite(n.v_reset), "v_reset must be finite");
  SF_CHECK_ARG(std::isfinite(n.alpha) && n.alpha > 0.0, "alpha must be a finite number > 0");
  const int s = static_cast<int>(n.surrogate);
  SF_CHECK_ARG(s >= 0 && s < kNumSpikingJellySurrogates, "surrogate: unknown id " + std::to_string(s));
  return numel;
}

void check_like(const TensorView& t, const TensorView& ref, int64_t numel, const char* ref_name, const char* name) {
  check_dense(t, name);
  check_same_dtype(ref, t, ref_name, name);
  check_same_device(ref, t, ref_name, name);
  check_numel(t, numel, name);
}

void check_small(const TensorView& t, const TensorView& ref, int64_t numel, const char* ref_name, const char* name) {
  check_dense(t, name);
  check_same_device(ref, t, ref_name, name);
  const DType want = ref.dtype == DType::f64 ? DType::f64 : DType::f32;
  SF_CHECK_ARG(t.dtype == want, std::string(name) + " must be " + dtype_name(want));
  check_numel(t, numel, name);
}

}  // namespace

int64_t ssa_workspace_elems(const AttentionParams& p, DeviceKind device) {
  if (device == DeviceKind::cpu) return 0;
  return checked_mul(checked_mul(checked_mul(p.T, p.B, "ktv_ws"), p.D, "ktv_ws"), p.D, "ktv_ws");
}

void check_ssa_forward_args(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                            const TensorView* ktv_ws, const AttentionParams& p) {
  const int64_t numel = check_params(p);
  check_dense(q, "q");
  SF_CHECK_ARG(q.dtype != DType::i64, "q: dtype must be a float dtype");
  check_numel(q, numel, "q");
  check_like(k, q, numel, "q", "k");
  check_like(v, q, numel, "q", "v");
  check_like(out, q, numel, "q", "out");
  const int64_t ws = ssa_workspace_elems(p, q.device);
  if (ws > 0 || ktv_ws) {
    SF_CHECK_ARG(ktv_ws, "ktv_ws: this device's ssa kernel needs a K^T V workspace of " + std::to_string(ws) +
                             " float32 elements (ssa_workspace_elems)");
    check_dense(*ktv_ws, "ktv_ws");
    check_same_device(q, *ktv_ws, "q", "ktv_ws");
    SF_CHECK_ARG(ktv_ws->dtype == DType::f32, "ktv_ws must be float32");
    check_numel(*ktv_ws, ws, "ktv_ws");
  }
}

void check_ssa_backward_args(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& grad_q, const TensorView& grad_k, const TensorView& grad_v,
                             const AttentionParams& p) {
  check_ssa_forward_args(q, k, v, grad_out, nullptr, p);
  const int64_t numel = q.numel();
  check_like(grad_q, q, numel, "q", "grad_q");
  check_like(grad_k, q, numel, "q", "grad_k");
  check_like(grad_v, q, numel, "q", "grad_v");
}

void check_reduce_attention_forward_args(const TensorView& a, const TensorView* b2, const TensorView& m,
                                         const TensorView& out, const TensorView& pre, const TensorView& mask,
                                         const AttentionParams& p, bool reduce_tokens) {
  const int64_t numel = check_params(p);
  check_dense(a, "a");
  SF_CHECK_ARG(a.dtype != DType::i64, "a: dtype must be a float dtype");
  check_numel(a, numel, "a");
  if (b2) check_like(*b2, a, numel, "a", "b");
  check_like(m, a, numel, "a", "m");
  check_like(out, a, numel, "a", "out");
  const int64_t small = checked_mul(checked_mul(p.T, p.B, "pre"), reduce_tokens ? p.D : p.N, "pre");
  check_small(pre, a, small, "a", "pre");
  check_small(mask, a, small, "a", "mask");
}

void ssa_forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 const TensorView* ktv_ws, const AttentionParams& p, const ExecConfig& ex) {
  check_ssa_forward_args(q, k, v, out, ktv_ws, p);
  SF_ROUTE(q.device, ssa_forward, q, k, v, out, ktv_ws, p, ex);
}

void ssa_backward(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView& grad_q, const TensorView& grad_k, const TensorView& grad_v,
                  const AttentionParams& p, const ExecConfig& ex) {
  SF_CHECK_ARG(q.device == DeviceKind::cpu, "q: the fused SSA backward is CPU-only (CUDA composes it)");
  check_ssa_backward_args(grad_out, q, k, v, grad_q, grad_k, grad_v, p);
  ssa_backward_cpu(grad_out, q, k, v, grad_q, grad_k, grad_v, p, ex);
}

void token_reduce_attention_forward(const TensorView& a, const TensorView* b2, const TensorView& m,
                                    const TensorView& out, const TensorView& pre, const TensorView& mask,
                                    const AttentionParams& p, const ExecConfig& ex) {
  check_reduce_attention_forward_args(a, b2, m, out, pre, mask, p, true);
  SF_ROUTE(a.device, token_reduce_attention_forward, a, b2, m, out, pre, mask, p, ex);
}

void channel_reduce_attention_forward(const TensorView& a, const TensorView& m, const TensorView& out,
                                      const TensorView& pre, const TensorView& mask, const AttentionParams& p,
                                      const ExecConfig& ex) {
  check_reduce_attention_forward_args(a, nullptr, m, out, pre, mask, p, false);
  SF_ROUTE(a.device, channel_reduce_attention_forward, a, m, out, pre, mask, p, ex);
}

}  // namespace spikeforge
