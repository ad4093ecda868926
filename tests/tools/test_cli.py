"""The command line as a new user meets it: help texts, one-line errors (stderr, exit status 2, no traceback)
for bad options and files, checkpoints that must fit the run, and `energy` on a `train` checkpoint."""

import os
import re

import numpy as np
import pytest
import torch

from spikeforge import cli


def _run(capsys, *argv):
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:  # argparse's own errors exit (status 2) as they do from the shell
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_line_error(capsys, *argv, match=None):
    rc, out, err = _run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1, err
    assert re.match(r"spikeforge( \w+)*: error: ", lines[0]), lines[0]
    assert "Traceback" not in err
    if match:
        assert re.search(match, lines[0]), lines[0]
    return lines[0]


def _tiny_npz(path, y=None, n=24):
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 8, 8)).astype(np.float32)
    np.savez(path, x=x, y=np.arange(n) % 3 if y is None else y)
    return str(path)


TINY = ["--model", "spiking_resnet18_cifar", "--width", "4", "--T", "1", "--epochs", "1", "--no-progress"]


def test_train_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "surrogate gradients" in text and "examples:" in text
    # every option's help says what it does; every option that takes a value shows its default
    blocks = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    for block in blocks[1:]:
        head = block.split("\n")[0].strip()
        if head.startswith(("-h", "--resume", "--no-progress")):
            continue
        assert "default" in " ".join(block.split()), head


@pytest.mark.parametrize(
    "argv,match",
    [
        (["train", "--model", "resnet_nope"], r"unknown model 'resnet_nope'"),
        (["energy", "--model", "resnet_nope"], r"unknown model"),
        (["train", "--dataset", "/nonexistent/data.npz"], r"no such file"),
        (["train", "--dataset", "cifar10"], r"'digits' or a path"),
        (["train", "--resume"], r"--resume needs --checkpoint"),
        (["train", "--device", "cuda:99" if torch.cuda.is_available() else "cuda"], r"--device"),
        (["train", "--device", "tpu"], r"--device"),
        (["train", "--batch-size", "0"], r"--batch-size.*>= 1"),
        (["train", "--epochs", "-1"], r"--epochs"),
        (["train", "--eval-every", "0"], r"--eval-every"),
        (["train", "--image-size", "0"], r"--image-size"),
        (["train", "--width", "0"], r"--width"),
        (["train", "--T", "zero"], r"--T"),
        (["train", "--checkpoint", "/nonexistent/dir/run.pt"], r"folder .* does not exist"),
        (["train", "--json", "/nonexistent/dir/run.json"], r"folder .* does not exist"),
        (["energy", "--checkpoint", "/nonexistent/run.pt"], r"no checkpoint at"),
        (["energy", "--batch", "0"], r"--batch"),
        (
            ["bench", "neurons", "--device", "cuda"]
            if not torch.cuda.is_available()
            else ["bench", "neurons", "--T", "0"],
            r"--device cuda|--T",
        ),
        (["bench", "neurons", "--json", "/nonexistent/dir/x.json", "--quick"], r"does not exist"),
        (["bench", "models", "--model", "resnet_nope", "--no-thp"], r"unknown model 'resnet_nope'"),
        (["bench", "psn", "--threads", "0", "--no-thp"], r"--threads"),
        # far more threads than CPUs: torch.set_num_threads(99999) crashed the process (segmentation fault)
        (["train", "--threads", "99999"], r"--threads: at most 4 x the \d+ CPUs"),
        (["tune", "--threads", "99999"], r"--threads: at most"),
        (["bench", "neurons", "--threads", "99999", "--no-thp"], r"--threads: at most"),
        (["bench", "spikes", "--threads", "99999", "--no-thp"], r"--threads: at most"),
        (["train", "--warmup-epochs", "-1"], r"--warmup-epochs: must be a finite number >= 0"),
        (
            ["bench", "neurons", "--model", "lifx", "--quick", "--no-thp"],
            r"unknown model 'lifx' \(did you mean 'lif'\?\)",
        ),
        (["bench", "neurons", "--model", "psn", "--quick", "--no-thp"], r"unknown model 'psn'.*leaky"),
        (["bench", "neurons", "--model", "", "--no-thp"], r"unknown model ''"),
        (["bench", "neurons", "--model"], r"--model: expected one argument"),
    ],
)
def test_one_line_errors(capsys, argv, match):
    _one_line_error(capsys, *argv, match=match)


