"""spikeforge.interop.spikingjelly.patch: a patched SpikingJelly model computes the same spikes and gradients.

Neuron-level cases feed dyadic inputs with tau in {2, 4}, so every forward intermediate is exact in float32
and spikes and membranes must be bitwise equal whatever the evaluation order; gradients sum over time in
different orders and are compared with a tolerance. Skipped when SpikingJelly is absent.
"""
import copy

import pytest
import torch
from torch import nn

from neuron_helpers import dyadic
from spikeforge import nn as sfnn

pytest.importorskip("spikingjelly")
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

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


def _run(model, x, loss_weight):
    """Forward + backward of sum(out * loss_weight) -> (out, x.grad, {param name: grad})."""
    functional.reset_net(model)
    x = x.clone().requires_grad_()
    out = model(x)
    (out * loss_weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


def _compare(sj_model, x, expect_classes):
    patched = copy.deepcopy(sj_model)
    patched, report = sj.patch(patched)
    assert [r[2] for r in report.replaced] == expect_classes and not report.skipped
    functional.reset_net(sj_model)
    g = torch.randn_like(sj_model(x).detach())  # upstream gradient of the output's shape
    want = _run(sj_model, x, g)
    got = _run(patched, x, g)
    assert 0 < want[0].sum() < want[0].numel(), "the case must exercise both firing and not firing"
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=RTOL, atol=ATOL)
    return patched, want[2], got[2]


@pytest.mark.parametrize("sg_name", sorted(SURROGATES))
@pytest.mark.parametrize("tau,decay_input,v_reset,detach_reset", [
    (2.0, True, 0.0, False), (4.0, False, None, True), (2.0, False, -0.5, False)])
def test_lif_node_every_surrogate(sg_name, tau, decay_input, v_reset, detach_reset):
    sg, name = SURROGATES[sg_name]
    node = neuron.LIFNode(tau=tau, decay_input=decay_input, v_reset=v_reset, v_threshold=0.75,
                          detach_reset=detach_reset, surrogate_function=sg, step_mode="m")
    x = dyadic((6, 2, 3, 4), -8, 24)
    patched, _, _ = _compare(node, x, ["LIF"])
    assert patched.surrogate == name and patched.alpha == sg.alpha and patched.tau == tau


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_if_and_plif_nodes(v_reset):
    x = dyadic((6, 2, 3, 4), -8, 24)
    _compare(neuron.IFNode(v_reset=v_reset, step_mode="m", surrogate_function=surrogate.ATan()), x, ["IF"])
    plif = neuron.ParametricLIFNode(init_tau=2.0, v_reset=v_reset, step_mode="m", detach_reset=True)
    patched, want, got = _compare(plif, x, ["PLIF"])
    assert patched.w is plif.w or torch.equal(patched.w, plif.w)
    torch.testing.assert_close(got["w"], want["w"], rtol=RTOL, atol=ATOL)


def test_conv_bn_lif_model_gives_identical_spikes_and_close_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, step_mode="m"), layer.BatchNorm2d(4, step_mode="m"),
        neuron.LIFNode(tau=2.0, step_mode="m", surrogate_function=surrogate.ATan()),
        layer.Flatten(step_mode="m"), layer.Linear(4 * 6 * 6, 10, step_mode="m"),
        neuron.ParametricLIFNode(init_tau=2.0, step_mode="m"),
        layer.Linear(10, 5, step_mode="m"), neuron.IFNode(step_mode="m", v_reset=None))
    with torch.no_grad():
        model[4].weight.mul_(8.0)
        model[6].weight.mul_(8.0)
        model[6].bias.add_(0.5)
    x = torch.rand(4, 3, 2, 6, 6)
    patched, want, got = _compare(model, x, ["LIF", "PLIF", "IF"])
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=ATOL, msg=name)
    # SpikingJelly's reset_net resets the swapped modules: a batch of another size runs right after
    functional.reset_net(patched)
    assert patched(torch.rand(4, 2, 2, 6, 6)).shape == (4, 2, 5)


def test_psn_family():
    T = 6
    x = torch.randn(T, 3, 5)
    psn = neuron.PSN(T=T)
    nn.init.uniform_(psn.weight, -0.5, 0.5)
    nn.init.uniform_(psn.bias, -0.3, 0.3)
    _, want, got = _compare(psn, x, ["PSN"])
    masked = neuron.MaskedPSN(k=3, T=T, lambda_init=0.5, step_mode="m")
    nn.init.uniform_(masked.weight, -0.5, 0.5)
    patched, want2, got2 = _compare(masked, x, ["MaskedPSN"])
    assert patched.lam == 0.5
    sliding = neuron.SlidingPSN(k=3, step_mode="m")
    _, want3, got3 = _compare(sliding, x + 0.5, ["SlidingPSN"])
    for w, g in ((want, got), (want2, got2), (want3, got3)):
        assert set(w) == set(g) == {"weight", "bias"}
        for name in w:
            torch.testing.assert_close(g[name].reshape(w[name].shape), w[name], rtol=RTOL, atol=ATOL)


def test_single_step_nodes_become_single_step_modules():
    node = neuron.LIFNode(tau=2.0, step_mode="s")
    patched, report = sj.patch(copy.deepcopy(node))
    assert isinstance(patched, sfnn.LIF) and patched.step_mode == "s" and report.replaced[0][0] == "<model>"
    x = dyadic((5, 2, 4), -8, 24)
    want = torch.stack([node(x[t]) for t in range(5)])
    got = torch.stack([patched(x[t]) for t in range(5)])
    assert 0 < want.sum() < want.numel()
    assert torch.equal(got, want)


def test_unsupported_nodes_raise_or_are_skipped_with_a_warning():
    odd = nn.Sequential(nn.Linear(3, 3),
                        neuron.LIFNode(step_mode="m", surrogate_function=surrogate.PiecewiseLeakyReLU()))
    with pytest.raises(ValueError, match="PiecewiseLeakyReLU"):
        sj.patch(odd)
    with pytest.warns(UserWarning, match="left 1"):
        same, report = sj.patch(odd, on_unsupported="skip")
    assert same is odd and isinstance(odd[1], neuron.LIFNode) and report.skipped[0][0] == "1"
    with pytest.raises(ValueError, match="alpha = 1"):
        sj.patch(neuron.LIFNode(step_mode="m", surrogate_function=surrogate.SuperSpike(alpha=2.0)))
    with pytest.raises(ValueError, match="spiking=False"):
        sj.patch(neuron.IFNode(step_mode="m", surrogate_function=surrogate.Sigmoid(spiking=False)))
    with pytest.raises(ValueError, match="subclass"):
        sj.patch(nn.Sequential(neuron.ILIFNode(step_mode="m")))
    with pytest.raises(ValueError, match="on_unsupported"):
        sj.patch(odd, on_unsupported="ignore")
    with pytest.raises(TypeError, match="model"):
        sj.patch(None)


def test_store_v_seq_is_carried():
    node = neuron.LIFNode(tau=2.0, v_reset=None, step_mode="m", store_v_seq=True)
    patched, _ = sj.patch(copy.deepcopy(node))
    x = dyadic((5, 2, 4), -8, 24)
    node(x)
    patched(x)
    assert patched.store_v_seq and torch.equal(patched.v_seq, node.v_seq)
