// Which instruction-set variant the dispatched CPU kernels run (cpu/isa_cpu.h).
#include "cpu/isa_cpu.h"

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/status.h"

namespace spikeforge::cpu {
namespace {

const char* const kEnv = "SPIKEFORGE_CPU_ISA";

const char* name_of(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::build:
#if defined(SPIKEFORGE_NATIVE_BUILD)
      return "native";
#else
      return "baseline";
#endif
    case CpuIsa::baseline:
      return "baseline";
    case CpuIsa::x86_64_v3:
      return "x86-64-v3";
  }
  return "?";
}

// The variants this build has and this CPU runs, best first. The level is the psABI's, as GCC's
// target_clones resolvers (the neuron kernels) test it, OS support for the AVX registers included.
std::vector<CpuIsa> supported() {
#if SF_ISA_DISPATCH
  std::vector<CpuIsa> out;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v3")) out.push_back(CpuIsa::x86_64_v3);
  out.push_back(CpuIsa::baseline);
  return out;
#else
  return {CpuIsa::build};
#endif
}

// The variant called `name`, if this build and CPU can run it; else an ArgumentError that says what `what`
// (the setting) may be.
CpuIsa parse(const std::string& name, const std::string& what) {
  const std::vector<CpuIsa> ok = supported();
  std::string names;
  for (const CpuIsa isa : ok) {
    if (name == name_of(isa)) return isa;
    names += std::string(names.empty() ? "" : ", ") + "'" + name_of(isa) + "'";
  }
  std::string why;
  for (const char* known : {"baseline", "x86-64-v3", "native"})
    if (name == known) why = " (a variant this build or this CPU does not have)";
  throw ArgumentError(what + ": got '" + name + "'" + why + "; this build and CPU run " + names);
}

// -1: not resolved yet (the environment is read at the first call); else a CpuIsa.
std::atomic<int> g_isa{-1};

}  // namespace

CpuIsa active_isa() {
  const int cached = g_isa.load(std::memory_order_relaxed);
  if (cached >= 0) return static_cast<CpuIsa>(cached);
  const char* env = std::getenv(kEnv);
  // A bad setting is not cached: every call raises until it is fixed.
  const CpuIsa isa = env && *env ? parse(env, std::string("environment variable ") + kEnv) : supported().front();
  g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
  return isa;
}

std::vector<std::string> isa_variants() {
  std::vector<std::string> out;
  for (const CpuIsa isa : supported()) out.emplace_back(name_of(isa));
  return out;
}

std::string active_isa_name() {
  return name_of(active_isa());
}

void force_isa(const std::string& name) {
  if (name.empty()) {
    g_isa.store(-1, std::memory_order_relaxed);
    return;
  }
  g_isa.store(static_cast<int>(parse(name, "isa")), std::memory_order_relaxed);
}

}  // namespace spikeforge::cpu
