"""spikeforge.interop.spikingjelly: a patched SpikingJelly model is still a SpikingJelly model (its tools, state
API and checkpoints) and computes the same spikes and gradients on spikeforge's kernels.

Neuron-level cases feed dyadic inputs with tau in {2, 4}, so every forward intermediate is exact in float32
and spikes and membranes must be bitwise equal whatever the evaluation order; gradients sum over time in
different orders and are compared with a tolerance. Skipped when SpikingJelly is absent.
"""

import copy

import pytest
import torch
from torch import nn

from spikeforge.testing import dyadic

pytest.importorskip("spikingjelly")
from spikingjelly.activation_based import base, functional, layer, neuron, surrogate  # noqa: E402

from spikeforge import ops  # noqa: E402
from spikeforge.interop import spikingjelly as sj  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5

SURROGATES = {  # SpikingJelly surrogate -> the spikeforge name it must map to
    "Sigmoid": (surrogate.Sigmoid(alpha=2.0), "sigmoid"),
    "ATan": (surrogate.ATan(alpha=3.0), "atan"),
    "Rect": (surrogate.Rect(alpha=0.5), "rect"),
    "PiecewiseQuadratic": (surrogate.PiecewiseQuadratic(alpha=2.0), "piecewise_quadratic"),
    "PiecewiseExp": (surrogate.PiecewiseExp(alpha=3.0), "piecewise_exp"),
    "Erf": (surrogate.Erf(alpha=1.0), "erf"),
    "SoftSign": (surrogate.SoftSign(alpha=1.0), "soft_sign"),
    "SuperSpike": (surrogate.SuperSpike(alpha=1.0), "super_spike"),
}


@pytest.fixture
def op_calls(monkeypatch):
    """Counts the spikeforge ops the drop-ins call (a fused path that silently fell back would not count)."""
    calls = []
    for name in ("if_neuron", "lif", "plif", "ilif", "ternary_lif", "psn", "sliding_psn"):
        real = getattr(ops, name)

        def spy(*a, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(sj.ops, name, spy)
    return calls


def _run(model, x, loss_weight):
    """Forward + backward of sum(out * loss_weight) -> (out, x.grad, {param name: grad})."""
    functional.reset_net(model)
    x = x.clone().requires_grad_()
    out = model(x)
    (out * loss_weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out.detach(), x.grad, grads


def _compare(sj_model, x, expect_classes, calls=None):
    patched = copy.deepcopy(sj_model)
    same, report = sj.patch(patched)
    assert same is patched
    assert [r[2] for r in report.replaced] == expect_classes and not report.skipped
    assert all(r[3] == "fused" for r in report.replaced), report
    functional.reset_net(sj_model)
    g = torch.randn_like(sj_model(x).detach())  # upstream gradient of the output's shape
    want = _run(sj_model, x, g)
    n_before = len(calls) if calls is not None else 0
    got = _run(patched, x, g)
    if calls is not None:
        assert len(calls) - n_before == len(expect_classes), "every swapped node must run its spikeforge op"
    assert 0 < want[0].sum() < want[0].numel(), "the case must exercise both firing and not firing"
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=RTOL, atol=ATOL)
    assert set(got[2]) == set(want[2])
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], rtol=RTOL, atol=ATOL, msg=name)
    return patched


# ------------------------------------------------------------------------------------------------------
# numbers
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sg_name", sorted(SURROGATES))
@pytest.mark.parametrize(
    "tau,decay_input,v_reset,detach_reset",
    [(2.0, True, 0.0, False), (4.0, False, None, True), (2.0, False, -0.5, False)],
)
def test_lif_node_every_surrogate(sg_name, tau, decay_input, v_reset, detach_reset, op_calls):
    sg, name = SURROGATES[sg_name]
    node = neuron.LIFNode(
        tau=tau,
        decay_input=decay_input,
        v_reset=v_reset,
        v_threshold=0.75,
        detach_reset=detach_reset,
        surrogate_function=sg,
        step_mode="m",
    )
    x = dyadic((6, 2, 3, 4), -8, 24)
    patched = _compare(node, x, ["LIFNode"], op_calls)
    assert isinstance(patched, neuron.LIFNode) and patched.surrogate_function is not sg  # deepcopy
    assert sj.surrogate_of(patched.surrogate_function) == (name, sg.alpha)


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_if_and_plif_nodes(v_reset, op_calls):
    x = dyadic((6, 2, 3, 4), -8, 24)
    _compare(
        neuron.IFNode(v_reset=v_reset, step_mode="m", surrogate_function=surrogate.ATan()), x, ["IFNode"], op_calls
    )
    plif = neuron.ParametricLIFNode(init_tau=2.0, v_reset=v_reset, step_mode="m", detach_reset=True)
    _compare(plif, x, ["ParametricLIFNode"], op_calls)


