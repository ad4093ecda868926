"""bench/attention_ab.py (two builds' SSA kernels side by side) runs, and a build against a copy of itself
gives the same outputs."""

import pytest

from bench_helpers import copy_of_this_build, run_bench_script

from spikeforge import _native, testing

pytestmark = pytest.mark.skipif(
    _native.native is None or not testing.native_available("attention"), reason="needs the native attention kernels"
)


def _run(*args):
    return run_bench_script("attention_ab.py", *args)


def test_attention_ab_against_a_copy_of_this_build(tmp_path):
    r = _run(
        "--base",
        copy_of_this_build(tmp_path),
        "--dim",
        "32",
        "--heads",
        "2",
        "4",
        "--tokens",
        "9",
        "--T",
        "3",
        "--reps",
        "3",
    )
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] == ["32"]]
    assert [(row[1], row[2]) for row in rows] == [(h, k) for h in ("2", "4") for k in ("forward", "backward")]
    assert all(float(row[-1]) == 0.0 for row in rows)  # the same code: the same outputs, bit for bit


def test_attention_ab_rejects_bad_values(tmp_path):
    r = _run("--base", str(tmp_path / "none.so"), "--reps", "0")
    assert r.returncode == 2 and "--reps" in r.stderr
    r = _run("--base", str(tmp_path / "none.so"), "--dim", "30", "--heads", "4")
    assert r.returncode == 2 and "multiple" in r.stderr
