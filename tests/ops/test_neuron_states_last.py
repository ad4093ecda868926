"""The snnTorch-family ops' last states written apart (`_states_last=True`, used by interop.snntorch): where a
state is returned for every step, the kernel also writes its last step into a tensor of its own. Those equal
row T - 1 bitwise and share no memory with it; a gradient reaching them is the gradient of that row (alone or
added to the sequence's), on the eager path and through the custom op (opcheck, torch.compile); T = 0 and
T = 1 give the initial state and the one step."""

import pytest
import torch

import spikeforge.ops.neuron as neuron_mod
from spikeforge import ops

# op -> (initial states, keyword options); every state returned for every step
CASES = {
    "leaky": (1, dict(beta=0.85, threshold=0.9)),
    "leaky_zero_now": (1, dict(beta=0.85, threshold=0.9, reset_mechanism="zero", reset_delay=False)),
    "synaptic": (2, dict(alpha=0.7, beta=0.85, threshold=0.9, surrogate="fast_sigmoid")),
    "alpha_neuron": (3, dict(alpha=0.9, beta=0.7, threshold=0.4)),
}


def _op(case):
    return getattr(ops, case.split("_zero")[0])


def _inputs(case, shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 0.8 + 0.3).to(dtype)
    inits = [(torch.randn(shape[1:], generator=g) * 0.4).to(dtype) for _ in range(CASES[case][0])]
    return x, inits


def _call(case, x, inits, last, ret_states="seq"):
    n, kw = CASES[case]
    extra = {} if n == 1 else dict(return_states=ret_states)
    return _op(case)(x, *inits, **kw, return_mem="seq", **extra, _states_last=last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["fp32", "fp64", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_last_states_equal_the_last_row_and_are_tensors_of_their_own(case, dtype):
    x, inits = _inputs(case, (6, 3, 5), dtype)
    plain = _call(case, x, inits, False)
    out = _call(case, x, inits, True)
    n = len(plain) - 1
    assert len(out) == len(plain) + n
    for a, b in zip(out[: n + 1], plain):
        assert torch.equal(a, b)
    for seq, last in zip(out[1 : n + 1], out[n + 1 :]):
        assert last.shape == x.shape[1:] and last.dtype == x.dtype
        assert torch.equal(last, seq[-1])
        assert last._base is None and last.untyped_storage().data_ptr() != seq.untyped_storage().data_ptr()


@pytest.mark.parametrize("case", ["synaptic", "alpha_neuron"])
def test_states_returned_as_their_last_step_have_nothing_apart(case):
    """return_states="last": the currents are already last states (None apart); the membrane sequence still
    has its last step written apart."""
    x, inits = _inputs(case, (5, 4))
    out = _call(case, x, inits, True, ret_states="last")
    n = CASES[case][0]
    lasts = out[n + 1 :]
    assert all(t is None for t in lasts[:-1])
    assert torch.equal(lasts[-1], out[n][-1])


@pytest.mark.parametrize("which", ["last", "both", "seq"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradient_of_a_last_state_is_that_of_the_last_row(case, which):
    """Loss on the last states apart, on the sequences, or both: the gradients equal those of the same loss
    written on row T - 1 of the sequences (the plain call)."""
    x0, inits0 = _inputs(case, (7, 2, 3), torch.float64)
    g = torch.Generator().manual_seed(3)
    n = CASES[case][0]
    ups = [torch.randn(x0.shape, generator=g, dtype=torch.float64) for _ in range(n + 1)]
    ups_last = [torch.randn(x0.shape[1:], generator=g, dtype=torch.float64) for _ in range(n)]

    def grads(last):
        x = x0.clone().requires_grad_()
        inits = [i.clone().requires_grad_() for i in inits0]
        out = _call(case, x, inits, last)
        seqs, lasts = out[: n + 1], (out[n + 1 :] if last else tuple(s[-1] for s in out[1 : n + 1]))
        loss = 0
        if which != "last":
            loss = loss + sum((o * u).sum() for o, u in zip(seqs, ups))
        if which != "seq":
            loss = loss + sum((o * u).sum() for o, u in zip(lasts, ups_last))
        return torch.autograd.grad(loss, [x, *inits])

    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["leaky", "synaptic", "alpha_neuron"])
def test_gradcheck_through_the_last_states_float64(case):
    """Inputs far below the threshold (no spike, no reset: the states are smooth functions of x and the initial
    states, so finite differences see the same derivative as the kernels' backward)."""
    x0, inits0 = _inputs(case, (4, 3), torch.float64, seed=1)
    x0, inits0 = x0 * 0.1 - 0.05, [i * 0.1 for i in inits0]
    n = CASES[case][0]

    def fn(x, *inits):
        out = _call(case, x, list(inits), True)
        assert not out[0].any()
        return tuple(out[n + 1 :])

    inputs = (x0.clone().requires_grad_(), *[i.clone().requires_grad_() for i in inits0])
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("case", ["leaky", "synaptic", "alpha_neuron"])
def test_opcheck_neuron_fwd_with_last_states(case, grad):
    x, inits = _inputs(case, (4, 2, 3))
    if grad:
        x.requires_grad_()
    n, kw = CASES[case]
    extra = {} if n == 1 else dict(return_states="seq")
    args = neuron_mod.op_inputs(_op(case), x, *inits, **kw, return_mem="seq", **extra, _states_last=True)
    assert neuron_mod.NeuronOptions(*args[8:]).states_last
    torch.library.opcheck(torch.ops.spikeforge.neuron_fwd.default, args)


def _net(x, m0):
    s1, m1, l1 = ops.leaky(x, m0, beta=0.8, return_mem="seq", _states_last=True)
    s2, i2, m2, li2, lm2 = ops.synaptic(
        x, None, m0, alpha=0.7, beta=0.8, return_mem="seq", return_states="seq", _states_last=True
    )
    return s1, m1, l1, s2, i2, m2, li2, lm2


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    compiled = torch.compile(_net, backend="aot_eager", fullgraph=True)
    x = (torch.randn(5, 2, 3) * 0.8 + 0.3).requires_grad_()
    m0 = (torch.randn(2, 3) * 0.4).requires_grad_()
    outs_c, outs_e = compiled(x, m0), _net(x, m0)
    for a, b in zip(outs_c, outs_e):
        assert a.shape == b.shape and torch.equal(a, b)
    ups = [torch.randn_like(o) for o in outs_e]
    g_c = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs_c, ups)), (x, m0))
    g_e = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs_e, ups)), (x, m0))
    for a, b in zip(g_c, g_e):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("T", [0, 1])
