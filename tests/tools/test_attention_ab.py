"""bench/attention_ab.py (two builds' SSA kernels side by side) runs, and a build against a copy of itself
gives the same outputs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spikeforge
from spikeforge import _native, testing

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "attention_ab.py"
pytestmark = pytest.mark.skipif(
    _native.native is None or not testing.native_available("attention"), reason="needs the native attention kernels"
)


def _run(*args):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(spikeforge.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_attention_ab_against_a_copy_of_this_build(tmp_path):
    so = Path(_native.native.__file__)
    base = tmp_path / so.name
    shutil.copy(so, base)  # a file of its own: loaded as a second module
    r = _run("--base", str(base), "--dim", "32", "--heads", "2", "4", "--tokens", "9", "--T", "3", "--reps", "3")
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] == ["32"]]
    assert [(row[1], row[2]) for row in rows] == [(h, k) for h in ("2", "4") for k in ("forward", "backward")]
    assert all(float(row[-1]) == 0.0 for row in rows)  # the same code: the same outputs, bit for bit


def test_attention_ab_rejects_bad_values(tmp_path):
    r = _run("--base", str(tmp_path / "none.so"), "--reps", "0")
    assert r.returncode == 2 and "--reps" in r.stderr
    r = _run("--base", str(tmp_path / "none.so"), "--dim", "30", "--heads", "4")
    assert r.returncode == 2 and "multiple" in r.stderr
