"""Drives the C++ unit tests of the 64-bit index helpers and of the native size checks
(tests/cpp/test_index.cpp): compiled with the system C++ compiler against csrc/core, run, and its
verdict checked. With sanitizer support (gcc/clang) it is built with ASan + UBSan, so a signed
overflow or a division by zero in the checks fails it even where the arithmetic happens to wrap
harmlessly. Costs a few seconds; skipped when no C++ compiler is on PATH."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    ROOT / "tests" / "cpp" / "test_index.cpp",
    ROOT / "csrc" / "core" / "neuron.cpp",
    ROOT / "csrc" / "core" / "psn.cpp",
]


def _compiler():
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_compiler() is None, reason="needs a C++ compiler on PATH")
def test_index_helpers_cpp(tmp_path):
    if not (ROOT / "csrc" / "core" / "index.h").exists():
        pytest.skip("run from a source checkout (csrc/ not found)")
    exe = tmp_path / "test_index"
    base = [_compiler(), "-std=c++17", "-O1", "-Wall", "-I", str(ROOT / "csrc"), *map(str, SOURCES), "-o", str(exe)]
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)  # the sanitizer CI step preloads libasan into Python; not needed here
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    built = subprocess.run(base[:1] + san + base[1:], capture_output=True, text=True, env=env)
    if built.returncode != 0:  # no sanitizer runtime installed: the plain build still tests the values
        built = subprocess.run(base, capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and "ALL PASSED" in run.stdout, run.stdout[-4000:] + run.stderr[-4000:]
