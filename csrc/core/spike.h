// Event-driven spike propagation (docs/spike_propagation.md), one contract for CPU and
// CUDA. A synaptic layer's input S is mostly zero: an active input only adds its weights, so the work
// is proportional to the number of non-zeros (nnz), not to the dense size.
//
//   linear: Y[m, :] = b + sum_{k: S[m,k] != 0} S[m,k] * W[:, k]        S [M, K], W [N, K], Y [M, N]
//   conv2d: Y[b, co, oy, ox] = bias[co] + sum over active S[b, ci, y, x] of S * W[co, ci', ky, kx]
//           with y = oy*stride - pad + ky*dil (same in x), ci' = ci - g*Cin_g, co in ci's group g
//
// The kernels multiply by the value of each non-zero: binary spikes (value 1), small non-negative
// integer counts (SEW-ResNet ADD, I-LIF) count their multiplicity, ternary spikes (-1 / 1) subtract or
// add, and any float input is still computed exactly as the dense op would (spikeforge.ops routes
// non-spike floats to the dense path anyway).
//
// Backward (grad_input is a dense GEMM / transposed conv in spikeforge.ops; grad_bias a sum):
//   grad_W[n, k] = sum_{m: S[m,k] != 0} S[m,k] * dY[m, n]      (and the conv equivalent)
// accumulated over active inputs only, from the saved input: 1-bit packed words (binary input), packed
// words plus sign words (ternary input: 2 bits per element) or the dense values (counts / floats). Sums
// run in a fixed order over fixed partitions (independent of the thread count or grid): results are
// deterministic, and the CUDA kernels use no atomics.
//
// Packed form: row r of a [R, K] spike tensor is ceil(K/64) little-endian 64-bit words; bit j of word
// w is element 64 w + j; padding bits are zero. Stored in int64 tensors. Signs: the same layout, bit set
// where the element is negative; a ternary element is bit ? (sign ? -1 : 1) : 0.
//
// Non-finite values: every result is NaN / +-inf exactly where the dense product is, although the event
// sums skip the zero inputs that the dense product multiplies: 0 * inf = NaN. So y[m, n] is NaN where a
// non-finite W[n, k] meets a zero S[m, k], grad_W[n, k] where a non-finite dY[m, n] meets a zero S[m, k]
// (conv2d: the zero inputs, and the zero padding, that a tap reads). The kernels detect non-finite weights
// and gradients in passes they make anyway (the transposes, the row loads); only then does a fix-up pass
// write those NaN. Products with active inputs are in the event sums already (inf * 1 = inf, NaN * x =
// NaN). The masked grad_input multiplies like (dY W) * mask: outside the mask it is 0, or NaN where row m
// of dY or column k of W holds an inf or NaN.
#pragma once
#include <cstdint>

#include "macros.h"
#include "tensor_view.h"

