// CPU kernels of the PSN family (formulas in csrc/core/psn.h): argument checks, then the instruction-set
// variant of the kernels (psn_kernels_cpu.h) that this CPU runs (cpu/isa_cpu.h).
#include <algorithm>
#include <vector>

#include "core/psn.h"
#include "cpu/cpu_common.h"
#include "cpu/isa_cpu.h"

#define SF_ISA_KERNELS "cpu/psn_kernels_cpu.h"
#include "cpu/isa_variants_cpu.h"

namespace spikeforge {

void psn_forward_cpu(const TensorView& x, const TensorView& w, const TensorView& b, const TensorView& spike,
                     const TensorView* h_out, const PSNParams& p, const ExecConfig& ex) {
  check_psn_forward_args(x, w, b, spike, h_out, p);
  SF_CHECK_ARG(x.device == DeviceKind::cpu, "x_seq must be a CPU tensor for psn_forward_cpu");
  if (p.T_out == 0 || p.N == 0) return;
  SF_ISA_SELECT(psn_forward)(x, w, b, spike, h_out, p, cpu::threads_of(ex));
}

void psn_backward_cpu(const TensorView& grad_spike, const TensorView& x, const TensorView& w, const TensorView& b,
                      const TensorView* grad_x, const TensorView* partials, const TensorView* grad_w,
                      const TensorView* grad_b, const PSNParams& p, const ExecConfig& ex) {
  check_psn_backward_args(grad_spike, x, w, b, grad_x, partials, grad_w, grad_b, p);
  SF_CHECK_ARG(x.device == DeviceKind::cpu, "x_seq must be a CPU tensor for psn_backward_cpu");
  SF_ISA_SELECT(psn_backward)(grad_spike, x, w, b, grad_x, partials, grad_w, grad_b, p, cpu::threads_of(ex));
}

}  // namespace spikeforge
