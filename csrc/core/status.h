// Error type of the native core. Bindings translate it into a Python ValueError
// (bad argument) or RuntimeError (device/runtime failure); native code never aborts.
#pragma once
#include <stdexcept>
#include <string>

namespace spikeforge {

// A caller passed something the op cannot take (shape, dtype, device, value).
struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// The device or runtime failed (e.g. a CUDA launch error).
struct RuntimeFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail_arg(const std::string& what) {
  throw ArgumentError(what);
}

#define SF_CHECK_ARG(cond, msg)                            \
  do {                                                     \
    if (!(cond)) ::spikeforge::fail_arg(std::string(msg)); \
  } while (0)

}  // namespace spikeforge
