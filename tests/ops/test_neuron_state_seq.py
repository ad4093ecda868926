"""return_states="seq": the multi-state ops (alif, synaptic, alpha_neuron, norse_lif) return every state
variable at every step straight from the kernels (synaptic currents, adaptation), and their backward takes a
per-step gradient for each. Forward bitwise against the reference, gradients against the reference (both
backward paths), float64 gradcheck of losses on the per-step states, opcheck, torch.compile(fullgraph=True),
empty shapes and bad values."""

import pytest
import torch

import spikeforge.ops.neuron as neuron_mod
from spikeforge import ops, reference

# public op -> (positional initial states, the membrane's return option, options away from defaults)
CASES = {
    "alif": (
        2,
        "return_v",
        dict(tau=1.5, v_threshold=0.8, v_reset=-0.2, beta_a=0.7, rho=0.8, surrogate="atan", alpha=3.0),
    ),
    "synaptic": (
        2,
        "return_mem",
        dict(alpha=0.7, beta=0.85, threshold=0.9, surrogate="fast_sigmoid", surrogate_alpha=5.0),
    ),
    "synaptic_zero_late": (
        2,
        "return_mem",
        dict(alpha=0.7, beta=0.85, threshold=0.9, reset_mechanism="zero", reset_delay=False),
    ),
    "alpha_neuron": (3, "return_mem", dict(alpha=0.9, beta=0.7, threshold=0.4)),
    "alpha_neuron_sub": (3, "return_mem", dict(alpha=0.9, beta=0.7, threshold=0.4, reset_mechanism="subtract")),
    "norse_lif": (2, "return_v", dict(dt=0.01, tau_syn_inv=20.0, tau_mem_inv=10.0, v_th=0.3)),
}


def _op(case):
    return case.split("_zero")[0].split("_sub")[0]