def test_resume_missing_checkpoint_file(capsys, tmp_path):
    _one_line_error(capsys, "train", "--checkpoint", str(tmp_path / "run.pt"), "--resume", match="no checkpoint at")


def test_dataset_arrays_that_cannot_train(capsys, tmp_path):
    """One sample (no train / test split), x_test without y_test, a label of 1e9 (a classifier head of 1e9
    outputs): usage errors naming the problem, not an IndexError / TypeError / a 128 GB allocation."""
    x = np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32)
    cases = (
        (dict(x=x[:1], y=np.zeros(1, dtype=np.int64)), r"1 sample"),
        (dict(x=x, y=np.arange(20) % 2, x_test=x[:5]), r"x_test given without y_test"),
        (dict(x=x, y=np.full(20, 10**9, dtype=np.int64)), r"class indices < "),
    )
    for i, (arrays, match) in enumerate(cases):
        path = str(tmp_path / f"d{i}.npz")
        np.savez(path, **arrays)
        _one_line_error(capsys, "train", "--dataset", path, *TINY, match=match)


@pytest.mark.parametrize("option", ["--momentum", "--weight-decay", "--tet-lambda"])
def test_training_numbers_must_be_finite_and_not_negative(capsys, option):
    """NaN momentum / weight decay / TET weight trained a NaN model reported as a success."""
    for value in ("nan", "-0.1", "inf"):
        _one_line_error(capsys, "train", *TINY, option, value, match=option)
    _one_line_error(capsys, "train", *TINY, "--warmup-epochs", "1e308", match=r"--warmup-epochs.*at most --epochs")
    _one_line_error(capsys, "train", *TINY, "--loss", "tet", "--tet-lambda", "2", match=r"--tet-lambda.*\[0, 1\]")


def test_non_integer_labels(capsys, tmp_path):
    path = _tiny_npz(tmp_path / "d.npz", y=np.linspace(0, 2, 24))
    _one_line_error(capsys, "train", "--dataset", path, *TINY, match=r"integer class indices")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n" * 4, "foreign"])
def test_bad_checkpoint_files(capsys, tmp_path, content):
    path = tmp_path / "run.pt"
    if content == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    line = _one_line_error(capsys, "energy", "--checkpoint", str(path))
    assert str(path) in line
    line = _one_line_error(capsys, "train", "--checkpoint", str(path), "--resume")
    assert str(path) in line


