#!/usr/bin/env bash
# compute-sanitizer (memcheck, racecheck, synccheck) over the CUDA op tests, for a machine with a GPU
# and a CUDA build of spikeforge installed in $PYTHON's environment. Not part of CPU-only CI.
# Each tool runs the CUDA-parametrised tests of the op families ("cuda" in the test id); racecheck and
# synccheck are slow, so they get the smaller set of the reliability and property tests.
# Usage: bash .ci/compute_sanitizer.sh [tool ...]      env: PYTHON, COMPUTE_SANITIZER
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
CS=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
[ -x "$CS" ] || { echo "compute-sanitizer not found (set COMPUTE_SANITIZER)" >&2; exit 2; }
"$PY" -c "import torch, spikeforge._C as m, sys; sys.exit(0 if torch.cuda.is_available() and m.has_cuda() else 1)" \
  || { echo "needs a GPU and a CUDA build of spikeforge" >&2; exit 2; }
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(memcheck racecheck synccheck)
for tool in "${tools[@]}"; do
  if [ "$tool" = memcheck ]; then
    files=(tests/ops/test_neuron.py tests/ops/test_neuron_op.py tests/ops/test_neuron_inputs.py tests/ops/test_psn.py
           tests/ops/test_properties.py tests/ops/test_reliability.py)
  else
    files=(tests/ops/test_properties.py tests/ops/test_reliability.py)
  fi
  echo "== compute-sanitizer --tool $tool"
  # torch's caching allocator hides out-of-bounds accesses inside its pooled blocks: disable it.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$CS" --tool "$tool" --error-exitcode 1 --target-processes all \
    "$PY" -m pytest -q -p no:cacheprovider "${files[@]}" -k "cuda and not compile"
done