def test_conv_bn_lif_model_gives_identical_spikes_and_close_gradients(op_calls):
    torch.manual_seed(0)
    model = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, step_mode="m"),
        layer.BatchNorm2d(4, step_mode="m"),
        neuron.LIFNode(tau=2.0, step_mode="m", surrogate_function=surrogate.ATan()),
        layer.Flatten(step_mode="m"),
        layer.Linear(4 * 6 * 6, 10, step_mode="m"),
        neuron.ParametricLIFNode(init_tau=2.0, step_mode="m"),
        layer.Linear(10, 5, step_mode="m"),
        neuron.IFNode(step_mode="m", v_reset=None),
    )
    with torch.no_grad():
        model[4].weight.mul_(8.0)
        model[6].weight.mul_(8.0)
        model[6].bias.add_(0.5)
    x = torch.rand(4, 3, 2, 6, 6)
    patched = _compare(model, x, ["LIFNode", "ParametricLIFNode", "IFNode"], op_calls)
    functional.reset_net(patched)  # a batch of another size runs right after
    assert patched(torch.rand(4, 2, 2, 6, 6)).shape == (4, 2, 5)


def test_psn_family(op_calls):
    T = 6
    x = torch.randn(T, 3, 5)
    psn = neuron.PSN(T=T)
    nn.init.uniform_(psn.weight, -0.5, 0.5)
    nn.init.uniform_(psn.bias, -0.3, 0.3)
    _compare(psn, x, ["PSN"], op_calls)
    masked = neuron.MaskedPSN(k=3, T=T, lambda_init=0.5, step_mode="m")
    nn.init.uniform_(masked.weight, -0.5, 0.5)
    _compare(masked, x, ["MaskedPSN"], op_calls)
    sliding = neuron.SlidingPSN(k=3, step_mode="m")
    _compare(sliding, x + 0.5, ["SlidingPSN"], op_calls)


# ------------------------------------------------------------------------------------------------------
# integer and ternary spikes: ILIFNode, TernaryIFNode, TernaryLIFNode
# ------------------------------------------------------------------------------------------------------
def _compare_node(node, x, op, calls, fires=lambda s: s != 0):
    """node (multi-step, store_v_seq) against its patched copy on random x: spikes, v_seq and v bitwise, the
    gradients of x (through spikes and the membrane read-out) close; the patched node runs `op` once."""
    node.store_v_seq = True
    patched, report = sj.patch(copy.deepcopy(node))
    assert report.replaced[0][3] == "fused", report
    out = []
    for m in (node, patched):
        functional.reset_net(m)
        xr = x.clone().requires_grad_()
        n_calls = len(calls)
        s = m(xr)
        used = len(calls) - n_calls
        g = torch.randn(s.shape, generator=torch.Generator().manual_seed(0), dtype=s.dtype)
        ((s * g).sum() + (m.v_seq * g.flip(0)).sum()).backward()
        out.append((s, m.v_seq, m.v, xr.grad, used))
    (s1, vs1, v1, g1, used1), (s2, vs2, v2, g2, used2) = out
    assert used1 == 0 and used2 == 1 and calls[-1] == op
    assert 0.05 < fires(s1).float().mean() < 0.95, "the case must fire often and not always"
    assert s2.dtype == s1.dtype and torch.equal(s2, s1)
    assert torch.equal(vs2, vs1) and torch.equal(v2, v1) and not v2._is_view()
    tol = 1e-12 if x.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(g2, g1, rtol=tol, atol=tol * max(1.0, float(g1.abs().max())))
    return patched


