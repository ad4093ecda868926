// Multi-step IF / LIF / PLIF neurons (shared/SEMANTICS.md), one contract for CPU and CUDA.
//
// All three neurons are one charge equation with run-time coefficients, so one kernel serves them:
//   H[t] = V[t-1] + k * (xa - (V[t-1] - vr_c)) + xb
//     decay_input: xa = X[t], xb = 0        otherwise: xa = 0, xb = X[t]
//     k = 1/tau (LIF), sigmoid(w[c]) (PLIF), 0 (IF, with decay_input = false)
//     vr_c = v_reset for hard reset, 0 for soft reset
//   S[t] = H[t] >= v_th
//   V[t] = S ? (hard ? v_reset : H - v_th) : H
// Backward (BPTT, surrogate g' for dS/dH, nd = detach_reset ? 0 : 1):
//   dV/dH = hard ? (1 - S) + (v_reset - H) g' nd : 1 - v_th g' nd
//   gH = gS g' + gV dV/dH ;  gX = gH (decay_input ? k : 1) ;  gV[t-1] = gH (1 - k) + gVseq[t-1]
//   PLIF: g_k += gH (xa - (V[t-1] - vr_c)),  grad_w[c] = k_c (1 - k_c) sum over the channel's neurons
//
// Tensors are flattened to [T, N] (N neurons per step); PLIF's w has C entries, neuron i uses
// w[(i / S) % C] (C = size of x_seq's dim 2, S = product of the dims after it).
#pragma once
#include <cstdint>

#include "surrogate.h"
#include "tensor_view.h"

namespace spikeforge {

struct NeuronParams {
  int64_t T = 0;             // time steps
  int64_t N = 0;             // neurons per step
  int64_t C = 1;             // PLIF channels (1 for a scalar w)
  int64_t S = 1;             // PLIF: neurons per channel run (product of dims after the channel dim)
  // Constants are double so float64 runs keep them exact; kernels convert them to their compute type.
  double k = 0.5;            // 1/tau when no w is given (0 for IF)
  double v_threshold = 1.0;
  double v_reset = 0.0;      // used when hard_reset
  bool hard_reset = true;
  bool decay_input = true;
  bool detach_reset = false;
  Surrogate surrogate = Surrogate::sigmoid;
  double alpha = 4.0;
};

// Forward over all T steps.
//   x        [T, N]  activations (f32/f16/bf16; f64 on CPU)
//   v_init   [N] in x's dtype, or nullptr: V[-1] = v_reset (hard) or 0 (soft)
//   w        [C] float32 (float64 when x is float64), or nullptr: k = params.k for every neuron
//   spike    [T, N]  out, x's dtype
//   h_out    [T, N]  out, x's dtype, or nullptr: H saved for backward
//   v_out    [T, N] (v_seq) or [N] (last V), x's dtype
void neuron_forward_cpu(const TensorView& x, const TensorView* v_init, const TensorView* w,
                        const TensorView& spike, const TensorView* h_out, const TensorView& v_out,
                        const NeuronParams& p, const ExecConfig& ex);

// Backward over all T steps.
//   grad_spike [T, N]
//   grad_v     [T, N] (v_seq was returned) or [N] (last V) or nullptr (no gradient reached v)
//   x          [T, N] or nullptr: needed when h is nullptr (H is recomputed from X, fused) and for
//              PLIF with decay_input (dH/dk depends on X)
//   h          [T, N] H saved by the forward, or nullptr (recompute; CPU only: on CUDA the caller
//              runs the forward into a workspace instead)
//   v_init, w  as in the forward
//   grad_x     [T, N] out
//   grad_v_init [N] out, or nullptr
//   grad_k_ws  [N] compute-type workspace (required when grad_w is given): per-neuron sum over t of dL/dk
//   grad_w     [C] out in w's dtype, or nullptr: grad_w[c] = k(1-k) * sum of grad_k_ws over channel c,
//              reduced in a fixed order (deterministic, independent of the thread count)
void neuron_backward_cpu(const TensorView& grad_spike, const TensorView* grad_v, const TensorView* x,
                         const TensorView* h, const TensorView* v_init, const TensorView* w,
                         const TensorView& grad_x, const TensorView* grad_v_init,
                         const TensorView* grad_k_ws, const TensorView* grad_w, const NeuronParams& p,
                         const ExecConfig& ex);

#if defined(SPIKEFORGE_HAVE_CUDA)
// Same contracts on CUDA tensors, launched on ex.stream (the caller's current stream).
void neuron_forward_cuda(const TensorView& x, const TensorView* v_init, const TensorView* w,
                         const TensorView& spike, const TensorView* h_out, const TensorView& v_out,
                         const NeuronParams& p, const ExecConfig& ex);
void neuron_backward_cuda(const TensorView& grad_spike, const TensorView* grad_v, const TensorView* x,
                          const TensorView* h, const TensorView* v_init, const TensorView* w,
                          const TensorView& grad_x, const TensorView* grad_v_init,
                          const TensorView* grad_k_ws, const TensorView* grad_w, const NeuronParams& p,
                          const ExecConfig& ex);
#endif

// Shape/dtype/device checks shared by both devices (csrc/core/neuron.cpp). They raise ArgumentError.
void check_neuron_forward_args(const TensorView& x, const TensorView* v_init, const TensorView* w,
                               const TensorView& spike, const TensorView* h_out, const TensorView& v_out,
                               const NeuronParams& p);
void check_neuron_backward_args(const TensorView& grad_spike, const TensorView* grad_v, const TensorView* x,
                                const TensorView* h, const TensorView* v_init, const TensorView* w,
                                const TensorView& grad_x, const TensorView* grad_v_init,
                                const TensorView* grad_k_ws, const TensorView* grad_w,
                                const NeuronParams& p);

}  // namespace spikeforge