def _inputs(case, shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    name = _op(case)
    scale, mean = {"norse_lif": (3.0, 0.5)}.get(name, (0.8, 0.3))
    x = (torch.randn(shape, generator=g) * scale + mean).to(dtype)
    inits = [(torch.randn(shape[1:], generator=g) * 0.4).to(dtype) for _ in range(CASES[case][0])]
    if name == "alif":
        inits[1] = inits[1].abs()
    return x, inits


def _call(impl, case, x, inits, ret_mem, ret_states, **extra):
    n, key, kw = CASES[case]
    return getattr(impl, _op(case))(x, *inits, **dict(kw, **extra), **{key: ret_mem}, return_states=ret_states)


@pytest.mark.parametrize("ret_mem", ["last", "seq"])
@pytest.mark.parametrize("ret_states", ["last", "seq"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_bitwise_equals_reference(case, dtype, ret_states, ret_mem):
    shape = (7, 2, 3, 5)
    x, inits = _inputs(case, shape, dtype)
    got = _call(ops, case, x, inits, ret_mem, ret_states)
    want = _call(reference, case, x, inits, ret_mem, ret_states)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a, b)
    # the per-step states end in the last ones
    last = _call(ops, case, x, inits, "last", "last")
    if ret_states == "seq":
        n = len(got)
        mem_at = 1 if _op(case) in ("alif", "norse_lif") else n - 1
        for k in range(1, n):
            if k != mem_at:
                assert got[k].shape == x.shape and torch.equal(got[k][-1], last[k])


@pytest.mark.parametrize("save", [False, True], ids=["recompute", "saved"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradients_of_per_step_states_match_reference(case, save, monkeypatch):
    """A loss on every output (spikes, the membrane sequence, every other state's sequence) reaches x, the
    initial states and the tensor coefficients as the reference's autograd says."""
    monkeypatch.setitem(neuron_mod.default_recompute, "cpu", not save)
    shape = (9, 2, 3, 4)
    x, inits = _inputs(case, shape, torch.float64, seed=1)
    name = _op(case)
    coef = {"synaptic": "alpha", "alpha_neuron": "beta", "norse_lif": "v_leak"}.get(name)
    c0 = torch.tensor(CASES[case][2].get(coef, 0.0), dtype=torch.float64) if coef else None

    def grads(impl):
        leaves = [x.clone().requires_grad_()] + [i.clone().requires_grad_() for i in inits]
        extra = {}
        if coef:
            extra[coef] = c0.clone().requires_grad_()
            leaves.append(extra[coef])
        kw = {k: v for k, v in CASES[case][2].items() if k not in extra}
        n, key, _ = CASES[case]
        out = getattr(impl, name)(leaves[0], *leaves[1 : 1 + n], **kw, **extra, **{key: "seq"}, return_states="seq")
        torch.manual_seed(3)
        loss = sum((o * torch.randn_like(o)).sum() for o in out)
        got = torch.autograd.grad(loss, leaves, allow_unused=True)  # alpha's mem_init only decides R[0]
        return [o.detach() for o in out], [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, got)]

    out_a, g_a = grads(ops)
    out_b, g_b = grads(reference)
    for a, b in zip(out_a, out_b):
        assert torch.equal(a, b)
    for a, b in zip(g_a, g_b):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def _away(case, shape, margin=2e-2):
    """Inputs whose firing decisions are all at least `margin` from the threshold (finite differences must not
    flip a spike or a reset)."""
    import spikeforge.reference.neuron as refmod

    for seed in range(300):
        x, inits = _inputs(case, shape, torch.float64, seed=seed)
        margins = []
        real = refmod.spike_fn

        def hook(v, *a, **k):
            margins.append(v.detach().abs().min().item())
            return real(v, *a, **k)

        refmod.spike_fn = hook
        try:
            _call(reference, case, x, inits, "seq", "seq", **_GRADCHECK_EXTRA[case])
        finally:
            refmod.spike_fn = real
        if min(margins) > margin:
            return x, inits
    raise AssertionError("no input away from the thresholds")


# the spike's gradient detached from the states (detach_reset / the snnTorch reset decided by the detached
# previous membrane / rect, zero away from the threshold), so every per-step state is an exact function
_GRADCHECK_EXTRA = {
    "alif": dict(detach_reset=True, surrogate="rect", alpha=1000.0),
    "synaptic": dict(),
    "synaptic_zero_late": dict(surrogate="sigmoid", surrogate_alpha=1e4),
    "alpha_neuron": dict(),
    "alpha_neuron_sub": dict(),
    "norse_lif": dict(surrogate="disabled"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck_per_step_states_float64(case):
    shape = (5, 2, 3)
    x, inits = _away(case, shape)
    n = len(inits)

    def fn(x, *states):
        out = _call(ops, case, x, list(states), "seq", "seq", **_GRADCHECK_EXTRA[case])
        return out[1:]

    inputs = (x.requires_grad_(),) + tuple(i.requires_grad_() for i in inits)
    assert len(inputs) == n + 1
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def _fwd_args(case, save=None, grad=True, dtype=torch.float32, ret_mem="last"):
    x, inits = _inputs(case, (4, 2, 3, 5), dtype)
    if grad:
        x.requires_grad_()
        for i in inits:
            i.requires_grad_()
    n, key, kw = CASES[case]
    return neuron_mod.op_inputs(
        getattr(ops, _op(case)), x, *inits, save=save, **kw, **{key: ret_mem}, return_states="seq"
    )


@pytest.mark.parametrize(
    "variant",
    [dict(), dict(save=True, ret_mem="seq"), dict(grad=False), dict(save=True, dtype=torch.float16)],
    ids=["default", "saved", "nograd", "fp16"],
)
@pytest.mark.parametrize("case", ["alif", "synaptic", "alpha_neuron", "norse_lif"])
def test_opcheck_neuron_fwd(case, variant):
    args = _fwd_args(case, **variant)
    assert neuron_mod.NeuronOptions(*args[8:]).states_seq
    torch.library.opcheck(torch.ops.spikeforge.neuron_fwd.default, args)


@pytest.mark.parametrize("save", [False, True], ids=["recompute", "saved"])
@pytest.mark.parametrize("case", ["alif", "synaptic", "alpha_neuron", "norse_lif"])
def test_opcheck_neuron_bwd(case, save):
    fwd = _fwd_args(case, save=save, grad=False)
    outs = torch.ops.spikeforge.neuron_fwd(*fwd)
    ns = CASES[case][0]
    assert all(outs[1 + k].shape == fwd[0].shape for k in range(1, ns))  # the other states every step
    gs = torch.randn_like(fwd[0])
    grad_states = tuple(torch.randn_like(outs[1 + k]) if k < ns else None for k in range(3))
    needs = (True,) * ns + (False,) * (3 - ns) + tuple(fwd[4 + k] is not None for k in range(4))
    args = neuron_mod.bwd_inputs(fwd, outs[-1], gs, grad_states, needs)
    torch.library.opcheck(torch.ops.spikeforge.neuron_bwd.default, args)


def _net(x, m0, thr):
    s1, v1, b1 = ops.alif(x, m0, None, tau=1.5, beta_a=0.7, rho=0.8, surrogate="atan", return_states="seq")
    s2, i2, m2 = ops.synaptic(x, None, m0, alpha=0.7, beta=0.8, threshold=thr, return_states="seq")
    s3, e3, i3, m3 = ops.alpha_neuron(
        x, None, None, m0, alpha=0.9, beta=0.7, threshold=thr, return_mem="seq", return_states="seq"
    )
    s4, v4, i4 = ops.norse_lif(
        x * 5, None, m0, dt=0.01, tau_syn_inv=20.0, tau_mem_inv=10.0, v_th=0.3, return_states="seq"
    )
    return s1, v1, b1, s2, i2, m2, s3, e3, i3, m3, s4, v4, i4


def test_compile_fullgraph_aot_eager_matches_eager():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(_net, backend=backend, fullgraph=True)
    for shape in ((5, 2, 3), (7, 3, 2)):
        x = (torch.randn(shape) * 0.8 + 0.3).requires_grad_()
        m0 = (torch.randn(shape[1:]) * 0.4).requires_grad_()
        thr = torch.tensor(0.6, requires_grad=True)
        outs_c, outs_e = compiled(x, m0, thr), _net(x, m0, thr)
        for a, b in zip(outs_c, outs_e):
            assert a.shape == b.shape and torch.equal(a, b)
        for k in (2, 4, 7, 8, 12):
            assert outs_e[k].shape == x.shape
        ups = [torch.randn_like(o) for o in outs_e]
        g_c = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs_c, ups)), (x, m0, thr))
        g_e = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs_e, ups)), (x, m0, thr))
        for a, b in zip(g_c, g_e):
            assert torch.equal(a, b)
    assert graphs and all(g.count("spikeforge.neuron_fwd") == 4 for g in graphs)


