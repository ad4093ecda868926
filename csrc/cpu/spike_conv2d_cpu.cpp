// CPU kernels of spike_conv2d (csrc/core/spike.h): argument checks, then the instruction-set variant of
// the kernels (spike_conv2d_kernels_cpu.h) that this CPU runs (cpu/isa_cpu.h).
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

#define SF_ISA_KERNELS "cpu/spike_conv2d_kernels_cpu.h"
#include "cpu/isa_variants_cpu.h"

namespace spikeforge {

void spike_conv2d_forward_cpu(const TensorView& s, const TensorView& w, const TensorView* bias, const TensorView& y,
                              const TensorView* wt, const TensorView* masks, const SpikeConvParams& p,
                              const ExecConfig& ex) {
  check_spike_conv2d_forward_args(s, w, bias, y, wt, masks, p);  // the CUDA workspaces are not used here
  SF_ISA_SELECT(conv2d_forward)(s, w, bias, y, p, cpu::threads_of(ex));
}

void spike_conv2d_grad_weight_cpu(const TensorView* bits, const TensorView* signs, const TensorView* s,
                                  const TensorView& grad_y, const TensorView& grad_w, const TensorView* gyt,
                                  const TensorView* ws, const SpikeConvParams& p, const ExecConfig& ex) {
  check_spike_conv2d_grad_weight_args(bits, signs, s, grad_y, grad_w, gyt, ws, p);  // CUDA workspaces: unused here
  SF_ISA_SELECT(conv2d_grad_weight)(bits, signs, s, grad_y, grad_w, p, cpu::threads_of(ex));
}

}  // namespace spikeforge
