"""Shared fixtures: the device list (cpu always, cuda when both torch and the native build have it) and seeding."""

import os
import zlib

import pytest
import torch

# The tests check the shipped crossovers of mode="auto": a `spikeforge tune` entry of this machine in the
# user's cache must not move them (tests/tools/test_tune.py sets its own cache folder).
os.environ["SPIKEFORGE_TUNED"] = "0"

from spikeforge.testing import native_available  # noqa: E402

CUDA_OK = native_available("cuda")

# Use as @pytest.mark.parametrize("device", DEVICES) or through the `device` fixture.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not CUDA_OK, reason="needs torch.cuda and a spikeforge build with CUDA kernels"),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def seed(request):
    """Seeds torch from the test id (stable across runs and independent of test order); restores the
    thread count and the default dtype a test may have changed."""
    value = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(value)
    threads = torch.get_num_threads()
    dtype = torch.get_default_dtype()
    yield value
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


@pytest.fixture
def one_thread():
    """For small models: one thread is as fast and does not stall on a shared, loaded CPU (seed restores the
    count). Use as pytestmark = pytest.mark.usefixtures("one_thread")."""
    torch.set_num_threads(1)


@pytest.fixture
def spy_native(monkeypatch):
    """spy_native(module) swaps module.native for a proxy that records the name of every native call made
    through it (which kernels a dispatch chose) and returns that list."""

    def install(module):
        real, calls = module.native, []

        class Spy:
            def __getattr__(self, name):
                fn = getattr(real, name)
                return lambda *a: (calls.append(name), fn(*a))[1]

        monkeypatch.setattr(module, "native", Spy())
        return calls

    return install
