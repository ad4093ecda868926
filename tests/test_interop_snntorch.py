"""spikeforge.interop.snntorch: MultiStepLeaky and patch() against snnTorch's own step-by-step loop.

Inputs are multiples of 1/8 and beta in {0.5, 1} keep the fused path's arithmetic exact, so membranes
must be bitwise equal there too; beta = 0.9 is compared with a tolerance (the kernel computes
V - V/tau + X where snnTorch computes beta V + X). Skipped when snnTorch is absent.
"""
import copy

import pytest
import torch
from torch import nn

from neuron_helpers import dyadic
from spikeforge import nn as sfnn

snn = pytest.importorskip("snntorch")
from snntorch import surrogate, utils  # noqa: E402

from spikeforge.interop.snntorch import MultiStepLeaky, patch, surrogate_of  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def _snntorch_loop(leaky, x, mem0=None):
    """snnTorch's own usage: one call per step, mem passed along -> (spikes, membranes)."""
    mem = torch.zeros_like(x[0]) if mem0 is None else mem0
    spikes, mems = [], []
    for t in range(x.shape[0]):
        spk, mem = leaky(x[t], mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def _both(leaky, x, backend="auto", mem0=None, exact_mem=True):
    """Runs snnTorch's loop and MultiStepLeaky on the same input; compares spikes, membranes, gradients."""
    g_s, g_m = torch.randn_like(x), torch.randn_like(x)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    multi = MultiStepLeaky(copy.deepcopy(leaky), backend=backend, return_mem=True)  # before the Leaky holds a graph
    s1, m1 = _snntorch_loop(leaky, x1, mem0)
    s2, m2 = multi(x2, mem0)
    assert 0 < s1.sum() < s1.numel(), "the case must exercise both firing and not firing"
    assert torch.equal(s1, s2)
    if exact_mem:
        assert torch.equal(m1, m2)
    else:
        torch.testing.assert_close(m2, m1, rtol=RTOL, atol=ATOL)
    ((s1 * g_s).sum() + (m1 * g_m).sum()).backward()
    ((s2 * g_s).sum() + (m2 * g_m).sum()).backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=RTOL, atol=ATOL)
    for (name, p1), (_, p2) in zip(leaky.named_parameters(), multi.leaky.named_parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=RTOL, atol=ATOL, msg=name)  # learnable beta
    return multi


SPIKE_GRADS = {"atan2": lambda: surrogate.atan(alpha=2.0), "sigmoid5": lambda: surrogate.sigmoid(slope=5),
               "fast_sigmoid1": lambda: surrogate.fast_sigmoid(slope=1), "fast_sigmoid2": lambda:
               surrogate.fast_sigmoid(slope=2)}


@pytest.mark.parametrize("grad", sorted(SPIKE_GRADS))
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_zero_reset_runs_fused_with_snntorch_numbers(grad, beta):
    leaky = snn.Leaky(beta=beta, threshold=0.75, reset_mechanism="zero", spike_grad=SPIKE_GRADS[grad]())
    x = dyadic((9, 3, 8), -6, 10)
    multi = _both(leaky, x)
    assert multi.path == "fused"


def test_zero_reset_fused_non_dyadic_beta_and_random_input():
    leaky = snn.Leaky(beta=0.9, threshold=1.0, reset_mechanism="zero")
    multi = _both(leaky, torch.rand(12, 4, 16) * 0.6, exact_mem=False)
    assert multi.path == "fused"


def test_fused_firing_test_is_strict_like_snntorch():
    """U exactly on the threshold does not fire in snnTorch (Heaviside(0) = 0); the fused path agrees."""
    leaky = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")
    x = torch.tensor([[1.0, 1.5], [0.5, 0.0], [1.0, 2.0]])  # U: [1, 1.5] -> [1, 0] -> [1.5, 2]
    s_ref, _ = _snntorch_loop(leaky, x)
    s = MultiStepLeaky(leaky)(x)
    assert torch.equal(s, s_ref)
    assert s_ref.tolist() == [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]


def test_mem0_continues_a_sequence():
    leaky = snn.Leaky(beta=0.5, threshold=0.75, reset_mechanism="zero")
    mem0 = dyadic((3, 8), -4, 12)  # some above the threshold: their reset lands on step 0
    _both(leaky, dyadic((6, 3, 8), -6, 10), mem0=mem0)


