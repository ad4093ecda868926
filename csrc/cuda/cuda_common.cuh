// Helpers shared by the CUDA kernel files (neuron_cuda.cu, psn_cuda.cu): storage-type conversions and
// 16-byte vector access, grid-stride bounds, launch/error checking that throws RuntimeFailure, the
// device guard, the cached SM count and the dtype dispatch. Included only by .cu files.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>

#include "core/status.h"
#include "core/tensor_view.h"

namespace spikeforge {
namespace cuda_detail {

inline constexpr int kThreads = 256;    // threads per block of the per-neuron kernels
inline constexpr int kBlocksPerSm = 8;  // 8 * 256 = 2048, the resident-thread limit of an SM on sm_80..sm_90
inline constexpr int kMaxCachedDevices = 64;

// ------------------------------------------------------------------------------------------------
// storage types: activations are float / __half / __nv_bfloat16 in memory, float in registers
// ------------------------------------------------------------------------------------------------

// Loads and stores go through the raw bits, so a 16-byte vector can be split into elements with
// shifts instead of type punning.
template <typename S>
struct StorageTraits;
template <>
struct StorageTraits<float> {
  using Bits = uint32_t;
  static __device__ __forceinline__ float to_float(Bits b) { return __uint_as_float(b); }
  static __device__ __forceinline__ Bits from_float(float f) { return __float_as_uint(f); }
};
template <>
struct StorageTraits<__half> {
  using Bits = uint16_t;
  static __device__ __forceinline__ float to_float(Bits b) { return __half2float(__ushort_as_half(b)); }
  // Round to nearest even, as the CPU's f16_from_float.
  static __device__ __forceinline__ Bits from_float(float f) { return __half_as_ushort(__float2half_rn(f)); }
};
template <>
struct StorageTraits<__nv_bfloat16> {
  using Bits = uint16_t;
  static __device__ __forceinline__ float to_float(Bits b) { return __bfloat162float(__ushort_as_bfloat16(b)); }
  static __device__ __forceinline__ Bits from_float(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
};

// VEC elements of storage type S as they sit in memory: one element's bits, or one 16-byte vector.
template <typename S, int VEC>
struct Packed {
  using Bits = typename StorageTraits<S>::Bits;
  static_assert(VEC == 1 || VEC * sizeof(Bits) == 16, "VEC must be 1 or fill 16 bytes");
  using Raw = std::conditional_t<VEC == 1, Bits, uint4>;

  // i: element index; VEC > 1 needs i % VEC == 0 and a 16-byte aligned base (checked at launch).
  static __device__ __forceinline__ Raw load(const void* base, int64_t i) {
    const Bits* p = static_cast<const Bits*>(base) + i;
    if constexpr (VEC == 1) {
      return *p;
    } else {
      return *reinterpret_cast<const uint4*>(p);
    }
  }
  static __device__ __forceinline__ void store(void* base, int64_t i, const Raw& r) {
    Bits* p = static_cast<Bits*>(base) + i;
    if constexpr (VEC == 1) {
      *p = r;
    } else {
      *reinterpret_cast<uint4*>(p) = r;
    }
  }

  // Little-endian: in a 16-byte vector, element j sits in 32-bit word j / per_word at bit offset
  // shift * (j % per_word) (for halves, the low half of a word comes first).
  __host__ __device__ static constexpr int per_word() { return 4 / static_cast<int>(sizeof(Bits)); }
  __host__ __device__ static constexpr int shift() { return 8 * static_cast<int>(sizeof(Bits)); }

  static __device__ __forceinline__ void unpack(const Raw& r, float (&out)[VEC]) {
    if constexpr (VEC == 1) {
      out[0] = StorageTraits<S>::to_float(r);
    } else {
      const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const uint32_t bits = w[j / per_word()] >> (shift() * (j % per_word()));
        out[j] = StorageTraits<S>::to_float(static_cast<Bits>(bits));
      }
    }
  }
  static __device__ __forceinline__ Raw pack(const float (&in)[VEC]) {
    if constexpr (VEC == 1) {
      return StorageTraits<S>::from_float(in[0]);
    } else {
      uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const uint32_t bits = StorageTraits<S>::from_float(in[j]);
        w[j / per_word()] |= bits << (shift() * (j % per_word()));
      }
      return make_uint4(w[0], w[1], w[2], w[3]);
    }
  }