def test_checkpoint_must_fit_and_energy_reads_it(capsys, tmp_path):
    data = _tiny_npz(tmp_path / "d.npz")
    ckpt = str(tmp_path / "run.pt")
    rc, out, err = _run(capsys, "train", "--dataset", data, *TINY, "--checkpoint", ckpt)
    assert rc == 0, err
    assert os.path.abspath(ckpt) in out  # says where the checkpoint went
    # resume with another model or width: the error names both
    line = _one_line_error(
        capsys, "train", "--dataset", data, *TINY[:2], "--width", "8", "--T", "1", "--checkpoint", ckpt, "--resume"
    )
    assert "width=4" in line and "width=8" in line
    line = _one_line_error(
        capsys, "train", "--dataset", data, "--model", "sew_resnet18_cifar", *TINY[2:], "--checkpoint", ckpt, "--resume"
    )
    assert "spiking_resnet18_cifar" in line and "sew_resnet18_cifar" in line
    # resume with other training options: the restored optimizer and schedule would keep the old ones (a new
    # --lr was logged but not used, a longer --epochs restarted a finished cosine schedule)
    for option, value, saved in (("--lr", "5", "lr=0.002"), ("--epochs", "3", "epochs=1"), ("--seed", "7", "seed=0")):
        line = _one_line_error(
            capsys, "train", "--dataset", data, *TINY, option, value, "--checkpoint", ckpt, "--resume"
        )
        assert saved in line and "continues that run exactly" in line, line
    # malformed training state in the file: a one-line usage error naming it
    state = torch.load(ckpt, weights_only=True)
    for key, bad in (("epoch", "x"), ("optimizer", {}), ("rng", torch.zeros(3)), ("schedule", {"a": 1})):
        broken = str(tmp_path / f"bad_{key}.pt")
        torch.save(dict(state, **{key: bad}), broken)
        line = _one_line_error(capsys, "train", "--dataset", data, *TINY, "--checkpoint", broken, "--resume")
        assert key in line and "bad_" in line, line
    # weights that do not fit: how many are missing / unexpected / of another shape, with an example (torch's
    # message was cut to its first line, which names none)
    weights = dict(state["model"])
    weights["extra.weight"] = weights.pop(next(k for k in weights if k.endswith("conv.weight") or "conv" in k))
    shape_key = next(k for k, v in weights.items() if v.dim() == 4)
    weights[shape_key] = torch.zeros(1, 1, 1, 1)
    torch.save(dict(state, model=weights), str(tmp_path / "bad_weights.pt"))
    for cmd in (["train", "--dataset", data, *TINY, "--resume"], ["energy"]):
        line = _one_line_error(capsys, *cmd, "--checkpoint", str(tmp_path / "bad_weights.pt"))
        assert "1 missing (e.g." in line and "1 unexpected (e.g. extra.weight)" in line, line
        assert f"1 of another shape (e.g. {shape_key} (1, 1, 1, 1) where the model has" in line, line
    line = _one_line_error(capsys, "energy", "--checkpoint", ckpt, "--model", "sew_resnet18_cifar")
    assert "spiking_resnet18_cifar" in line and "sew_resnet18_cifar" in line
    # energy on the checkpoint: model and input shape (1 x 8 x 8, random: the data was a custom .npz)
    rc, out, err = _run(capsys, "energy", "--checkpoint", ckpt, "--batch", "2")
    assert rc == 0, err
    assert "(1, 8, 8)" in out and "per image" in out


def test_energy_on_default_train_checkpoint(capsys, tmp_path):
    ckpt = str(tmp_path / "digits.pt")
    rc, out, err = _run(capsys, "train", *TINY, "--checkpoint", ckpt)
    assert rc == 0, err
    rc, out, err = _run(capsys, "energy", "--checkpoint", ckpt, "--batch", "3")
    assert rc == 0, err
    assert "shipped digits" in out and "(1, 8, 8)" in out


def test_energy_warns_on_silent_random_model(capsys):
    rc, out, err = _run(capsys, "energy", "--batch", "2")  # sew_resnet18_cifar, random weights, eval mode
    assert rc == 0
    assert "per image (mean over the batch of 2)" in out
    assert "warning:" in err and "--train-mode" in err


def test_energy_neuron_rate_agrees_with_monitor():
    import spikeforge as sf

    torch.manual_seed(0)
    model = sf.models.sew_resnet18_cifar(num_classes=10, T=2, width=8)
    x = torch.rand(2, 3, 16, 16)
    for train in (False, True):
        model.train(train)
        rep = sf.tools.energy(model, x, eval_mode=not train)
        with torch.no_grad(), sf.tools.FiringRateMonitor(model) as mon:
            model(x)
        layers = mon.summary()
        total = sum(r.spikes for r in layers) / sum(r.elements for r in layers)
        assert rep.neuron_rate == pytest.approx(total, rel=1e-9), train
    assert model.training  # energy() left the mode as it found it


def test_bench_target_without_checkout_says_where(capsys, monkeypatch, tmp_path):
    from spikeforge.cli import bench

    monkeypatch.setattr(bench, "find_bench_dir", lambda: None)
    _one_line_error(capsys, "bench", "psn", match="bench/ folder of a spikeforge source checkout")
    _one_line_error(capsys, "bench", "neurons", "--full", match="bench/ folder")


