// Bindings of the neuron family (csrc/core/neuron.h). The options travel as a bound NeuronParams
// (built once per distinct set of options by spikeforge.ops.neuron and reused); the call adds the
// shape. Tensors come as tuples with None for absent entries. The GIL is released while the kernels run.
#include <nanobind/nanobind.h>

#include <cstdint>
#include <string>

#include "bindings/convert.h"
#include "core/neuron.h"

namespace spikeforge::bind {
namespace {

// A tuple of optional tensors -> views (None -> nullptr), at most N entries.
template <int N>
struct OptViews {
  TensorView views[N];
  const TensorView* ptrs[N] = {};
  OptViews(nb::handle seq, const char* name) {
    const nb::tuple t = nb::borrow<nb::tuple>(seq);
    SF_CHECK_ARG(static_cast<int>(t.size()) <= N, std::string(name) + ": at most " + std::to_string(N) + " entries");
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i].is_none()) continue;
      const std::string label = std::string(name) + "[" + std::to_string(i) + "]";
      views[i] = to_view(t[i], label.c_str());
      ptrs[i] = &views[i];
    }
  }
};

NeuronParams with_shape(const NeuronParams& opts, int64_t T, int64_t N, nb::handle layouts) {
  NeuronParams p = opts;
  p.T = T;
  p.N = N;
  const nb::tuple t = nb::borrow<nb::tuple>(layouts);
  SF_CHECK_ARG(t.size() == 2 * kMaxParams, "layouts: expected (C, S) for each of the 4 slots");
  for (int s = 0; s < kMaxParams; ++s) {
    int64_t cs[2];
    for (int j = 0; j < 2; ++j) {
      // nb::cast reports a failed conversion as std::bad_cast (a RuntimeError naming nothing)
      SF_CHECK_ARG(nb::try_cast<int64_t>(t[2 * s + j], cs[j]), "layouts: expected integers (C, S) for each slot");
    }
    p.layout[s].C = cs[0];
    p.layout[s].S = cs[1];
  }
  return p;
}

void forward(nb::handle x, nb::tuple state_init, nb::tuple slots, nb::handle spike, nb::tuple state_out,
             nb::handle saved, const NeuronParams& opts, int64_t T, int64_t N, nb::tuple layouts, int num_threads,
             uintptr_t stream, nb::tuple state_last) {
  const TensorView xv = to_view(x, "x_seq"), sv = to_view(spike, "spike_seq");
  const OptViews<kMaxStates> init(state_init, "state_init"), out(state_out, "state_out"),
      last(state_last, "state_last");
  const OptViews<kMaxParams> sl(slots, "slots");
  const OptView svd(saved, "saved");
  const NeuronParams p = with_shape(opts, T, N, layouts);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  neuron_forward(xv, init.ptrs, sl.ptrs, sv, out.ptrs, svd.get(), last.ptrs, p, ex);
}

void backward(nb::handle grad_spike, nb::tuple grad_state_out, nb::handle x, nb::handle saved, nb::tuple state_init,
              nb::tuple slots, nb::handle grad_x, nb::tuple grad_state_init, nb::tuple grad_slot_ws,
              nb::tuple grad_slots, const NeuronParams& opts, int64_t T, int64_t N, nb::tuple layouts, int num_threads,
              uintptr_t stream) {
  const TensorView gs = to_view(grad_spike, "grad_spike"), gx = to_view(grad_x, "grad_x");
  const OptViews<kMaxStates> gout(grad_state_out, "grad_state_out"), init(state_init, "state_init"),
      ginit(grad_state_init, "grad_state_init");
  const OptViews<kMaxParams> sl(slots, "slots"), ws(grad_slot_ws, "grad_slot_ws"), gsl(grad_slots, "grad_slots");
  const OptView xv(x, "x_seq"), svd(saved, "saved");
  const NeuronParams p = with_shape(opts, T, N, layouts);
  const ExecConfig ex{num_threads, reinterpret_cast<void*>(stream)};
  nb::gil_scoped_release release;
  neuron_backward(gs, gout.ptrs, xv.get(), svd.get(), init.ptrs, sl.ptrs, gx, ginit.ptrs, ws.ptrs, gsl.ptrs, p, ex);
}

