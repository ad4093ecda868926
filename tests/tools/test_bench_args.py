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


bench_attention = bench_module("attention")


@pytest.mark.parametrize(
    "bad",
    [
        ["--rate", "2"],
        ["--rate", "0"],
        ["--T", "-1"],
        ["--tokens", "0"],
        ["--dim", "-384"],
        ["--heads", "0"],
        ["--batch", "-2"],
    ],
)
def test_bench_attention_rejects_bad_sizes_and_rates(bad):
    """Sizes are integers >= 1 and --rate a fraction in (0, 1]: a usage error (SystemExit 2) before anything runs."""
    p = argparse.ArgumentParser()
    bench_attention.add_arguments(p)
    with pytest.raises(SystemExit) as e:
        p.parse_args(bad)
    assert e.value.code == 2
    good = p.parse_args(["--rate", "0.3", "--T", "2", "--dim", "64", "--heads", "4"])
    assert (good.rate, good.T, good.dim, good.heads) == (0.3, 2, [64], [4])
