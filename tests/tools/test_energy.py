"""spikeforge.tools.energy (SOPs and energy, docs/tools.md) on hand-checkable models, the EnergyOp
opt-in, a zoo model against torch's FLOP counter, and the `spikeforge energy` command."""

import json

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import models, tools
from spikeforge.nn import MultiStep, SpikeLinear, direct_encode
from spikeforge.tools.energy import EnergyOp, input_kind, matmul_op, report_op

E_MAC, E_AC = 4.6, 0.9


pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(rep, name):
    return next(r for r in rep.layers if r.name == name)


class Tiny(nn.Module):
    """fc1 on the static input [B, 4] (once), fc2 on given spikes [T, B, 3], fc3 on fc2's real output."""

    T = 2

    def __init__(self, spikes):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = SpikeLinear(3, 5)
        self.fc3 = MultiStep(nn.Linear(5, 2))
        self.spikes = spikes

    def forward(self, x):
        self.fc1(x)
        return self.fc3(self.fc2(self.spikes))


def test_tiny_model_exact_numbers(device):
    B = 2
    spikes = torch.zeros(2, B, 3, device=device)
    spikes[0, 0, 0] = spikes[0, 1, 2] = spikes[1, 0, 1] = 1.0  # 3 of 12: rate 0.25, different at each step
    rep = tools.energy(Tiny(spikes).to(device), torch.randn(B, 4, device=device))
    assert [r.name for r in rep.layers] == ["fc1", "fc2", "fc3.0"]
    fc1, fc2, fc3 = rep.layers
    # fc1: real input computed once per sample: 4 x 3 MACs, charged at E_MAC
    assert (fc1.kind, fc1.rate, fc1.steps, fc1.macs, fc1.sops, fc1.mac_ops) == ("real", None, 1, 12, 0, 12)
    # fc2: spikes, rate 0.25, T = 2 steps of 3 x 5 MACs: SOPs = 0.25 x 2 x 15 = 7.5
    assert (fc2.kind, fc2.rate, fc2.steps, fc2.macs, fc2.sops, fc2.mac_ops) == ("spikes", 0.25, 2, 15, 7.5, 0)
    # fc3: real input that changes over time: every step charged, 2 x 5 x 2 MACs
    assert (fc3.kind, fc3.steps, fc3.macs, fc3.sops, fc3.mac_ops, fc3.time_invariant) == ("real", 2, 10, 0, 20, False)
    assert fc1.energy_pj == pytest.approx(E_MAC * 12) and fc2.energy_pj == pytest.approx(E_AC * 7.5)
    assert fc3.energy_pj == pytest.approx(E_MAC * 20)
    assert rep.total_energy_mj == pytest.approx((E_MAC * 12 + E_AC * 7.5 + E_MAC * 20) * 1e-9)
    assert rep.ann_energy_mj == pytest.approx(E_MAC * (12 + 15 + 10) * 1e-9)
    assert rep.total_sops == 7.5 and rep.total_mac_ops == 32 and rep.total_macs == 37
    assert rep.mean_rate == 0.25 and rep.ratio == pytest.approx(170.2 / 153.95)
    d = rep.as_dict()
    assert d["layers"][1]["sops"] == 7.5 and "_dense" not in d["layers"][1]
    json.dumps(d)  # serialisable
    table = rep.table()
    assert "fc2" in table and "SpikeLinear" in table and "0.2500" in table


def test_direct_encoded_input_is_charged_once_and_conv_macs():
    T, B = 3, 2
    conv = MultiStep(nn.Conv2d(2, 4, 3, padding=1, bias=False))
    img = torch.rand(B, 2, 5, 5)
    # the same image at every step (direct encoding): computed T times, but charged once
    rep = tools.energy(conv, direct_encode(img, T).contiguous(), T=T)
    r = rep.layers[0]
    per_step = 4 * 5 * 5 * (2 * 9)  # output elements x (C_in x k x k)
    assert (r.kind, r.time_invariant, r.steps, r.macs, r.mac_ops) == ("real", True, T, per_step, per_step)
    assert rep.total_energy_mj == pytest.approx(E_MAC * per_step * 1e-9)
    # a real input that changes over time: T x MACs
    rep = tools.energy(conv, torch.rand(T, B, 2, 5, 5), T=T)
    r = rep.layers[0]
    assert (r.time_invariant, r.mac_ops) == (False, T * per_step)
    # grouped, strided conv on spikes: 6 x 3 x 3 outputs, each over 2 channels x 3 x 3 taps
    g = MultiStep(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2))
    s = (torch.rand(T, B, 4, 6, 6) < 0.3).float()
    r = tools.energy(g, s, T=T).layers[0]
    assert r.macs == 6 * 3 * 3 * 2 * 9 and r.kind == "spikes"
    assert r.sops == pytest.approx(float(s.mean()) * T * r.macs)