def test_main_job_quick_table_summary_and_json(capsys, tmp_path, monkeypatch):
    from spikeforge.cli import bench_neurons

    monkeypatch.setattr(bench_neurons.bc, "dist_version", lambda name: None)  # as if no peer were installed
    out_json = tmp_path / "main.json"
    rc, out, err = _run(capsys, "bench", "neurons", "--quick", "--no-thp", "--json", str(out_json))
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("spikeforge bench neurons: LIF neurons, one training step")  # no jargon first
    assert any(line.startswith("In short: for one training step") for line in lines)
    assert "not installed, so not compared" in out and "SpikingJelly" not in lines[2]  # a note, not a column
    import json

    d = json.loads(out_json.read_text())
    assert d["rows"][0]["cells"]["spikeforge"]["ms"] > 0 and d["summary"].startswith("In short")


def _main_job_json(capsys, tmp_path, *argv):
    import json

    out_json = tmp_path / "main.json"
    rc, out, err = _run(
        capsys, "bench", "neurons", "--quick", "--no-thp", "--threads", "1", *argv, "--json", str(out_json)
    )
    assert rc == 0, err
    assert "Traceback" not in err
    return out, json.loads(out_json.read_text())


@pytest.mark.parametrize("model", ["ilif", "ternary", "alif"])
def test_main_job_models_of_the_spikingjelly_family(capsys, tmp_path, model):
    """--model: spikeforge against the PyTorch loop and SpikingJelly's node where it has the model, the spikes
    checked bit for bit, the roofline's values named."""
    out, d = _main_job_json(capsys, tmp_path, "--model", model)
    lines = out.splitlines()
    assert lines[0].startswith("spikeforge bench neurons: ") and "one training step" in lines[0]
    assert d["model"] == model and d["traffic"]["values_per_element_step"] >= 5 and d["traffic"]["which"]
    assert f"the {d['traffic']['values_per_element_step']} values: forward reads x" in out
    cells = d["rows"][0]["cells"]
    assert cells["spikeforge"]["ms"] > 0 and cells["reference"]["same_spikes"] is True
    assert cells["reference"]["same_grad"] is True  # checked in a training call, as timed
    assert 0.02 < d["rows"][0]["firing_rate"] < 0.98
    if model == "alif":
        assert "spikingjelly" not in cells and "no peer library has this model" in out
    elif "spikingjelly" in cells and "ms" in cells["spikingjelly"]:
        assert cells["spikingjelly"]["same_spikes"] is True and "spikes differ" not in out


@pytest.mark.parametrize("model,cls", [("leaky", "Leaky"), ("alpha", "Alpha")])
def test_main_job_snntorch_models_through_the_drop_in(capsys, tmp_path, model, cls):
    """snnTorch's model with its defaults: its own per-step loop and the same module patched with
    spikeforge.interop.snntorch, both with spikeforge's spikes; the drop-in line compares the two."""
    pytest.importorskip("snntorch")
    out, d = _main_job_json(capsys, tmp_path, "--model", model)
    cells = d["rows"][0]["cells"]
    for key in ("reference", "snntorch", "snntorch_patched"):
        assert cells[key]["same_spikes"] is True and cells[key]["ms"] > 0, (key, cells[key])
        assert cells[key]["same_grad"] is True, (key, cells[key])
    assert f"snnTorch's own {cls} module patched with spikeforge.interop.snntorch is " in out
    assert "with the same spikes." in out and d["drop_in"].endswith("with the same spikes.")
    assert "patched" in out.splitlines()[2]  # its own column


