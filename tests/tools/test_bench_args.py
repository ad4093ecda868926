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


def _cli_error(capsys, *argv):
    from spikeforge import cli

    rc = cli.main(["bench", *argv, "--no-thp"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (rc, err)
    return err


def test_what_a_bench_target_would_fail_on_later_is_refused_first(capsys, tmp_path):
    """Found by a CLI audit: a --heads that does not divide a --dim failed after the earlier cases ran, --append
    read its file after the run (a JSONDecodeError, an AttributeError), --append without --json was ignored, and
    an unwritable --json or --plot without matplotlib failed or was skipped after the run."""
    assert "--heads 5 does not divide --dim 384" in _cli_error(capsys, "attention", "--quick", "--heads", "8", "5")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("x")
    assert "not a `bench psn` result" in _cli_error(
        capsys, "psn", "--quick", "--append", "--json", str(tmp_path / "list.json")
    )
    assert "not readable JSON" in _cli_error(capsys, "psn", "--quick", "--append", "--json", str(tmp_path / "bad.json"))
    assert "--append needs --json" in _cli_error(capsys, "psn", "--quick", "--append")
    assert "cannot write in /proc" in _cli_error(capsys, "spikes", "--quick", "--json", "/proc/x.json")
    assert "does not exist" in _cli_error(capsys, "spikes", "--quick", "--json", str(tmp_path / "a" / "b.json"))
