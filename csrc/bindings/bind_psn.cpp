// Bindings of the PSN family (csrc/core/psn.h). Validated first by spikeforge.ops.psn; the core checks
// again. The GIL is released while the kernels run.
#include <cstdint>

#include "bindings/convert.h"
#include "core/psn.h"

namespace spikeforge::bind {
namespace {

PSNParams make_params(int64_t T_out, int64_t T_in, int64_t N, int64_t band, int surrogate, double alpha) {
  SF_CHECK_ARG(surrogate >= 0 && surrogate < kNumSpikingJellySurrogates, "surrogate: unknown id");
  PSNParams p;
  p.T_out = T_out;
  p.T_in = T_in;
  p.N = N;
  p.band = band;
  p.surrogate = static_cast<Surrogate>(surrogate);
  p.alpha = alpha;
  return p;
}

void forward(nb::handle x, nb::handle w, nb::handle b, nb::handle spike, nb::handle h_out, int64_t T_out, int64_t T_in,
             int64_t N, int64_t band, int surrogate, double alpha, int num_threads, uintptr_t stream) {
  const TensorView xv = to_view(x, "x_seq"), wv = to_view(w, "weight"), bv = to_view(b, "bias"),
                   sv = to_view(spike, "spike_seq");
  const OptView hv(h_out, "h_seq");
  const PSNParams p = make_params(T_out, T_in, N, band, surrogate, alpha);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  if (xv.device == DeviceKind::cuda) {
#if defined(SPIKEFORGE_HAVE_CUDA)
    psn_forward_cuda(xv, wv, bv, sv, hv.get(), p, ex);
#else
    fail_arg("x_seq is a CUDA tensor but spikeforge was built without CUDA kernels");
#endif
  } else {
    psn_forward_cpu(xv, wv, bv, sv, hv.get(), p, ex);
  }
}

void backward(nb::handle grad_spike, nb::handle x, nb::handle w, nb::handle b, nb::handle grad_x, nb::handle partials,
              nb::handle grad_w, nb::handle grad_b, int64_t T_out, int64_t T_in, int64_t N, int64_t band, int surrogate,
              double alpha, int num_threads, uintptr_t stream) {
  const TensorView gs = to_view(grad_spike, "grad_spike"), xv = to_view(x, "x_seq"), wv = to_view(w, "weight"),
                   bv = to_view(b, "bias");
  const OptView gx(grad_x, "grad_x"), pt(partials, "partials"), gw(grad_w, "grad_weight"), gb(grad_b, "grad_bias");
  const PSNParams p = make_params(T_out, T_in, N, band, surrogate, alpha);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  if (xv.device == DeviceKind::cuda) {
#if defined(SPIKEFORGE_HAVE_CUDA)
    psn_backward_cuda(gs, xv, wv, bv, gx.get(), pt.get(), gw.get(), gb.get(), p, ex);
#else
    fail_arg("x_seq is a CUDA tensor but spikeforge was built without CUDA kernels");
#endif
  } else {
    psn_backward_cpu(gs, xv, wv, bv, gx.get(), pt.get(), gw.get(), gb.get(), p, ex);
  }
}

}  // namespace

void register_psn(nb::module_& m) {
  m.def("psn_forward", &forward, nb::arg("x"), nb::arg("w"), nb::arg("b"), nb::arg("spike"), nb::arg("h_out").none(),
        nb::arg("T_out"), nb::arg("T_in"), nb::arg("N"), nb::arg("band"), nb::arg("surrogate"), nb::arg("alpha"),
        nb::arg("num_threads"), nb::arg("stream"),
        "PSN-family forward S = (W X + b >= 0) into preallocated outputs (see csrc/core/psn.h).");
  m.def("psn_backward", &backward, nb::arg("grad_spike"), nb::arg("x"), nb::arg("w"), nb::arg("b"),
        nb::arg("grad_x").none(), nb::arg("partials").none(), nb::arg("grad_w").none(), nb::arg("grad_b").none(),
        nb::arg("T_out"), nb::arg("T_in"), nb::arg("N"), nb::arg("band"), nb::arg("surrogate"), nb::arg("alpha"),
        nb::arg("num_threads"), nb::arg("stream"),
        "PSN-family backward into preallocated gradients (see csrc/core/psn.h).");
  m.def("psn_num_partitions", &psn_num_partitions, "Rows of the float64 partials workspace for N neurons.");
#if defined(SPIKEFORGE_HAVE_CUDA)
  m.attr("psn_max_cuda_t") = kPSNMaxCudaT;
#else
  m.attr("psn_max_cuda_t") = 0;
#endif
}

}  // namespace spikeforge::bind
