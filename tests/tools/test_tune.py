"""`spikeforge tune` and the per-machine crossovers it keeps: the cache file's entry for this machine moves
CROSSOVER["cpu"] (and so mode="auto"), another machine's entry or a broken file does not, and the command's
bad inputs are one-line errors."""

import json
import os
import re
import signal
import warnings

import pytest
import torch

from spikeforge import cli
from spikeforge.cli import tune
from spikeforge.ops import spike as sp

TUNED_VALUES = {"linear": 0.01, "linear_fwd": 0.3, "conv2d": None, "conv2d_fwd": 0.15}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A cache folder of the test's own, and CROSSOVER / TUNED restored afterwards."""
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SPIKEFORGE_TUNED", raising=False)
    saved_cpu, saved_tuned = dict(sp.CROSSOVER["cpu"]), dict(sp.TUNED)
    yield
    sp.CROSSOVER["cpu"].clear()
    sp.CROSSOVER["cpu"].update(saved_cpu)
    sp.TUNED.clear()
    sp.TUNED.update(saved_tuned)


def _write(machines, fmt=1):
    path = sp.tuned_cache_path()
    with open(path, "w") as f:
        json.dump({"format": fmt, "machines": machines}, f)
    return path


def _entry(values=TUNED_VALUES):
    return {"crossover": values, "measured": "2026-12-06T00:00:00Z"}


def _run(capsys, *argv):
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_this_machines_entry_sets_auto():
    before = dict(sp.CROSSOVER["cpu"])
    path = _write(
        {"another CPU | 64 CPUs | x86-64-v3": _entry({k: 0.5 for k in TUNED_VALUES}), sp.machine_key(): _entry()}
    )
    assert sp.load_tuned_crossover() == TUNED_VALUES
    assert {k: sp.CROSSOVER["cpu"][k] for k in TUNED_VALUES} == TUNED_VALUES
    assert sp.CROSSOVER["cpu"]["conv2d_1x1"] == before["conv2d_1x1"]  # keys the file does not tune stay
    assert sp.TUNED["path"] == path and sp.TUNED["machine"] == sp.machine_key()
    cpu = torch.device("cpu")
    assert sp._crossover(cpu, "linear", None) == 0.01 and sp._crossover(cpu, "linear_fwd", None) == 0.3
    conv = [0, 0, 0, 0, 0, 3, 3, 32, 32, 1, 1]  # kh, kw at 5, 6; output map 32x32; stride 1
    assert sp._crossover(cpu, "conv2d", conv) is None  # None: the dense op on every map
    # auto follows: 5% firing is above the tuned linear crossover (dense), below the forward one (events)
    s = (torch.rand(8, 64, generator=torch.Generator().manual_seed(0)) < 0.05).float()
    nz = torch.tensor([int(s.count_nonzero()), 0])
    assert not sp._use_sparse(sp.MODE_AUTO, sp.KIND_BINARY, nz, s.numel(), cpu, "linear")
    assert sp._use_sparse(sp.MODE_AUTO, sp.KIND_BINARY, nz, s.numel(), cpu, "linear_fwd")


def test_other_machines_entry_missing_file_and_opt_out_change_nothing(monkeypatch):
    before = dict(sp.CROSSOVER["cpu"])
    assert sp.load_tuned_crossover() is None  # no file
    _write({"another CPU | 64 CPUs | x86-64-v3": _entry()})
    assert sp.load_tuned_crossover() is None
    _write({sp.machine_key(): _entry()})
    monkeypatch.setenv("SPIKEFORGE_TUNED", "0")
    assert sp.load_tuned_crossover() is None
    assert sp.CROSSOVER["cpu"] == before


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"format": 2, "machines": {}}),
        json.dumps({"format": True, "machines": {}}),
        json.dumps(["a", "list"]),
        "[" * 100000,
        b"\xff\xfe not utf-8",
        "MACHINE:" + json.dumps({**TUNED_VALUES, "linear": 1.5}),
        "MACHINE:" + json.dumps({**TUNED_VALUES, "linear": True}),
        "MACHINE:" + json.dumps({**TUNED_VALUES, "linear": "0.2"}),
        "MACHINE:" + json.dumps({k: v for k, v in TUNED_VALUES.items() if k != "conv2d"}),
        "MACHINE:" + json.dumps({**TUNED_VALUES, "extra": 0.1}),
        "MACHINE:" + json.dumps({**TUNED_VALUES, "linear": 0.0}),
        "DIR",
        "HUGE",
    ],
    ids=[
        "json",
        "format",
        "format-bool",
        "list",
        "deep",
        "not-utf8",
        "above1",
        "bool",
        "string",
        "missing",
        "extra",
        "zero",
        "directory",
        "huge",
    ],
)
def test_a_broken_file_warns_and_keeps_the_defaults(content):
    before = dict(sp.CROSSOVER["cpu"])
    path = sp.tuned_cache_path()
    if content == "DIR":
        os.mkdir(path)
    elif content == "HUGE":
        with open(path, "w") as f:
            f.write(json.dumps({"format": 1, "machines": {}, "pad": "x" * (2 << 20)}))
    elif isinstance(content, bytes):
        with open(path, "wb") as f:
            f.write(content)
    elif content.startswith("MACHINE:"):
        _write({sp.machine_key(): {"crossover": json.loads(content[len("MACHINE:") :])}})
    else:
        with open(path, "w") as f:
            f.write(content)
    with pytest.warns(UserWarning, match="ignoring the tuned crossovers"):
        assert sp.load_tuned_crossover() is None
    assert sp.CROSSOVER["cpu"] == before and not sp.TUNED