namespace spikeforge {

SF_HD int64_t spike_words(int64_t K) {
  return (K + 63) / 64;
}

// Counts above this are "other": ops saves counts at 8 bits per element.
constexpr int64_t kMaxSpikeCount = 255;
// Classes of values, OR-ed over the elements by the pack kernel into info[1]. 0 (no class): only 0 and 1,
// binary spikes. ops derives the kind saved for backward: kSpikeCounts alone -> counts, kSpikeNegOne alone
// -> ternary, any other combination -> float (e.g. {-1, 2}: signed counts).
constexpr int64_t kSpikeCounts = 1;  // an integer in [2, kMaxSpikeCount]
constexpr int64_t kSpikeNegOne = 2;  // -1 (ternary spikes)
constexpr int64_t kSpikeOther = 4;   // anything else: other negatives, fractions, > kMaxSpikeCount, inf, NaN
template <typename T>
SF_HD int64_t spike_value_class(T v) {
  if (v == T(0) || v == T(1)) return 0;
  if (v == T(-1)) return kSpikeNegOne;
  if (v > T(1) && v <= T(kMaxSpikeCount) && v == static_cast<T>(static_cast<int64_t>(v))) return kSpikeCounts;
  return kSpikeOther;
}
// CUDA conv2d grad_weight: the samples are split into this many chunks, each summed into its own partial
// gradient (the ws workspace), then the partials in order. A function of B alone, so that the summation
// order, hence the result, is the same on every GPU.
SF_HD int64_t spike_conv2d_wgrad_chunks(int64_t B) {
  return B < 16 ? B : 16;
}

struct SpikeConvParams {
  int64_t B = 0, Cin = 0, H = 0, W = 0;  // input [B, Cin, H, W]
  int64_t Cout = 0, kh = 0, kw = 0;      // weight [Cout, Cin / groups, kh, kw]
  int64_t Ho = 0, Wo = 0;                // output [B, Cout, Ho, Wo]
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
};

// ---- CPU -------------------------------------------------------------------------------------
// pack: s [R, K] float -> bits [R, spike_words(K)] int64; info [2] int64 on the device of s:
// info[0] = number of non-zeros, info[1] = the value classes seen (kSpike*, OR-ed). signs: null, or
// [R, spike_words(K)] int64 that receives the sign words (bit set where s < 0).
void spike_pack_cpu(const TensorView& s, const TensorView& bits, const TensorView& info, const TensorView* signs,
                    const ExecConfig& ex);
// unpack: bits [R, spike_words(K)] (and signs of the same shape, or null) -> out [R, K] float: 0 / 1, or
// with signs 0 / 1 / -1.
void spike_unpack_cpu(const TensorView& bits, const TensorView* signs, const TensorView& out, const ExecConfig& ex);
// linear forward: s [M, K], w [N, K], bias [N] or null, y [M, N]; all of one float dtype (f32/f64).
// wt: [K, N] workspace (CUDA: W transposed by the kernel for coalesced rows) or null on CPU.
// nonfinite: int64 [1] workspace (CUDA: set by the transpose when W holds an inf or NaN, read by the
// fix-up kernel on the device) or null on CPU.
void spike_linear_forward_cpu(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                              const TensorView* wt, const TensorView* nonfinite, const ExecConfig& ex);
// linear grad_weight: exactly one of bits [M, words] / s [M, K] (values); signs [M, words] or null (only
// with bits: ternary input); grad_y [M, N]; grad_w [N, K] out; ws: [K, N] workspace (CUDA) or null (CPU).
void spike_linear_grad_weight_cpu(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                  const TensorView& grad_y, const TensorView& grad_w, const TensorView* ws,
                                  const ExecConfig& ex);
// masked linear grad_input (the sparse-gradient idea of Perez-Nieves & Goodman 2021: the upstream
// neuron's surrogate is zero outside a window, so only entries inside it are needed):
//   grad_s[m, k] = sum_n grad_y[m, n] w[n, k] where bit k of mask row m is set, else 0.
// mask [M, words(K)] int64 (packed); grad_y [M, N]; w [N, K]; grad_s [M, K] out; ws: [K, N] workspace
// (CUDA: W transposed) or null (CPU); nonfinite as for the forward. Work is proportional to the set bits,
// not to M K.
void spike_linear_grad_input_masked_cpu(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                        const TensorView& grad_s, const TensorView* ws, const TensorView* nonfinite,
                                        const ExecConfig& ex);
// Output-feature partitions of the CPU masked grad_input (fixed: results do not depend on the threads).
constexpr int64_t kSpikeMaskedPartitions = 8;
// conv2d forward: s [B, Cin, H, W], w [Cout, Cin/g, kh, kw], bias [Cout] or null, y [B, Cout, Ho, Wo].
// Workspaces (CUDA; null on CPU): wt [Cin/g * kh * kw, Cout] (W transposed: one tap's weights for all
// output channels contiguous) and masks [B, H, W, words(Cin)] int64 (each pixel's active input channels).
void spike_conv2d_forward_cpu(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                              const TensorView* wt, const TensorView* masks, const SpikeConvParams& p,
                              const ExecConfig& ex);
// conv2d grad_weight: bits [B, words(Cin*H*W)] (with signs of that shape for ternary input, or null) or
// s (values); grad_y [B, Cout, Ho, Wo]; grad_w out. Workspaces (CUDA; null on CPU): gyt [B, Ho, Wo, Cout]
// (grad_y channels-last) and ws [spike_conv2d_wgrad_chunks(B), Cin * kh * kw, Cout / groups] (partial
// gradients, transposed per group).
void spike_conv2d_grad_weight_cpu(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                  const TensorView& grad_y, const TensorView& grad_w, const TensorView* gyt,
                                  const TensorView* ws, const SpikeConvParams& p, const ExecConfig& ex);

#if defined(SPIKEFORGE_HAVE_CUDA)
// ---- CUDA: the same contracts on CUDA tensors, launched on ex.stream; float32 only. No host
// synchronisation: info and nonfinite stay on the device. The forwards need their workspaces (wt and
// nonfinite; conv2d wt and masks), linear grad_weight needs ws, the masked grad_input ws and nonfinite,
// conv2d grad_weight gyt and ws.
void spike_pack_cuda(const TensorView& s, const TensorView& bits, const TensorView& info, const TensorView* signs,
                     const ExecConfig& ex);
void spike_unpack_cuda(const TensorView& bits, const TensorView* signs, const TensorView& out, const ExecConfig& ex);
void spike_linear_forward_cuda(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                               const TensorView* wt, const TensorView* nonfinite, const ExecConfig& ex);
void spike_linear_grad_weight_cuda(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                   const TensorView& grad_y, const TensorView& grad_w, const TensorView* ws,
                                   const ExecConfig& ex);
void spike_linear_grad_input_masked_cuda(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                         const TensorView& grad_s, const TensorView* ws, const TensorView* nonfinite,
                                         const ExecConfig& ex);
void spike_conv2d_forward_cuda(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                               const TensorView* wt, const TensorView* masks, const SpikeConvParams& p,
                               const ExecConfig& ex);
void spike_conv2d_grad_weight_cuda(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                   const TensorView& grad_y, const TensorView& grad_w, const TensorView* gyt,
                                   const TensorView* ws, const SpikeConvParams& p, const ExecConfig& ex);
#endif

// Shape/dtype/device checks shared by both devices (csrc/core/spike.cpp); they raise ArgumentError.
void check_spike_pack_args(const TensorView& s, const TensorView& bits, const TensorView& info,
                           const TensorView* signs);
void check_spike_unpack_args(const TensorView& bits, const TensorView* signs, const TensorView& out);
void check_spike_linear_forward_args(const TensorView& s, const TensorView& w, const TensorView* bias,
                                     const TensorView& y, const TensorView* wt, const TensorView* nonfinite);
void check_spike_linear_grad_weight_args(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                         const TensorView& grad_y, const TensorView& grad_w, const TensorView* ws);
void check_spike_linear_grad_input_masked_args(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                               const TensorView& grad_s, const TensorView* ws,
                                               const TensorView* nonfinite);
void check_spike_conv2d_params(const SpikeConvParams& p);
void check_spike_conv2d_forward_args(const TensorView& s, const TensorView& w, const TensorView* bias,
                                     const TensorView& y, const TensorView* wt, const TensorView* masks,
                                     const SpikeConvParams& p);
void check_spike_conv2d_grad_weight_args(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                         const TensorView& grad_y, const TensorView& grad_w, const TensorView* gyt,
                                         const TensorView* ws, const SpikeConvParams& p);

}  // namespace spikeforge
