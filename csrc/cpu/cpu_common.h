// Helpers shared by the CPU kernels: row loads/stores with half-precision conversion, dtype
// dispatch, and the thread count. Kernels work on rows of kBlock neurons (one time step each).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(SPIKEFORGE_HAVE_OPENMP)
#include <omp.h>
#endif

#include "core/dtype.h"
#include "core/neuron.h"

namespace spikeforge::cpu {

// Neurons per chunk: a row of 256 float32 is 1 KiB, and a chunk's state for T steps stays in L1/L2.
constexpr int64_t kBlock = 256;

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
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::f16: return f(f16_t{});
    case DType::bf16: return f(bf16_t{});
  }
  throw ArgumentError("x_seq: unsupported dtype");
}

inline int threads_of(const ExecConfig& ex) {
#if defined(SPIKEFORGE_HAVE_OPENMP)
  return ex.num_threads > 0 ? ex.num_threads : omp_get_max_threads();
#else
  (void)ex;
  return 1;
#endif
}

}  // namespace spikeforge::cpu