@pytest.mark.parametrize("case", ["subtract", "subtract_beta1", "none", "no_reset_delay", "learn_beta",
                                  "fast_sigmoid25"])
def test_loop_path_is_snntorch_op_for_op(case):
    kw = dict(beta=0.9, threshold=0.75)
    kw.update({"subtract": {}, "subtract_beta1": dict(beta=1.0), "none": dict(reset_mechanism="none"),
               "no_reset_delay": dict(reset_mechanism="zero", reset_delay=False),
               "learn_beta": dict(reset_mechanism="zero", learn_beta=True),
               "fast_sigmoid25": dict(reset_mechanism="zero", spike_grad=surrogate.fast_sigmoid(25))}[case])
    leaky = snn.Leaky(**kw)
    x = torch.rand(10, 3, 8) * 0.7
    multi = _both(leaky, x)
    assert multi.path == "loop"
    if case == "learn_beta":  # the Leaky is shared: its beta is a parameter of MultiStepLeaky
        assert any(p is multi.leaky.beta for p in multi.parameters())


def test_backend_choice_and_bad_arguments():
    with pytest.raises(ValueError, match="one step late"):
        MultiStepLeaky(snn.Leaky(beta=0.9), backend="fused")
    assert MultiStepLeaky(snn.Leaky(beta=0.9, reset_mechanism="zero"), backend="loop").path == "loop"
    with pytest.raises(ValueError, match="backend"):
        MultiStepLeaky(snn.Leaky(beta=0.9), backend="cuda")
    with pytest.raises(TypeError, match="snntorch.Leaky"):
        MultiStepLeaky(nn.ReLU())
    with pytest.raises(ValueError, match="inhibition"):
        MultiStepLeaky(snn.Leaky(beta=0.9, inhibition=True))
    with pytest.raises(ValueError, match="mem0"):
        MultiStepLeaky(snn.Leaky(beta=0.9))(torch.zeros(3, 2, 4), torch.zeros(2, 5))
    assert surrogate_of(surrogate.fast_sigmoid(25)) is None and surrogate_of(lambda x: x) is None


def _snntorch_net(reset_mechanism):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 16),
                         snn.Leaky(beta=0.5, threshold=0.5, reset_mechanism=reset_mechanism, init_hidden=True),
                         nn.Linear(16, 5),
                         snn.Leaky(beta=0.9, reset_mechanism=reset_mechanism, init_hidden=True, output=True))


@pytest.mark.parametrize("reset_mechanism", ["zero", "subtract"])
def test_patch_makes_a_sequential_snntorch_model_multi_step(reset_mechanism):
    net = _snntorch_net(reset_mechanism)
    with torch.no_grad():
        net[3].weight.mul_(4.0)
        net[5].weight.mul_(4.0)
    x = torch.rand(8, 2, 1, 8, 8) * 2
    patched, report = patch(copy.deepcopy(net))  # before the Leaky modules hold a graph
    utils.reset(net)
    steps = [net(x[t]) for t in range(x.shape[0])]
    s_ref = torch.stack([s for s, _ in steps])
    m_ref = torch.stack([m for _, m in steps])
    paths = {"zero": "fused", "subtract": "loop"}[reset_mechanism]
    assert [r[2] for r in report.replaced] == [f"MultiStepLeaky[{paths}]"] * 2
    assert [w[1] for w in report.wrapped] == ["Conv2d", "MaxPool2d", "Flatten"]
    assert isinstance(patched[0], sfnn.MultiStep)
    s, m = patched(x)
    assert 0 < s_ref.sum() < s_ref.numel()
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(m, m_ref, rtol=RTOL, atol=ATOL)


def test_patch_leaves_step_by_step_leaky_and_batch_norm_with_a_warning():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), snn.Leaky(beta=0.9, init_hidden=False))
    with pytest.warns(UserWarning, match="init_hidden=False"):
        patched, report = patch(net)
    assert patched is net and isinstance(net[2], snn.Leaky) and not report.replaced
    assert {r[1] for r in report.skipped} == {"Leaky", "BatchNorm1d"}
    with pytest.raises(TypeError, match="model"):
        patch(3)
