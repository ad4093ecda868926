// The one place that routes a native call to its CPU or CUDA implementation.
//
// Every op family's device-agnostic entry point (csrc/core/<family>.cpp) checks its arguments once and
// then calls SF_ROUTE(device, op, args...), which calls op##_cpu(args...) (csrc/cpu/) or
// op##_cuda(args...) (csrc/cuda/): the two implementations take the same arguments. In a build without
// CUDA kernels a CUDA tensor gets a clear ArgumentError instead.
#pragma once
#include <string>

#include "core/status.h"
#include "core/tensor_view.h"

namespace spikeforge {

[[noreturn]] inline void fail_no_cuda(const char* op) {
  fail_arg(std::string(op) +
           ": the tensors are on a CUDA device but spikeforge was built without CUDA kernels "
           "(spikeforge info shows the build; reinstall with SPIKEFORGE_WITH_CUDA=ON)");
}

}  // namespace spikeforge

#if defined(SPIKEFORGE_HAVE_CUDA)
#define SF_ROUTE(device, op, ...) \
  ((device) == ::spikeforge::DeviceKind::cuda ? op##_cuda(__VA_ARGS__) : op##_cpu(__VA_ARGS__))
#else
#define SF_ROUTE(device, op, ...) \
  ((device) == ::spikeforge::DeviceKind::cuda ? ::spikeforge::fail_no_cuda(#op) : op##_cpu(__VA_ARGS__))
#endif