def test_main_job_summary_leaves_out_contenders_whose_numbers_differ():
    """A contender of spikeforge's model with other spikes or gradients is flagged in its cell and left out of
    the "In short" sentence (it once counted there as a speed-up); a similar model is named as such."""
    from spikeforge.cli import bench_neurons as bn

    def cell(x, **kw):
        return dict({"x_spikeforge": x, "same_model": True, "same_spikes": True, "same_grad": True}, **kw)

    results = [
        {
            "cells": {
                "reference": cell(7.0),
                "spikingjelly": cell(3.0, same_grad=False),
                "snntorch": cell(5.0, same_model=False, same_spikes=False),
                "torch.compile": cell(2.0, same_spikes=False),
            }
        }
    ]
    labels = {"reference": "PyTorch loop", "spikingjelly": "SJ", "snntorch": "snnTorch", "torch.compile": "compile"}
    line = bn.summary_line(results, labels)
    assert "7.0x faster than the same neuron" in line and "5.0x faster than snnTorch (a similar model" in line
    assert "than SJ" not in line and "than compile" not in line
    assert line.endswith("Left out, as its numbers differ from spikeforge's: SJ, compile.")
    assert bn._cell(results[0]["cells"]["spikingjelly"], "spikingjelly") == "3.0x (gradients differ)"
    assert bn._cell(results[0]["cells"]["torch.compile"], "torch.compile") == "2.0x (spikes differ)"
    g = torch.randn(4, 100)
    assert bn._same_grad(g + 1e-7, g) and not bn._same_grad(torch.zeros_like(g), g)


def test_main_job_norse_model(capsys, tmp_path):
    """--model norse: Norse's current-based LIF against the PyTorch loop, and Norse's own LIF module where
    norse is installed (the same spikes), else a note."""
    out, d = _main_job_json(capsys, tmp_path, "--model", "norse")
    cells = d["rows"][0]["cells"]
    assert d["model"] == "norse" and cells["reference"]["same_spikes"] is True
    assert d["traffic"]["values_per_element_step"] == 5 and 0.02 < d["rows"][0]["firing_rate"] < 0.98
    if "ms" in cells["norse"]:
        assert cells["norse"]["same_spikes"] is True
    else:
        assert cells["norse"]["status"].startswith("not installed") and "Norse: not installed" in out


def test_main_job_model_without_its_peer_installed(capsys, tmp_path, monkeypatch):
    from spikeforge.cli import bench_neurons

    monkeypatch.setattr(bench_neurons.bc, "dist_version", lambda name: None)  # as if no peer were installed
    out, d = _main_job_json(capsys, tmp_path, "--model", "synaptic")
    cells = d["rows"][0]["cells"]
    assert cells["snntorch"]["status"].startswith("not installed")
    assert cells["snntorch_patched"]["status"].startswith("not installed")
    assert "snnTorch: not installed, so not compared (pip install snntorch adds it)" in out
    assert "patched" not in out.splitlines()[2] and d["drop_in"] is None


def test_info_names_the_ssa_cpu_backward(capsys, monkeypatch):
    """`spikeforge info` says which CPU backward ssa takes and why; a bad setting is reported in the line, not
    raised."""
    from spikeforge.ops import attention

    if attention.native is None:
        pytest.skip("no native module")
    for setting, want in (("auto", "fused (auto"), ("fused", "fused (ops.attention"), ("x", "error")):
        monkeypatch.setattr(attention, "SSA_CPU_BACKWARD", setting)
        assert cli.main(["info"]) == 0
        (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "SSA on CPU:" in ln]
        assert want in line, line


