"""Imports of the benchmark scripts in bench/ (outside the installed package) for the tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import spikeforge
from spikeforge.cli.bench import load_target

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    """bench/bench_<name>.py of this checkout."""
    return load_target(name)


def run_bench_script(name: str, *args: str) -> subprocess.CompletedProcess:
    """python bench/<name> args..., with this checkout's spikeforge importable; output captured."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(spikeforge.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run(
        [sys.executable, str(BENCH / name), *args], capture_output=True, text=True, env=env, timeout=300
    )


def copy_of_this_build(tmp_path: Path) -> str:
    """A copy of this checkout's native module in tmp_path (a file of its own, so that an A/B script can load
    it as a second module next to this one)."""
    from spikeforge import _native

    so = Path(_native.native.__file__)
    shutil.copy(so, tmp_path / so.name)
    return str(tmp_path / so.name)