template <typename E>
void check_enum(int v, int count, const char* name) {
  SF_CHECK_ARG(v >= 0 && v < count, std::string(name) + ": unknown id " + std::to_string(v));
}

}  // namespace

void register_neuron(nb::module_& m) {
  nb::class_<NeuronParams>(m, "NeuronParams",
                           "Options of a neuron call (csrc/core/neuron.h); ints stand for the enums.")
      .def(nb::init<>())
      .def_prop_rw(
          "model", [](const NeuronParams& p) { return static_cast<int>(p.model); },
          [](NeuronParams& p, int v) {
            check_enum<NeuronModel>(v, kNumNeuronModels, "model");
            p.model = static_cast<NeuronModel>(v);
          })
      .def_rw("tau", &NeuronParams::tau)
      .def_rw("v_threshold", &NeuronParams::v_threshold)
      .def_rw("v_reset", &NeuronParams::v_reset)
      .def_rw("hard_reset", &NeuronParams::hard_reset)
      .def_rw("decay_input", &NeuronParams::decay_input)
      .def_rw("detach_reset", &NeuronParams::detach_reset)
      .def_rw("beta_a", &NeuronParams::beta_a)
      .def_rw("rho", &NeuronParams::rho)
      .def_rw("levels", &NeuronParams::levels)
      .def_rw("two_sided", &NeuronParams::two_sided)
      .def_prop_rw(
          "reset", [](const NeuronParams& p) { return static_cast<int>(p.reset); },
          [](NeuronParams& p, int v) {
            check_enum<ResetMechanism>(v, 3, "reset");
            p.reset = static_cast<ResetMechanism>(v);
          })
      .def_rw("reset_delay", &NeuronParams::reset_delay)
      .def_prop_rw(
          "surrogate", [](const NeuronParams& p) { return static_cast<int>(p.surrogate); },
          [](NeuronParams& p, int v) {
            check_enum<Surrogate>(v, kNumSurrogates, "surrogate");
            p.surrogate = static_cast<Surrogate>(v);
          })
      .def_rw("alpha", &NeuronParams::alpha)
      .def_rw("beta_sg", &NeuronParams::beta_sg);
  m.def(
      "neuron_states",
      [](int model) {
        check_enum<NeuronModel>(model, kNumNeuronModels, "model");
        return neuron_states(static_cast<NeuronModel>(model));
      },
      "State variables of a neuron model.");
  m.def(
      "neuron_saved",
      [](int model) {
        check_enum<NeuronModel>(model, kNumNeuronModels, "model");
        return neuron_saved(static_cast<NeuronModel>(model));
      },
      "Values per neuron and step a model saves for backward.");
  m.def("neuron_forward", &forward, nb::arg("x"), nb::arg("state_init"), nb::arg("slots"), nb::arg("spike"),
        nb::arg("state_out"), nb::arg("saved").none(), nb::arg("params"), nb::arg("T"), nb::arg("N"),
        nb::arg("layouts"), nb::arg("num_threads"), nb::arg("stream"), nb::arg("state_last") = nb::tuple(),
        "Multi-step neuron forward into preallocated outputs (csrc/core/neuron.h).");
  m.def("neuron_backward", &backward, nb::arg("grad_spike"), nb::arg("grad_state_out"), nb::arg("x").none(),
        nb::arg("saved").none(), nb::arg("state_init"), nb::arg("slots"), nb::arg("grad_x"), nb::arg("grad_state_init"),
        nb::arg("grad_slot_ws"), nb::arg("grad_slots"), nb::arg("params"), nb::arg("T"), nb::arg("N"),
        nb::arg("layouts"), nb::arg("num_threads"), nb::arg("stream"),
        "Multi-step neuron backward into preallocated gradients (csrc/core/neuron.h).");
}

}  // namespace spikeforge::bind
