// A non-owning view of a tensor: what the kernels need and nothing of PyTorch.
// Shapes, strides (in elements) and element counts are 64-bit: tensors can pass 2^31 elements.
#pragma once
#include <cstdint>
#include <string>

#include "status.h"

namespace spikeforge {

// i64 carries integer metadata only (bit-packed spikes, counters; csrc/core/spike.h), never activations.
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, f64 = 3, i64 = 4 };
enum class DeviceKind : int { cpu = 0, cuda = 1 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32:
      return "float32";
    case DType::f16:
      return "float16";
    case DType::bf16:
      return "bfloat16";
    case DType::f64:
      return "float64";
    case DType::i64:
      return "int64";
  }
  return "?";
}

struct TensorView {
  static constexpr int kMaxDims = 8;
  void* data = nullptr;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
  DType dtype = DType::f32;
  DeviceKind device = DeviceKind::cpu;
  int device_index = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    if (numel() == 0) return true;  // PyTorch leaves arbitrary strides on empty tensors
    int64_t expect = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
};

// Where a kernel runs: CPU thread count (0: the OpenMP default) and, on CUDA, the cudaStream_t.
struct ExecConfig {
  int num_threads = 0;
  void* stream = nullptr;
};

// Checks shared by every op family: the native layer validates again what Python validated.
inline void check_dense(const TensorView& t, const char* name) {
  SF_CHECK_ARG(t.is_contiguous(), std::string(name) + " must be contiguous");
}
inline void check_same_dtype(const TensorView& a, const TensorView& b, const char* an, const char* bn) {
  SF_CHECK_ARG(a.dtype == b.dtype, std::string(bn) + " must have the dtype of " + an + " (" + dtype_name(a.dtype) +
                                       "), got " + dtype_name(b.dtype));
}
inline void check_same_device(const TensorView& a, const TensorView& b, const char* an, const char* bn) {
  SF_CHECK_ARG(a.device == b.device && a.device_index == b.device_index,
               std::string(bn) + " must be on the device of " + an);
}
inline void check_numel(const TensorView& t, int64_t n, const char* name) {
  SF_CHECK_ARG(t.numel() == n,
               std::string(name) + " has " + std::to_string(t.numel()) + " elements, expected " + std::to_string(n));
}

}  // namespace spikeforge