@pytest.mark.parametrize("case", ["alif", "synaptic", "alpha_neuron", "norse_lif"])
@pytest.mark.parametrize("T", [0, 1])
def test_zero_and_one_step(case, T):
    x, inits = _inputs(case, (T, 2, 3))
    got = _call(ops, case, x, inits, "seq", "seq")
    want = _call(reference, case, x, inits, "seq", "seq")
    for a, b in zip(got, want):
        assert a.shape == x.shape and torch.equal(a, b)


@pytest.mark.parametrize("case", ["alif", "synaptic", "alpha_neuron", "norse_lif"])
@pytest.mark.parametrize(
    "bad, exc", [("all", ValueError), ("Seq", ValueError), (None, ValueError), (1, ValueError), (True, ValueError)]
)
def test_bad_return_states_is_a_clear_error(case, bad, exc):
    x, inits = _inputs(case, (3, 2))
    with pytest.raises(exc, match="return_states"):
        _call(ops, case, x, inits, "last", bad)


def test_single_state_ops_do_not_take_return_states():
    x = torch.randn(3, 2)
    for fn, kw in ((ops.lif, {}), (ops.leaky, dict(beta=0.9))):
        with pytest.raises(TypeError, match="return_states"):
            fn(x, **kw, return_states="seq")
