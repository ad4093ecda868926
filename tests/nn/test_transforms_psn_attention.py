"""Higher-order and functional autograd of the PSN family and the attention ops: double backward gives the
reference's second-order gradients (or a clear error where the op does not keep its inputs), forward-mode
AD raises an error naming the op, torch.func.vmap equals the loop, torch.func.grad / jacrev equal the
reference's. (The neuron ops have their own tests of the same contract.)"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from spikeforge import ops, reference

from conftest import DEVICES


def _psn_case(name, device, dtype=torch.float64, grad=True):
    T = 5
    x = torch.randn(T, 3, 4, dtype=dtype, device=device)
    if name == "psn":
        args = (torch.randn(T, T, dtype=dtype, device=device) * 0.5, torch.randn(T, dtype=dtype, device=device))
        kw = {}
    elif name == "masked_psn":
        args = (torch.randn(T, T, dtype=dtype, device=device) * 0.5, torch.randn(T, dtype=dtype, device=device), 2, 0.5)
        kw = {}
    else:
        args = (torch.randn(3, dtype=dtype, device=device), torch.randn(1, dtype=dtype, device=device))
        kw = {}
    tensors = [x] + [a for a in args if isinstance(a, torch.Tensor)]
    if grad:
        for t in tensors:
            t.requires_grad_()
    return x, args, kw, tensors


def _psn_call(impl, name, x, args, kw):
    return getattr(impl, name)(x, *args, surrogate="atan", **kw)


PSN_OPS = ["psn", "masked_psn", "sliding_psn"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", PSN_OPS)
def test_psn_double_backward_equals_reference(device, name):
    if device == "cuda":
        pytest.skip("float64 is CPU only")
    x, args, kw, tensors = _psn_case(name, device)
    got, want = [], []
    for impl, out in ((ops, got), (reference, want)):
        s = _psn_call(impl, name, x, args, kw)
        g = torch.autograd.grad(
            (s * torch.linspace(-1, 1, s.numel(), dtype=s.dtype).view_as(s)).sum(), tensors, create_graph=True
        )
        penalty = sum((t**2).sum() for t in g)
        out.extend(torch.autograd.grad(penalty, tensors, allow_unused=True))
    for a, b in zip(got, want):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", PSN_OPS)
def test_psn_forward_ad_raises_naming_the_op(name):
    x, args, kw, _ = _psn_case(name, "cpu", torch.float32, grad=False)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(NotImplementedError, match=rf"spikeforge\.ops\.{name}.*forward-mode AD"):
            _psn_call(ops, name, d, args, kw)
    with pytest.raises(NotImplementedError, match="forward-mode AD"):
        torch.func.jvp(lambda t: _psn_call(ops, name, t, args, kw), (x,), (torch.ones_like(x),))


@pytest.mark.parametrize("name", PSN_OPS)
def test_psn_vmap_and_func_grad(name):
    x, args, kw, _ = _psn_case(name, "cpu", torch.float32, grad=False)
    xs = torch.stack([x, x * 0.5 + 0.2, -x])
    got = torch.func.vmap(lambda t: _psn_call(ops, name, t, args, kw))(xs)
    assert torch.equal(got, torch.stack([_psn_call(ops, name, t, args, kw) for t in xs]))
    g = torch.func.grad(lambda t: (_psn_call(ops, name, t, args, kw) * t[:1]).sum())(x)
    xr = x.clone().requires_grad_()
    (gr,) = torch.autograd.grad((_psn_call(reference, name, xr, args, kw) * xr[:1]).sum(), xr)
    torch.testing.assert_close(g, gr)


ATTN = ["ssa", "sdsa", "qk_token_attention", "qk_channel_attention"]


def _attn_inputs(name, dtype=torch.float64, grad=True):
    n = 3 if name in ("ssa", "sdsa") else 2
    ts = [(torch.rand(3, 2, 5, 4) < 0.4).to(dtype) for _ in range(n)]
    return [t.requires_grad_() for t in ts] if grad else ts


@pytest.mark.parametrize("name", ATTN)
def test_attention_double_backward(name):
    """Second-order gradients equal the reference's (ssa's fused op keeps its inputs; on CPU sdsa and the QK
    ops compose torch ops around ops.lif)."""
    got, want = [], []
    inputs = _attn_inputs(name)
    for impl, out in ((ops, got), (reference, want)):
        o = getattr(impl, name)(*inputs)
        w = torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)
        g = torch.autograd.grad((o * w).sum(), inputs, create_graph=True, allow_unused=True)
        penalty = sum((t**2).sum() for t in g if t is not None)
        out.extend(torch.autograd.grad(penalty, inputs, allow_unused=True))
    for a, b in zip(got, want):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ATTN)
def test_attention_forward_ad_vmap_grad(name):
    inputs = _attn_inputs(name, torch.float32, grad=False)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(t, torch.ones_like(t)) for t in inputs]
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            getattr(ops, name)(*duals)
    batched = [torch.stack([t, 1 - t]) for t in inputs]
    got = torch.func.vmap(getattr(ops, name))(*batched)
    want = torch.stack([getattr(ops, name)(*[b[i] for b in batched]) for i in range(2)])
    assert torch.equal(got, want)
    g = torch.func.grad(lambda q: getattr(ops, name)(q, *inputs[1:]).sum())(inputs[0])
    q = inputs[0].clone().requires_grad_()
    (gr,) = torch.autograd.grad(getattr(reference, name)(q, *inputs[1:]).sum(), q)
    torch.testing.assert_close(g, gr)


@pytest.mark.parametrize("name", ["qk_token_attention", "qk_channel_attention"])
def test_fused_qk_kernel_double_backward_refuses(name):
    """The fused QK kernel (the CUDA path) keeps only the reduced sums, not q: double backward says so
    instead of returning a wrong second order."""
    from spikeforge.ops import attention as attention_mod

    q, k = _attn_inputs(name)
    o = attention_mod.fused_kernel(name)(q, k)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(o.sum(), [q, k], create_graph=True)
    gq, gk = torch.autograd.grad(attention_mod.fused_kernel(name)(q, k).sum(), [q, k])  # first order still works
    gqr, gkr = torch.autograd.grad(getattr(reference, name)(q, k).sum(), [q, k])
    torch.testing.assert_close(gq, gqr)
    torch.testing.assert_close(gk, gkr)