def test_zero_and_one_step(case, T):
    x, inits = _inputs(case, (T, 2, 3))
    out = _call(case, x, inits, True)
    n = CASES[case][0]
    for k, last in enumerate(out[n + 1 :]):
        seq = out[1 + k]
        want = seq[-1] if T else inits[k]  # T = 0: the state before the sequence (the outputs' order)
        assert last.shape == x.shape[1:] and torch.equal(last, want)


@pytest.mark.parametrize("T", [0, 1, 5])
@pytest.mark.parametrize("case", ["leaky", "synaptic", "alpha_neuron"])
def test_reference_fallback_gives_the_same_last_states(monkeypatch, case, T):
    """A device without native kernels runs the reference: the same last states, T = 0 included."""
    x, inits = _inputs(case, (T, 2, 3), torch.float64)
    want = _call(case, x, inits, True)
    monkeypatch.setattr(neuron_mod, "_has_native", lambda device: False)
    got = _call(case, x, inits, True)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("case", ["leaky", "synaptic", "alpha_neuron"])
def test_double_backward_and_torch_func_see_the_last_states(case):
    """create_graph=True differentiates the reference again: a loss on the last states apart must reach it, as
    must torch.func.grad (which runs the reference)."""
    x0, inits0 = _inputs(case, (5, 4), torch.float64, seed=2)
    n = CASES[case][0]

    def loss(x, last):
        out = _call(case, x, inits0, last)
        lasts = out[n + 1 :] if last else tuple(s[-1] for s in out[1 : n + 1])
        return sum(((k + 1) * t * t).sum() for k, t in enumerate(lasts))

    grads = []
    for last in (True, False):
        x = x0.clone().requires_grad_()
        (g,) = torch.autograd.grad(loss(x, last), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.sum(), x)
        grads.append((g.detach(), gg))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    fg = torch.func.grad(lambda x: loss(x, True))(x0.clone())
    torch.testing.assert_close(fg, grads[1][0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", ["eager", "compile", "vmap"])
def test_a_state_returned_as_its_last_step_has_none_apart_on_every_path(how):
    """return_states="last": nothing apart for the current, on the eager path and through the custom op
    (torch.compile, vmap), where an absent output is an empty tensor inside."""

    def f(x):
        return ops.synaptic(x, alpha=0.7, beta=0.8, return_mem="seq", return_states="last", _states_last=True)

    x = torch.randn(4, 2, 3) * 0.8 + 0.3
    if how == "compile":
        torch._dynamo.reset()
        out = torch.compile(f, backend="aot_eager", fullgraph=True)(x)
    elif how == "vmap":
        out = torch.func.vmap(f, out_dims=(0, 0, 0, None, 0))(x.unsqueeze(0).expand(2, -1, -1, -1).contiguous())
        out = tuple(None if o is None else o[0] for o in out)
    else:
        out = f(x)
    s, i, u, i_last, u_last = out
    assert i_last is None and i.shape == x.shape[1:]
    assert torch.equal(u_last, u[-1])
