"""E-SpikeFormer (Spike-driven Transformer v3): parameter counts against the paper, forward and backward,
integer spikes through every layer (the convolutions' count path), the attention against the paper's
formula, the spikeforge build against the reference build, train / eval modes and the reset between
batches, the energy tool's counting of integer spikes, bad arguments, and `spikeforge train`."""

import json
import math

import numpy as np
import pytest
import torch

import spikeforge as sf
from spikeforge import cli, data, models, tools
from spikeforge.models import sdt_v3
from spikeforge.nn import ILIF, MultiStep
from spikeforge.tools.energy import input_kind


pytestmark = pytest.mark.usefixtures("one_thread")


def _count(fn, **kw):
    with torch.device("meta"):
        m = fn(**kw)
    return sum(p.numel() for p in m.parameters())


SMALL = dict(dims=(8, 16, 32, 40), num_heads=4)  # the same layers at a width a CPU runs in milliseconds


def _small(T=1, **kw):
    return models.e_spikeformer_5m(num_classes=4, T=T, **{**SMALL, **kw})


def _ilifs(m):
    return [x for x in m.modules() if isinstance(x, ILIF)]


def _warm_bn(m, *xs):
    """Running statistics = the batches' own (momentum None, one forward each): an untrained net at the initial
    statistics (mean 0, var 1) fires too little in eval mode to show anything."""
    for bn in m.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.momentum = None
            bn.reset_running_stats()
    was = m.training
    m.train()
    with torch.no_grad():
        for x in xs:
            m(x)
    m.train(was)


# -------------------------------------------------------------------------------------------------
# parameter counts
# -------------------------------------------------------------------------------------------------
def test_parameter_counts_are_the_papers():
    # exact counts (1000 classes) and the paper's table (5.1 / 10.0 / 19.0M; the released code's _s / _m / _l)
    exact = {"e_spikeformer_5m": 5_105_608, "e_spikeformer_10m": 10_023_112, "e_spikeformer_19m": 18_987_504}
    for name, n in exact.items():
        assert _count(models.MODELS[name]) == n
    assert [round(n / 1e6, 1) for n in exact.values()] == [5.1, 10.0, 19.0]
    assert set(exact) <= set(models.TRANSFORMER_MODELS) and set(exact) <= set(models.MODELS)
    # the head is the only part the class count changes; heads, T and D change nothing
    assert _count(models.e_spikeformer_5m) - _count(models.e_spikeformer_5m, num_classes=10) == 990 * 193
    base = _count(models.e_spikeformer_5m)
    assert base == _count(models.e_spikeformer_5m, num_heads=4, T=4, D=8)


def test_layout_is_the_released_code():
    m = models.e_spikeformer_19m()
    attns = [x for x in m.modules() if isinstance(x, sdt_v3.ESpikeAttention)]
    assert [(a.dim, a.num_heads, a.v_ratio) for a in attns] == [(256, 8, 4)] * 6 + [(360, 8, 4)] * 2
    assert attns[0].v_conv.out_channels == 1024 and attns[0].proj_conv.in_channels == 1024
    assert attns[0].scale == (256 // 8) ** -0.5
    stages = (m.conv_blocks1_1, m.conv_blocks1_2, m.conv_blocks2, m.blocks3, m.blocks4)
    assert [len(s) for s in stages] == [1, 1, 2, 6, 2]
    assert m.downsample1_1.conv.kernel_size == (7, 7) and m.downsample1_1.conv.stride == (2, 2)
    assert m.downsample4.conv.stride == (1, 1) and m.downsample4.conv.bias is not None
    assert m.blocks3[0].sepconv.dwconv.kernel_size == (3, 3) and m.conv_blocks2[0].sepconv.dwconv.kernel_size == (7, 7)
    # every neuron is an I-LIF with spikes 0..4; at T=1 it fires round(clamp(x, 0, 4)) of its input itself
    neurons = [x for x in m.modules() if isinstance(x, sf.nn.neuron._Neuron)]
    assert neurons and all(type(x) is ILIF and x.D == 4 for x in neurons) and m.D == 4 and m.T == 1
    x = torch.randn(1, 1000) * 3
    sn = neurons[0]
    sn.reset()
    torch.testing.assert_close(sn(x), torch.round(torch.clamp(x, 0, 4)), rtol=0, atol=0)


# -------------------------------------------------------------------------------------------------
# forward, backward, integer spikes
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1, 2])
def test_forward_backward_shapes(T, device):
    m = _small(T=T).to(device)
    for x in (torch.rand(3, 3, 32, 32, device=device) * 2, torch.rand(T, 3, 3, 32, 32, device=device) * 2):
        out = m(x)
        assert out.shape == (T, 3, 4) and torch.isfinite(out).all()
    m.zero_grad()
    out.mean(0).logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient reached {missing[:5]}"
    # the 5.1M model itself at a small image (224 -> 14x14 tokens; 32 -> 2x2)
    full = models.e_spikeformer_5m(num_classes=10).to(device)
    out = full(torch.rand(2, 3, 32, 32, device=device))
    assert out.shape == (1, 2, 10)
    out.sum().backward()