  static __device__ __forceinline__ void load_row(const void* base, int64_t i, float (&out)[VEC]) {
    unpack(load(base, i), out);
  }
  static __device__ __forceinline__ void store_row(void* base, int64_t i, const float (&in)[VEC]) {
    store(base, i, pack(in));
  }
};

// Grid-stride loop bounds over the groups of VEC neurons.
__device__ __forceinline__ int64_t first_group() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t group_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// ------------------------------------------------------------------------------------------------
// host side
// ------------------------------------------------------------------------------------------------

// Throws RuntimeFailure for a failed CUDA call. The error is read back with cudaGetLastError so a
// non-sticky error is not reported again by the caller's next launch check.
inline void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();
  throw RuntimeFailure(std::string("spikeforge: ") + what + " failed: " + cudaGetErrorString(err));
}

// After a launch, cudaGetLastError returns the launch's own error (a bad configuration, no image for
// this GPU, too many resources) or one left pending by any earlier work on the device: a sticky fault
// of an asynchronous kernel (an illegal address in someone else's kernel) surfaces at the next launch.
// Only the first kind is this kernel's; the message says which it is, so a user is not sent to the
// wrong kernel.
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return;
  const bool own = err == cudaErrorInvalidConfiguration || err == cudaErrorLaunchOutOfResources ||
                   err == cudaErrorInvalidValue || err == cudaErrorNoKernelImageForDevice ||
                   err == cudaErrorInvalidDeviceFunction || err == cudaErrorInvalidPitchValue ||
                   err == cudaErrorMissingConfiguration || err == cudaErrorInvalidResourceHandle;
  if (own) {
    throw RuntimeFailure(std::string("spikeforge: launching ") + kernel + " failed: " + cudaGetErrorString(err));
  }
  throw RuntimeFailure(std::string("spikeforge: a CUDA error was pending when ") + kernel +
                       " was launched: " + cudaGetErrorString(err) +
                       " (CUDA reports a kernel's fault at a later call: it may come from earlier work on this "
                       "device, not from spikeforge; CUDA_LAUNCH_BLOCKING=1 makes the failing kernel report it)");
}

// Makes `device` current for the scope and restores the caller's device: the stream and the
// tensors belong to `device`, which need not be the thread's current one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) {
      check_cuda(cudaSetDevice(device), "cudaSetDevice");
      switched_ = true;
    }
  }
  ~DeviceGuard() {
    // A destructor cannot throw; a failure here leaves no error behind for unrelated later checks.
    if (switched_ && cudaSetDevice(prev_) != cudaSuccess) (void)cudaGetLastError();
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool switched_ = false;
};

// Multiprocessor count of a device, queried once per device (the attribute query is not free and the
// entry points are called per layer per step).
inline int sm_count(int device) {
  static std::atomic<int> cache[kMaxCachedDevices];  // zero-initialised: 0 = not queried yet
  const bool cached = device >= 0 && device < kMaxCachedDevices;
  if (cached) {
    const int n = cache[device].load(std::memory_order_relaxed);
    if (n > 0) return n;
  }
  int n = 0;
  check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  if (n < 1) n = 1;
  if (cached) cache[device].store(n, std::memory_order_relaxed);
  return n;
}

// Blocks for `groups` work items of one thread each: all of them when they fit in one wave of
// resident blocks, else one wave's worth, shrunk so that every thread makes the same number of
// grid-stride trips (a thread's trip walks all T steps, so an uneven last trip would double the time).
inline unsigned int grid_for(int64_t groups, int device) {
  const int64_t blocks = (groups + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(sm_count(device)) * kBlocksPerSm;
  if (blocks <= cap) return static_cast<unsigned int>(blocks);
  const int64_t trips = (blocks + cap - 1) / cap;
  return static_cast<unsigned int>((blocks + trips - 1) / trips);
}

inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}  // nullptr passes

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<S>{}) with the CUDA storage type of d (validated before by check_cuda_dtype).
template <typename F>
void dispatch_dtype(DType d, F&& f) {
  switch (d) {
    case DType::f32:
      return f(TypeTag<float>{});
    case DType::f16:
      return f(TypeTag<__half>{});
    case DType::bf16:
      return f(TypeTag<__nv_bfloat16>{});
    case DType::f64:
      break;
  }
  throw ArgumentError("unsupported dtype for the CUDA kernels");
}

inline void check_cuda_dtype(DType d, const char* name) {
  SF_CHECK_ARG(d != DType::f64,
               std::string(name) + ": float64 is CPU-only (the CUDA kernels take float32, float16 or bfloat16)");
  SF_CHECK_ARG(d == DType::f32 || d == DType::f16 || d == DType::bf16,
               std::string(name) + ": unsupported dtype for the CUDA kernels");
}

inline void require_cuda(const TensorView* t, const char* name, const char* fn) {
  if (t) SF_CHECK_ARG(t->device == DeviceKind::cuda, std::string(name) + " must be a CUDA tensor for " + fn);
}

}  // namespace cuda_detail
}  // namespace spikeforge