def test_spike_counts_conv1d_and_spike_conv2d(device):
    T, B = 2, 3
    counts = torch.randint(0, 3, (T, B, 2, 4)).float()  # SEW-ADD-like sums of spikes: 0, 1, 2
    counts[0, 0, 0, 0] = 2.0
    # a 4-D sequence [T, B, C, L] reads as a batch [B, C, H, W] unless told: batch_size
    r = tools.energy(MultiStep(nn.Conv1d(2, 3, 2)), counts, T=T, batch_size=B).layers[0]
    assert r.kind == "counts" and r.macs == 3 * 3 * 2 * 2
    assert r.rate == pytest.approx(float(counts.mean())) and r.sops == pytest.approx(r.rate * T * r.macs)
    s = (torch.rand(T, B, 2, 4, 4, device=device) < 0.2).float()
    r = tools.energy(sf.nn.SpikeConv2d(2, 5, 3, padding=1).to(device), s, T=T).layers[0]
    assert r.type == "SpikeConv2d" and r.macs == 5 * 16 * 2 * 9 and r.rate == pytest.approx(float(s.mean()))


def test_input_kind():
    assert input_kind(torch.tensor([0.0, 1.0, 1.0, 0.0])) == ("spikes", 0.5)
    assert input_kind(torch.tensor([0.0, 2.0, 1.0, 1.0])) == ("counts", 1.0)
    assert input_kind(torch.tensor([0.0, 0.5, 1.0, 0.0]))[0] == "real"
    assert input_kind(torch.tensor([0.0, -1.0]))[0] == "real"  # negative integers are not spike counts
    assert input_kind(torch.tensor([True, False])) == ("spikes", 0.5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        input_kind([0, 1])


class SpikeMatmul(nn.Module):
    """Attention-like matmuls on spikes s [T, B, N, d]: a = s s^T (counts), y = a s, then a projection (a child,
    counted by its own hook). energy_ops reports the two matmuls and one op without an operand."""

    def __init__(self, d):
        super().__init__()
        self.proj = MultiStep(nn.Linear(d, d, bias=False))

    def forward(self, s):
        a = s @ s.transpose(-1, -2)
        y = a @ s
        self._saved = (s, a)
        return self.proj(y)

    def energy_ops(self, inputs, output):
        s, a = self._saved
        n = s.shape[-2]
        assert matmul_op("x", s, s.transpose(-1, -2)).macs == s.numel() * n  # the helper's count
        return [
            EnergyOp("s@sT", macs=s.numel() * n, operand=s),
            matmul_op("a@s", a, s, operand=a),
            EnergyOp("lut", macs=100.0, kind="spikes", rate=0.5),
        ]


def test_energy_ops_opt_in():
    T, B, N, d = 2, 2, 3, 4
    s = (torch.rand(T, B, N, d) < 0.5).float()
    s[0, 0, 0, :2] = 1.0  # at least two ones in a row: some a > 1 (counts)
    rep = tools.energy(SpikeMatmul(d), s, T=T)
    names = [r.name for r in rep.layers]
    assert names == ["proj.0", "s@sT", "a@s", "lut"]  # the child first: its hook fires inside the forward
    qk, av, lut, proj = _layer(rep, "s@sT"), _layer(rep, "a@s"), _layer(rep, "lut"), _layer(rep, "proj.0")
    assert qk.type == "SpikeMatmul.s@sT" and qk.kind == "spikes" and qk.macs == N * d * N and qk.steps == T
    assert qk.sops == pytest.approx(float(s.mean()) * T * N * d * N)
    a = s @ s.transpose(-1, -2)
    assert av.kind == "counts" and av.rate == pytest.approx(float(a.mean())) and av.macs == N * N * d
    assert lut.sops == pytest.approx(0.5 * 100 / B) and lut.macs == pytest.approx(100 / B / T)
    assert proj.kind == "counts" and proj.macs == N * d * d  # y = a s holds integer sums too


class ReportingMatmul(nn.Module):
    """s @ s^T reported from inside forward with report_op (no energy_ops, nothing kept on the module)."""

    def forward(self, s):
        report_op(self, matmul_op("s@sT", s, s.transpose(-1, -2)))
        return s @ s.transpose(-1, -2)


def test_report_op_inside_forward():
    T, B, N, d = 2, 3, 4, 5
    s = (torch.rand(T, B, N, d) < 0.3).float()
    model = nn.Sequential(ReportingMatmul(), MultiStep(nn.Linear(N, 2)))
    rep = tools.energy(model, s, T=T, batch_size=B)  # a 4-D [T, B, N, d] input: say which dim is B
    assert [r.name for r in rep.layers] == ["0.s@sT", "1.0"]
    r = rep.layers[0]
    assert r.type == "ReportingMatmul.s@sT" and r.macs == N * N * d and r.steps == T
    assert r.sops == pytest.approx(float(s.mean()) * T * N * N * d)
    model(s)  # outside an estimate report_op does nothing
    with pytest.raises(ValueError, match="EnergyOp.macs"):

        class Bad(nn.Module):
            def forward(self, x):
                report_op(self, EnergyOp("bad", float("nan"), x))
                return x

        tools.energy(Bad(), s, T=T, batch_size=B)


@pytest.mark.parametrize(
    "cls, names",
    [
        (sf.nn.SSA, ["kT@v", "q@(kT@v)"]),
        (sf.nn.SDSA, ["sum_tokens(k*v)"]),
        (sf.nn.QKTokenAttention, ["sum_channels(q)"]),
        (sf.nn.QKChannelAttention, ["sum_tokens(q)"]),
    ],
)
def test_attention_modules_report_their_accumulates(cls, names):
    """The attention op's own work (no conv sees it) appears as rows named after the module, with the
    firing rate of the spikes that drive it: SOPs = accumulates actually done per inference."""
    torch.manual_seed(0)
    T, B, C, H, W, heads = 2, 2, 16, 3, 3, 4
    N, d = H * W, C // heads
    block = cls(C, num_heads=heads, pre_activation=True)
    with torch.no_grad():  # large enough weights that q, k, v fire at moderate rates
        for name in ("q", "k", "v"):
            if hasattr(block, f"{name}_conv"):
                getattr(block, f"{name}_conv").weight.normal_(0, 1.0)
    seen = {}
    for name in ("q", "k", "v"):
        sn = getattr(block, f"{name}_sn", None)
        if sn is not None:
            sn.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach()))
    x = torch.randn(T, B, C, H, W) * 3
    rep = tools.energy(block, x, T=T, batch_size=B)
    rows = {r.name: r for r in rep.layers if not r.name.endswith("conv")}
    assert sorted(rows) == sorted(names)

    def heads_of(s):  # [T, B, C, H, W] -> [T, B, heads, N, d], as the module splits them
        return s.reshape(T, B, heads, d, N).transpose(-1, -2)

    q, k = heads_of(seen["q"]), heads_of(seen["k"])
    assert 0 < float(q.mean()) < 1 and 0 < float(k.mean()) < 1  # the check below is not vacuous
    if cls is sf.nn.SSA:
        assert rows["kT@v"].macs == heads * N * d * d and rows["kT@v"].steps == T
        assert rows["kT@v"].sops == pytest.approx(float(k.sum()) * d / B)
        assert rows["q@(kT@v)"].sops == pytest.approx(float(q.sum()) * d / B)
    elif cls is sf.nn.SDSA:
        v = heads_of(seen["v"])
        assert rows["sum_tokens(k*v)"].macs == heads * N * d
        assert rows["sum_tokens(k*v)"].sops == pytest.approx(float((k * v).sum()) / B)
    else:
        assert rows[names[0]].sops == pytest.approx(float(q.sum()) / B)
    for r in rows.values():
        assert r.kind == "spikes" and r.energy_pj == pytest.approx(r.sops * tools.E_AC_PJ)
    assert not tools.estimating()


