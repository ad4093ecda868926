"""The shipped digits data, the training loop (seed determinism, checkpoint resume), arrays as a data
source and the `spikeforge train` command."""

import json

import numpy as np
import pytest
import torch

from spikeforge import cli, data
from spikeforge.train import TrainConfig, fit, load_checkpoint


def test_digits_ship_with_the_package():
    x, y = data.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.uint8 and y.shape == (1797,)
    assert int(x.max()) == 16 and int(x.min()) == 0
    # scikit-learn's load_digits: class sizes and the first image (a zero)
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert x[0].tolist()[:16] == [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0] and y[0] == 0
    tr, te = data.digits()
    assert len(tr) + len(te) == 1797 and tr.tensors[0].shape[1:] == (1, 8, 8)
    assert float(tr.tensors[0].max()) == 1.0
    tr2, _ = data.digits()
    assert torch.equal(tr.tensors[1], tr2.tensors[1])  # the split is fixed


def _subset(n_train=96, n_test=48):
    x, y = data.load_digits()
    x = x.reshape(-1, 1, 8, 8)
    return data.from_arrays(
        x[:n_train], y[:n_train], x[n_train : n_train + n_test], y[n_train : n_train + n_test], scale=16.0
    )


def _cfg(**kw):
    base = dict(model="sew_resnet18_cifar", width=4, T=1, epochs=2, batch_size=32, seed=3, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _quiet(*a, **k):
    pass


def test_same_seed_same_result():
    tr, te = _subset()
    a = fit(_cfg(), tr, te, log=_quiet)
    b = fit(_cfg(), tr, te, log=_quiet)
    for (n, p), q in zip(a["model"].state_dict().items(), b["model"].state_dict().values()):
        assert torch.equal(p, q), n
    assert a["history"] == [dict(r, epoch_s=a["history"][i]["epoch_s"]) for i, r in enumerate(b["history"])]
    c = fit(_cfg(seed=4), tr, te, log=_quiet)
    assert not torch.equal(c["model"].fc.weight, a["model"].fc.weight)


@pytest.mark.parametrize("loss,encoding", [("ce", "direct"), ("tet", "poisson")])
def test_checkpoint_resume_equals_uninterrupted(tmp_path, loss, encoding):
    tr, te = _subset()
    cfg = dict(loss=loss, encoding=encoding, optimizer="sgd", lr=0.05, T=2)
    full = fit(_cfg(**cfg), tr, te, log=_quiet)
    ck = str(tmp_path / "run.pt")
    fit(_cfg(checkpoint=ck, **cfg), tr, te, log=_quiet, stop_after=1)  # "interrupted" after epoch 1
    state = load_checkpoint(ck)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    resumed = fit(_cfg(checkpoint=ck, **cfg), tr, te, resume=True, log=_quiet)
    for (n, p), q in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(p, q), n
    assert load_checkpoint(ck)["epoch"] == 2


def test_training_learns_digits_subset():
    tr, te = _subset(400, 200)
    res = fit(_cfg(model="ms_resnet18_cifar", width=8, epochs=4, lr=5e-3), tr, te, log=_quiet)
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]
    assert res["test_acc"] > 0.5  # chance is 0.1


def test_cli_train_on_npz_arrays(tmp_path, capsys):
    x, y = data.load_digits()
    path = tmp_path / "arrays.npz"
    np.savez(path, x=(x[:120].reshape(-1, 1, 8, 8) * 15).astype(np.uint8), y=y[:120])
    out = tmp_path / "res.json"
    rc = cli.main(
        [
            "train",
            "--dataset",
            str(path),
            "--model",
            "spiking_resnet18_cifar",
            "--width",
            "4",
            "--T",
            "1",
            "--epochs",
            "1",
            "--no-progress",
            "--json",
            str(out),
            "--loss",
            "tet",
            "--neuron",
            "lif",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["config"]["model"] == "spiking_resnet18_cifar" and len(res["history"]) == 1
    assert 0.0 <= res["test_acc"] <= 1.0
    assert "test accuracy" in capsys.readouterr().out


def test_bad_options_are_clear_errors():
    tr, te = _subset(32, 16)
    with pytest.raises(ValueError, match="optimizer"):
        fit(_cfg(optimizer="lamb"), tr, te, log=_quiet)
    with pytest.raises(ValueError, match="unknown model"):
        fit(_cfg(model="vgg"), tr, te, log=_quiet)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.get_dataset("mnist")
    with pytest.raises(FileNotFoundError):
        fit(_cfg(checkpoint="/nonexistent/x.pt"), tr, te, resume=True, log=_quiet)
