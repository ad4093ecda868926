// Bindings of the neuron family (csrc/core/neuron.h). Arguments are positional and already
// validated by spikeforge.ops.neuron; the core checks them again. The GIL is released while
// the kernels run.
#include <cstdint>

#include "bindings/convert.h"
#include "core/neuron.h"

namespace spikeforge::bind {
namespace {

NeuronParams make_params(int64_t T, int64_t N, int64_t C, int64_t S, double k, double v_threshold,
                         double v_reset, bool hard_reset, bool decay_input, bool detach_reset, int surrogate,
                         double alpha) {
  NeuronParams p;
  p.T = T;
  p.N = N;
  p.C = C;
  p.S = S;
  p.k = k;
  p.v_threshold = v_threshold;
  p.v_reset = v_reset;
  p.hard_reset = hard_reset;
  p.decay_input = decay_input;
  p.detach_reset = detach_reset;
  SF_CHECK_ARG(surrogate >= 0 && surrogate < kNumSurrogates, "surrogate: unknown id");
  p.surrogate = static_cast<Surrogate>(surrogate);
  p.alpha = alpha;
  return p;
}

void forward(nb::handle x, nb::handle v_init, nb::handle w, nb::handle spike, nb::handle h_out, nb::handle v_out,
             int64_t T, int64_t N, int64_t C, int64_t S, double k, double v_threshold,
             double v_reset, bool hard_reset, bool decay_input, int surrogate, double alpha, int num_threads,
             uintptr_t stream) {
  const TensorView xv = to_view(x, "x_seq"), sv = to_view(spike, "spike_seq"), vv = to_view(v_out, "v_out");
  const OptView vi(v_init, "v_init"), wv(w, "w"), hv(h_out, "h_seq");
  const NeuronParams p = make_params(T, N, C, S, k, v_threshold, v_reset, hard_reset, decay_input, false,
                                     surrogate, alpha);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  if (xv.device == DeviceKind::cuda) {
#if defined(SPIKEFORGE_HAVE_CUDA)
    neuron_forward_cuda(xv, vi.get(), wv.get(), sv, hv.get(), vv, p, ex);
#else
    fail_arg("x_seq is a CUDA tensor but spikeforge was built without CUDA kernels");
#endif
  } else {
    neuron_forward_cpu(xv, vi.get(), wv.get(), sv, hv.get(), vv, p, ex);
  }
}

void backward(nb::handle grad_spike, nb::handle grad_v, nb::handle x, nb::handle h, nb::handle v_init, nb::handle w,
              nb::handle grad_x, nb::handle grad_v_init, nb::handle grad_k_ws, nb::handle grad_w, int64_t T, int64_t N, int64_t C, int64_t S,
              double k, double v_threshold, double v_reset, bool hard_reset, bool decay_input, bool detach_reset,
              int surrogate, double alpha, int num_threads, uintptr_t stream) {
  const TensorView gs = to_view(grad_spike, "grad_spike"), gx = to_view(grad_x, "grad_x");
  const OptView gv(grad_v, "grad_v"), xv(x, "x_seq"), hv(h, "h_seq"), vi(v_init, "v_init"), wv(w, "w"),
      gvi(grad_v_init, "grad_v_init"), gk(grad_k_ws, "grad_k_ws"), gw(grad_w, "grad_w");
  const NeuronParams p = make_params(T, N, C, S, k, v_threshold, v_reset, hard_reset, decay_input, detach_reset,
                                     surrogate, alpha);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  if (gs.device == DeviceKind::cuda) {
#if defined(SPIKEFORGE_HAVE_CUDA)
    neuron_backward_cuda(gs, gv.get(), xv.get(), hv.get(), vi.get(), wv.get(), gx, gvi.get(), gk.get(), gw.get(),
                         p, ex);
#else
    fail_arg("grad_spike is a CUDA tensor but spikeforge was built without CUDA kernels");
#endif
  } else {
    neuron_backward_cpu(gs, gv.get(), xv.get(), hv.get(), vi.get(), wv.get(), gx, gvi.get(), gk.get(), gw.get(),
                        p, ex);
  }
}

}  // namespace

void register_neuron(nb::module_& m) {
  m.def("neuron_forward", &forward, nb::arg("x"), nb::arg("v_init").none(), nb::arg("w").none(),
        nb::arg("spike"), nb::arg("h_out").none(), nb::arg("v_out"), nb::arg("T"), nb::arg("N"), nb::arg("C"),
        nb::arg("S"), nb::arg("k"), nb::arg("v_threshold"), nb::arg("v_reset"), nb::arg("hard_reset"),
        nb::arg("decay_input"), nb::arg("surrogate"), nb::arg("alpha"), nb::arg("num_threads"),
        nb::arg("stream"),
        "Multi-step IF/LIF/PLIF forward into preallocated outputs (see csrc/core/neuron.h).");
  m.def("neuron_backward", &backward, nb::arg("grad_spike"), nb::arg("grad_v").none(), nb::arg("x").none(),
        nb::arg("h").none(), nb::arg("v_init").none(), nb::arg("w").none(), nb::arg("grad_x"),
        nb::arg("grad_v_init").none(), nb::arg("grad_k_ws").none(), nb::arg("grad_w").none(), nb::arg("T"),
        nb::arg("N"), nb::arg("C"), nb::arg("S"), nb::arg("k"), nb::arg("v_threshold"), nb::arg("v_reset"),
        nb::arg("hard_reset"), nb::arg("decay_input"), nb::arg("detach_reset"), nb::arg("surrogate"),
        nb::arg("alpha"), nb::arg("num_threads"), nb::arg("stream"),
        "Multi-step IF/LIF/PLIF backward into preallocated gradients (see csrc/core/neuron.h).");
}

}  // namespace spikeforge::bind
