// Spike-driven attention forward kernels fused with the attention LIF (docs/attention.md),
// one contract for CPU and CUDA.
//
// q, k, v are [T, B, N, D] row-major (B = every batch dim flattened, N tokens, D channels of one head).
// SN is the multi-step LIF of csrc/core/neuron.h (its sj_forward / sj_backward) with no initial state
// (V[-1] = v_reset for hard reset, 0 for soft), run over T inside the kernel so the pre-activation of
// the big [T, B, N, D] ops is never written:
//   ssa:           out = SN(Q (K^T V) * scale)                         [T, B, N, D]
//   token_reduce:  pre[t, b, d] = sum_n a[t, b, n, d] (* b2[t, b, n, d] when given)
//                  mask = SN(pre) [T, B, D],  out = m * mask (broadcast over n)
//                  (SDSA: a = K, b2 = V, m = Q;  QK channel attention: a = Q, m = K)
//   channel_reduce: pre[t, b, n] = sum_d a[t, b, n, d];  mask = SN(pre) [T, B, N];
//                  out = m * mask (broadcast over d)          (QK token attention: a = Q, m = K)
// pre and mask are small outputs kept for the backward (composed in Python over neuron_backward).
// Sums and state are in the compute type (float32 for 16-bit inputs, float64 for float64).
//
// SSA on CPU is event-driven where the inputs are spikes: K^T V ([D, D] per (t, b)) adds, for each
// spike k[n, i] = 1, the row v[n, :] to row i; then each spike q[n, i] = 1 adds row i of K^T V to the
// pre-activation row n. Rows (and slices) holding other values, or where a skipped zero would meet an
// inf or NaN, take the dense products in the same order, so the result equals the matmul's on any
// input. (AND + popcount over token-packed K and V bits was measured first: 2.6 ms against 1.5 ms for
// this form at [4, 16, 196, 48] on one EPYC core, and it needs V binary too.)
#pragma once
#include <cstdint>

#include "neuron.h"
#include "surrogate.h"
#include "tensor_view.h"

namespace spikeforge {

struct AttentionParams {
  int64_t T = 0, B = 0, N = 0, D = 0;
  double scale = 0.125;  // ssa only
  // The attention neuron: a LIF of csrc/core/neuron.h (model lif, no coefficient slot, no initial state);
  // detach_reset and the surrogate matter to backward only.
  NeuronParams neuron;
};

// Elements of the workspace a ssa forward takes: K^T V of every (t, b), T * B * D * D values of the compute
// type (float32; float64 for float64 q on CPU), written by the forward on every device when N > 0. The CPU
// backward reads it back instead of recomputing it.
int64_t ssa_workspace_elems(const AttentionParams& p);

// The spike bits of q, k and v that the CPU forward can keep for the backward (spike_bits: 64-bit words, int64),
// so that the backward does not read the three inputs again where they are spikes: [3][T][B] slices (q, k, v),
// each N * ceil(D / 64) words (row n's bits: bit i % 64 of word i / 64 is x[n, i] == 1) and then N one-byte
// flags (row n holds only 0 and 1) in ceil(N / 8) words.
int64_t ssa_bits_slice_words(int64_t N, int64_t D);
int64_t ssa_spike_bits_words(const AttentionParams& p);

// Entry points: argument checks (csrc/core/attention.cpp), then the device router (csrc/dispatch.h).
//   q, k, v, out [T, B, N, D], one dtype (f32/f16/bf16; f64 on CPU); ktv_ws: ssa_workspace_elems values;
//   spike_bits: ssa_spike_bits_words words (CPU only) or nullptr
void ssa_forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                 const TensorView* ktv_ws, const TensorView* spike_bits, const AttentionParams& p,
                 const ExecConfig& ex);
// SSA backward (CPU only: CUDA composes it from cuBLAS products and neuron_backward in Python): recomputes
// the pre-activation per slice from q and K^T V (ktv: the forward's workspace; nullptr: recomputed from k and
// v too), then BPTT through the LIF; grad_q = gP (K^T V)^T, grad_k = V (Q^T gP)^T, grad_v = K (Q^T gP), gP the
// pre-activation's gradient. [T, B, N, D] of q's dtype. spike_bits: the forward's (nullptr: found again).
void ssa_backward(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView* ktv, const TensorView* spike_bits, const TensorView& grad_q,
                  const TensorView& grad_k, const TensorView& grad_v, const AttentionParams& p, const ExecConfig& ex);
//   a, m, out [T, B, N, D]; b2 [T, B, N, D] or nullptr; pre, mask [T, B, D] in the compute type
void token_reduce_attention_forward(const TensorView& a, const TensorView* b2, const TensorView& m,
                                    const TensorView& out, const TensorView& pre, const TensorView& mask,
                                    const AttentionParams& p, const ExecConfig& ex);
//   a, m, out [T, B, N, D]; pre, mask [T, B, N] in the compute type
void channel_reduce_attention_forward(const TensorView& a, const TensorView& m, const TensorView& out,
                                      const TensorView& pre, const TensorView& mask, const AttentionParams& p,
                                      const ExecConfig& ex);

// Device implementations with the entry points' arguments.
void ssa_forward_cpu(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     const TensorView* ktv_ws, const TensorView* spike_bits, const AttentionParams& p,
                     const ExecConfig& ex);
void ssa_forward_cuda(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                      const TensorView* ktv_ws, const TensorView* spike_bits, const AttentionParams& p,
                      const ExecConfig& ex);
void ssa_backward_cpu(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView* ktv, const TensorView* spike_bits, const TensorView& grad_q,
                      const TensorView& grad_k, const TensorView& grad_v, const AttentionParams& p,
                      const ExecConfig& ex);
void token_reduce_attention_forward_cpu(const TensorView& a, const TensorView* b2, const TensorView& m,
                                        const TensorView& out, const TensorView& pre, const TensorView& mask,
                                        const AttentionParams& p, const ExecConfig& ex);
void token_reduce_attention_forward_cuda(const TensorView& a, const TensorView* b2, const TensorView& m,
                                         const TensorView& out, const TensorView& pre, const TensorView& mask,
                                         const AttentionParams& p, const ExecConfig& ex);
void channel_reduce_attention_forward_cpu(const TensorView& a, const TensorView& m, const TensorView& out,
                                          const TensorView& pre, const TensorView& mask, const AttentionParams& p,
                                          const ExecConfig& ex);
void channel_reduce_attention_forward_cuda(const TensorView& a, const TensorView& m, const TensorView& out,
                                           const TensorView& pre, const TensorView& mask, const AttentionParams& p,
                                           const ExecConfig& ex);

// Shape/dtype/device checks shared by both devices; they raise ArgumentError.
void check_ssa_forward_args(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                            const TensorView* ktv_ws, const TensorView* spike_bits, const AttentionParams& p);
void check_ssa_backward_args(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView* ktv, const TensorView* spike_bits, const TensorView& grad_q,
                             const TensorView& grad_k, const TensorView& grad_v, const AttentionParams& p);
// reduce_tokens: token_reduce (pre/mask [T, B, D]) or channel_reduce (pre/mask [T, B, N]).
void check_reduce_attention_forward_args(const TensorView& a, const TensorView* b2, const TensorView& m,
                                         const TensorView& out, const TensorView& pre, const TensorView& mask,
                                         const AttentionParams& p, bool reduce_tokens);

}  // namespace spikeforge