@pytest.mark.parametrize(
    "kind,tau,decay_input,v_reset",
    [
        ("lif", 3.0, True, 0.0),
        ("lif", 1.7, False, 0.0),
        ("lif", 2.3, True, None),
        ("plif", 3.0, True, 0.0),
        ("plif", 1.3, False, None),
        ("if", None, None, 0.0),
    ],
)
def test_lif_family_is_spikingjellys_at_any_tau(kind, tau, decay_input, v_reset, op_calls):
    """Random inputs and taus whose 1/tau is not a power of two: the fused ops do SpikingJelly's arithmetic, so
    spikes and membranes are its own bit for bit."""
    kw = dict(v_reset=v_reset, surrogate_function=surrogate.ATan(), step_mode="m")
    node = {
        "lif": lambda: neuron.LIFNode(tau=tau, decay_input=decay_input, **kw),
        "plif": lambda: neuron.ParametricLIFNode(init_tau=tau, decay_input=decay_input, **kw),
        "if": lambda: neuron.IFNode(**kw),
    }[kind]()
    x = torch.randn(48, 3, 32, generator=torch.Generator().manual_seed(5)) * 1.5 + 0.6
    _compare_node(node, x, {"lif": "lif", "plif": "plif", "if": "if_neuron"}[kind], op_calls)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "tau,D,v_threshold,detach_reset",
    [
        (4.0 / 3.0, 4, 1.0, False),
        (1.7, 3, 0.6, True),
        (3.0, 2, 0.75, False),
        (2.5, 6, 1.3, True),
        (2.0, 4, 1.0, False),
        (8.0, 8, 1.0, False),
    ],
)
def test_ilif_node_is_spikingjellys_multi_step(tau, D, v_threshold, detach_reset, dtype, op_calls):
    """Every tau runs fused, with SpikingJelly's multi-step numbers bit for bit: its default 4/3 and other
    taus whose 1 - 1/tau is not a power of two (where V - V/tau + X would round differently) included."""
    node = neuron.ILIFNode(
        tau=tau,
        v_threshold=v_threshold,
        surrogate_function=surrogate.MultiLevelSpikeCount(D),
        detach_reset=detach_reset,
        step_mode="m",
    )
    x = (torch.randn(64, 3, 32, generator=torch.Generator().manual_seed(1)) * 1.5 * v_threshold).to(dtype)
    patched = _compare_node(node, x, "ilif", op_calls)
    assert isinstance(patched, neuron.ILIFNode) and isinstance(patched, neuron.LIFNode)


def test_ilif_node_default_runs_fused_with_spikingjellys_rounding(op_calls):
    """ILIFNode() as built (tau 4/3): x = [0.1, 0] (float32) gives SpikingJelly's V[1] = fl(0.25 * 0.1f) =
    0.025000000372529 (the LIF form fl(0.1f - fl(0.1f / 1.3333334)) would be 0.025000005960464), fused."""
    node = neuron.ILIFNode(step_mode="m", store_v_seq=True)
    patched, report = sj.patch(copy.deepcopy(node))
    assert report.replaced[0][3] == "fused" and patched.fused_blocker is None
    x = torch.tensor([[0.1], [0.0]])
    assert torch.equal(patched(x), node(x)) and torch.equal(patched.v_seq, node.v_seq) and op_calls == ["ilif"]
    assert patched.v_seq[1].item() == 0.025000000372529030


def test_ilif_node_that_does_not_fuse_runs_spikingjellys_code(op_calls):
    """A half-precision input, single steps, a non-positive threshold set after construction (ops.ilif
    refuses it): SpikingJelly's own code on the swapped node, with its numbers (and its error)."""
    node = neuron.ILIFNode(step_mode="m", store_v_seq=True)
    patched, _ = sj.patch(copy.deepcopy(node))
    x = torch.randn(32, 2, 16) * 1.5
    xh = x.half()
    assert torch.equal(patched(xh), node(xh)) and torch.equal(patched.v, node.v) and op_calls == []
    for m in (node, patched):
        m.reset()
        m.v_threshold = -0.5
    assert "v_threshold=-0.5" in patched.fused_blocker
    for m in (node, patched):
        with pytest.raises(ValueError, match="positive threshold"):
            m(x)
    assert op_calls == []
    for m in (node, patched):
        m.reset()
        m.v_threshold = 1.0
        m.step_mode = "s"
    assert torch.equal(torch.stack([patched(x[t]) for t in range(4)]), torch.stack([node(x[t]) for t in range(4)]))
    assert op_calls == []


