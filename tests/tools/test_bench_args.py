"""Benchmark arguments checked before anything runs: a bad value is argparse's usage error (exit 2)."""

import argparse

import pytest

from bench_helpers import bench_module

bench_spikes = bench_module("spikes")


@pytest.mark.parametrize("bad", ["2", "0", "-0.1", "abc"])
def test_bench_spikes_rejects_a_rate_outside_0_1(bad):
    """--rates takes fractions in (0, 1]: anything else is a usage error (SystemExit 2), not a sweep."""
    p = argparse.ArgumentParser()
    bench_spikes.add_arguments(p)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--rates", bad])
    assert e.value.code == 2
    assert p.parse_args(["--rates", "0.05", "1"]).rates == [0.05, 1.0]