def test_integer_spikes_reach_every_layer_on_the_count_path(monkeypatch):
    """Every neuron emits integer counts 0..D (not only 0/1), and every convolution after a neuron receives
    them through ops.spike_conv2d, which keeps counts for backward as uint8."""
    from spikeforge.ops import spike as spike_ops

    m = _small(T=2)
    outs = []
    for sn in _ilifs(m):
        sn.register_forward_hook(lambda mod, i, o: outs.append(o.detach()))
    kinds, real = [], spike_ops.spike_conv2d

    def spy(s, *a, **k):
        kinds.append(spike_ops.spike_stats(s)[1])
        return real(s, *a, **k)

    monkeypatch.setattr(spike_ops, "spike_conv2d", spy)
    saved = []

    def pack(t):
        if t.dtype == torch.uint8 and t.numel():
            saved.append(int(t.max()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = m(torch.rand(4, 3, 32, 32) * 3)
    out.sum().backward()
    assert len(outs) == len(_ilifs(m))
    for o in outs:
        assert torch.equal(o, o.round()) and float(o.min()) >= 0 and float(o.max()) <= 4
    assert sum(float(o.max()) > 1 for o in outs) > len(outs) // 2  # integer spikes, not binary ones
    # 4 downsampling convs after a neuron, 5 per conv block (4), 9 per transformer block (8)
    n_count_convs = sum(isinstance(c, sf.nn.SpikeCountConv2d) for c in m.modules())
    assert n_count_convs == 4 + 5 * 4 + 9 * 8 == len(kinds)
    assert set(kinds) <= {"binary", "counts"} and kinds.count("counts") > len(kinds) // 2
    assert saved and max(saved) > 1  # uint8 copies of count inputs, 1 byte per element


def test_attention_is_the_papers_formula():
    """S(((Q/D)(K/D)^T)(V/D) * 2 scale) with the released code's order and normalised spikes equals what the
    module computes from the integer counts (Q (K^T V) * 2 scale / D^3), bit for bit in float64."""
    D = 4
    sn = sdt_v3._neuron_factory("ilif", None, D, "spikeforge")[0]
    attn = sdt_v3.ESpikeAttention(16, 2, sn, levels=D).double()
    got = {}
    for name in ("q_sn", "k_sn", "v_sn"):
        getattr(attn, name).register_forward_hook(lambda mod, i, o, name=name: got.__setitem__(name, o))
    attn.attn_sn.register_forward_pre_hook(lambda mod, i: got.__setitem__("pre", i[0]))
    x = torch.randn(2, 3, 16, 3, 4, dtype=torch.float64) * 2
    with torch.no_grad():
        attn(x)
    T, B, C, H, W = x.shape
    q, k, v = (got[n].flatten(3).transpose(-1, -2) for n in ("q_sn", "k_sn", "v_sn"))  # [T, B, N, C]
    assert float(torch.cat([q.flatten(), k.flatten(), v.flatten()]).max()) > 1
    q, k = (t.reshape(T, B, H * W, 2, 8).permute(0, 1, 3, 2, 4) / D for t in (q, k))
    v = v.reshape(T, B, H * W, 2, 32).permute(0, 1, 3, 2, 4) / D
    ref = ((q @ k.transpose(-2, -1)) @ v) * (8**-0.5 * 2)
    ref = ref.transpose(2, 3).reshape(T, B, H * W, 64).transpose(-1, -2).reshape(T, B, 64, H, W)
    torch.testing.assert_close(got["pre"], ref, rtol=0, atol=0)


def test_spikeforge_model_equals_reference_model():
    """The spikeforge build (fused I-LIF, event-driven count convolutions, uint8 saved inputs) computes what
    the reference build (reference.ilif, plain convolutions) computes: outputs, gradients, BN statistics."""
    torch.manual_seed(0)
    m, r = _small(T=2).double(), _small(T=2, backend="reference").double()
    assert m.compact and not r.compact and all(type(x) is sdt_v3.RefILIF for x in _ilifs(r))
    r.load_state_dict(m.state_dict())
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64) * 2
    for _ in range(2):  # twice: running statistics and the per-forward reset
        m.zero_grad(), r.zero_grad()
        om, orf = m(x), r(x)
        torch.testing.assert_close(om, orf, rtol=1e-9, atol=1e-9)
        om.square().sum().backward()
        orf.square().sum().backward()
        scale = max(float(p.grad.abs().max()) for p in r.parameters())
        for (n, a), b in zip(m.named_parameters(), r.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9 * scale, msg=lambda s, n=n: f"{n}: {s}")
    for (n, a), b in zip(m.named_buffers(), r.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=lambda s, n=n: f"{n}: {s}")


def test_static_input_equals_repeated_sequence():
    m = _small(T=3).double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2
    _warm_bn(m, x)
    torch.testing.assert_close(m(x), m(x.unsqueeze(0).expand(3, *x.shape).contiguous()), rtol=1e-9, atol=1e-9)


# -------------------------------------------------------------------------------------------------
# modes and state
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1, 2])
def test_train_eval_modes_and_reset_between_batches(T):
    m = _small(T=T)
    xa, xb = torch.rand(2, 3, 32, 32) * 3, torch.rand(3, 3, 32, 32) * 3
    _warm_bn(m, torch.cat([xa, xb]))
    for training in (True, False):
        m.train(training)
        with torch.no_grad():
            first = m(xa)
            assert first.abs().sum() > 0
            m(xb)  # another batch, of another size, in between: every forward starts from rest
            torch.testing.assert_close(m(xa), first, rtol=0, atol=0)
    # the membranes hold the last batch's state after a call and are cleared by the next call
    with torch.no_grad():
        m(xb)
        assert all(sn.v is not None and sn.v.shape[0] == 3 for sn in _ilifs(m))
        m(xa)
        assert all(sn.v.shape[0] == 2 for sn in _ilifs(m))
    # eval: BN uses the running statistics, so every sample is independent of its batch; training: the
    # batch's statistics (a different answer for a batch that differs) and the running statistics move
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(torch.cat([xa, xb]))[:, :2], m(xa), rtol=1e-5, atol=1e-5)
    m.train()
    before = [b.running_mean.clone() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        assert not torch.allclose(m(torch.cat([xa, xb]))[:, :2], m(xa))
    after = [b.running_mean for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_membrane_carries_over_the_time_steps():
    """T > 1: the I-LIF keeps its residual membrane (soft reset, leak 1/2) from step to step; the same input
    repeated gives different spikes at step 2 than a fresh neuron would."""
    m = _small(T=2)
    sn = m.sn()
    x = torch.full((2, 1, 5), 1.4)
    s = sn(x)
    # step 1: H = 1.4 -> S = 1, V = 0.4; step 2: H = 0.2 + 1.4 = 1.6 -> S = 2
    assert s[0].eq(1).all() and s[1].eq(2).all()


# -------------------------------------------------------------------------------------------------
# energy: an integer spike s is s synaptic events
# -------------------------------------------------------------------------------------------------
def test_energy_counts_an_integer_spike_as_that_many_events():
    T, B, D = 3, 4, 4
    counts = ILIF(D=D, tau=None)(torch.rand(T, B, 6) * 5)
    assert float(counts.max()) > 1
    lin = MultiStep(torch.nn.Linear(6, 5))
    r = tools.energy(lin, counts, T=T, batch_size=B).layers[0]
    # event-driven: each input k triggers k accumulates of its 5 weights
    assert r.kind == "counts" and r.sops == pytest.approx(float(counts.sum()) * 5 / B)
    assert r.rate == pytest.approx(float(counts.mean())) and r.energy_pj == pytest.approx(0.9 * r.sops)
    # the same as the binary spikes of D virtual steps per step (ops.counts_to_binary): the papers' count
    binary = sf.ops.counts_to_binary(counts, D).transpose(0, 1).reshape(T * D, B, 6)
    rb = tools.energy(lin, binary, T=T * D, batch_size=B).layers[0]
    assert rb.kind == "spikes" and rb.sops == pytest.approx(r.sops) and rb.rate == pytest.approx(r.rate / D)
    # integer dtypes count the same way
    ri = tools.energy(MultiStep(torch.nn.Linear(6, 5)), counts.to(torch.uint8).float(), T=T, batch_size=B)
    assert ri.layers[0].sops == pytest.approx(r.sops)
    assert input_kind(counts.to(torch.uint8)) == ("counts", pytest.approx(float(counts.mean())))


def test_energy_of_the_model_counts_integer_spikes_and_the_attention():
    torch.manual_seed(0)
    m = _small(T=2)
    x = torch.rand(3, 3, 32, 32) * 3
    k_out, q_out, outs = [], [], []
    for sn in _ilifs(m):
        sn.register_forward_hook(lambda mod, i, o: outs.append(o))
    attn = m.blocks3[0].attn
    attn.k_sn.register_forward_hook(lambda mod, i, o: k_out.append(o))
    attn.q_sn.register_forward_hook(lambda mod, i, o: q_out.append(o))
    rep = tools.energy(m, x, eval_mode=False)  # training-mode BN: realistic firing for random weights
    layers = {r.name: r for r in rep.layers}
    stem = layers["downsample1_1.conv"]  # on the image, computed once before the repetition over T
    assert stem.kind == "real" and stem.steps == 1 and stem.mac_ops == stem.macs
    spiking = [r for r in rep.layers if r.name != "downsample1_1.conv"]
    assert all(r.kind in ("spikes", "counts", "mixed") for r in spiking)
    assert any(r.kind == "counts" and r.rate > 1 for r in spiking)  # mean count above one spike per input
    assert layers["head"].kind in ("spikes", "counts") and layers["head"].mac_ops == 0
    # the attention's products, reported by the block: each count of K adds a row of V (4 x 32 / 4 heads = 32
    # channels per head here), each count of Q a row of K^T V
    kv, qkv = layers["blocks3.0.attn.kT@v"], layers["blocks3.0.attn.q@(kT@v)"]
    k, q = k_out[-1], q_out[-1]
    assert kv.sops == pytest.approx(float(k.sum()) * 32 / 3) and qkv.sops == pytest.approx(float(q.sum()) * 32 / 3)
    assert kv.rate == pytest.approx(float(k.mean()))
    assert kv.macs == qkv.macs == 4 * 8 * 32 * 4  # per step and sample: heads x d_k x d_v x tokens
    # the neurons' rate: spikes per neuron per step, a spike s counted s times
    assert rep.neuron_rate == pytest.approx(sum(float(o.sum()) for o in outs) / sum(o.numel() for o in outs))


# -------------------------------------------------------------------------------------------------
# other neurons, bad arguments, the command line
# -------------------------------------------------------------------------------------------------
def test_binary_neurons_and_custom_neurons():
    m = _small(neuron="lif")  # the paper's binary-spike baseline: no 1/D factors in the attention
    assert all(isinstance(x, sf.nn.LIF) for x in m.modules() if isinstance(x, sf.nn.neuron._Neuron))
    assert all(a.levels == 1 for a in m.modules() if isinstance(a, sdt_v3.ESpikeAttention))
    m(torch.rand(2, 3, 32, 32)).sum().backward()
    m8 = _small(D=8, neuron_kwargs=dict(tau=None))
    assert all(x.D == 8 and x.tau is None for x in _ilifs(m8)) and m8.levels == 8
    calls = []

    def custom():
        calls.append(1)
        return ILIF(D=8)

    mc = _small(neuron=custom, D=8)
    assert calls and not mc.compact and mc.levels == 8
    mc(torch.rand(2, 3, 32, 32)).sum().backward()


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="dims must be four"):
        models.e_spikeformer_5m(dims=(8, 16, 32))
    with pytest.raises(ValueError, match="dims\\[0\\] must be even"):
        models.e_spikeformer_5m(dims=(9, 16, 32, 40))
    with pytest.raises(ValueError, match="num_heads"):
        models.e_spikeformer_5m(dims=(8, 16, 30, 40), num_heads=4)
    with pytest.raises(ValueError, match="D must be <= 255"):
        models.e_spikeformer_5m(D=256)
    with pytest.raises(ValueError, match="D must be an int"):
        models.e_spikeformer_5m(D=0)
    with pytest.raises(ValueError, match="neuron must be"):
        models.e_spikeformer_5m(neuron="alif")
    with pytest.raises(ValueError, match="neuron_kwargs"):
        models.e_spikeformer_5m(neuron_kwargs=dict(D=8))
    with pytest.raises(ValueError, match="backend"):
        models.e_spikeformer_5m(backend="cuda")
    with pytest.raises(ValueError, match="dim / depth do not apply"):
        models.e_spikeformer_10m(dim=64)
    with pytest.raises(ValueError, match="num_heads \\(3\\) must divide dim \\(16\\)"):
        sdt_v3.ESpikeAttention(16, 3, ILIF, levels=4)
    attn = sdt_v3.ESpikeAttention(16, 2, ILIF, levels=4)
    with pytest.raises(ValueError, match="built for 16 channels"):
        attn(torch.rand(1, 2, 8, 2, 2))
    with pytest.raises(ValueError, match="T, B, C, H, W"):
        attn(torch.rand(2, 16, 2, 2))
    m = _small()
    with pytest.raises(ValueError, match="3 input channels"):
        m(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="T=1"):
        m(torch.rand(2, 2, 3, 32, 32))


def _digits_npz(tmp_path, n_train=64, n_test=32):
    x, y = data.load_digits()
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x=(x[:n_train].reshape(-1, 1, 8, 8) * 15).astype(np.uint8),
        y=y[:n_train],
        x_test=(x[n_train : n_train + n_test].reshape(-1, 1, 8, 8) * 15).astype(np.uint8),
        y_test=y[n_train : n_train + n_test],
    )
    return path


