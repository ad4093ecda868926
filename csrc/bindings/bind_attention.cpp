// Bindings of the attention family (csrc/core/attention.h). The attention neuron's options travel as a
// bound NeuronParams (spikeforge.ops.neuron builds it); the core checks every argument and routes to
// the device. The GIL is released while the kernels run.
#include <cstdint>

#include "bindings/convert.h"
#include "core/attention.h"

namespace spikeforge::bind {
namespace {

AttentionParams make_params(int64_t T, int64_t B, int64_t N, int64_t D, double scale, const NeuronParams& neuron) {
  AttentionParams p;
  p.T = T;
  p.B = B;
  p.N = N;
  p.D = D;
  p.scale = scale;
  p.neuron = neuron;
  return p;
}

void ssa_forward_py(nb::handle q, nb::handle k, nb::handle v, nb::handle out, nb::handle ktv_ws, nb::handle spike_bits,
                    int64_t T, int64_t B, int64_t N, int64_t D, double scale, const NeuronParams& neuron,
                    int num_threads, uintptr_t stream) {
  const TensorView qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v"), ov = to_view(out, "out");
  const OptView ws(ktv_ws, "ktv_ws"), bits(spike_bits, "spike_bits");
  const AttentionParams p = make_params(T, B, N, D, scale, neuron);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  ssa_forward(qv, kv, vv, ov, ws.get(), bits.get(), p, ex);
}

void ssa_backward_py(nb::handle grad_out, nb::handle q, nb::handle k, nb::handle v, nb::handle ktv,
                     nb::handle spike_bits, nb::handle grad_q, nb::handle grad_k, nb::handle grad_v, int64_t T,
                     int64_t B, int64_t N, int64_t D, double scale, const NeuronParams& neuron, int num_threads) {
  const TensorView go = to_view(grad_out, "grad_out"), qv = to_view(q, "q"), kv = to_view(k, "k"), vv = to_view(v, "v"),
                   gq = to_view(grad_q, "grad_q"), gk = to_view(grad_k, "grad_k"), gv = to_view(grad_v, "grad_v");
  const OptView kt(ktv, "ktv"), bits(spike_bits, "spike_bits");
  const AttentionParams p = make_params(T, B, N, D, scale, neuron);
  const ExecConfig ex{num_threads, nullptr};
  nb::gil_scoped_release release;
  ssa_backward(go, qv, kv, vv, kt.get(), bits.get(), gq, gk, gv, p, ex);
}

void reduce_forward_py(nb::handle a, nb::handle b2, nb::handle m, nb::handle out, nb::handle pre, nb::handle mask,
                       bool reduce_tokens, int64_t T, int64_t B, int64_t N, int64_t D, const NeuronParams& neuron,
                       int num_threads, uintptr_t stream) {
  const TensorView av = to_view(a, "a"), mv = to_view(m, "m"), ov = to_view(out, "out"), pv = to_view(pre, "pre"),
                   kv = to_view(mask, "mask");
  const OptView bv(b2, "b");
  const AttentionParams p = make_params(T, B, N, D, 0.0, neuron);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  if (reduce_tokens) {
    token_reduce_attention_forward(av, bv.get(), mv, ov, pv, kv, p, ex);
  } else {
    SF_CHECK_ARG(!bv.get(), "b: channel_reduce takes no second operand");
    channel_reduce_attention_forward(av, mv, ov, pv, kv, p, ex);
  }
}

}  // namespace

void register_attention(nb::module_& m) {
  m.def("attention_ssa_forward", &ssa_forward_py, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
        nb::arg("ktv_ws").none(), nb::arg("spike_bits").none(), nb::arg("T"), nb::arg("B"), nb::arg("N"), nb::arg("D"),
        nb::arg("scale"), nb::arg("neuron"), nb::arg("num_threads"), nb::arg("stream"),
        "Spikformer SSA fused with the attention LIF into a preallocated output, K^T V of every (t, b) into "
        "ktv_ws [T, B, D, D] of the compute dtype and, on CPU when given, the spike bits of q, k and v into "
        "spike_bits (int64, attention_ssa_bits_words) (see csrc/core/attention.h).");
  m.def("attention_ssa_backward", &ssa_backward_py, nb::arg("grad_out"), nb::arg("q"), nb::arg("k"), nb::arg("v"),
        nb::arg("ktv").none(), nb::arg("spike_bits").none(), nb::arg("grad_q"), nb::arg("grad_k"), nb::arg("grad_v"),
        nb::arg("T"), nb::arg("B"), nb::arg("N"), nb::arg("D"), nb::arg("scale"), nb::arg("neuron"),
        nb::arg("num_threads"),
        "SSA backward on CPU into preallocated gradients, the pre-activation recomputed from q and the forward's "
        "K^T V (ktv; None: recomputed too), the spike bits read from spike_bits (None: found again) (see "
        "csrc/core/attention.h).");
  m.def(
      "attention_ssa_bits_words",
      [](int64_t T, int64_t B, int64_t N, int64_t D) {
        AttentionParams p;
        p.T = T;
        p.B = B;
        p.N = N;
        p.D = D;
        return ssa_spike_bits_words(p);
      },
      nb::arg("T"), nb::arg("B"), nb::arg("N"), nb::arg("D"),
      "int64 words of the spike bits of q, k and v that the CPU ssa forward keeps (spike_bits).");
  m.def("attention_reduce_forward", &reduce_forward_py, nb::arg("a"), nb::arg("b").none(), nb::arg("m"), nb::arg("out"),
        nb::arg("pre"), nb::arg("mask"), nb::arg("reduce_tokens"), nb::arg("T"), nb::arg("B"), nb::arg("N"),
        nb::arg("D"), nb::arg("neuron"), nb::arg("num_threads"), nb::arg("stream"),
        "SDSA / QK attention: a sum over tokens (reduce_tokens) or channels, the attention LIF, and the "
        "masked product, into preallocated outputs (see csrc/core/attention.h).");
}

}  // namespace spikeforge::bind