def test_output_paths_are_checked_before_any_work(capsys, tmp_path, monkeypatch):
    """A mistyped output path lost data (found by a CLI audit): `energy --json` naming its --checkpoint replaced
    the trained model with JSON, `train --checkpoint` naming the --dataset replaced the arrays, `--checkpoint`
    of a device node replaced the node (os.replace), and an unwritable --json failed after the whole run.
    Each is now a one-line error before anything is loaded; the files are untouched."""
    monkeypatch.chdir(tmp_path)
    data = _tiny_npz(tmp_path / "d.npz")
    before = open(data, "rb").read()
    _one_line_error(capsys, "train", "--dataset", data, "--checkpoint", data, *TINY, match="same file as --dataset")
    _one_line_error(
        capsys, "train", "--dataset", data, "--checkpoint", "o.pt", "--json", "./o.pt", *TINY, match="--checkpoint"
    )
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _one_line_error(capsys, "train", "--dataset", data, "--checkpoint", str(fifo), *TINY, match="not a regular file")
    _one_line_error(capsys, "train", "--dataset", data, "--json", "/proc/x.json", *TINY, match="cannot write in")
    assert open(data, "rb").read() == before and not os.path.exists("o.pt")
    assert _run(capsys, "train", "--dataset", data, "--checkpoint", "ck.pt", *TINY)[0] == 0
    ck = open("ck.pt", "rb").read()
    _one_line_error(capsys, "energy", "--checkpoint", "ck.pt", "--json", "ck.pt", match="same file as --checkpoint")
    assert open("ck.pt", "rb").read() == ck
    rc, out, _ = _run(capsys, "train", "--dataset", data, "--checkpoint", "ck.pt", *TINY)
    assert rc == 0 and "replacing the run there; --resume continues it" in out
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "d.npz", "pipe"]  # no probe or temporary file left


def test_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """write_text_atomic: a failing write leaves the old file and no temporary one (energy / train / bench
    --json opened the final path: a full disk left half a file)."""
    from spikeforge.cli._common import write_text_atomic

    path = tmp_path / "r.json"
    write_text_atomic(str(path), '{"a": 1}')
    assert path.read_text() == '{"a": 1}' and oct(path.stat().st_mode & 0o777) != oct(0o600)

    real_fdopen = os.fdopen

    def failing_fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        f.write = lambda text: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        return f

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with pytest.raises(OSError, match="No space"):
        write_text_atomic(str(path), '{"b": 2}')
    assert path.read_text() == '{"a": 1}' and os.listdir(tmp_path) == ["r.json"]


def test_subcommand_errors_name_the_subcommand(capsys):
    _one_line_error(capsys, "energy", "--bogus", match=r"^spikeforge energy: error: unrecognized arguments: --bogus")
    _one_line_error(capsys, "train", "foo", match=r"^spikeforge train: error: unrecognized arguments: foo")
    _one_line_error(capsys, "bench", "neurons", "--quick", "--full", match="options before --full are not used")


def test_malformed_datasets_name_the_file(capsys, tmp_path):
    """Files that are not an .npz of image arrays: one line naming the file (EOFError, TypeError, IndexError
    and numpy's "load it unsafely" advice before; a [N, 2] y was flattened into "y has 2N samples")."""
    rng = np.random.default_rng(0)
    cases = {
        "empty": (lambda p: open(p, "wb").close(), "not a readable .npz archive"),
        "text": (lambda p: open(p, "w").write("hello"), "not a readable .npz archive"),
        "npy": (lambda p: np.save(open(p, "wb"), np.zeros(3)), r"holds one array \(.npy data\)"),
        "x2d": (lambda p: np.savez(p, x=rng.random((30, 64)), y=np.arange(30) % 3), r"x must be images \[N, C"),
        "xstr": (lambda p: np.savez(p, x=np.array(["a"] * 30), y=np.arange(30) % 3), "x must hold numbers"),
        "yobj": (lambda p: np.savez(p, x=rng.random((30, 1, 8, 8)), y=np.array([None] * 30)), "Object arrays"),
        "y2d": (lambda p: np.savez(p, x=rng.random((30, 1, 8, 8)), y=np.zeros((30, 2), int)), "y must be a 1-D"),
    }
    for name, (make, match) in cases.items():
        path = str(tmp_path / f"{name}.npz")
        make(path)
        _one_line_error(capsys, "train", "--dataset", path, *TINY, match=f"{name}.npz: .*{match}")


