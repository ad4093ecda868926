// CPU kernels of spike_linear (csrc/core/spike.h): argument checks, then the instruction-set variant of
// the kernels (spike_linear_kernels_cpu.h) that this CPU runs (cpu/isa_cpu.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/spike.h"
#include "cpu/cpu_common.h"
#include "cpu/isa_cpu.h"
#include "cpu/spike_lists_cpu.h"

#define SF_ISA_KERNELS "cpu/spike_linear_kernels_cpu.h"
#include "cpu/isa_variants_cpu.h"

namespace spikeforge {

void spike_linear_forward_cpu(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                              const TensorView* wt, const TensorView* nonfinite, const ExecConfig& ex) {
  check_spike_linear_forward_args(s, w, bias, y, wt, nonfinite);  // the CUDA workspaces are not used here
  SF_ISA_SELECT(linear_forward)(s, w, bias, y, cpu::threads_of(ex));
}

void spike_linear_grad_weight_cpu(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                  const TensorView& grad_y, const TensorView& grad_w, const TensorView* ws,
                                  const ExecConfig& ex) {
  check_spike_linear_grad_weight_args(bits, signs, s, grad_y, grad_w, ws);
  SF_ISA_SELECT(linear_grad_weight)(bits, signs, s, grad_y, grad_w, cpu::threads_of(ex));
}

void spike_linear_grad_input_masked_cpu(const TensorView& mask, const TensorView& grad_y, const TensorView& w,
                                        const TensorView& grad_s, const TensorView* ws, const TensorView* nonfinite,
                                        const ExecConfig& ex) {
  check_spike_linear_grad_input_masked_args(mask, grad_y, w, grad_s, ws, nonfinite);  // CUDA workspaces: unused
  SF_ISA_SELECT(linear_grad_input_masked)(mask, grad_y, w, grad_s, cpu::threads_of(ex));
}

}  // namespace spikeforge
