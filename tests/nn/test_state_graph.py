"""The state contract of spikeforge.nn's stateful modules (docs/bad_inputs.md, "State of the modules"):

- the state left by a call keeps its autograd graph: a loss on ``node.v`` (membrane read-out) and a sequence
  fed in consecutive chunks without a reset give the gradients of one call over the whole sequence with
  spikeforge.reference (neurons in both step modes, PSN streaming, attention blocks, the models' fused
  BN + neuron);
- truncation is explicit: ``detach()`` / ``nn.detach_net`` keep the values and cut the graph;
- a call that raises changes nothing (states, streaming windows, step counters, cached plans), and a
  streaming step rejects what the multi-step op rejects, on every step.
"""

from __future__ import annotations

import pytest
import torch

import spikeforge as sf
from spikeforge import models, reference
from spikeforge.nn.neuron import _Neuron

from spikeforge.testing import dyadic

NEURON_KW = [
    pytest.param("LIF", dict(tau=2.0), id="lif"),
    pytest.param("LIF", dict(tau=4.0, v_reset=None, decay_input=False, surrogate="atan"), id="lif_soft_nodecay"),
    pytest.param("IF", dict(detach_reset=True), id="if_detach"),
    pytest.param("IF", dict(v_reset=None, surrogate="rect"), id="if_soft"),
    pytest.param("PLIF", dict(init_tau=4.0 / 3.0), id="plif"),
    pytest.param("PLIF", dict(num_channels=3, v_reset=-0.5), id="plif_c"),
]


def _reference(cls: str, kw: dict, x, w):
    """One call over the whole sequence with spikeforge.reference -> (spike_seq, v_seq)."""
    kw = dict(kw)
    if cls == "LIF":
        return reference.lif(x, return_v="seq", **kw)
    if cls == "IF":
        return reference.if_neuron(x, return_v="seq", **kw)
    kw.pop("init_tau", None)
    kw.pop("num_channels", None)
    return reference.plif(x, w, return_v="seq", **kw)


def _grads(loss, leaves):
    return torch.autograd.grad(loss, leaves)


