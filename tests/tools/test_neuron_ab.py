"""bench/neuron_ab.py (two builds' neuron kernels side by side) runs, and a build against a copy of itself
gives the same outputs."""

import pytest

from bench_helpers import copy_of_this_build, run_bench_script

from spikeforge import _native

pytestmark = pytest.mark.skipif(_native.native is None, reason="needs the native build")


def _run(*args):
    return run_bench_script("neuron_ab.py", *args)


def test_neuron_ab_against_a_copy_of_this_build(tmp_path):
    r = _run("--base", copy_of_this_build(tmp_path), "--model", "lif", "alif", "--T", "3", "--n", "5000", "--reps", "3")
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] in (["lif"], ["alif"])]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (m, "3", k) for m in ("lif", "alif") for k in ("forward", "backward")
    ]
    assert all(float(row[-1]) == 0.0 for row in rows)  # the same code: the same outputs, bit for bit


def test_neuron_ab_rejects_bad_values(tmp_path):
    r = _run("--base", str(tmp_path / "none.so"), "--reps", "0")
    assert r.returncode == 2 and "--reps" in r.stderr
