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

void check_spike_bits(const TensorView& bits, const TensorView& q, const AttentionParams& p) {
  check_dense(bits, "spike_bits");
  check_same_device(q, bits, "q", "spike_bits");
  SF_CHECK_ARG(bits.dtype == DType::i64, "spike_bits must be int64");
  check_numel(bits, ssa_spike_bits_words(p), "spike_bits");
}

// q, k, v of one [T, B, N, D] float tensor each -> T * B * N * D.
int64_t check_qkv(const TensorView& q, const TensorView& k, const TensorView& v, const AttentionParams& p) {
  const int64_t numel = check_params(p);
  check_dense(q, "q");
  SF_CHECK_ARG(q.dtype != DType::i64, "q: dtype must be a float dtype");
  check_numel(q, numel, "q");
  check_like(k, q, numel, "q", "k");
  check_like(v, q, numel, "q", "v");
  return numel;
}

}  // namespace

int64_t ssa_workspace_elems(const AttentionParams& p) {
  return checked_mul(checked_mul(checked_mul(p.T, p.B, "ktv_ws"), p.D, "ktv_ws"), p.D, "ktv_ws");
}

int64_t ssa_bits_slice_words(int64_t N, int64_t D) {
  return checked_mul(N, ceil_div(D, 64), "spike_bits") + ceil_div(N, 8);  // the bits, then N one-byte flags
}

int64_t ssa_spike_bits_words(const AttentionParams& p) {
  const int64_t slices = checked_mul(checked_mul(p.T, p.B, "spike_bits"), 3, "spike_bits");
  return checked_mul(slices, ssa_bits_slice_words(p.N, p.D), "spike_bits");
}

void check_ssa_forward_args(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                            const TensorView* ktv_ws, const TensorView* spike_bits, const AttentionParams& p) {
  const int64_t numel = check_qkv(q, k, v, p);
  check_like(out, q, numel, "q", "out");
  SF_CHECK_ARG(ktv_ws, "ktv_ws: the ssa forward needs a K^T V workspace of " + std::to_string(ssa_workspace_elems(p)) +
                           " elements (ssa_workspace_elems)");
  check_small(*ktv_ws, q, ssa_workspace_elems(p), "q", "ktv_ws");
  if (spike_bits) check_spike_bits(*spike_bits, q, p);
}

void check_ssa_backward_args(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView* ktv, const TensorView* spike_bits, const TensorView& grad_q,
                             const TensorView& grad_k, const TensorView& grad_v, const AttentionParams& p) {
  const int64_t numel = check_qkv(q, k, v, p);
  check_like(grad_out, q, numel, "q", "grad_out");
  if (ktv) check_small(*ktv, q, ssa_workspace_elems(p), "q", "ktv");
  if (spike_bits) check_spike_bits(*spike_bits, q, p);
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
                 const TensorView* ktv_ws, const TensorView* spike_bits, const AttentionParams& p,
                 const ExecConfig& ex) {
  check_ssa_forward_args(q, k, v, out, ktv_ws, spike_bits, p);
  SF_CHECK_ARG(!spike_bits || q.device == DeviceKind::cpu, "spike_bits: kept by the CPU forward only");
  SF_ROUTE(q.device, ssa_forward, q, k, v, out, ktv_ws, spike_bits, p, ex);
}

void ssa_backward(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView* ktv, const TensorView* spike_bits, const TensorView& grad_q,
                  const TensorView& grad_k, const TensorView& grad_v, const AttentionParams& p, const ExecConfig& ex) {
  SF_CHECK_ARG(q.device == DeviceKind::cpu, "q: the fused SSA backward is CPU-only (CUDA composes it)");
  check_ssa_backward_args(grad_out, q, k, v, ktv, spike_bits, grad_q, grad_k, grad_v, p);
  ssa_backward_cpu(grad_out, q, k, v, ktv, spike_bits, grad_q, grad_k, grad_v, p, ex);
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
