// Bindings of the attention family (csrc/core/attention.h). Arguments are positional and already
// validated by spikeforge.ops.attention; the core checks them again. The GIL is released while the
// kernels run.
#include <cstdint>

#include "bindings/convert.h"
#include "core/attention.h"

namespace spikeforge::bind {
namespace {

AttentionParams make_params(int64_t T, int64_t B, int64_t N, int64_t D, double scale, double k, double v_threshold,
                            double v_reset, bool hard_reset, bool decay_input) {
  AttentionParams p;
  p.T = T;
  p.B = B;
  p.N = N;
  p.D = D;
  p.scale = scale;
  p.k = k;
  p.v_threshold = v_threshold;
  p.v_reset = v_reset;
  p.hard_reset = hard_reset;
  p.decay_input = decay_input;
  return p;
}

void ssa_forward(nb::handle q, nb::handle k, nb::handle v, nb::handle out, nb::handle ktv_ws, int64_t T, int64_t B,
                 int64_t N, int64_t D, double scale, double k_leak, double v_threshold, double v_reset,
                 bool hard_reset, bool decay_input, int num_threads, uintptr_t stream) {
  const TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v"), ov = to_view(out, "out");
  const OptView ws(ktv_ws, "ktv_ws");
  const AttentionParams p = make_params(T, B, N, D, scale, k_leak, v_threshold, v_reset, hard_reset, decay_input);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  if (qv.device == DeviceKind::cuda) {
#if defined(SPIKEFORGE_HAVE_CUDA)
    SF_CHECK_ARG(ws.get(), "ktv_ws: the CUDA kernel needs a K^T V workspace");
    ssa_forward_cuda(qv, kv, vv, ov, *ws.get(), p, ex);
#else
    fail_arg("q is a CUDA tensor but spikeforge was built without CUDA kernels");
#endif
  } else {
    ssa_forward_cpu(qv, kv, vv, ov, p, ex);
  }
}

void ssa_backward(nb::handle grad_out, nb::handle q, nb::handle k, nb::handle v, nb::handle grad_q, nb::handle grad_k,
                  nb::handle grad_v, int64_t T, int64_t B, int64_t N, int64_t D, double scale, double k_leak,
                  double v_threshold, double v_reset, bool hard_reset, bool decay_input, bool detach_reset,
                  int surrogate, double alpha, int num_threads) {
  const TensorView go = to_view(grad_out, "grad_out"), qv = to_view(q, "q"), kv = to_view(k, "k"),
                   vv = to_view(v, "v"), gq = to_view(grad_q, "grad_q"), gk = to_view(grad_k, "grad_k"),
                   gv = to_view(grad_v, "grad_v");
  const AttentionParams p = make_params(T, B, N, D, scale, k_leak, v_threshold, v_reset, hard_reset, decay_input);
  SF_CHECK_ARG(surrogate >= 0 && surrogate < kNumSurrogates, "surrogate: unknown id");
  AttentionGradParams gp;
  gp.detach_reset = detach_reset;
  gp.surrogate = static_cast<Surrogate>(surrogate);
  gp.alpha = alpha;
  // CUDA tensors take the composed backward (cuBLAS products and neuron_backward) in Python.
  SF_CHECK_ARG(qv.device == DeviceKind::cpu, "q: the fused SSA backward is CPU-only");
  const ExecConfig ex{num_threads, nullptr};
  nb::gil_scoped_release release;
  ssa_backward_cpu(go, qv, kv, vv, gq, gk, gv, p, gp, ex);
}

void reduce_forward(nb::handle a, nb::handle b2, nb::handle m, nb::handle out, nb::handle pre, nb::handle mask,
                    bool reduce_tokens, int64_t T, int64_t B, int64_t N, int64_t D, double k_leak, double v_threshold,
                    double v_reset, bool hard_reset, bool decay_input, int num_threads, uintptr_t stream) {
  const TensorView av = to_view(a, "a"), mv = to_view(m, "m"), ov = to_view(out, "out"), pv = to_view(pre, "pre"),
                   kv = to_view(mask, "mask");
  const OptView bv(b2, "b");
  const AttentionParams p = make_params(T, B, N, D, 0.0, k_leak, v_threshold, v_reset, hard_reset, decay_input);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  if (av.device == DeviceKind::cuda) {
#if defined(SPIKEFORGE_HAVE_CUDA)
    if (reduce_tokens) {
      token_reduce_attention_forward_cuda(av, bv.get(), mv, ov, pv, kv, p, ex);
    } else {
      SF_CHECK_ARG(!bv.get(), "b: channel_reduce takes no second operand");
      channel_reduce_attention_forward_cuda(av, mv, ov, pv, kv, p, ex);
    }
#else
    fail_arg("a is a CUDA tensor but spikeforge was built without CUDA kernels");
#endif
  } else if (reduce_tokens) {
    token_reduce_attention_forward_cpu(av, bv.get(), mv, ov, pv, kv, p, ex);
  } else {
    SF_CHECK_ARG(!bv.get(), "b: channel_reduce takes no second operand");
    channel_reduce_attention_forward_cpu(av, mv, ov, pv, kv, p, ex);
  }
}

}  // namespace

void register_attention(nb::module_& m) {
  m.def("attention_ssa_forward", &ssa_forward, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
        nb::arg("ktv_ws").none(),
        nb::arg("T"), nb::arg("B"), nb::arg("N"), nb::arg("D"), nb::arg("scale"), nb::arg("k_leak"),
        nb::arg("v_threshold"), nb::arg("v_reset"), nb::arg("hard_reset"), nb::arg("decay_input"),
        nb::arg("num_threads"), nb::arg("stream"),
        "Spikformer SSA fused with the attention LIF into a preallocated output (see csrc/core/attention.h).");
  m.def("attention_ssa_backward", &ssa_backward, nb::arg("grad_out"), nb::arg("q"), nb::arg("k"), nb::arg("v"),
        nb::arg("grad_q"), nb::arg("grad_k"), nb::arg("grad_v"), nb::arg("T"), nb::arg("B"), nb::arg("N"),
        nb::arg("D"), nb::arg("scale"), nb::arg("k_leak"), nb::arg("v_threshold"), nb::arg("v_reset"),
        nb::arg("hard_reset"), nb::arg("decay_input"), nb::arg("detach_reset"), nb::arg("surrogate"),
        nb::arg("alpha"), nb::arg("num_threads"),
        "SSA backward on CPU into preallocated gradients, the forward recomputed (see csrc/core/attention.h).");
  m.def("attention_reduce_forward", &reduce_forward, nb::arg("a"), nb::arg("b").none(), nb::arg("m"),
        nb::arg("out"), nb::arg("pre"), nb::arg("mask"), nb::arg("reduce_tokens"), nb::arg("T"), nb::arg("B"),
        nb::arg("N"), nb::arg("D"), nb::arg("k_leak"), nb::arg("v_threshold"), nb::arg("v_reset"),
        nb::arg("hard_reset"), nb::arg("decay_input"), nb::arg("num_threads"), nb::arg("stream"),
        "SDSA / QK attention: a sum over tokens (reduce_tokens) or channels, the attention LIF, and the "
        "masked product, into preallocated outputs (see csrc/core/attention.h).");
}

}  // namespace spikeforge::bind