def test_train_command_runs_e_spikeformer(tmp_path, capsys):
    path, out = _digits_npz(tmp_path), tmp_path / "run.json"
    rc = cli.main(
        [
            "train",
            "--dataset",
            str(path),
            "--model",
            "e_spikeformer_5m",
            "--image-size",
            "16",
            "--T",
            "1",
            "--epochs",
            "1",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    res = json.loads(out.read_text())
    assert rc == 0 and res["config"]["model"] == "e_spikeformer_5m" and 0.0 <= res["test_acc"] <= 1.0
    assert res["n_params"] == _count(models.e_spikeformer_5m, num_classes=10, in_channels=1)
    # the other transformers' size options are refused in one line
    capsys.readouterr()
    rc = cli.main(
        [
            "train",
            "--dataset",
            str(path),
            "--model",
            "e_spikeformer_5m",
            "--dim",
            "64",
            "--epochs",
            "1",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "dim / depth do not apply" in err and "Traceback" not in err


def test_energy_command_runs_e_spikeformer(capsys):
    rc = cli.main(
        [
            "energy",
            "--model",
            "e_spikeformer_5m",
            "--T",
            "1",
            "--image-size",
            "32",
            "--batch",
            "2",
            "--train-mode",
            "--json",
        ]
    )
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["model"] == "e_spikeformer_5m" and rep["total_sops"] > 0
    assert any(layer["kind"] == "counts" for layer in rep["layers"]) and math.isfinite(rep["total_energy_mj"])


def test_count_fed_batch_norms_scale_eps_as_the_released_division_by_D():
    """The released code divides every spike by D before the next convolution; here the convolutions take the
    counts, so the BN after each sees D^2 times the variance and takes eps D^2 (eps 1e-5 as is moved BN's
    output by about 4e-3 and flipped spikes from the first block on, against the released model). The
    image's own BN and a binary-spike model keep eps 1e-5."""
    from torch import nn

    for D, neuron in ((4, "ilif"), (3, "ilif"), (4, "lif")):
        m = sdt_v3.e_spikeformer((8, 16, 32, 40), 8, num_classes=5, D=D, neuron=neuron)
        levels = D if neuron == "ilif" else 1
        bns = [(n, b) for n, b in m.named_modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
        assert len(bns) > 20
        for name, bn in bns:
            want = 1e-5 if name.startswith("downsample1_1.") else 1e-5 * levels**2
            assert bn.eps == pytest.approx(want), name
