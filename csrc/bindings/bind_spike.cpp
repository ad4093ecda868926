// Bindings of the spike-propagation family (csrc/core/spike.h). Validated first by
// spikeforge.ops.spike; the core checks again. The GIL is released while the kernels run.
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <vector>

#include "bindings/convert.h"
#include "core/spike.h"

namespace spikeforge::bind {
namespace {

#if defined(SPIKEFORGE_HAVE_CUDA)
#define SF_SPIKE_DISPATCH(dev, name, ...) \
  if ((dev) == DeviceKind::cuda) {        \
    name##_cuda(__VA_ARGS__);             \
  } else {                                \
    name##_cpu(__VA_ARGS__);              \
  }
#else
#define SF_SPIKE_DISPATCH(dev, name, ...)                                              \
  if ((dev) == DeviceKind::cuda) {                                                     \
    fail_arg("a CUDA tensor was given but spikeforge was built without CUDA kernels"); \
  } else {                                                                             \
    name##_cpu(__VA_ARGS__);                                                           \
  }
#endif

// [B, Cin, H, W, Cout, kh, kw, Ho, Wo, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups]
SpikeConvParams conv_params(const std::vector<int64_t>& v) {
  SF_CHECK_ARG(v.size() == 16, "spike_conv2d: 16 integer parameters expected");
  SpikeConvParams p;
  p.B = v[0];
  p.Cin = v[1];
  p.H = v[2];
  p.W = v[3];
  p.Cout = v[4];
  p.kh = v[5];
  p.kw = v[6];
  p.Ho = v[7];
  p.Wo = v[8];
  p.stride_h = v[9];
  p.stride_w = v[10];
  p.pad_h = v[11];
  p.pad_w = v[12];
  p.dil_h = v[13];
  p.dil_w = v[14];
  p.groups = v[15];
  return p;
}

ExecConfig exec(int num_threads, uintptr_t stream) {
  return ExecConfig{num_threads, reinterpret_cast<void*>(stream)};
}

void pack(nb::handle s, nb::handle bits, nb::handle info, int num_threads, uintptr_t stream, nb::handle signs) {
  const TensorView sv = to_view(s, "s"), bv = to_view(bits, "bits"), iv = to_view(info, "info");
  const OptView sg(signs, "signs");
  const ExecConfig ex = exec(num_threads, stream);
  nb::gil_scoped_release release;
  SF_SPIKE_DISPATCH(sv.device, spike_pack, sv, bv, iv, sg.get(), ex);
}

void unpack(nb::handle bits, nb::handle out, int num_threads, uintptr_t stream, nb::handle signs) {
  const TensorView bv = to_view(bits, "bits"), ov = to_view(out, "out");
  const OptView sg(signs, "signs");
  const ExecConfig ex = exec(num_threads, stream);
  nb::gil_scoped_release release;
  SF_SPIKE_DISPATCH(ov.device, spike_unpack, bv, sg.get(), ov, ex);
}

void linear_forward(nb::handle s, nb::handle w, nb::handle bias, nb::handle y, nb::handle wt, int num_threads,
                    uintptr_t stream, nb::handle nonfinite) {
  const TensorView sv = to_view(s, "s"), wv = to_view(w, "weight"), yv = to_view(y, "out");
  const OptView bv(bias, "bias"), tv(wt, "wt"), nv(nonfinite, "nonfinite");
  const ExecConfig ex = exec(num_threads, stream);
  nb::gil_scoped_release release;
  SF_SPIKE_DISPATCH(sv.device, spike_linear_forward, sv, wv, bv.get(), yv, tv.get(), nv.get(), ex);
}

void linear_grad_weight(nb::handle bits, nb::handle s, nb::handle grad_y, nb::handle grad_w, nb::handle ws,
                        int num_threads, uintptr_t stream, nb::handle signs) {
  const OptView bv(bits, "bits"), sg(signs, "signs"), sv(s, "s"), wsv(ws, "ws");
  const TensorView gy = to_view(grad_y, "grad_out"), gw = to_view(grad_w, "grad_weight");
  const ExecConfig ex = exec(num_threads, stream);
  nb::gil_scoped_release release;
  SF_SPIKE_DISPATCH(gy.device, spike_linear_grad_weight, bv.get(), sg.get(), sv.get(), gy, gw, wsv.get(), ex);
}

void linear_grad_input_masked(nb::handle mask, nb::handle grad_y, nb::handle w, nb::handle grad_s, nb::handle ws,
                              int num_threads, uintptr_t stream, nb::handle nonfinite) {
  const TensorView mv = to_view(mask, "grad_mask bits"), gy = to_view(grad_y, "grad_out"), wv = to_view(w, "weight"),
                   gs = to_view(grad_s, "grad_s");
  const OptView wsv(ws, "ws"), nv(nonfinite, "nonfinite");
  const ExecConfig ex = exec(num_threads, stream);
  nb::gil_scoped_release release;
  SF_SPIKE_DISPATCH(gy.device, spike_linear_grad_input_masked, mv, gy, wv, gs, wsv.get(), nv.get(), ex);
}

void conv_forward(nb::handle s, nb::handle w, nb::handle bias, nb::handle y, nb::handle wt, nb::handle masks,
                  const std::vector<int64_t>& params, int num_threads, uintptr_t stream) {
  const TensorView sv = to_view(s, "s"), wv = to_view(w, "weight"), yv = to_view(y, "out");
  const OptView bv(bias, "bias"), wtv(wt, "wt"), mv(masks, "masks");
  const SpikeConvParams p = conv_params(params);
  const ExecConfig ex = exec(num_threads, stream);
  nb::gil_scoped_release release;
  SF_SPIKE_DISPATCH(sv.device, spike_conv2d_forward, sv, wv, bv.get(), yv, wtv.get(), mv.get(), p, ex);
}

void conv_grad_weight(nb::handle bits, nb::handle s, nb::handle grad_y, nb::handle grad_w, nb::handle gyt,
                      nb::handle ws, const std::vector<int64_t>& params, int num_threads, uintptr_t stream,
                      nb::handle signs) {
  const OptView bv(bits, "bits"), sg(signs, "signs"), sv(s, "s"), gtv(gyt, "gyt"), wsv(ws, "ws");
  const TensorView gy = to_view(grad_y, "grad_out"), gw = to_view(grad_w, "grad_weight");
  const SpikeConvParams p = conv_params(params);
  const ExecConfig ex = exec(num_threads, stream);
  nb::gil_scoped_release release;
  SF_SPIKE_DISPATCH(gy.device, spike_conv2d_grad_weight, bv.get(), sg.get(), sv.get(), gy, gw, gtv.get(), wsv.get(), p,
                    ex);
}

}  // namespace

void register_spike(nb::module_& m) {
  m.def("spike_pack", &pack, nb::arg("s"), nb::arg("bits"), nb::arg("info"), nb::arg("num_threads"), nb::arg("stream"),
        nb::arg("signs").none() = nb::none(),
        "Bit-pack a [R, K] spike tensor (and its signs); info = (non-zeros, value classes) (csrc/core/spike.h).");
  m.def("spike_unpack", &unpack, nb::arg("bits"), nb::arg("out"), nb::arg("num_threads"), nb::arg("stream"),
        nb::arg("signs").none() = nb::none(),
        "Unpack [R, words] bits (and signs) into a [R, K] 0/1 (0/1/-1) float tensor.");
  m.def("spike_linear_forward", &linear_forward, nb::arg("s"), nb::arg("w"), nb::arg("bias").none(), nb::arg("y"),
        nb::arg("wt").none(), nb::arg("num_threads"), nb::arg("stream"), nb::arg("nonfinite").none() = nb::none(),
        "Event-driven Y = S W^T + b into a preallocated output (wt, nonfinite: CUDA workspaces).");
  m.def("spike_linear_grad_weight", &linear_grad_weight, nb::arg("bits").none(), nb::arg("s").none(), nb::arg("grad_y"),
        nb::arg("grad_w"), nb::arg("ws").none(), nb::arg("num_threads"), nb::arg("stream"),
        nb::arg("signs").none() = nb::none(),
        "grad_W = dY^T S accumulated over the active inputs only (signs: packed ternary input).");
  m.def("spike_linear_grad_input_masked", &linear_grad_input_masked, nb::arg("mask"), nb::arg("grad_y"), nb::arg("w"),
        nb::arg("grad_s"), nb::arg("ws").none(), nb::arg("num_threads"), nb::arg("stream"),
        nb::arg("nonfinite").none() = nb::none(),
        "grad_s = (grad_y W) * mask for the packed mask, work in proportion to the mask.");
  m.def("spike_conv2d_forward", &conv_forward, nb::arg("s"), nb::arg("w"), nb::arg("bias").none(), nb::arg("y"),
        nb::arg("wt").none(), nb::arg("masks").none(), nb::arg("params"), nb::arg("num_threads"), nb::arg("stream"),
        "Event-driven 2-D convolution forward (wt, masks: CUDA workspaces, None on CPU).");
  m.def("spike_conv2d_grad_weight", &conv_grad_weight, nb::arg("bits").none(), nb::arg("s").none(), nb::arg("grad_y"),
        nb::arg("grad_w"), nb::arg("gyt").none(), nb::arg("ws").none(), nb::arg("params"), nb::arg("num_threads"),
        nb::arg("stream"), nb::arg("signs").none() = nb::none(),
        "Event-driven 2-D convolution grad_weight (fixed summation order; signs: packed ternary input).");
  m.def("spike_conv2d_wgrad_chunks", &spike_conv2d_wgrad_chunks, nb::arg("batch"),
        "Sample chunks of the CUDA conv2d grad_weight: the first dimension of its ws workspace.");
}

}  // namespace spikeforge::bind
