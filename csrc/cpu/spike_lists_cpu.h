// The containers of the CPU spike propagation: CSR lists of active inputs, the finite-value flags of parallel
// tasks, output row layouts (the per-thread tile buffers: cpu_common.h). Kept out of the kernel bodies
// (spike_events_cpu.h, spike_tiles_cpu.h), which are compiled once per instruction-set variant: std::vector calls into
// the allocator and element types here, and a copy of those compiled for AVX2 could not be inlined into the std code
// (compiled for the baseline) that calls it (cpu/isa_variants_cpu.h).
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "cpu/cpu_common.h"

namespace spikeforge::cpu {

constexpr int64_t kTile = 16;  // output features per tile: one 64-byte line of float32

// Whether every task of a parallel loop saw only finite values: each task sets its own flag once its work is
// done. (A `reduction(&& : ...)` clause on the loops made the event loops of grad_weight ~6% slower with
// GCC 12, though the flag was touched once per tile.)
class TaskFlags {
 public:
  explicit TaskFlags(int64_t ntasks) : ok_(static_cast<size_t>(ntasks), 1) {}
  void set(int64_t task, bool finite) { ok_[static_cast<size_t>(task)] = finite; }
  bool all() const {
    for (const char c : ok_)
      if (!c) return false;
    return true;
  }

 private:
  std::vector<char> ok_;
};

// Rows of an output (forward) or of grad_y (grad_weight) as strided vectors: feature n of row m sits at
// base(m) + n * stride. Linear: [M, N] row-major. Conv: NCHW with m = (sample, output pixel), so one row
// is a pixel's Cout values, npix apart.
struct RowLayout {
  int64_t N = 0, npix = 0;  // npix == 0: linear rows
  int64_t base(int64_t m) const { return npix ? (m / npix) * N * npix + m % npix : m * N; }
  int64_t stride() const { return npix ? npix : 1; }
};

// std::allocator whose value-initialising construct (what vector::resize calls) leaves trivial types
// uninitialised: the lists are filled completely right after, and zeroing them first was a full extra
// pass over up to hundreds of MB.
template <typename T>
struct NoInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = NoInitAllocator<U>;
  };
  NoInitAllocator() = default;
  template <typename U>
  NoInitAllocator(const NoInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* ptr) noexcept {
    ::new (static_cast<void*>(ptr)) U;
  }
  template <typename U, typename... Args>
  void construct(U* ptr, Args&&... args) {
    ::new (static_cast<void*>(ptr)) U(std::forward<Args>(args)...);
  }
};

// Active inputs of a [R, K] input as CSR; binary says every value is 1 (then vals stays empty). Built from
// packed bits (with sign words for ternary input) or from the values.
template <typename T>
struct ActiveLists {
  std::vector<int64_t> rowptr;
  std::vector<int32_t, NoInitAllocator<int32_t>> idx;  // every entry is written by the builder: no zeroing
  std::vector<T, NoInitAllocator<T>> vals;
  bool binary = true;
};

}  // namespace spikeforge::cpu
