// nanobind ndarray (any DLPack producer: torch, numpy, cupy) -> core TensorView.
// The Python layer (spikeforge.ops) is the only caller; it passes torch tensors.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <optional>
#include <string>

#include "core/tensor_view.h"

namespace spikeforge::bind {

namespace nb = nanobind;
// No constraints: nanobind must never copy (outputs are written in place); the core checks layout.
using Array = nb::ndarray<>;
using OptArray = std::optional<Array>;

inline TensorView to_view(const Array& a, const char* name) {
  TensorView v;
  SF_CHECK_ARG(a.ndim() <= static_cast<size_t>(TensorView::kMaxDims),
               std::string(name) + " has more than 8 dimensions");
  v.data = a.data();
  v.ndim = static_cast<int>(a.ndim());
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = static_cast<int64_t>(a.shape(i));
    v.strides[i] = static_cast<int64_t>(a.stride(i));
  }
  const nb::dlpack::dtype dt = a.dtype();
  SF_CHECK_ARG(dt.lanes == 1, std::string(name) + ": vector dtypes are not supported");
  if (dt == nb::dtype<float>()) {
    v.dtype = DType::f32;
  } else if (dt == nb::dtype<double>()) {
    v.dtype = DType::f64;
  } else if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) && dt.bits == 16) {
    v.dtype = DType::f16;
  } else if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) && dt.bits == 16) {
    v.dtype = DType::bf16;
  } else {
    fail_arg(std::string(name) + ": dtype must be float32, float16, bfloat16 or float64");
  }
  if (a.device_type() == nb::device::cpu::value) {
    v.device = DeviceKind::cpu;
  } else if (a.device_type() == nb::device::cuda::value) {
    v.device = DeviceKind::cuda;
  } else {
    fail_arg(std::string(name) + ": only CPU and CUDA tensors are supported");
  }
  v.device_index = a.device_id();
  return v;
}

// Optional arguments: None -> no view.
struct OptView {
  TensorView view;
  bool present = false;
  OptView(const OptArray& a, const char* name) {
    if (a) {
      view = to_view(*a, name);
      present = true;
    }
  }
  const TensorView* get() const { return present ? &view : nullptr; }
};

}  // namespace spikeforge::bind
