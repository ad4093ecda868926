// Python tensor -> core TensorView.
//
// Fast path: the DLPack C exchange API (`type(t).__dlpack_c_exchange_api__`, DLPack >= 1.2; PyTorch
// implements it): one C call fills a DLTensor without allocating. `t.__dlpack__()` costs ~4 us per
// tensor in PyTorch, which alone would exceed the per-call overhead budget of an op.
// Fallback: nanobind's ndarray import (any __dlpack__ or buffer-protocol producer, e.g. numpy).
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>

#include "core/tensor_view.h"

namespace spikeforge::bind {

namespace nb = nanobind;

// The ABI of DLPackExchangeAPI (dlpack.h, DLPack 1.x): only the members used here are typed.
struct DLPackExchangeAPIHeader {
  uint32_t major, minor;
  DLPackExchangeAPIHeader* prev_api;
};
struct DLPackExchangeAPI {
  DLPackExchangeAPIHeader header;
  void* managed_tensor_allocator;
  void* managed_tensor_from_py_object_no_sync;
  void* managed_tensor_to_py_object_no_sync;
  int (*dltensor_from_py_object_no_sync)(void* py_object, nb::dlpack::dltensor* out);
  void* current_work_stream;
};

// The exchange API of a Python type, or nullptr. Looked up once per type (the GIL is held).
inline const DLPackExchangeAPI* exchange_api(PyTypeObject* tp) {
  static PyTypeObject* cached_type = nullptr;
  static const DLPackExchangeAPI* cached_api = nullptr;
  if (tp == cached_type) return cached_api;
  const DLPackExchangeAPI* api = nullptr;
  PyObject* cap = PyObject_GetAttrString(reinterpret_cast<PyObject*>(tp), "__dlpack_c_exchange_api__");
  if (cap) {
    auto* p = static_cast<const DLPackExchangeAPI*>(PyCapsule_GetPointer(cap, "dlpack_exchange_api"));
    if (p && p->header.major == 1 && p->dltensor_from_py_object_no_sync) api = p;
    Py_DECREF(cap);
  }
  PyErr_Clear();
  cached_type = tp;
  cached_api = api;
  return api;
}

inline DType dtype_of(uint8_t code, uint8_t bits, uint16_t lanes, const char* name) {
  using nb::dlpack::dtype_code;
  SF_CHECK_ARG(lanes == 1, std::string(name) + ": vector dtypes are not supported");
  if (code == static_cast<uint8_t>(dtype_code::Float) && bits == 32) return DType::f32;
  if (code == static_cast<uint8_t>(dtype_code::Float) && bits == 64) return DType::f64;
  if (code == static_cast<uint8_t>(dtype_code::Float) && bits == 16) return DType::f16;
  if (code == static_cast<uint8_t>(dtype_code::Bfloat) && bits == 16) return DType::bf16;
  if (code == static_cast<uint8_t>(dtype_code::Int) && bits == 64) return DType::i64;  // packed spikes
  fail_arg(std::string(name) + ": dtype must be float32, float16, bfloat16 or float64");
}

inline TensorView view_of(const nb::dlpack::dltensor& t, const char* name) {
  TensorView v;
  SF_CHECK_ARG(t.ndim <= TensorView::kMaxDims, std::string(name) + " has more than 8 dimensions");
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  v.ndim = t.ndim;
  int64_t expect = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {  // DLPack allows strides == nullptr for compact row-major
    v.shape[i] = t.shape[i];
    v.strides[i] = t.strides ? t.strides[i] : expect;
    expect *= t.shape[i];
  }
  v.dtype = dtype_of(t.dtype.code, t.dtype.bits, t.dtype.lanes, name);
  if (t.device.device_type == nb::device::cpu::value) {
    v.device = DeviceKind::cpu;
  } else if (t.device.device_type == nb::device::cuda::value) {
    v.device = DeviceKind::cuda;
  } else {
    fail_arg(std::string(name) + ": only CPU and CUDA tensors are supported");
  }
  v.device_index = t.device.device_id;
  return v;
}

inline TensorView to_view(nb::handle obj, const char* name) {
  SF_CHECK_ARG(obj.is_valid() && !obj.is_none(), std::string(name) + " must be a tensor, got None");
  if (const DLPackExchangeAPI* api = exchange_api(Py_TYPE(obj.ptr()))) {
    nb::dlpack::dltensor t;
    if (api->dltensor_from_py_object_no_sync(obj.ptr(), &t) == 0) return view_of(t, name);
    PyErr_Clear();
  }
  nb::ndarray<> a;
  SF_CHECK_ARG(nb::try_cast(obj, a, false), std::string(name) + " must be a tensor (DLPack or buffer protocol)");
  nb::dlpack::dltensor t;
  t.data = a.data();
  t.ndim = static_cast<int32_t>(a.ndim());
  t.shape = const_cast<int64_t*>(a.shape_ptr());
  t.strides = const_cast<int64_t*>(a.stride_ptr());
  t.dtype = a.dtype();
  t.device = {a.device_type(), a.device_id()};
  return view_of(t, name);  // `a` keeps the data alive only during this call; callers hold `obj`
}

// Optional tensor arguments: None -> no view.
struct OptView {
  TensorView view;
  bool present = false;
  OptView(nb::handle obj, const char* name) {
    if (obj.is_valid() && !obj.is_none()) {
      view = to_view(obj, name);
      present = true;
    }
  }
  const TensorView* get() const { return present ? &view : nullptr; }
};

}  // namespace spikeforge::bind