def _dtype_tol(device):
    """float64 on CPU (tight); CUDA kernels take float32 (dyadic data keeps the spikes exact there)."""
    if device == "cpu":
        return torch.float64, dict(rtol=1e-9, atol=1e-12)
    return torch.float32, dict(rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls,kw", NEURON_KW)
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_chunks_and_readout_match_one_reference_call(cls, kw, step_mode, device):
    """Chunks of 3, 1 and 4 steps (multi-step) or 8 single steps, without a reset, plus a loss on node.v:
    spikes, v and the gradients of x and PLIF's w equal one reference call over the sequence."""
    dtype, tol = _dtype_tol(device)
    T, B, C = 8, 2, 3
    x = (dyadic((T, B, C, 4), -8, 24, dtype=dtype, device=device) * 1.5).requires_grad_()
    node = getattr(sf.nn, cls)(step_mode=step_mode, **kw).to(device, dtype)
    w = node.w if cls == "PLIF" else None
    g_s = torch.randn(T, B, C, 4, dtype=dtype).to(device)
    g_v = torch.randn(B, C, 4, dtype=dtype).to(device)

    if step_mode == "m":
        chunks = [node(x[a:b]) for a, b in ((0, 3), (3, 4), (4, 8))]
    else:
        chunks = [node(x[t]).unsqueeze(0) for t in range(T)]
    s = torch.cat(chunks)
    assert node.v.grad_fn is not None  # the membrane keeps its graph
    leaves = [x] + ([node.w] if w is not None else [])
    got = _grads((s * g_s).sum() + (node.v * g_v).sum(), leaves)

    w_ref = None if w is None else w.detach().clone().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    s_ref, v_ref = _reference(cls, kw, x_ref, w_ref)
    assert torch.equal(s.detach(), s_ref.detach())
    torch.testing.assert_close(node.v.detach(), v_ref[-1].detach(), **tol)
    want = _grads((s_ref * g_s).sum() + (v_ref[-1] * g_v).sum(), [x_ref] + ([w_ref] if w is not None else []))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    assert got[0][:3].abs().sum() > 0  # the first chunk gets gradient from the later ones


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_store_v_seq_keeps_its_graph(step_mode):
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    node = sf.nn.LIF(store_v_seq=True, step_mode=step_mode)
    if step_mode == "m":
        node(x[:2]), node(x[2:])
        assert node.v_seq.shape == (3, 2, 3)  # the last call's steps, as SpikingJelly
    else:
        for t in range(5):
            node(x[t])
        assert node.v_seq.shape == (5, 2, 3)  # every step since reset()
    g = torch.autograd.grad(node.v_seq.sum(), x)[0]
    assert g[:2].abs().sum() > 0  # through the state into the first chunk
    _, v_ref = reference.lif(x.detach(), return_v="seq")
    torch.testing.assert_close(node.v_seq.detach(), v_ref[-node.v_seq.shape[0] :])
    node.detach()
    assert not node.v_seq.requires_grad and not node.v.requires_grad


def test_detach_truncates_and_detach_net_reaches_every_module():
    """detach() keeps the values and cuts the graph: the second chunk's gradient is that of a fresh call from
    the detached state (truncated BPTT); detach_net does it for a whole network."""
    x = torch.randn(6, 2, 4, dtype=torch.float64) * 2
    net = torch.nn.Sequential(sf.nn.LIF(), torch.nn.Identity(), sf.nn.SlidingPSN(2, step_mode="s"))
    x1 = x[:3].clone().requires_grad_()
    net[0](x1)
    v_mid = net[0].v
    sf.nn.detach_net(net)
    assert not net[0].v.requires_grad and torch.equal(net[0].v, v_mid.detach())
    x2 = x[3:].clone().requires_grad_()
    s2 = net[0](x2)
    (g2,) = torch.autograd.grad(s2.sum() + net[0].v.sum(), x2)
    x2r = x[3:].clone().requires_grad_()
    s2r, v2r = reference.lif(x2r, v_mid.detach())
    torch.testing.assert_close(g2, torch.autograd.grad(s2r.sum() + v2r.sum(), x2r)[0])
    assert x1.grad is None
    # streaming windows: detached queue, values kept
    xs = torch.randn(3, 4, requires_grad=True)
    net[2](xs[0]), net[2](xs[1])
    assert all(q.requires_grad for q in net[2]._queue)
    sf.nn.detach_net(net)
    assert not any(q.requires_grad for q in net[2]._queue) and len(net[2]._queue) == 2
    with pytest.raises(TypeError, match="model"):
        sf.nn.detach_net([net])


def test_float_state_and_reset():
    node = sf.nn.LIF()
    x = torch.randn(3, 2, 4)
    node.v = 0.25  # SpikingJelly's convention: a float state is that value everywhere
    s, v = reference.lif(x, torch.full((2, 4), 0.25))
    assert torch.equal(node(x), s) and torch.equal(node.v, v)
    node.reset()
    assert node.v is None and node.v_seq is None


class _TwoState(_Neuron):
    """A neuron with two state variables (the shape of the base-class contract ALIF builds on): v is IF's
    membrane, b counts the spikes so far; b raises the threshold of the next call."""

    _state_names = ("v", "b")

    def _multi(self, x_seq, v_init, return_v, b_init):
        b0 = torch.zeros_like(x_seq[0]) if b_init is None else b_init
        s, v = reference.if_neuron(x_seq - 0.1 * b0, v_init, return_v=return_v)
        return s, v, b0 + s.sum(0)


def test_a_neuron_with_two_states():
    node = _TwoState()
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True) * 3
    node(x[:2])
    b_mid = node.b
    assert node.v.grad_fn is not None and b_mid.shape == (2, 3)
    s2 = node(x[2:])
    assert torch.equal(node.b, b_mid + s2.sum(0))
    g = torch.autograd.grad(node.v.sum(), x)[0]
    assert g[:2].abs().sum() > 0  # v's graph runs through both calls
    snap = (node.v, node.b)
    with pytest.raises(ValueError, match="reset"):
        node(torch.randn(2, 5, 3, dtype=torch.float64))
    assert node.v is snap[0] and node.b is snap[1]
    node.detach()
    assert not node.b.requires_grad and torch.equal(node.b, snap[1].detach())
    node.reset()
    assert node.v is None and node.b is None


