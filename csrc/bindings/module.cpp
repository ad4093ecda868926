// The nanobind module spikeforge._C: build/device information plus one register_* per op family.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "cpu/isa_cpu.h"

#if defined(SPIKEFORGE_HAVE_OPENMP)
#include <omp.h>
#endif
#if defined(SPIKEFORGE_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace nb = nanobind;

namespace spikeforge::bind {
void register_neuron(nb::module_& m);
void register_psn(nb::module_& m);
void register_spike(nb::module_& m);
void register_attention(nb::module_& m);
}  // namespace spikeforge::bind

#ifndef SPIKEFORGE_VERSION
#define SPIKEFORGE_VERSION "0.0.0"
#endif
#ifndef SPIKEFORGE_CXX_COMPILER
#define SPIKEFORGE_CXX_COMPILER "unknown"
#endif

namespace {

std::vector<std::string> cuda_arch_list() {
  std::vector<std::string> out;
#if defined(SPIKEFORGE_HAVE_CUDA) && defined(SPIKEFORGE_CUDA_ARCHS)
  std::string s = SPIKEFORGE_CUDA_ARCHS, cur;
  for (char c : s) {
    if (c == ',') {
      if (!cur.empty()) out.push_back("sm_" + cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back("sm_" + cur);
#endif
  return out;
}

#ifndef SPIKEFORGE_CPU_ISA
#define SPIKEFORGE_CPU_ISA "baseline"
#endif

// The variant the spike propagation, attention and PSN kernels run (csrc/cpu/isa_cpu.h) and who chose
// it, or why none can: a bad SPIKEFORGE_CPU_ISA makes those ops raise, and info should say so rather than
// raise itself.
std::string dispatched_path(const char* chosen) {
  try {
    const std::string isa = spikeforge::cpu::active_isa_name();
    const char* env = std::getenv("SPIKEFORGE_CPU_ISA");
    return isa + (env && *env ? " (set by SPIKEFORGE_CPU_ISA)" : chosen);
  } catch (const std::exception& e) {
    return std::string("none (") + e.what() + ")";
  }
}

// Which code the CPU kernels' hot loops run on this machine: "native" (built with -march=native for the
// building machine), or in a portable build the neuron kernels' clone that the loader picked
// (csrc/cpu/cpu_common.h) and the variant of the other kernels picked at their first call.
std::string cpu_kernel_path() {
  const std::string build = SPIKEFORGE_CPU_ISA;
  if (build != "clones") {
    const std::string path = build == "native" ? "native (-march=native of the building machine)" : "baseline";
    const std::string others = dispatched_path("");
    return others.rfind("none", 0) == 0 ? path + "; spike propagation, attention, PSN: " + others : path;
  }
  std::string neurons = "baseline x86-64";
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) {
    neurons = "x86-64-v4 (AVX-512)";
  } else if (__builtin_cpu_supports("x86-64-v3")) {
    neurons = "x86-64-v3 (AVX2, FMA)";
  }
#endif
  return "neurons " + neurons + ", picked at load time; spike propagation, attention, PSN " +
         dispatched_path(", picked at first call");
}

int cuda_device_count() {
#if defined(SPIKEFORGE_HAVE_CUDA)
  int n = 0;
  // With cudart linked statically this fails cleanly (no driver / no GPU) instead of failing to import.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "spikeforge native core (CPU kernels, and CUDA kernels when built with nvcc)";
  // spikeforge.ops caches one bound NeuronParams per distinct set of options for the life of the process;
  // those are still referenced when the interpreter tears the module down, which nanobind would report
  // as leaks at every exit.
  nb::set_leak_warnings(false);
  m.def("version", [] { return std::string(SPIKEFORGE_VERSION); });
  m.def("compiler", [] { return std::string(SPIKEFORGE_CXX_COMPILER); });
  m.def(
      "has_cuda",
      [] {
#if defined(SPIKEFORGE_HAVE_CUDA)
        return true;
#else
        return false;
#endif
      },
      "Whether CUDA kernels were compiled into this build.");
  m.def("cuda_version", [] {
#if defined(SPIKEFORGE_HAVE_CUDA) && defined(SPIKEFORGE_CUDA_VERSION)
    return std::string(SPIKEFORGE_CUDA_VERSION);
#else
    return std::string();
#endif
  });
  m.def("cuda_arch_list", &cuda_arch_list, "CUDA architectures the kernels were compiled for.");
  m.def("cuda_device_count", &cuda_device_count, "GPUs visible to the CUDA runtime (0 without a driver).");
  m.def("cpu_kernel_path", &cpu_kernel_path, "Which code the CPU kernels' hot loops run on this machine.");
  m.def("cpu_isa", &spikeforge::cpu::active_isa_name,
        "The instruction-set variant the spike propagation, attention and PSN kernels run (ValueError for a bad "
        "SPIKEFORGE_CPU_ISA).");
  m.def("cpu_isa_variants", &spikeforge::cpu::isa_variants,
        "The variants of those kernels this build has and this CPU runs, best first.");
  m.def("_set_cpu_isa", &spikeforge::cpu::force_isa, nb::arg("name"),
        "Tests: run variant `name` (one of cpu_isa_variants()); '' picks again as at the first call.");
  m.def("has_openmp", [] {
#if defined(SPIKEFORGE_HAVE_OPENMP)
    return true;
#else
    return false;
#endif
  });
  m.def("openmp_max_threads", [] {
#if defined(SPIKEFORGE_HAVE_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
  m.def(
      "sanitizers",
      [] {
#if defined(SPIKEFORGE_SANITIZE)
        return std::string("address,undefined");
#else
        return std::string();
#endif
      },
      "Sanitizers compiled into this build (empty for a normal build).");
  spikeforge::bind::register_neuron(m);
  spikeforge::bind::register_psn(m);
  spikeforge::bind::register_spike(m);
  spikeforge::bind::register_attention(m);
}
