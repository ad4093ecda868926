"""bench/neuron_ab.py (two builds' neuron kernels side by side) runs, and a build against a copy of itself
gives the same outputs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spikeforge
from spikeforge import _native

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "neuron_ab.py"
pytestmark = pytest.mark.skipif(_native.native is None, reason="needs the native build")


def _run(*args):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(spikeforge.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_neuron_ab_against_a_copy_of_this_build(tmp_path):
    so = Path(_native.native.__file__)
    base = tmp_path / so.name
    shutil.copy(so, base)  # a file of its own: loaded as a second module
    r = _run("--base", str(base), "--model", "lif", "alif", "--T", "3", "--n", "5000", "--reps", "3")
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] in (["lif"], ["alif"])]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (m, "3", k) for m in ("lif", "alif") for k in ("forward", "backward")
    ]
    assert all(float(row[-1]) == 0.0 for row in rows)  # the same code: the same outputs, bit for bit


def test_neuron_ab_rejects_bad_values(tmp_path):
    r = _run("--base", str(tmp_path / "none.so"), "--reps", "0")
    assert r.returncode == 2 and "--reps" in r.stderr