def test_ilif_gradient_window_other_than_0_to_D_is_refused():
    node = neuron.ILIFNode(
        tau=2.0, surrogate_function=surrogate.MultiLevelSpikeCount(4, grad_window=(0.0, 3.0)), step_mode="m"
    )
    with pytest.raises(ValueError, match="grad_window"):
        sj.patch(node)
    assert type(node) is neuron.ILIFNode
    with pytest.warns(UserWarning, match="grad_window"):
        _, report = sj.patch(nn.Sequential(node), on_unsupported="skip")
    assert report.skipped[0][1] == "ILIFNode"


TERNARY_SURROGATES = ("Sigmoid", "ATan", "Erf", "PiecewiseExp", "SoftSign")


@pytest.mark.parametrize("sg_name", TERNARY_SURROGATES)
@pytest.mark.parametrize(
    "tau,decay_input,v_reset,detach_reset",
    [
        (2.0, True, 0.0, False),
        (3.0, True, None, False),
        (1.7, False, 0.25, True),
        (None, True, 0.0, True),
        (None, True, None, False),
    ],
)
def test_ternary_nodes_are_spikingjellys_multi_step(sg_name, tau, decay_input, v_reset, detach_reset, op_calls):
    """TernaryIFNode (tau None) and TernaryLIFNode, with SpikingJelly's two-sided surrogate, every reset."""
    sg, _ = SURROGATES[sg_name]
    kw = dict(v_threshold=0.75, v_reset=v_reset, surrogate_function=sg, detach_reset=detach_reset, step_mode="m")
    node = neuron.TernaryIFNode(**kw) if tau is None else neuron.TernaryLIFNode(tau=tau, decay_input=decay_input, **kw)
    x = torch.randn(64, 3, 32, generator=torch.Generator().manual_seed(2)) * (0.6 if tau is None else 1.2)
    patched = _compare_node(node, x, "ternary_lif", op_calls)
    s = patched(x)
    assert set(s.unique().tolist()) == {-1.0, 0.0, 1.0}


