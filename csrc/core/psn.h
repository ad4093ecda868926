// Parallel spiking neurons (PSN, masked PSN, sliding PSN; Fang et al. 2023), one contract for CPU and
// CUDA. No reset, so charging is one linear map over time followed by firing:
//   H[t] = b[t] + sum_i W[t, i] X[i]      (W: [T_out, T_in], X: [T_in, N], b: [T_out])
//   S[t] = H[t] >= 0                      (the threshold is folded into b)
// PSN passes its W; masked PSN W * (lambda M + 1 - lambda); sliding PSN the Toeplitz matrix of its k
// taps. Python builds that effective W (a T x T tensor; autograd maps its gradient back).
// Multi-step ops are square (T_out = T_in = T); single-step streaming calls one output row over a
// window of the last T_in inputs.
//
// `band` > 0 says W is zero outside a causal band of that width: output row t reads only inputs
// i in [t + d - band + 1, t + d], d = T_in - T_out (masked PSN at lambda = 1, sliding PSN). The
// kernels skip the zeros; with band = 0 they read every input. Both orders sum i ascending, so a
// window padded with zeros gives bitwise the same H.
//
// Backward (surrogate g' for dS/dH; H is recomputed from X, never stored):
//   gH = gS g'(H);  grad_X = W^T gH;  grad_W = gH X^T (summed over neurons);  grad_b = sum_n gH
// grad_W and grad_b are reduced deterministically: fixed partitions of neurons (independent of the
// thread count / grid) write float64 partials to a workspace, then a fixed-order sum.
#pragma once
#include <cstdint>

#include "index.h"
#include "surrogate.h"
#include "tensor_view.h"

namespace spikeforge {

struct PSNParams {
  int64_t T_out = 0;  // output steps
  int64_t T_in = 0;   // input steps
  int64_t N = 0;      // neurons per step
  int64_t band = 0;   // 0: dense W; else causal band width (see above)
  Surrogate surrogate = Surrogate::atan;
  double alpha = 2.0;
};

// Neurons per partition of the grad_W/grad_b reduction: partials has psn_num_partitions(N) rows of
// T_out * (T_in + 1) float64 values (grad_W row-major, then grad_b).
constexpr int64_t kPSNPartition = 1 << 14;
// ceil_div: N + kPSNPartition - 1 would overflow for N near INT64_MAX (N is caller-supplied).
inline int64_t psn_num_partitions(int64_t N) {
  return N > 0 ? ceil_div(N, kPSNPartition) : 0;
}

// Forward.
//   x      [T_in, N]   activations (f32/f16/bf16; f64 on CPU)
//   w      [T_out, T_in] float32 (float64 when x is float64)
//   b      [T_out]       as w
//   spike  [T_out, N]  out, x's dtype
//   h_out  [T_out, N]  out or nullptr
void psn_forward_cpu(const TensorView& x, const TensorView& w, const TensorView& b, const TensorView& spike,
                     const TensorView* h_out, const PSNParams& p, const ExecConfig& ex);

// Backward.
//   grad_spike [T_out, N]; x, w, b as in the forward
//   grad_x     [T_in, N] out, or nullptr
//   partials   [psn_num_partitions(N), T_out * (T_in + 1)] float64 workspace (required with grad_w/grad_b)
//   grad_w     [T_out, T_in] out in w's dtype, or nullptr
//   grad_b     [T_out] out in w's dtype, or nullptr
void psn_backward_cpu(const TensorView& grad_spike, const TensorView& x, const TensorView& w, const TensorView& b,
                      const TensorView* grad_x, const TensorView* partials, const TensorView* grad_w,
                      const TensorView* grad_b, const PSNParams& p, const ExecConfig& ex);

#if defined(SPIKEFORGE_HAVE_CUDA)
// Same contracts on CUDA tensors, launched on ex.stream. T_in <= 64 (the fused kernels keep a neuron's
// X column in registers); larger T goes through the GEMM path in spikeforge.ops.psn.
constexpr int64_t kPSNMaxCudaT = 64;
void psn_forward_cuda(const TensorView& x, const TensorView& w, const TensorView& b, const TensorView& spike,
                      const TensorView* h_out, const PSNParams& p, const ExecConfig& ex);
void psn_backward_cuda(const TensorView& grad_spike, const TensorView& x, const TensorView& w, const TensorView& b,
                       const TensorView* grad_x, const TensorView* partials, const TensorView* grad_w,
                       const TensorView* grad_b, const PSNParams& p, const ExecConfig& ex);
#endif

// Shape/dtype/device checks shared by both devices (csrc/core/psn.cpp); they raise ArgumentError.
void check_psn_forward_args(const TensorView& x, const TensorView& w, const TensorView& b, const TensorView& spike,
                            const TensorView* h_out, const PSNParams& p);
void check_psn_backward_args(const TensorView& grad_spike, const TensorView& x, const TensorView& w,
                             const TensorView& b, const TensorView* grad_x, const TensorView* partials,
                             const TensorView* grad_w, const TensorView* grad_b, const PSNParams& p);

}  // namespace spikeforge
