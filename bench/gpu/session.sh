#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool): install the carried wheels, print what is there,
# run the CUDA tests, then the GPU benchmarks. Each step has its own time limit so that one hang cannot
# eat the call; every step runs even when an earlier one failed. Logs and JSON go to $OUT.
#   usage: bash bench/gpu/session.sh [tests] [bench] [spikes] [models] [racecheck] [profile] [sanitize]   (default: tests bench)
# The wheels in .whl/ are built on the development machine (cp312 abi3, SPIKEFORGE_CUDA_ARCHS=90,
# SPIKEFORGE_NATIVE_ARCH=OFF) plus SpikingJelly's pure-Python wheel for the peer comparison.
set -u -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
steps=${*:-tests bench}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
# the repo's Python sources over the wheel's (the wheel carries the compiled _C; Python edits made
# since it was built then need no rebuild)
cp -r python/spikeforge/. /tmp/site/spikeforge/
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv
python3 -m spikeforge info
has() { [[ " $steps " == *" $1 "* ]]; }
if has tests; then
  timeout 270 python3 -m pytest tests -q -n 16 -k cuda -p no:cacheprovider --timeout 300 -rfE --maxfail 60 \
    2>&1 | tee "$OUT/tests.log" | grep -E '^(FAILED|ERROR)|passed|failed' | tail -40
  echo "tests rc=${PIPESTATUS[0]}"
fi
if has bench; then
  B="--device cuda --reps 20 --warmup 3 --time-budget 3"
  timeout 170 python3 -m spikeforge bench neurons $B --dtype float16 float32 --T 4 8 32 \
    --json "$OUT/cuda_neurons.json" 2>&1 | tee "$OUT/bench_neurons.log" | tail -80
  # the peer: SpikingJelly's Triton implementation, forced (auto may bind its CUDA one)
  SJ_LIF_CUDA_IMPLEMENTATION=triton timeout 90 python3 -m spikeforge bench neurons $B --dtype float16 float32 \
    --T 32 --skip reference torch.compile snntorch --no-overhead --json "$OUT/cuda_neurons_sj_triton.json" \
    2>&1 | tail -25
  timeout 110 python3 -m spikeforge bench psn $B --T 4 8 32 --json "$OUT/cuda_psn.json" \
    2>&1 | tee "$OUT/bench_psn.log" | tail -60
fi
if has spikes; then  # event-driven spike layers against cuBLAS / cuDNN, rate sweep and crossover
  timeout 200 python3 -m spikeforge bench spikes --device cuda --json "$OUT/cuda_spikes.json" --plot "$OUT/cuda_spikes.png" \
    2>&1 | tee "$OUT/bench_spikes.log" | tail -45
fi
if has models; then  # one training step of the zoo model: spikeforge vs reference ops vs SpikingJelly's model
  timeout 200 python3 -m spikeforge bench models --device cuda --reps 10 --warmup 3 --json "$OUT/cuda_models.json" \
    2>&1 | tee "$OUT/bench_models.log" | tail -25
fi
if has racecheck; then
  timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 python3 bench/gpu/profile_cases.py small 1 2>&1 \
    | tee "$OUT/racecheck.log" | tail -6
  echo "racecheck rc=${PIPESTATUS[0]}"
fi
if has profile; then  # ncu on the kernels below target (launch 2 of each: the first pays module load)
  for c in lif16 psn32; do
    timeout 120 ncu --launch-skip 1 --launch-count 3 -k regex:"forward_kernel|backward_kernel" \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
      python3 bench/gpu/profile_cases.py $c 2 2>&1 | tee "$OUT/ncu_$c.log" \
      | grep -E "^  [a-z_]+kernel|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Grid Size|Dynamic Shared|L2 Hit|Mem Busy|Max Bandwidth"
  done
fi
if has sanitize; then  # memcheck over the CUDA op tests (a subset: it is slow), racecheck over every kernel
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider \
    tests/ops/test_neuron_inputs.py tests/ops/test_psn.py tests/ops/test_attention.py \
    "tests/ops/test_spike.py::test_conv2d_cuda_tilings_match_reference" -k "cuda and not compile and not opcheck" 2>&1 \
    | tee "$OUT/memcheck.log" | tail -6
  echo "memcheck rc=${PIPESTATUS[0]}"
  timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 python3 bench/gpu/profile_cases.py small 1 2>&1 \
    | tee "$OUT/racecheck.log" | tail -6
  echo "racecheck rc=${PIPESTATUS[0]}"
fi