def test_matmul_op():
    a, b = torch.ones(2, 3, 4, 5), torch.ones(3, 5, 6)  # broadcast batch [2, 3]: 2 x 3 x (4 x 6) x 5 MACs
    op = matmul_op("ab", a, b)
    assert op.macs == 2 * 3 * 4 * 6 * 5 and op.operand is a and op.name == "ab"
    assert matmul_op("ab", a, b, operand=b).operand is b
    with pytest.raises(ValueError, match="a @ b needs"):
        matmul_op("ab", a, torch.ones(4, 6))
    with pytest.raises(TypeError, match="a and b must be"):
        matmul_op("ab", a, [1.0])


def test_energy_ops_bad_entries_and_argument_checks():
    class Bad(nn.Module):
        T = 1

        def __init__(self, op):
            super().__init__()
            self.op = op

        def forward(self, x):
            return x

        def energy_ops(self, inputs, output):
            return [self.op]

    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="EnergyOp.macs"):
        tools.energy(Bad(EnergyOp("m", -1.0, x)), x)
    with pytest.raises(ValueError, match="kind must be one of"):
        tools.energy(Bad(EnergyOp("m", 1.0)), x)
    with pytest.raises(ValueError, match="rate must be"):
        tools.energy(Bad(EnergyOp("m", 1.0, kind="spikes")), x)
    with pytest.raises(TypeError, match="operand"):
        tools.energy(Bad(EnergyOp("m", 1.0, operand=[1])), x)
    with pytest.raises(ValueError, match="EnergyOp.steps"):
        tools.energy(Bad(EnergyOp("m", 1.0, x, steps=0)), x)
    assert tools.energy(Bad(("m", 6.0, x)), x).layers[0].sops == 3.0  # a plain tuple works too
    with pytest.raises(TypeError, match="model must be"):
        tools.energy(lambda x: x, x)
    with pytest.raises(TypeError, match="inputs must be"):
        tools.energy(nn.Linear(3, 3), [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="T: "):
        tools.energy(nn.Linear(3, 3), x)  # no model.T and not a sequence
    with pytest.raises(ValueError, match="T must be >= 1"):
        tools.energy(nn.Linear(3, 3), x, T=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        tools.energy(nn.Linear(3, 3), x, T=1, batch_size=2.0)
    with pytest.raises(ValueError, match="e_mac must be finite and > 0"):
        tools.energy(nn.Linear(3, 3), x, T=1, e_mac=0.0)


def test_zoo_model_macs_match_torch_flop_counter_and_state_is_restored():
    from torch.utils.flop_counter import FlopCounterMode

    B, size = 2, 16
    x = torch.rand(B, 3, size, size)
    model = models.sew_resnet18_cifar(width=4, T=2)
    model.train()
    rep = tools.energy(model, x)
    assert model.training  # mode restored
    assert all(m.v is None for m in model.modules() if isinstance(m, sf.nn.IF))  # state reset afterwards
    stem, fc = rep.layers[0], rep.layers[-1]
    assert stem.name == "stem.0" and stem.kind == "real" and stem.steps == 1 and stem.mac_ops == stem.macs
    assert stem.macs == 4 * size * size * 3 * 9
    # the average pool of spikes is real, unless the last stage is silent (all zeros, as here at random init)
    assert fc.name == "fc" and (fc.kind == "real" or (fc.kind == "spikes" and fc.rate == 0))
    assert all(r.kind in ("spikes", "counts") for r in rep.layers[1:-1])
    assert rep.total_energy_mj == pytest.approx(sum(r.energy_pj for r in rep.layers) * 1e-9)
    # training mode: BN with batch statistics; the running statistics are left as they were
    before = {n: b.clone() for n, b in model.named_buffers()}
    rep_train = tools.energy(model, x, eval_mode=False)
    assert rep_train.total_macs == rep.total_macs and rep_train.total_sops != rep.total_sops
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, before[n], rtol=0, atol=0)
    # MACs per step = the ANN twin's: torch counts 2 FLOPs per MAC of a T = 1 forward
    twin = models.sew_resnet18_cifar(width=4, T=1).eval()
    with FlopCounterMode(display=False) as fc_mode, torch.no_grad():
        twin(x)
    assert rep.total_macs == pytest.approx(fc_mode.get_total_flops() / 2 / B)
    assert rep.ratio > 1.0


def test_cli_help_lists_commands(capsys):
    from spikeforge import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("bench", "train", "energy", "info"):
        assert f"    {cmd} " in out


def test_cli_energy_json_and_checkpoint(tmp_path, capsys):
    from spikeforge import cli
    from spikeforge.nn.layers import poisson_encode
    from spikeforge.data import load_digits

    out = tmp_path / "e.json"
    rc = cli.main(
        [
            "energy",
            "--model",
            "sew_resnet18_cifar",
            "--width",
            "4",
            "--T",
            "2",
            "--image-size",
            "8",
            "--batch",
            "2",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["T"] == 2 and d["batch_size"] == 2 and d["layers"][0]["name"] == "stem.0"
    assert d["total_energy_mj"] == pytest.approx(sum(r["energy_pj"] for r in d["layers"]) * 1e-9)

    # weights from a checkpoint of `spikeforge train` (model, T, width from its config) on the shipped digits
    torch.manual_seed(1)
    model = models.sew_resnet18_cifar(width=4, T=2, in_channels=1, num_classes=10)
    ckpt = tmp_path / "run.pt"
    torch.save({"model": model.state_dict(), "config": {"model": "sew_resnet18_cifar", "T": 2, "width": 4}}, ckpt)
    capsys.readouterr()
    rc = cli.main(["energy", "--checkpoint", str(ckpt), "--input", "digits", "--batch", "3", "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    data, _ = load_digits()
    x = torch.from_numpy(data[:3]).float().reshape(-1, 1, 8, 8) / 16.0
    want = tools.energy(model, x)
    assert got["total_energy_mj"] == pytest.approx(want.total_energy_mj)
    assert got["total_sops"] == pytest.approx(want.total_sops)
    assert got["image_size"] == [8, 8]

    # a run trained on Poisson spikes (--encoding poisson): the estimate feeds the same encoding (the stem's
    # input is spikes, charged as SOPs), with the seed energy draws the spikes from
    torch.save(
        {
            "model": model.state_dict(),
            "config": {"model": "sew_resnet18_cifar", "T": 2, "width": 4, "encoding": "poisson"},
        },
        ckpt,
    )
    rc = cli.main(["energy", "--checkpoint", str(ckpt), "--input", "digits", "--batch", "3", "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    torch.manual_seed(0)  # energy's default --seed, the spikes drawn right after it
    want = tools.energy(model, poisson_encode(x, 2), T=2, batch_size=3)
    assert got["total_sops"] == pytest.approx(want.total_sops)
    assert got["layers"][0]["kind"] == "spikes" and got["image_size"] == [8, 8]

    rc = cli.main(
        ["energy", "--model", "sew_resnet18_cifar", "--width", "4", "--T", "1", "--input", "digits", "--batch", "2"]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "mJ per image" in text and "layer4.1.conv2" in text


def test_tools_namespace():
    import importlib

    import spikeforge

    assert callable(spikeforge.tools.energy) and spikeforge.tools.energy is tools.energy
    assert importlib.import_module("spikeforge.tools.monitor").__name__ == "spikeforge.tools.monitor"
    assert importlib.import_module("spikeforge.tools.energy").energy is tools.energy  # the module behind it


def test_a_per_sample_batch_whose_shape_reads_as_a_sequence():
    """A batch of 3 images with 3 channels at T = 3 ([3, 3, H, W]) read as a sequence [T, B, ...] at the stem:
    its MACs per step a third, the ANN energy too small. The model's own per-sample input runs once."""
    torch.manual_seed(0)
    reports = [tools.energy(models.sew_resnet18_cifar(T=3, width=8), torch.rand(b, 3, 16, 16)) for b in (2, 3)]
    (a, b) = reports
    assert a.layers[0].steps == b.layers[0].steps == 1
    assert a.layers[0].macs == b.layers[0].macs and a.total_macs == b.total_macs
    assert a.ann_energy_mj == pytest.approx(b.ann_energy_mj)
