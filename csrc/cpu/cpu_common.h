// Helpers shared by the CPU kernels: row loads/stores with half-precision conversion, dtype
// dispatch, and the thread count. Kernels work on rows of kBlock neurons (one time step each).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#if defined(SPIKEFORGE_HAVE_OPENMP)
#include <omp.h>
#endif

#include "core/dtype.h"
#include "core/neuron.h"

// Runtime ISA dispatch for portable builds (SPIKEFORGE_NATIVE_ARCH=OFF): the hot row loops are compiled
// for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline, and the dynamic loader picks the best
// the CPU has (GCC's target_clones, one ifunc per function). A native build (-march=native, the
// default) compiles everything for the building machine instead. Only leaf loops carry it: their callees
// are inlined into each clone, and results are the same on every path (no FMA contraction where exactness
// matters; csrc/core/neuron.h).
#if defined(SPIKEFORGE_ISA_CLONES) && (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define SF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SF_CPU_CLONES
#endif

namespace spikeforge::cpu {

// Neurons per chunk, at most. Long rows let the hardware prefetchers stream each of the T rows a
// chunk touches (a row of 4096 float32 is 16 KiB), but a chunk's T rows of H (recompute backward)
// must stay in L2: chunk_for() picks 4096 for T <= 8 down to 256 for T >= 128. Measured on 2 EPYC
// cores, N = 2^20 float32: 256 -> 4096 at T=8 made forward 1.2x and backward 1.16x faster; at T=32,
// 4096 was 1.4x slower in the recompute backward than 1024 (H spilled out of L2).
constexpr int64_t kBlock = 4096;
inline int64_t chunk_for(int64_t T) {
  const int64_t b = (int64_t(1) << 15) / std::max<int64_t>(T, 1);
  return std::min<int64_t>(kBlock, std::max<int64_t>(256, b / 256 * 256));
}

// Returns the row as compute-type values: the memory itself when no conversion is needed,
// else converted into tmp.
template <typename S>
inline const compute_t<S>* load_row(const S* src, compute_t<S>* tmp, int64_t n) {
  if constexpr (std::is_same_v<S, compute_t<S>>) {
    return src;
  } else {
    for (int64_t j = 0; j < n; ++j) tmp[j] = to_float(src[j]);
    return tmp;
  }
}

// Where to compute an output row: into dst directly when no conversion is needed, else into tmp
// (then store_row converts tmp into dst).
template <typename S>
inline compute_t<S>* out_row(S* dst, compute_t<S>* tmp) {
  if constexpr (std::is_same_v<S, compute_t<S>>) {
    return dst;
  } else {
    return tmp;
  }
}
template <typename S>
inline void store_row(S* dst, const compute_t<S>* tmp, int64_t n) {
  if constexpr (!std::is_same_v<S, compute_t<S>>) {
    for (int64_t j = 0; j < n; ++j) dst[j] = from_compute<S>(tmp[j]);
  }
}

template <typename F>
inline void dispatch_dtype(DType d, F&& f) {
  switch (d) {
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    case DType::f16:
      return f(f16_t{});
    case DType::bf16:
      return f(bf16_t{});
  }
  throw ArgumentError("x_seq: unsupported dtype");
}

// For kernels with float32 / float64 instantiations only (spike propagation has no half-precision
// path: ops send float16 / bfloat16 to the dense torch op). `arg` names the tensor in the error.
template <typename F>
inline void dispatch_f32_f64(DType d, const char* arg, F&& f) {
  if (d == DType::f32) return f(float{});
  if (d == DType::f64) return f(double{});
  throw ArgumentError(std::string(arg) + ": these kernels take float32 or float64, got " + dtype_name(d));
}

// The caller's thread count (torch.get_num_threads()), at most max(OpenMP's limit, processors):
// results do not depend on it (fixed chunks), and an absurd request straight from the binding
// (num_threads = 100000) made libgomp fail to create its threads and crash the process.
inline int threads_of(const ExecConfig& ex) {
#if defined(SPIKEFORGE_HAVE_OPENMP)
  const int cap = std::max(omp_get_max_threads(), omp_get_num_procs());
  return ex.num_threads > 0 ? std::min(ex.num_threads, cap) : omp_get_max_threads();
#else
  (void)ex;
  return 1;
#endif
}

// This thread's index inside a parallel region (0 without OpenMP).
inline int thread_index() {
#if defined(SPIKEFORGE_HAVE_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace spikeforge::cpu
