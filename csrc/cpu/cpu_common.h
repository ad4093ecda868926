// Helpers shared by the CPU kernels: row loads/stores with half-precision conversion, dtype
// dispatch, and the thread count. Kernels work on rows of kBlock neurons (one time step each).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#if defined(SPIKEFORGE_HAVE_OPENMP)
#include <omp.h>
#endif
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "core/dtype.h"
#include "core/neuron.h"

// Runtime ISA dispatch for portable builds (SPIKEFORGE_NATIVE_ARCH=OFF): the hot row loops are compiled
// for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline, and the dynamic loader picks the best
// the CPU has (GCC's target_clones, one ifunc per function). A native build (-march=native, the
// default) compiles everything for the building machine instead. Only leaf loops carry it: their callees
// are inlined into each clone. Spikes, states and saved values are the same on every path (no FMA contraction
// there: csrc/core/neuron.h); surrogate gradients can differ in their last bits (SF_FP_CONTRACT below).
#if defined(SPIKEFORGE_ISA_CLONES) && (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define SF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SF_CPU_CLONES
#endif

// Multiply-add contraction (FMA where the code path has it) for one function, in translation units compiled
// with -ffp-contract=off: for the surrogate gradients, which no peer's bits constrain. The results then differ
// in the last bits between a path with FMA and one without (the baseline clone), and are the same run to run
// and for any thread count. GCC applies it per clone (the target of each decides whether FMA exists).
#if defined(__GNUC__) && !defined(__clang__)
#define SF_FP_CONTRACT __attribute__((optimize("fp-contract=fast")))
#else
#define SF_FP_CONTRACT
#endif

namespace spikeforge::cpu {

// Neurons per chunk, at most. A chunk touches one row of its neurons per tensor and step, so rows should
// reach a page (1024 float32 = 4 KiB: shorter rows restart the hardware prefetcher's streams too often), but a
// chunk's T rows of saved values (recompute backward) must stay in L2, and, with the data coming from
// memory as it does in training (other layers run between the calls), longer rows were slower:
// chunk_for() picks 1024 for T <= 32, 512 at T = 64, 256 from T = 128. Intel Xeon (AVX-512), 2 threads,
// N = 2^20 float32, caches flushed before each call, LIF forward + backward kernels: 4096 -> 1024 neurons
// took T = 4 from 58-62% to 71-73% of the copy bandwidth and T = 8 from 61-65% to 76-80% (`spikeforge bench
// neurons`: 6.0-6.2 -> 5.3-5.5 ms and 11.4-11.6 -> 9.7-9.9 ms); T = 32 already used 1024. With the data
// in cache instead (the same call repeated), 4096 was about 10% faster at T = 8 (2 EPYC cores, and this
// Xeon). The models with 2-3 saved values per step take the LIF's rows, chunk_for(T): chunk_for(T * values)
// gave them 512 / 256 neurons at T = 32, where ALIF reached 54% of the bandwidth instead of 62%, Synaptic 41%
// instead of 49%.
constexpr int64_t kBlock = 1024;
inline int64_t chunk_for(int64_t T) {
  const int64_t b = (int64_t(1) << 15) / std::max<int64_t>(T, 1);
  return std::min<int64_t>(kBlock, std::max<int64_t>(256, b / 256 * 256));
}
// The number of chunks of blk neurons that cover N.
inline int64_t chunk_count(int64_t N, int64_t blk) {
  return (N + blk - 1) / blk;
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

// Outputs of at least this many bytes are written with streaming (non-temporal) stores where a kernel can write
// whole cache lines: far beyond what the caches keep for the next layer, and a plain store first reads each line
// it writes (read for ownership), a third more traffic for a kernel that reads two values per value it writes.
constexpr int64_t kStreamBytes = int64_t{16} << 20;
// Whether stream_row streams at all (x86-64): elsewhere it is a plain copy, and a kernel keeps its direct stores.
#if defined(__SSE2__)
constexpr bool kCanStream = true;
#else
constexpr bool kCanStream = false;
#endif

// Copies a float32 row (in L1) into dst with streaming stores from dst's first 64-byte boundary to its last (the
// partial lines at the two ends plainly). SSE's 16-byte streaming store is in every x86-64 CPU: the same code in a
// native and a portable build, and the CPU's write-combining joins four of them into one line write. Each thread of a
// kernel calls stream_fence() after its last streamed row, before its OpenMP region ends: the stores are then visible
// to every thread. (Once per chunk instead measured within the noise: the fence is about the region, not the chunk.)
// (16-bit rows streamed the same way after a conversion measured within the noise, bfloat16 LIF backward: not done.)
inline void stream_row(float* dst, const float* src, int64_t n) {
  int64_t j = 0;
#if defined(__SSE2__)
  for (; j < n && (reinterpret_cast<uintptr_t>(dst + j) & 63) != 0; ++j) dst[j] = src[j];
  const int64_t lines_end = j + (n - j) / 16 * 16;
  for (; j < lines_end; j += 4) _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
#endif
  for (; j < n; ++j) dst[j] = src[j];
}
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
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

// The threads a parallel region over `work` independent items asks for: nthreads, at most one per item.
inline int team_for(int nthreads, int64_t work) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, work)));
}

// One buffer of `each` zeroed elements per thread of a parallel region of at most nthreads threads, indexed
// by thread_index(), allocated before the region: an allocation that fails inside one ends the process
// (std::bad_alloc cannot leave an OpenMP region) instead of raising. Buffers start on 64-byte lines when
// `each` elements are a multiple of 64 bytes.
template <typename T>
class ThreadBuffers {
 public:
  ThreadBuffers(int nthreads, int64_t each)
      : v_(static_cast<size_t>(std::max(nthreads, 1)) * static_cast<size_t>(each) + 64 / sizeof(T)), each_(each) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(v_.data());
    base_ = v_.data() + ((64 - a % 64) % 64) / sizeof(T);
  }
  T* mine() { return base_ + static_cast<int64_t>(thread_index()) * each_; }

 private:
  std::vector<T> v_;
  int64_t each_;
  T* base_;
};

// The bits of the last 64-bit word of a packed row of K columns that are columns (all 64 when K is a multiple
// of 64). The rest is padding: zero in the ops' own packing, but a caller of the raw ops can pass any bits, and
// a kernel that read a padding bit as column >= K would index past its rows.
inline uint64_t packed_tail_mask(int64_t K) {
  return (K & 63) ? (uint64_t{1} << (K & 63)) - 1 : ~uint64_t{0};
}

}  // namespace spikeforge::cpu