def test_ternary_reset_changed_outside_the_thresholds_runs_spikingjellys_code(op_calls):
    """SpikingJelly checks v_reset in (-v_th, v_th) when the node is built; a value set afterwards still runs
    its code, which ops.ternary_lif refuses: the swapped node runs SpikingJelly's code and says why."""
    node = neuron.TernaryLIFNode(tau=2.0, v_threshold=0.75, step_mode="m")
    patched, _ = sj.patch(copy.deepcopy(node))
    for m in (node, patched):
        m.v_reset = 0.9
    assert "v_reset=0.9" in patched.fused_blocker
    x = torch.randn(16, 2, 8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(patched(x), node(x)) and torch.equal(patched.v, node.v) and op_calls == []


def test_ternary_threshold_zero_in_float32_runs_spikingjellys_code(op_calls):
    """A threshold > 0 that float32 rounds to 0 (the kernels would fire at H = 0, ops.ternary_lif refuses it):
    the swapped node runs SpikingJelly's code with its numbers and says why."""
    node = neuron.TernaryLIFNode(tau=2.0, v_threshold=0.75, v_reset=None, step_mode="m")
    patched, _ = sj.patch(copy.deepcopy(node))
    for m in (node, patched):
        m.v_threshold = 1e-46
    assert "v_threshold=1e-46" in patched.fused_blocker
    x = torch.randn(16, 2, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(patched(x), node(x)) and torch.equal(patched.v, node.v) and op_calls == []


def test_ternary_float64_and_chunks(op_calls):
    node = neuron.TernaryLIFNode(tau=2.5, v_reset=None, step_mode="m", surrogate_function=surrogate.ATan())
    x = torch.randn(48, 2, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    patched = _compare_node(node, x, "ternary_lif", op_calls)
    grads = []
    for m in (node, patched):  # two chunks without a reset backpropagate through each other, as SpikingJelly's
        functional.reset_net(m)
        xr = x.clone().requires_grad_()
        s = torch.cat([m(xr[:20]), m(xr[20:])])
        ((s * torch.arange(48.0, dtype=x.dtype).view(48, 1, 1)).sum() + m.v.sum()).backward()
        grads.append(xr.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)
    node.surrogate_function = surrogate.PiecewiseLeakyReLU()  # no twin: SpikingJelly's code, the same numbers
    patched.surrogate_function = surrogate.PiecewiseLeakyReLU()
    n_calls = len(op_calls)
    for m in (node, patched):
        m.reset()
    assert torch.equal(patched(x), node(x)) and len(op_calls) == n_calls


# ------------------------------------------------------------------------------------------------------
# SpikingJelly's tools see the swapped nodes
# ------------------------------------------------------------------------------------------------------
def _mlp():
    torch.manual_seed(1)
    net = nn.Sequential(
        layer.Linear(8, 16, step_mode="m"),
        neuron.LIFNode(step_mode="m"),
        layer.Linear(16, 4, step_mode="m"),
        neuron.IFNode(step_mode="m"),
    )
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[2].weight.mul_(3.0)
    return net


def test_output_monitor_finds_the_swapped_nodes():
    pytest.importorskip("torch.utils.tensorboard", reason="spikingjelly.monitor imports tensorboard")
    from spikingjelly.activation_based import monitor

    net = _mlp()
    patched, _ = sj.patch(copy.deepcopy(net))
    x = torch.rand(4, 2, 8) * 2
    want_mon, got_mon = monitor.OutputMonitor(net, neuron.IFNode), monitor.OutputMonitor(patched, neuron.IFNode)
    net(x)
    patched(x)
    assert got_mon.monitored_layers == want_mon.monitored_layers == ["3"]
    assert len(got_mon.records) == 1 and torch.equal(got_mon.records[0], want_mon.records[0])
    assert monitor.OutputMonitor(patched, neuron.LIFNode).monitored_layers == ["1"]


def test_op_counters_and_energy_report_equal_the_unpatched_model():
    from spikingjelly.activation_based import op_counter
    from spikingjelly.activation_based.op_counter.base import DispatchCounterMode

    net = _mlp()
    patched, _ = sj.patch(copy.deepcopy(net))
    x = torch.rand(4, 2, 8) * 2

    def counts(model):
        functional.reset_net(model)
        counter = op_counter.NeuronStateCounter()
        with DispatchCounterMode([counter]):
            out = model(x)
        functional.reset_net(model)
        report = op_counter.estimate_simple_energy(model, x)
        return out, counter.get_metric_counts(), report.counts, report.energy_total_pj

    want, got = counts(net), counts(patched)
    assert torch.equal(got[0], want[0])
    assert want[1] and got[1:] == want[1:]


def test_reset_set_step_mode_and_detach_net():
    net = _mlp()
    patched, _ = sj.patch(net)
    x = torch.rand(4, 2, 8, requires_grad=True) * 2
    patched(x)
    assert patched[1].v.grad_fn is not None  # the state keeps its graph after a multi-step call
    functional.detach_net(patched)
    assert patched[1].v.grad_fn is None and patched[3].v.grad_fn is None
    functional.reset_net(patched)
    assert patched[1].v == 0.0 and isinstance(patched[1].v, float)
    functional.set_step_mode(patched, "s")
    assert patched[1].step_mode == "s" and patched[1].fused_blocker.startswith("step_mode 's'")
    ref = _mlp()
    functional.set_step_mode(ref, "s")
    want = torch.stack([ref(x[t]) for t in range(4)])
    got = torch.stack([patched(x[t]) for t in range(4)])
    assert torch.equal(got, want)


# ------------------------------------------------------------------------------------------------------
# the state API
# ------------------------------------------------------------------------------------------------------
def test_v_is_a_float_after_reset_and_assignable_from_a_float(op_calls):
    node = neuron.LIFNode(tau=2.0, v_reset=-0.25, step_mode="m")
    patched, _ = sj.patch(copy.deepcopy(node))
    assert patched.v == -0.25 and isinstance(patched.v, float) and patched.surrogate_function is not None
    x = dyadic((5, 2, 4), -8, 24)
    for m in (node, patched):
        m.v = 0.5  # SpikingJelly's convention: a float state is that value for every neuron
    assert torch.equal(patched(x), node(x)) and torch.equal(patched.v, node.v)
    assert op_calls == ["lif"]
    patched.reset()
    assert patched.v == -0.25 and isinstance(patched.v, float)


def test_memory_api_is_spikingjellys():
    node = neuron.IFNode(step_mode="m", store_v_seq=True)
    patched, _ = sj.patch(copy.deepcopy(node))
    assert list(patched._memories) == ["v"] and dict(patched.named_memories()) == {"v": 0.0}
    x = dyadic((5, 2, 4), -8, 24)
    (v,) = patched.materialize_states((x,), (0.0,), "m")
    assert v.shape == (2, 4) and torch.all(v == 0)
    node(x)
    patched(x)
    assert torch.equal(patched.v_seq, node.v_seq) and torch.equal(patched.v, node.v)
    assert not patched.v._is_view()  # detach() detaches it in place
    names = dict(base.named_memories(nn.Sequential(patched)))
    assert list(names) == ["0.v"] and names["0.v"] is patched.v
    memories = base.extract_memories(patched)
    patched.reset()
    base.load_memories(patched, memories)
    assert torch.equal(patched.v, node.v)
    # the functional API of SpikingJelly runs on a patched node too
    outputs, states = base.to_functional_forward(patched)((x,), (node.v,))
    node_out = node(x)
    assert torch.equal(outputs[0], node_out) and torch.equal(states[0], node.v)


def test_store_v_seq_in_single_step_mode():
    node = neuron.LIFNode(tau=2.0, step_mode="s", store_v_seq=True)
    patched, _ = sj.patch(copy.deepcopy(node))
    x = dyadic((5, 2, 4), -8, 24)
    for t in range(5):
        assert torch.equal(patched(x[t]), node(x[t]))
    assert patched.v_seq.shape == (5, 2, 4) and torch.equal(patched.v_seq, node.v_seq)


def test_store_v_seq_multi_step():
    node = neuron.LIFNode(tau=2.0, v_reset=None, step_mode="m", store_v_seq=True)
    patched, _ = sj.patch(copy.deepcopy(node))
    x = dyadic((5, 2, 4), -8, 24)
    node(x)
    patched(x)
    assert torch.equal(patched.v_seq, node.v_seq) and torch.equal(patched.v, node.v)


def test_batch_size_change_without_reset_behaves_as_spikingjelly():
    node = neuron.LIFNode(tau=2.0, v_reset=0.0, step_mode="m")
    patched, _ = sj.patch(copy.deepcopy(node))
    for shape in ((4, 3, 5), (4, 2, 5), (4, 2, 5)):  # the state of another shape restarts from v_reset
        x = dyadic(shape, -8, 24)
        assert torch.equal(patched(x), node(x)) and torch.equal(patched.v, node.v)


def test_state_keeps_its_graph_membrane_readout_and_chunks():
    x = dyadic((8, 2, 6), -8, 24)
    g = torch.randn(8, 2, 6)
    node = neuron.LIFNode(tau=2.0, step_mode="m", surrogate_function=surrogate.ATan())
    patched, _ = sj.patch(copy.deepcopy(node))
    grads = []
    for m in (node, patched):
        functional.reset_net(m)
        xr = x.clone().requires_grad_()
        s1 = m(xr[:3])  # two chunks without a reset: truncation only by an explicit detach
        s2 = m(xr[3:])
        ((torch.cat([s1, s2]) * g).sum() + m.v.sum()).backward()  # membrane read-out
        grads.append(xr.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=RTOL, atol=ATOL)
    functional.reset_net(patched)
    xr = x.clone().requires_grad_()
    patched(xr[:3])
    functional.detach_net(patched)
    patched(xr[3:]).sum().backward()
    assert torch.all(xr.grad[:3] == 0) and xr.grad[3:].abs().sum() > 0


# ------------------------------------------------------------------------------------------------------
# checkpoints and MaskedPSN's schedule
# ------------------------------------------------------------------------------------------------------
def _psn_model(T):
    torch.manual_seed(2)
    return nn.Sequential(
        layer.Linear(5, 6, step_mode="m"),
        neuron.PSN(T=T),
        layer.Linear(6, 6, step_mode="m"),
        neuron.MaskedPSN(k=2, T=T, lambda_init=0.25, step_mode="m"),
        layer.Linear(6, 6, step_mode="m"),
        neuron.SlidingPSN(k=3, step_mode="m"),
        layer.Linear(6, 4, step_mode="m"),
        neuron.ParametricLIFNode(step_mode="m"),
    )


def test_state_dict_loads_across_the_swap_in_both_directions():
    T = 5
    x = torch.randn(T, 3, 5)
    trained = _psn_model(T)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        trained[3].lambda_ = 0.75
    sd = trained.state_dict()
    assert sd["1.bias"].shape == (T, 1) and "3._lambda_" in sd and "3.mask0" in sd
    patched, _ = sj.patch(_psn_model(T))
    patched.load_state_dict(sd)  # SpikingJelly -> patched, strict
    functional.reset_net(trained)
    want = trained(x)
    assert patched[3].lambda_ == 0.75 and torch.equal(patched(x), want)
    back = _psn_model(T)
    back.load_state_dict(patched.state_dict())  # patched -> SpikingJelly, strict
    assert torch.equal(back(x), want)
    assert set(patched.state_dict()) == set(sd)


def test_masked_psn_lambda_schedule_takes_effect(op_calls):
    T = 6
    x = torch.randn(T, 3, 5)
    node = neuron.MaskedPSN(k=2, T=T, lambda_init=0.0, step_mode="m")
    nn.init.uniform_(node.weight, -1.0, 1.0)
    patched, _ = sj.patch(copy.deepcopy(node))
    outs = []
    for lam in (0.0, 0.5, 1.0):  # SpikingJelly's documented schedule: m.lambda_ = min(1, epoch / warmup)
        node.lambda_ = lam
        patched.lambda_ = lam
        want = node(x)
        assert torch.equal(patched(x), want)
        outs.append(want)
    assert not torch.equal(outs[0], outs[2])  # the schedule changes the numbers
    assert op_calls == ["psn"] * 3
    patched.step_mode = "s"  # streaming once the mask is fully applied: SpikingJelly's own code
    node.step_mode = "s"
    functional.reset_net(node)
    functional.reset_net(patched)
    assert torch.equal(torch.stack([patched(x[t]) for t in range(T)]), torch.stack([node(x[t]) for t in range(T)]))


# ------------------------------------------------------------------------------------------------------
# what runs SpikingJelly's own code, and what patch() refuses
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w_dtype,x_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_plif_parameter_in_another_dtype_than_the_input(w_dtype, x_dtype, op_calls):
    """SpikingJelly computes w.sigmoid() in w's dtype and lets the product promote it: a float32 w meeting float64
    input gives float32's sigmoid, widened (not float64's sigmoid of w), and a float64 w meeting float32 input
    float64's sigmoid rounded to float32. The fused op takes the same k: spikes and membranes are
    SpikingJelly's bit for bit, on inputs that land a membrane next to the threshold."""
    node = neuron.ParametricLIFNode(init_tau=3.0, step_mode="m", surrogate_function=surrogate.ATan())
    node.w.data = node.w.data.to(w_dtype)
    k = torch.sigmoid(node.w.detach()).to(x_dtype)
    x = torch.randn(8, 3, 32, generator=torch.Generator().manual_seed(3), dtype=x_dtype) * 1.5 + 0.6
    x[0, 0, :3] = torch.stack([1 / k, (1 / k).nextafter(torch.tensor(2.0, dtype=x_dtype)), 3 * k / k])
    patched, _ = sj.patch(copy.deepcopy(node))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    s1, s2 = node(xa), patched(xb)
    assert op_calls == ["plif"]
    assert torch.equal(s1, s2) and torch.equal(node.v, patched.v)
    g = torch.randn(s1.shape, generator=torch.Generator().manual_seed(4), dtype=x_dtype)
    (s1 * g).sum().backward()
    (s2 * g).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=RTOL, atol=ATOL)
    assert patched.w.grad.dtype == w_dtype
    torch.testing.assert_close(patched.w.grad, node.w.grad, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("tau", [0.0, -2.0])
def test_lif_node_whose_tau_was_set_to_what_the_op_refuses_runs_spikingjellys_code(tau, op_calls):
    """SpikingJelly checks tau > 1 when built only; a tau set afterwards that ops.lif refuses runs its code."""
    node = neuron.LIFNode(tau=2.0, step_mode="m")
    node.tau = tau
    patched, _ = sj.patch(copy.deepcopy(node))
    assert f"tau={tau}" in patched.fused_blocker
    x = dyadic((4, 2, 3), -8, 24)
    s1, s2 = node(x), patched(x)
    assert op_calls == []
    assert torch.equal(s1, s2)
    assert torch.equal(node.v.isnan(), patched.v.isnan())
    assert torch.equal(node.v.nan_to_num(), patched.v.nan_to_num())


def test_half_precision_and_changed_surrogate_run_spikingjellys_code(op_calls):
    node = neuron.LIFNode(tau=2.0, step_mode="m")
    patched, _ = sj.patch(copy.deepcopy(node))
    x = dyadic((5, 2, 4), -8, 24, dtype=torch.float16)
    assert torch.equal(patched(x), node(x)) and patched.v.dtype == node.v.dtype == torch.float16
    assert op_calls == []
    for m in (node, patched):
        m.reset()
        m.surrogate_function = surrogate.PiecewiseLeakyReLU()
    x = dyadic((5, 2, 4), -8, 24)
    assert torch.equal(patched(x), node(x)) and op_calls == []
    assert "PiecewiseLeakyReLU" in patched.fused_blocker


def test_unsupported_nodes_raise_or_are_skipped_with_a_warning():
    odd = nn.Sequential(
        nn.Linear(3, 3), neuron.LIFNode(step_mode="m", surrogate_function=surrogate.PiecewiseLeakyReLU())
    )
    with pytest.raises(ValueError, match="PiecewiseLeakyReLU"):
        sj.patch(odd)
    assert type(odd[1]) is neuron.LIFNode  # a refused patch changes nothing
    with pytest.warns(UserWarning, match="left 1"):
        same, report = sj.patch(odd, on_unsupported="skip")
    assert same is odd and type(odd[1]) is neuron.LIFNode and report.skipped[0][0] == "1"
    with pytest.raises(ValueError, match="alpha = 1"):
        sj.patch(neuron.LIFNode(step_mode="m", surrogate_function=surrogate.SuperSpike(alpha=2.0)))
    with pytest.raises(ValueError, match="spiking=False"):
        sj.patch(neuron.IFNode(step_mode="m", surrogate_function=surrogate.Sigmoid(spiking=False)))

    class MyLIF(neuron.LIFNode):
        pass

    with pytest.raises(ValueError, match="subclass"):
        sj.patch(nn.Sequential(MyLIF(step_mode="m")))
    mixed = nn.Sequential(neuron.IFNode(step_mode="m"), MyLIF(step_mode="m"))
    with pytest.raises(ValueError, match="subclass"):
        sj.patch(mixed)
    assert type(mixed[0]) is neuron.IFNode  # nothing swapped before every node was checked
    with pytest.raises(ValueError, match="on_unsupported"):
        sj.patch(odd, on_unsupported="ignore")
    with pytest.raises(TypeError, match="model"):
        sj.patch(None)


def test_patch_twice_and_unpatch():
    net = _mlp()
    patched, report = sj.patch(net)
    assert len(report.replaced) == 2 and "fused" in str(report)
    _, again = sj.patch(patched)
    assert not again.replaced and not again.skipped
    x = torch.rand(4, 2, 8)
    out = patched(x)
    v = patched[1].v
    assert sj.unpatch(patched) is net
    assert type(net[1]) is neuron.LIFNode and type(net[3]) is neuron.IFNode and net[1].v is v
    functional.reset_net(net)
    assert torch.equal(net(x), out)