# ------------------------------------------------------------------------------------------------
# a call that raises changes nothing
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_rejected_neuron_call_changes_nothing(step_mode):
    node = sf.nn.PLIF(num_channels=3, step_mode=step_mode, store_v_seq=True)
    good = torch.randn(4, 2, 3) if step_mode == "m" else torch.randn(2, 3)
    node(good)
    before = (node.v, node.v_seq)
    arg = "x_seq" if step_mode == "m" else "x"
    bad = [
        (good.long(), TypeError, arg + " must be float32"),
        ([1.0], TypeError, arg + " must be a torch.Tensor"),
        (torch.randn(4, 5, 3) if step_mode == "m" else torch.randn(5, 3), ValueError, "reset"),
        (torch.randn(4, 2, 4) if step_mode == "m" else torch.randn(2, 4), ValueError, "num_channels=3"),
    ]
    for x, err, msg in bad:
        with pytest.raises(err, match=msg):
            node(x)
        assert node.v is before[0] and node.v_seq is before[1]
    node.surrogate = "relu"
    with pytest.raises(ValueError, match="surrogate"):
        node(good)
    assert node.v is before[0] and node.v_seq is before[1]


def test_rejected_streaming_step_changes_nothing():
    """A rejected step leaves the queue and the step counter as they were, on every step; the step rejects
    what the multi-step op rejects (here: an integer step after two float ones, which torch.stack would
    have promoted silently)."""
    for m in (sf.nn.SlidingPSN(3, step_mode="s"), sf.nn.MaskedPSN(2, 4, lambda_init=1.0, step_mode="s")):
        x = torch.randn(4, 2, 5)
        m(x[0]), m(x[1])
        queue, t = list(m._queue), m._t
        for bad, err in (
            (x[2].long(), TypeError),
            (x[2].double(), ValueError),
            (torch.randn(3, 5), ValueError),
            ([0.0], TypeError),
        ):
            with pytest.raises(err):
                m(bad)
            assert [a is b for a, b in zip(m._queue, queue)] == [True] * len(queue) and m._t == t
        with pytest.raises(TypeError, match="x must be float32"):
            sf.nn.SlidingPSN(3, step_mode="s")(torch.ones(2, 5, dtype=torch.int32))  # the first step too
        with pytest.raises(ValueError, match="surrogate"):
            m.surrogate = "relu"
            m(x[2])
        m.surrogate = "atan"
        assert m._t == t and len(m._queue) == len(queue)
        m(x[2])  # the sequence continues where it was
        assert m._t == t + 1
    masked = sf.nn.MaskedPSN(2, 2, lambda_init=1.0, step_mode="s")
    x0, x1 = x[0], x[1]
    masked(x0), masked(x1)
    with pytest.raises(ValueError, match="T=2"):
        masked(x[2])
    assert masked._t == 2 and masked._queue[-1] is x1


def test_rejected_first_call_caches_no_plan(monkeypatch):
    """A plan measured on a first (CUDA) call is stored only once the op accepted the input."""
    fc = sf.nn.SpikeLinear(4, 3)
    monkeypatch.setattr(fc, "_choose", lambda s: (("dense", "binary"), True))  # as a first CUDA call
    with pytest.raises(ValueError, match="grad_mask"):
        fc(torch.ones(2, 4), grad_mask=torch.ones(3, 4))
    assert fc._plan is None
    fc(torch.ones(2, 4))
    assert fc._plan == ("dense", "binary")