def test_seed_width_and_a_diverged_run(capsys, tmp_path):
    """--seed beyond the generators' range failed mid-run (an overflow); --width with a transformer was ignored by
    train and crashed energy; a diverged run (NaN loss) reported a chance accuracy with exit status 0."""
    _one_line_error(capsys, "train", "--seed", str(10**15), match=r"--seed: must be < 2\^32")
    _one_line_error(capsys, "energy", "--seed", "-1", match="--seed: must be >= 0")
    _one_line_error(capsys, "train", "--model", "spikformer_4_384_cifar", "--width", "8", match="residual nets")
    _one_line_error(capsys, "train", "--cnf", "AND", "--model", "ms_resnet18_cifar", match="applies to the SEW")
    _one_line_error(capsys, "train", "--momentum", "0.5", match="applies to --optimizer sgd only")
    _one_line_error(capsys, "train", "--optimizer", "sgd", "--momentum", "50", match=r"momentum is in \[0, 1\)")
    _one_line_error(capsys, "train", "--tet-lambda", "0.1", match="applies to --loss tet only")
    _one_line_error(capsys, "energy", "--model", "sdt_2_512_cifar", "--width", "8", match="is a transformer")
    data = _tiny_npz(tmp_path / "d.npz")
    rc, out, err = _run(capsys, "train", "--dataset", data, "--lr", "1e30", *TINY[:-3], "--epochs", "3")
    assert rc == 1 and "the run diverged" in err and "Traceback" not in err and "done:" not in out, (rc, out, err)


def test_gradients_that_overflow_stop_the_run(capsys, tmp_path):
    """A Meta-SpikeFormer on 8x8 images has a finite loss but gradients of 1e33 (silent attention neurons, then
    BatchNorms of all-zero inputs): AdamW froze its weights and the run went on at chance accuracy with exit
    status 0. Now the first step stops it, before the update, with the way out (and no checkpoint is written)."""
    data = _tiny_npz(tmp_path / "d.npz")
    ckpt = tmp_path / "run.pt"
    argv = ["--model", "meta_spikformer_15m", "--T", "1", "--epochs", "1", "--no-progress", "--checkpoint", str(ckpt)]
    rc, out, err = _run(capsys, "train", "--dataset", data, *argv)
    assert rc == 1 and "Traceback" not in err and "done:" not in out, (rc, out, err)
    assert "the gradients are not finite" in err and "epoch 1, step 1" in err, err
    assert "Meta-SpikeFormer on 8 x 8 inputs" in err and "--image-size 64 (TrainConfig.image_size)" in err, err
    assert not ckpt.exists()


def test_energy_of_a_sequence_trained_checkpoint_warns(capsys, tmp_path):
    """A checkpoint trained on sequences [N, T, C, H, W]: energy feeds static images (the only input it has), so it
    says that its first layer is charged as on analogue input (it said nothing)."""
    rng = np.random.default_rng(0)
    path = str(tmp_path / "seq.npz")
    np.savez(path, x=(rng.random((24, 2, 1, 8, 8)) < 0.3).astype(np.float32), y=np.arange(24) % 3)
    ck = str(tmp_path / "seq.pt")
    assert TINY[4:6] == ["--T", "1"]
    assert _run(capsys, "train", "--dataset", path, "--checkpoint", ck, *TINY[:4], "--T", "2", *TINY[6:])[0] == 0
    rc, out, err = _run(capsys, "energy", "--checkpoint", ck)
    assert rc == 0 and "trained on sequences" in err, (rc, err)


def test_resume_takes_the_dataset_under_another_spelling_and_energy_checks_num_classes(capsys, tmp_path, monkeypatch):
    """--resume compared --dataset paths as strings (./d.npz was refused for a run trained on d.npz); energy
    --num-classes with a checkpoint of another class count was ignored."""
    monkeypatch.chdir(tmp_path)
    _tiny_npz(tmp_path / "d.npz")
    argv = [*TINY[:6], "--epochs", "2", "--no-progress", "--checkpoint", "r.pt"]
    assert _run(capsys, "train", "--dataset", "d.npz", *argv)[0] == 0
    assert _run(capsys, "train", "--dataset", "./d.npz", *argv, "--resume")[0] == 0
    _one_line_error(capsys, "energy", "--checkpoint", "r.pt", "--num-classes", "1000", match="holds a 3-class model")
