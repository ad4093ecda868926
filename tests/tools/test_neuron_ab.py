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


def test_a_build_that_writes_nothing_shows_as_a_difference(tmp_path):
    """Each build runs on outputs poisoned with NaN: a kernel that leaves its outputs unwritten cannot compare
    equal by inheriting the other build's values (it did, max diff 0, before the poison)."""
    stub = tmp_path / "stub_base.py"
    stub.write_text("def neuron_forward(*a):\n    pass\n\n\ndef neuron_backward(*a):\n    pass\n")
    r = _run("--base", str(stub), "--model", "lif", "--T", "2", "--n", "1000", "--reps", "1")
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] == ["lif"]]
    assert len(rows) == 2 and all(row[-1] == "inf" for row in rows), r.stdout


def test_this_trees_own_module_is_refused():
    from spikeforge import _native

    r = _run("--base", _native.native.__file__, "--reps", "1")
    assert r.returncode != 0 and "this tree's own module" in r.stderr
