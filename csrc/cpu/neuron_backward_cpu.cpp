// Multi-step neurons on CPU, backward: the entry point over the kernel skeleton of
// cpu/neuron_kernels_cpu.h. A file of its own because it is compiled preferring 512-bit vectors
// where the CPU has AVX-512 (CMakeLists.txt): the backward step is compute-heavy (surrogate, recomputed
// forward, chain rule), and on an AVX-512 Xeon (2 threads, T = 4 / 8 / 32, 2^20 neurons, the kernel
// repeated on warm caches, 4096-neuron chunks at T <= 8 then) 512-bit vectors made the LIF backward
// 2.55 -> 2.28, 6.0 -> 5.1 and 24.6 -> 22.6 ms, while the memory-bound forward got slower with them
// (13.6 -> 17.7 ms at T = 32) and keeps 256-bit vectors.
#include <algorithm>
#include <vector>

#include "cpu/neuron_kernels_cpu.h"

namespace spikeforge {

void neuron_backward_cpu(const TensorView& grad_spike, const TensorView* const* grad_state_out, const TensorView* x,
                         const TensorView* saved, const TensorView* const* state_init, const TensorView* const* slots,
                         const TensorView& grad_x, const TensorView* const* grad_state_init,
                         const TensorView* const* grad_slot_ws, const TensorView* const* grad_slots,
                         const NeuronParams& p, const ExecConfig& ex) {
  // arguments checked by neuron_backward (csrc/core/neuron.cpp)
  const int nt = threads_of(ex);
  const int ns = neuron_states(p.model), nsl = neuron_slots(p.model);
  // slots of one value: one double per chunk from the kernel, added here in chunk order
  std::vector<double> chunk_sums[kMaxParams];
  if (p.T > 0 && p.N > 0) {
    BackwardTensors a{};
    a.grad_spike = grad_spike.data;
    for (int s = 0; s < kMaxStates; ++s) {
      a.grad_out[s] = data_of(grad_state_out[s]);
      a.init[s] = data_of(state_init[s]);
      a.grad_init[s] = mdata_of(grad_state_init[s]);
    }
    for (int s = 0; s < ns; ++s) {
      a.seq[s] = grad_state_out[s] && grad_state_out[s]->numel() == p.T * p.N && p.T != 1;
    }
    a.x = data_of(x);
    a.saved = data_of(saved);
    for (int s = 0; s < kMaxParams; ++s) {
      a.slots[s] = data_of(slots[s]);
      a.slot_ws[s] = grad_slots[s] ? mdata_of(grad_slot_ws[s]) : nullptr;
      if (grad_slots[s] && p.layout[s].C == 1) {
        chunk_sums[s].assign(static_cast<size_t>(chunk_count(p.N, chunk_for(p.T))), 0.0);
        a.slot_sums[s] = chunk_sums[s].data();
      }
    }
    a.grad_x = grad_x.data;
    dispatch_model(p.model, [&](auto mtag) {
      constexpr NeuronModel M = decltype(mtag)::value;
      dispatch_dtype(grad_spike.dtype, [&](auto tag) {
        using S = decltype(tag);
        // ilif has no surrogate (one instantiation); each model is compiled for its surrogate set only
        const Surrogate sgt = M == NeuronModel::ilif ? Surrogate::sigmoid : p.surrogate;
        dispatch_surrogate(sgt, [&](auto sg) {
          if constexpr (surrogate_allowed(M, decltype(sg)::value)) backward_impl<M, S, decltype(sg)::value>(a, p, nt);
        });
      });
    });
  } else {
    for (int s = 0; s < ns; ++s) {
      if (grad_state_init[s] && p.N > 0) {
        const TensorView* g = grad_state_out[s];
        // T == 0 passes the last state's gradient through; N == 0 has nothing to write
        copy_or_fill(p.T == 0 ? g : nullptr, *grad_state_init[s], 0.0);
      }
    }
  }
  for (int s = 0; s < nsl; ++s) {
    if (!grad_slots[s]) continue;
    dispatch_dtype(grad_spike.dtype, [&](auto tag) {
      using C = compute_t<decltype(tag)>;
      C* out = grad_slots[s]->ptr<C>();
      if (p.N == 0 || p.T == 0) {
        std::fill(out, out + p.layout[s].C, C(0));
      } else if (!chunk_sums[s].empty()) {
        double total = 0.0;
        for (const double v : chunk_sums[s]) total += v;
        out[0] = static_cast<C>(total);
      } else {
        reduce_slot_grad<C>(grad_slot_ws[s]->ptr<C>(), out, p.layout[s], p.N, nt);
      }
    });
  }
}

}  // namespace spikeforge