# ------------------------------------------------------------------------------------------------
# attention blocks
# ------------------------------------------------------------------------------------------------
def _firing_block(cls, pre, backend="spikeforge", device="cpu", dtype=torch.float64, **kw):
    torch.manual_seed(3)
    # attention threshold 1.25: the attention inputs are integers (or multiples of 1/8 for SSA), and with the
    # papers' 0.5 a 0/1 input fires or not whatever the membrane, which would hide a restarted neuron
    opts = dict(tau=2.0, v_threshold=1.25, detach_reset=True)
    m = cls(16, 4, pre_activation=pre, backend=backend, attn_options=opts, **kw).to(device, dtype)
    for bn in m.modules():  # eval-mode BN (statistics do not depend on the chunking) that lets neurons fire
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.weight.data.fill_(2.0)
            bn.bias.data.uniform_(0.0, 1.5)
    return m.eval()


ATTN = [sf.nn.SSA, sf.nn.SDSA, sf.nn.QKTokenAttention, sf.nn.QKChannelAttention]


@pytest.mark.parametrize("cls", ATTN)
@pytest.mark.parametrize("pre", [False, True])
def test_attention_block_chunks_match_one_reference_call(cls, pre, device):
    """Chunks of 2, 1 and 3 steps without a reset (the attention neuron continues across the calls) give
    the outputs and gradients (input, weights) of one call over the sequence on the reference backend."""
    dtype, _ = _dtype_tol(device)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    x = (torch.rand(6, 2, 16, 3, 3, dtype=dtype) * 3).to(device).requires_grad_()
    m = _firing_block(cls, pre, device=device, dtype=dtype)
    ref = _firing_block(cls, pre, backend="reference", device=device, dtype=dtype)
    g = torch.randn(6, 2, 16, 3, 3, dtype=dtype).to(device)
    out = torch.cat([m(x[a:b]) for a, b in ((0, 2), (2, 3), (3, 6))])
    assert m.attn_state.v.grad_fn is not None
    params = [m.q_conv.weight, m.proj_conv.weight]
    got = torch.autograd.grad((out * g).sum(), [x] + params)
    xr = x.detach().clone().requires_grad_()
    out_ref = ref(xr)
    want = torch.autograd.grad((out_ref * g).sum(), [xr, ref.q_conv.weight, ref.proj_conv.weight])
    assert out_ref.abs().sum() > 0
    torch.testing.assert_close(out.detach(), out_ref.detach(), **tol)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    m.reset()  # from rest again: one call gives the same
    assert m.attn_state.at_rest
    torch.testing.assert_close(m(x.detach()), out_ref.detach(), **tol)


def test_attention_state_detach_reset_and_keep_state_false():
    x = torch.rand(4, 2, 16, 3, 3, dtype=torch.float64) * 3
    m = _firing_block(sf.nn.SDSA, True)
    m(x[:2].requires_grad_())
    m.detach()
    assert not m.attn_state.v.requires_grad and not m.pre_sn.v.requires_grad
    m(x[2:])
    m.reset()
    assert m.attn_state.at_rest and m.pre_sn.v is None
    once = _firing_block(sf.nn.SDSA, True, keep_state=False)
    first = once(x[:2])
    states = [n.v for n in once.modules() if isinstance(n, sf.nn.LIF)]
    with pytest.raises(ValueError, match="keep_state=False"):
        once(x[2:])
    assert [n.v for n in once.modules() if isinstance(n, sf.nn.LIF)] == states
    once.reset()
    assert torch.equal(once(x[:2]), first)