def test_a_fifo_is_refused_without_blocking():
    os.mkfifo(sp.tuned_cache_path())
    with pytest.warns(UserWarning, match="not a regular file"):
        assert sp.load_tuned_crossover() is None


def test_a_broken_file_at_import_warns_at_the_first_auto_decision_only(monkeypatch):
    """Importing spikeforge prints nothing; the first auto decision on CPU warns once."""
    with open(sp.tuned_cache_path(), "w") as f:
        f.write("{broken")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning here fails the test
        assert sp.load_tuned_crossover(warn=False) is None
    monkeypatch.setattr(sp, "_TUNED_PROBLEM", sp._TUNED_PROBLEM)  # restored after the test
    s = torch.zeros(4, 8)
    with pytest.warns(UserWarning, match="ignoring the tuned crossovers"):
        sp.spike_linear(s, torch.randn(3, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sp.spike_linear(s, torch.randn(3, 8))


def test_small_conv_maps_with_a_tuned_rate():
    """Maps of at most 16x16 pixels take the higher of the tuned conv2d rate and their floor; None: dense."""
    cpu = torch.device("cpu")
    conv8 = [0, 0, 0, 0, 0, 3, 3, 8, 8, 1, 1]
    _write({sp.machine_key(): _entry({**TUNED_VALUES, "conv2d": 0.01})})
    sp.load_tuned_crossover()
    assert sp._crossover(cpu, "conv2d", conv8) == max(0.01, dict(sp.CONV_CROSSOVER_SMALL_MAPS["cpu"])[256])
    _write({sp.machine_key(): _entry()})
    sp.load_tuned_crossover()
    assert sp._crossover(cpu, "conv2d", conv8) is None


def _fake_sweep(values):
    def sweep(quick, reps, log):
        log("  (fake sweep)")
        return {"crossover": dict(values), "points": []}

    return sweep


def test_tune_saves_this_machine_and_keeps_the_others(capsys, monkeypatch):
    other = "another CPU | 64 CPUs | x86-64-v3"
    path = _write({other: _entry({k: 0.5 for k in TUNED_VALUES})})
    monkeypatch.setattr(tune, "sweep", _fake_sweep(TUNED_VALUES))
    rc, out, err = _run(capsys, "tune")
    assert rc == 0, err
    assert "saved to" in out and "linear up to 1%" in out and "conv2d dense always" in out
    data = json.load(open(path))
    assert set(data["machines"]) == {other, sp.machine_key()}
    assert data["machines"][sp.machine_key()]["crossover"] == TUNED_VALUES
    assert {k: sp.CROSSOVER["cpu"][k] for k in TUNED_VALUES} == TUNED_VALUES  # applied in this process too
    rc, out, _ = _run(capsys, "info")
    assert rc == 0 and re.search(r"linear <= 1% .*tuned on this machine", out), out
    rc, _, err = _run(capsys, "tune", "--reset", "--quick")  # (was accepted, and reset anyway)
    assert (
        rc == 2
        and "--quick does not apply" in err
        and set(json.load(open(path))["machines"]) == {other, sp.machine_key()}
    )
    monkeypatch.setenv("SPIKEFORGE_TUNED", "0")
    sp.CROSSOVER["cpu"].update({k: sp.CROSSOVER_DEFAULTS["cpu"][k] for k in TUNED_VALUES})
    rc, out, _ = _run(capsys, "info")
    assert rc == 0 and "SPIKEFORGE_TUNED=0: any tuned file is ignored" in out, out
    monkeypatch.delenv("SPIKEFORGE_TUNED")
    rc, out, _ = _run(capsys, "tune", "--reset")
    assert rc == 0 and "removed" in out
    assert set(json.load(open(path))["machines"]) == {other}
    rc, out, _ = _run(capsys, "tune", "--reset")
    assert rc == 0 and "no tuned crossovers" in out


def test_an_entry_written_during_the_sweep_is_kept(capsys, monkeypatch):
    """Another machine sharing the home folder saves its entry while this one sweeps: the file is read again
    (under the lock) before this machine's entry is written, so neither is lost."""
    other = "another CPU | 64 CPUs | x86-64-v3"
    path = sp.tuned_cache_path()
    fake = _fake_sweep(TUNED_VALUES)

    def sweep_while_another_saves(*args, **kw):
        _write({other: _entry({k: 0.5 for k in TUNED_VALUES})})
        return fake(*args, **kw)

    monkeypatch.setattr(tune, "sweep", sweep_while_another_saves)
    rc, out, err = _run(capsys, "tune")
    assert rc == 0, err
    data = json.load(open(path))
    assert set(data["machines"]) == {other, sp.machine_key()}
    assert data["machines"][other]["crossover"] == {k: 0.5 for k in TUNED_VALUES}


@pytest.mark.parametrize("flag", ["--no-save", "--quick"])
def test_no_save_and_quick_leave_the_file_alone(capsys, monkeypatch, flag):
    monkeypatch.setattr(tune, "sweep", _fake_sweep(TUNED_VALUES))
    before = dict(sp.CROSSOVER["cpu"])
    rc, out, err = _run(capsys, "tune", flag)
    assert rc == 0, err
    assert "not saved" in out
    assert not os.path.exists(sp.tuned_cache_path())
    assert sp.CROSSOVER["cpu"] == before


def test_tune_quick_runs_the_real_sweep(capsys):
    rc, out, err = _run(capsys, "tune", "--quick", "--reps", "1")
    assert rc == 0, err
    assert out.count("forward + backward") == 2 * len(tune.RATES)
    assert "crossovers here:" in out and "not saved" in out


def test_tune_into_a_folder_it_cannot_write(capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("SPIKEFORGE_CACHE_DIR", str(blocker / "cache"))  # a folder below a file
    monkeypatch.setattr(tune, "sweep", _fake_sweep(TUNED_VALUES))
    rc, out, err = _run(capsys, "tune")
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.match(r"spikeforge tune: error: cannot write .*SPIKEFORGE_CACHE_DIR", lines[0]), lines[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not hasattr(signal, "SIGALRM"), reason="no FIFOs or alarms here")
def test_a_fifo_as_the_lock_file_is_an_error_not_a_wait(capsys, monkeypatch):
    monkeypatch.setattr(tune, "sweep", _fake_sweep(TUNED_VALUES))
    os.mkfifo(sp.tuned_cache_path() + ".lock")

    def blocked(*_):
        pytest.fail("tune waited on the FIFO")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    try:
        rc, out, err = _run(capsys, "tune")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.match(r"spikeforge tune: error: cannot write .*crossover.json.lock", lines[0]), lines[0]
    assert not os.path.exists(sp.tuned_cache_path())


def test_tune_bad_inputs_are_one_line_errors(capsys):
    with open(sp.tuned_cache_path(), "w") as f:
        f.write("{broken")
    for argv, match in (
        (("tune",), r"cannot read .*crossover.json.*SPIKEFORGE_CACHE_DIR"),
        (("tune", "--threads", "0"), r"--threads"),
        (("tune", "--reps", "abc"), r"--reps"),
    ):
        rc, out, err = _run(capsys, *argv)
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert re.match(r"spikeforge tune: error: ", lines[0]) and re.search(match, lines[0]), lines[0]


def test_crossover_helper():
    assert tune._crossover([(0.01, 1.5), (0.02, 1.2), (0.05, 1.01), (0.1, 2.0)]) == 0.02  # stops at the first loss
    assert tune._crossover([(0.01, 0.9), (0.02, 1.5)]) is None
    assert tune._crossover([(0.01, 1.1), (0.4, 1.1)]) == 0.4
