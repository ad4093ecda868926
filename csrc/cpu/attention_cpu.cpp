// CPU kernels of the spiking attention (contracts in csrc/core/attention.h, which checks the arguments):
// the instruction-set variant of the kernels (attention_kernels_cpu.h) that this CPU runs (cpu/isa_cpu.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/attention.h"
#include "core/index.h"
#include "cpu/cpu_common.h"
#include "cpu/isa_cpu.h"

#define SF_ISA_KERNELS "cpu/attention_kernels_cpu.h"
#include "cpu/isa_variants_cpu.h"

namespace spikeforge {

void ssa_forward_cpu(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                     const TensorView* ktv_ws, const TensorView* spike_bits, const AttentionParams& p,
                     const ExecConfig& ex) {
  // arguments checked by ssa_forward, the workspace (K^T V of every (t, b): ssa_workspace_elems) included
  if (p.T == 0 || p.B == 0 || p.N == 0 || p.D == 0) return;  // the output is empty too
  SF_ISA_SELECT(ssa_forward)(q, k, v, out, *ktv_ws, spike_bits, p, cpu::threads_of(ex));
}

void ssa_backward_cpu(const TensorView& grad_out, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView* ktv, const TensorView* spike_bits, const TensorView& grad_q,
                      const TensorView& grad_k, const TensorView& grad_v, const AttentionParams& p,
                      const ExecConfig& ex) {
  if (p.T == 0 || p.B == 0 || p.N == 0 || p.D == 0) return;  // every gradient is empty too
  SF_ISA_SELECT(ssa_backward)(grad_out, q, k, v, ktv, spike_bits, grad_q, grad_k, grad_v, p, cpu::threads_of(ex));
}

void token_reduce_attention_forward_cpu(const TensorView& a, const TensorView* b2, const TensorView& m,
                                        const TensorView& out, const TensorView& pre, const TensorView& mask,
                                        const AttentionParams& p, const ExecConfig& ex) {
  // N == 0 still has a [T, B, D] mask to compute (the LIF of zero sums); only an empty mask is skipped.
  if (p.T == 0 || p.B == 0 || p.D == 0) return;
  SF_ISA_SELECT(token_reduce_forward)(a, b2, m, out, pre, mask, p, cpu::threads_of(ex));
}

void channel_reduce_attention_forward_cpu(const TensorView& a, const TensorView& m, const TensorView& out,
                                          const TensorView& pre, const TensorView& mask, const AttentionParams& p,
                                          const ExecConfig& ex) {
  if (p.T == 0 || p.B == 0 || p.N == 0) return;  // D == 0: sums of nothing, still a mask per token
  SF_ISA_SELECT(channel_reduce_forward)(a, m, out, pre, mask, p, cpu::threads_of(ex));
}

}  // namespace spikeforge
