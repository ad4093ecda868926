// Run-time instruction-set dispatch for the CPU kernels that use intrinsics: spike propagation (pack,
// linear, conv2d), spiking attention and PSN.
//
// A native build (SPIKEFORGE_NATIVE_ARCH=ON, -march=native) compiles each kernel body once, for the
// building machine. A portable GCC build for x86-64 compiles it twice in one translation unit
// (cpu/isa_variants_cpu.h): for the baseline, and under `#pragma GCC target` for x86-64-v3 (AVX2, FMA,
// BMI), each copy in its own namespace; the entry points call the copy that active_isa() names.
// Not target_clones, as the neuron kernels use (cpu/cpu_common.h): it cannot clone code written with
// intrinsics. Not one translation unit per -march either: inline and template code shared with the
// baseline (the std library's) would then be compiled for a higher ISA too, and the linker could keep
// that copy for everyone (an illegal instruction on an older CPU).
#pragma once
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>  // before any variant: every intrinsic is declared, each with its own target
#endif

#if defined(SPIKEFORGE_ISA_CLONES) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SF_ISA_DISPATCH 1
#else
#define SF_ISA_DISPATCH 0
#endif

namespace spikeforge::cpu {

enum class CpuIsa : int {
  build = 0,  // the one variant of a build without dispatch (native, or a non-GCC / non-x86 compiler)
  baseline = 1,
  x86_64_v3 = 3,
};

// The variant the dispatched kernels run: the best this CPU supports, unless the environment variable
// SPIKEFORGE_CPU_ISA names one ("baseline" or "x86-64-v3"; "native" in a native build; read at the first
// call). Throws
// ArgumentError for a name this build or CPU cannot run (a clear error instead of an illegal instruction).
CpuIsa active_isa();

// Names of the variants this build compiled and this CPU can run, best first.
std::vector<std::string> isa_variants();

// Name of the variant active_isa() picks ("native", "baseline", "x86-64-v3", ...). Throws as active_isa().
std::string active_isa_name();

// Makes the dispatched kernels run variant `name` (one of isa_variants()), or, for "", the variant
// active_isa() would pick by itself. For tests that compare the variants. Throws ArgumentError for a name
// that is not in isa_variants() (nothing changes then).
void force_isa(const std::string& name);

template <typename F>
F* isa_pick(F* baseline, F* v3) {
  return active_isa() == CpuIsa::x86_64_v3 ? v3 : baseline;
}

}  // namespace spikeforge::cpu

// The variant of kernel entry `fn` (a function of the kernel body, same signature in every variant) that
// runs on this CPU.
#if SF_ISA_DISPATCH
#define SF_ISA_SELECT(fn) \
  ::spikeforge::cpu::isa_pick(&::spikeforge::cpu::isa_baseline::fn, &::spikeforge::cpu::isa_v3::fn)
#else
#define SF_ISA_SELECT(fn) (::spikeforge::cpu::active_isa(), &::spikeforge::cpu::isa_build::fn)
#endif
