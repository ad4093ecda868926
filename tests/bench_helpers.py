"""Imports of the benchmark scripts in bench/ (outside the installed package) for the tests."""

from spikeforge.cli.bench import load_target


def bench_module(name: str):
    """bench/bench_<name>.py of this checkout."""
    return load_target(name)
