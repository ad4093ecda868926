#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the native CPU code (README "Reliability").
#
# Builds spikeforge with SPIKEFORGE_SANITIZE=ON (CPU only) into its own build directory and installs it
# into a private target directory ($SANITIZE_DIR/site), so the normal install stays untouched; then runs
# the op tests with that build first on PYTHONPATH. Python and torch are not instrumented, so libasan is
# LD_PRELOADed (it must be the first DSO loaded for ASan's interceptors); leak detection is off because
# CPython and torch keep allocations alive until exit by design. UB aborts the run (no recovery).
# Usage: bash .ci/sanitize_cpu.sh [extra pytest args]     env: PYTHON, CXX, SANITIZE_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
CXX_BIN=${CXX:-g++}
DIR=${SANITIZE_DIR:-build/sanitize}
rm -rf "$DIR/wheel" "$DIR/site"
mkdir -p "$DIR"

# Same build frontend as `pip install .`; reuse the environment's build backend when it has one
# (no download), else let pip fetch it in an isolated build environment as `pip install .` does.
iso=()
if "$PY" -c "import scikit_build_core, nanobind" 2>/dev/null; then iso=(--no-build-isolation); fi
# A portable build (SPIKEFORGE_NATIVE_ARCH=OFF, as release wheels are built): CI's only build of the
# x86-64-v4 / v3 / baseline clones and ISA variants, whose run-time choice the op tests then exercise
# (tests/ops/test_cpu_isa.py forces each variant in turn).
SPIKEFORGE_SANITIZE=ON SPIKEFORGE_WITH_CUDA=OFF SPIKEFORGE_NATIVE_ARCH=OFF \
  "$PY" -m pip wheel . --no-deps "${iso[@]}" -q -w "$DIR/wheel" \
  --config-settings=build-dir="$DIR/cmake"
"$PY" -m pip install --no-deps --no-index -q --target "$DIR/site" "$DIR"/wheel/spikeforge-*.whl

ASAN_LIB=$("$CXX_BIN" -print-file-name=libasan.so)
[ -f "$ASAN_LIB" ] || { echo "sanitize_cpu: libasan.so not found via $CXX_BIN" >&2; exit 1; }
# libstdc++ is preloaded too: Python itself does not link it, and ASan resolves the real __cxa_throw
# when it initialises; without it the first C++ exception (any argument error) aborts with
# "CHECK failed: ... real___cxa_throw != 0".
export LD_PRELOAD="$ASAN_LIB $("$CXX_BIN" -print-file-name=libstdc++.so.6)"
# Reports go to files as well: pytest captures fd 2, and an aborting process never flushes that.
rm -rf "$DIR/reports" && mkdir -p "$DIR/reports"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:log_path=$PWD/$DIR/reports/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$PWD/$DIR/reports/ubsan
report() {  # must succeed itself: under set -e a failing trap command would replace the exit status
  for f in "$DIR"/reports/*; do if [ -f "$f" ]; then echo "== $f"; cat "$f"; fi; done
  return 0
}
trap 'rc=$?; report; exit $rc' EXIT
export PYTHONPATH="$PWD/$DIR/site${PYTHONPATH:+:$PYTHONPATH}"
# Guard: the tests must import the sanitized build, not the normal install.
"$PY" -c "import spikeforge._C as m, sys; s = m.sanitizers(); print('sanitized build:', m.__file__, s); sys.exit(0 if s else 1)"
# The op tests. torch.compile tests are left out: inductor compiles and loads C++ in this process
# and its subprocesses, which the preloaded runtime slows down without exercising spikeforge's code
# (the same kernels run through the eager and opcheck tests).
"$PY" -m pytest -q -p no:cacheprovider \
  tests/ops/test_neuron.py tests/ops/test_neuron_op.py tests/ops/test_neuron_inputs.py \
  tests/ops/test_neuron_zoo_ops.py tests/ops/test_neuron_zoo_inputs.py tests/ops/test_neuron_norse.py \
  tests/ops/test_neuron_state_seq.py \
  tests/ops/test_psn.py tests/ops/test_spike.py tests/ops/test_spike_kinds.py tests/ops/test_attention.py \
  tests/ops/test_properties.py tests/ops/test_reliability.py tests/ops/test_nonfinite.py tests/ops/test_cpu_isa.py \
  tests/nn/test_nn.py \
  -k "not compile" "$@"
