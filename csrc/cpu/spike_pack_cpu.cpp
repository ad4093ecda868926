// CPU pack / unpack of spike tensors (csrc/core/spike.h "Packed form"): argument checks, then the
// instruction-set variant of the kernels (spike_pack_kernels_cpu.h) that this CPU runs (cpu/isa_cpu.h).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/spike.h"
#include "cpu/cpu_common.h"
#include "cpu/isa_cpu.h"
#include "cpu/spike_lists_cpu.h"

#define SF_ISA_KERNELS "cpu/spike_pack_kernels_cpu.h"
#include "cpu/isa_variants_cpu.h"

namespace spikeforge {

void spike_pack_cpu(const TensorView& s, const TensorView& bits, const TensorView& info, const TensorView* signs,
                    const ExecConfig& ex) {
  check_spike_pack_args(s, bits, info, signs);
  SF_ISA_SELECT(pack)(s, bits, info, signs, cpu::threads_of(ex));
}

void spike_unpack_cpu(const TensorView& bits, const TensorView* signs, const TensorView& out, const ExecConfig& ex) {
  check_spike_unpack_args(bits, signs, out);
  SF_ISA_SELECT(unpack)(bits, signs, out, cpu::threads_of(ex));
}

}  // namespace spikeforge