def test_attention_call_that_raises_half_way_restores_every_state(monkeypatch):
    m = _firing_block(sf.nn.SSA, True)
    x = torch.rand(2, 2, 16, 3, 3, dtype=torch.float64) * 3
    m(x)
    neurons = [n for n in m.modules() if isinstance(n, sf.nn.LIF)]
    before = [n.v for n in neurons] + [m.attn_state._value]

    def fail(*a, **k):
        raise ValueError("injected")

    monkeypatch.setattr(m, "_composed", fail)  # after the q/k/v neurons ran
    with pytest.raises(ValueError, match="injected"):
        m(x)
    assert [n.v for n in neurons] + [m.attn_state._value] == before
    with pytest.raises(TypeError, match="float32"):  # checked before anything runs
        m(x.float())


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
def test_model_neuron_state_keeps_graph_through_the_fused_bn(device):
    """The models' fused BN + neuron (compact) returns the neuron's state with its graph: a loss on it gives
    the gradients of the unfused layers."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8).to(device)
    grads = []
    for compact in (True, False):
        torch.manual_seed(0)
        m = models.sew_resnet18_cifar(T=2, width=8, num_classes=5, compact=compact).to(device)
        out = m(x)
        sn = m.layer1[0].sn1
        assert sn.v.grad_fn is not None
        loss = out.sum() + (sn.v * torch.linspace(-1, 1, sn.v.numel(), device=device).view(sn.v.shape)).sum()
        grads.append(torch.autograd.grad(loss, [m.stem[0].weight, m.layer1[0].conv1.weight]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_continuing_attention_uses_the_ops_neuron_defaults():
    """A continuing call runs ops.lif with the attention ops' own neuron defaults (not lif's threshold 1):
    the table in nn.attention must follow the ops' signatures."""
    import inspect

    from spikeforge import ops
    from spikeforge.nn.attention import _ATTN_DEFAULTS

    for op in (ops.ssa, ops.sdsa, ops.qk_token_attention, ops.qk_channel_attention):
        params = inspect.signature(op).parameters
        assert {k: params[k].default for k in _ATTN_DEFAULTS} == _ATTN_DEFAULTS, op.__name__


def test_deepcopy_after_a_forward_copies_the_state_detached():
    """copy.deepcopy of a model after a forward with autograd (a best-model snapshot, an EMA copy): the state
    in the graph once made it raise; the copy holds the state's values, detached, and continues the sequence
    as the original does; the original keeps its graph."""
    import copy

    torch.manual_seed(0)
    model = models.sew_resnet18_cifar(num_classes=10, T=2, width=4)
    model(torch.rand(2, 3, 8, 8)).mean().backward()
    twin = copy.deepcopy(model)
    assert any(isinstance(m, _Neuron) and m.v is not None and m.v.grad_fn is not None for m in model.modules())
    for a, b in zip(model.modules(), twin.modules()):
        if isinstance(a, _Neuron) and a.v is not None:
            assert b.v is not a.v and b.v.grad_fn is None and torch.equal(b.v, a.v)
    # modules in step mode "s" carry their state into the next call: the copy continues as the original
    x = torch.rand(3, 2, 5, requires_grad=True)
    for m in (
        sf.nn.LIF(step_mode="s"),
        sf.nn.MaskedPSN(2, 3, lambda_init=1.0, step_mode="s"),
        sf.nn.SlidingPSN(2, step_mode="s"),
    ):
        m(x[0] * 3)
        c = copy.deepcopy(m)
        assert torch.equal(c(x[1] * 3), m(x[1] * 3))
    block = _firing_block(sf.nn.SDSA, True)
    x = torch.rand(4, 2, 16, 3, 3, dtype=torch.float64) * 3
    block(x[:2].requires_grad_()).sum().backward()
    assert block.attn_state.v.grad_fn is not None
    twin = copy.deepcopy(block)
    assert twin.attn_state.v.grad_fn is None and torch.equal(twin(x[2:]), block(x[2:]))
