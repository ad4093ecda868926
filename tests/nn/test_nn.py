"""spikeforge.nn neuron modules: multi-step vs single-step, state handling, PLIF parameters."""

import math

import pytest
import torch

import spikeforge as sf
from spikeforge import reference


@pytest.mark.parametrize("cls", ["LIF", "IF", "PLIF"])
def test_multi_step_equals_single_step(cls):
    torch.manual_seed(0)
    x = torch.randint(-8, 24, (6, 2, 3, 5)).float() / 8
    m = getattr(sf.nn, cls)()
    s_multi = m(x)
    v_multi = m.v.clone()
    s_step = getattr(sf.nn, cls)(step_mode="s")
    outs = [s_step(x[t]) for t in range(x.shape[0])]
    assert torch.equal(torch.stack(outs), s_multi)
    assert torch.equal(s_step.v.detach(), v_multi)


def test_lif_matches_reference_and_continues_sequence():
    torch.manual_seed(1)
    x = torch.randn(8, 4, 10)
    m = sf.nn.LIF(tau=3.0, v_reset=None, surrogate="atan")
    s1 = m(x[:4])
    s2 = m(x[4:])  # continues from the stored state
    ref, _ = reference.lif(x, tau=3.0, v_reset=None, surrogate="atan")
    torch.testing.assert_close(torch.cat([s1, s2]), ref, rtol=0, atol=0)
    m.reset()
    assert m.v is None
    torch.testing.assert_close(m(x[:4]), s1, rtol=0, atol=0)


def test_multi_step_state_keeps_graph_until_detach():
    """The state left by a multi-step call carries its graph (SpikingJelly's convention); detach() cuts it,
    so the next chunk backpropagates on its own (truncated BPTT)."""
    x = torch.randn(4, 2, 3, requires_grad=True)
    m = sf.nn.LIF()
    m(x).sum().backward()
    assert m.v is not None and m.v.grad_fn is not None
    m.detach()
    assert not m.v.requires_grad
    x2 = torch.randn(4, 2, 3, requires_grad=True)
    m(x2).sum().backward()  # no "backward through the graph a second time": the first graph is cut
    assert x2.grad is not None


def test_single_step_keeps_graph_until_reset():
    x = torch.randn(5, 2, 3, requires_grad=True)
    m = sf.nn.LIF(step_mode="s")
    out = sum(m(x[t]).sum() for t in range(5)) + m.v.sum()
    out.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    m.reset()
    assert m.v is None


def test_state_shape_mismatch_is_a_clear_error():
    m = sf.nn.LIF()
    m(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="reset"):
        m(torch.randn(2, 5, 3))
    sf.nn.reset_net(torch.nn.Sequential(m))
    m(torch.randn(2, 5, 3))


def test_plif_parameters_and_gradients():
    m = sf.nn.PLIF(init_tau=2.0)
    assert m.w.shape == () and math.isclose(m.w.item(), 0.0, abs_tol=1e-7)
    mc = sf.nn.PLIF(init_tau=3.0, num_channels=4)
    assert mc.w.shape == (4,)
    torch.testing.assert_close(mc.tau, torch.full((4,), 3.0))
    x = torch.randn(5, 2, 4, 3) * 2
    mc(x).sum().backward()
    assert mc.w.grad is not None and mc.w.grad.shape == (4,)
    ref_w = mc.w.detach().clone().requires_grad_()
    s_ref, _ = reference.plif(x, ref_w)
    s_ref.sum().backward()
    torch.testing.assert_close(mc.w.grad, ref_w.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="init_tau"):
        sf.nn.PLIF(init_tau=1.0)


def test_store_v_seq_and_bad_step_mode():
    m = sf.nn.IF(store_v_seq=True)
    x = torch.randn(3, 2)
    m(x)
    assert m.v_seq.shape == (3, 2)
    torch.testing.assert_close(m.v, m.v_seq[-1])
    with pytest.raises(ValueError, match="step_mode"):
        sf.nn.LIF(step_mode="x")
