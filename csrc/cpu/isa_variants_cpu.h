// Compiles the kernel body SF_ISA_KERNELS (a header naming itself "kernel body") once per instruction-set
// variant, each copy in namespace spikeforge::cpu::isa_<variant> (cpu/isa_cpu.h). No include guard: a
// kernel .cpp defines SF_ISA_KERNELS and includes this once, after every header the body needs.
//
// Rules for a kernel body, so that no code compiled for a higher ISA can end up on the baseline path:
// - it includes no system or std header (they come before the variants: std templates are then compiled
//   for the baseline wherever they are used, and only inlined into a variant);
// - it defines no type that std code calls into (an allocator, a comparator, an element type with
//   non-trivial members): such types live outside the body (cpu/spike_lists_cpu.h);
// - it tests SF_ISA_AVX / SF_ISA_AVX2 (AVX2 + FMA), never __AVX2__ and friends: GCC's C++
//   front end reads the whole file before it applies a target pragma, so those macros keep the command
//   line's values inside the region.
// Everything sits in an anonymous namespace: the copies a body shares with another .cpp (the spike tile
// kernels) are that translation unit's own, so the linker has nothing to merge.
#ifndef SF_ISA_KERNELS
#error "define SF_ISA_KERNELS (the kernel body header) before including cpu/isa_variants_cpu.h"
#endif

#if SF_ISA_DISPATCH

#define SF_ISA_AVX 0
#define SF_ISA_AVX2 0
namespace spikeforge::cpu::isa_baseline {
namespace {
#include SF_ISA_KERNELS
}  // namespace
}  // namespace spikeforge::cpu::isa_baseline
#undef SF_ISA_AVX
#undef SF_ISA_AVX2

// No x86-64-v4 (AVX-512) copy: on the AVX-512 Xeon the project measures on, one made no kernel faster
// (psn, spike_linear, spike_conv2d, SSA within +-2% of x86-64-v3, calls interleaved in one process); the
// intrinsics are 256-bit, and GCC's AVX-512 tunings prefer 256-bit vectors for the compiler's loops too.
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define SF_ISA_AVX 1
#define SF_ISA_AVX2 1
namespace spikeforge::cpu::isa_v3 {
namespace {
#include SF_ISA_KERNELS
}  // namespace
}  // namespace spikeforge::cpu::isa_v3
#undef SF_ISA_AVX
#undef SF_ISA_AVX2
#pragma GCC pop_options

#else  // one variant, for the compiler's own target flags

#if defined(__AVX__)
#define SF_ISA_AVX 1
#else
#define SF_ISA_AVX 0
#endif
#if defined(__AVX2__) && defined(__FMA__)
#define SF_ISA_AVX2 1
#else
#define SF_ISA_AVX2 0
#endif
namespace spikeforge::cpu::isa_build {
namespace {
#include SF_ISA_KERNELS
}  // namespace
}  // namespace spikeforge::cpu::isa_build
#undef SF_ISA_AVX
#undef SF_ISA_AVX2

#endif

#undef SF_ISA_KERNELS
