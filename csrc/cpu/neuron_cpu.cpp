// Multi-step neurons on CPU, forward: the entry point over the kernel skeleton of
// cpu/neuron_kernels_cpu.h (the dynamics: csrc/core/neuron.h).
#include <algorithm>

#include "cpu/neuron_kernels_cpu.h"

namespace spikeforge {

void neuron_forward_cpu(const TensorView& x, const TensorView* const* state_init, const TensorView* const* slots,
                        const TensorView& spike, const TensorView* const* state_out, const TensorView* saved,
                        const TensorView* const* state_last, const NeuronParams& p, const ExecConfig& ex) {
  // arguments checked by neuron_forward (csrc/core/neuron.cpp)
  const int ns = neuron_states(p.model);
  if (p.T == 0) {
    const bool vr = !neuron_reads_prev_state(p.model) && p.hard_reset && p.model != NeuronModel::ilif;
    for (int s = 0; s < ns; ++s) {
      const double fill = s == 0 && vr ? p.v_reset : 0.0;
      if (state_out[s] && state_out[s]->numel() == p.N) copy_or_fill(state_init[s], *state_out[s], fill);
      if (state_last[s]) copy_or_fill(state_init[s], *state_last[s], fill);
    }
    return;
  }
  if (p.N == 0) return;
  ForwardTensors a{};
  a.x = x.data;
  for (int s = 0; s < kMaxStates; ++s) {
    a.init[s] = data_of(state_init[s]);
    a.state_out[s] = mdata_of(state_out[s]);
    a.state_last[s] = mdata_of(state_last[s]);
  }
  for (int s = 0; s < kMaxParams; ++s) a.slots[s] = data_of(slots[s]);
  a.spike = spike.data;
  a.saved = mdata_of(saved);
  // T == 1: a sequence is the last state
  for (int s = 0; s < ns; ++s) a.seq[s] = state_out[s] && state_out[s]->numel() == p.T * p.N && p.T != 1;
  const int nt = threads_of(ex);
  dispatch_model(p.model, [&](auto mtag) {
    constexpr NeuronModel M = decltype(mtag)::value;
    dispatch_dtype(x.dtype, [&](auto tag) { forward_impl<M, decltype(tag)>(a, p, nt); });
  });
}

}  // namespace spikeforge
