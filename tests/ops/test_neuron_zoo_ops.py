"""The newer neuron models as PyTorch ops: float64 gradcheck, torch.library.opcheck of neuron_fwd / neuron_bwd,
torch.compile(fullgraph=True) (aot_eager and inductor), the saved-values backward (CUDA's default) on CPU,
and higher-order / functional autograd for every neuron op, old and new: double backward against the
reference, forward-mode AD refused by name, torch.func.vmap / grad."""

import pytest
import torch

import spikeforge.ops.neuron as neuron_mod
from zoo_helpers import (
    SJ_MODELS,
    SNN_MODELS,
    SPECS,
    assert_grads_close,
    assert_same_forward,
    ops,
    reference,
    run,
    upstream_grads,
)

ALL = SJ_MODELS + SNN_MODELS
RTOL32, ATOL32 = 1e-5, 1e-5


def _kw(name, shape, *, layout="channel", ret="seq"):
    """A call of each model with non-default options (per-channel coefficients of x [T, B, C, ...])."""
    C = shape[2]
    if name == "alif":
        return dict(
            tau=1.5, v_threshold=0.8, v_reset=-0.2, beta_a=0.7, rho=0.8, surrogate="atan", alpha=3.0, return_v=ret
        )
    if name == "ilif":
        return dict(D=3, tau=4.0 / 3.0, v_threshold=0.7, decay_input=False, return_v=ret)
    if name == "ternary_lif":
        return dict(tau=1.75, v_threshold=0.9, v_reset=None, surrogate="erf", two_sided=True, return_v=ret)
    rest = (1,) * (len(shape) - 3)

    def coef(lo, hi):
        if layout == "scalar":
            return torch.empty(()).uniform_(lo, hi)
        return torch.empty((C,) + rest).uniform_(lo, hi)

    kw = dict(
        threshold=coef(0.8, 1.2),
        reset_mechanism="subtract",
        surrogate="fast_sigmoid",
        surrogate_alpha=5.0,
        return_mem=ret,
    )
    if name == "alpha_neuron":
        kw.update(alpha=coef(0.86, 0.95), beta=coef(0.6, 0.8))
    else:
        kw.update(beta=coef(0.6, 0.9), reset_delay=False)
        if name == "leaky":
            kw["graded_spikes_factor"] = coef(0.5, 1.5)
        else:
            kw["alpha"] = coef(0.5, 0.85)
    return kw


def _x(name, shape, dtype=torch.float32):
    mean, std = {
        "alif": (0.7, 1.0),
        "ilif": (0.8, 1.5),
        "ternary_lif": (0.0, 1.6),
        "leaky": (0.35, 0.6),
        "synaptic": (0.12, 0.4),
        "alpha_neuron": (0.25, 0.8),
    }[name]
    return (torch.randn(shape) * std + mean).to(dtype)


def _inits(name, shape, dtype=torch.float32):
    return {
        n: ((torch.randn(shape[1:]) * 0.5).abs() if n == "b_init" else torch.randn(shape[1:]) * 0.5).to(dtype)
        for n in SPECS[name]["inits"]
    }


def _public_args(name, x, inits, kw):
    return (x, *[inits.get(n) for n in SPECS[name]["inits"]]), kw


# ------------------------------------------------------------------------------------------------
# float64 gradcheck
# ------------------------------------------------------------------------------------------------
def _trajectory_margin(name, x, inits, kw):
    """The smallest distance of any firing decision of the reference run to its threshold (float64):
    finite differences of gradcheck must not flip a spike or a reset."""
    margins = []

    def hook(fn):
        def wrapped(v, name_, alpha=None, beta=None, strict=False):
            margins.append(v.detach().abs().min().item() if v.numel() else float("inf"))
            return fn(v, name_, alpha, beta, strict)

        return wrapped

    import spikeforge.reference.neuron as refmod

    real = refmod.spike_fn
    refmod.spike_fn = hook(real)
    try:
        run(reference, name, x, inits, kw)
    finally:
        refmod.spike_fn = real
    return min(margins) if margins else float("inf")


def _away_from_thresholds(name, shape, kw, margin=2e-3, tries=100):
    for _ in range(tries):
        x = _x(name, shape, torch.float64)
        inits = _inits(name, shape, torch.float64)
        if name == "ilif":  # no spike_fn: the counts' decision points are H / v_th at k + 1/2
            h = _ilif_h(x, inits["v_init"], kw)
            frac = (h / kw["v_threshold"]) % 1.0
            ok = (frac - 0.5).abs().min() > margin
        else:
            ok = _trajectory_margin(name, x, inits, kw) > margin
        if ok:
            return x, inits
    raise AssertionError("no input away from the thresholds found")


def _ilif_h(x, v, kw):
    tau, vth, D = kw["tau"], kw["v_threshold"], kw["D"]
    hs = []
    for t in range(x.shape[0]):
        h = (1.0 - 1.0 / tau) * v + x[t] if not kw.get("decay_input", True) else v + (x[t] - v) / tau
        s = torch.round(torch.clamp(h / vth, 0, D))
        v = h - s * vth
        hs.append(h)
    return torch.stack(hs)


# The state outputs whose gradients are exact derivatives (no surrogate inside) with these options:
# detach_reset=True for the SpikingJelly family (S enters the membrane as a constant) and snnTorch's reset
# decided by the detached previous membrane (reset_delay=True), so finite differences can check them.
GRADCHECK = {
    "alif": dict(
        tau=1.5,
        v_threshold=0.8,
        v_reset=None,
        beta_a=0.7,
        rho=0.8,
        detach_reset=True,
        surrogate="rect",
        alpha=1000.0,
        return_v="seq",
    ),  # rect: g' = 0 beyond 5e-4 of the threshold
    "alif_hard": dict(
        tau=2.5,
        v_threshold=0.9,
        v_reset=-0.3,
        beta_a=1.2,
        rho=0.6,
        detach_reset=True,
        decay_input=False,
        surrogate="rect",
        alpha=1000.0,
        return_v="seq",
    ),
    "ilif": dict(D=3, tau=1.7, v_threshold=0.8, decay_input=False, detach_reset=True, return_v="seq"),
    "ilif_decay": dict(D=2, tau=2.5, v_threshold=0.6, decay_input=True, detach_reset=True, return_v="seq"),
    "ternary_lif": dict(tau=1.75, v_threshold=0.9, v_reset=-0.2, detach_reset=True, return_v="seq"),
    "ternary_lif_soft": dict(tau=None, v_threshold=0.8, v_reset=None, detach_reset=True, return_v="seq"),
}


def _sj_gradcheck_cases():
    return [pytest.param(k, id=k) for k in GRADCHECK]


@pytest.mark.parametrize("case", _sj_gradcheck_cases())
def test_gradcheck_sj_family_states_float64(case):
    """The membrane (and alif's adaptation b) as functions of x and the initial states: with the spike
    detached from the reset (and alif's rect surrogate zero away from the threshold) they are exact
    derivatives, which finite differences can check."""
    name = case.split("_hard")[0].split("_soft")[0].split("_decay")[0]
    kw = GRADCHECK[case]
    shape = (5, 2, 3)
    x, inits = _away_from_thresholds(name, shape, kw)
    order = SPECS[name]["inits"]

    def fn(x, *states):
        out = getattr(ops, name)(x, *states, **kw)
        return out[1:]  # the states (alif: v_seq, b)

    inputs = (x.requires_grad_(),) + tuple(inits[n].requires_grad_() for n in order)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("name", SNN_MODELS)
def test_gradcheck_snntorch_family_float64(name, reset):
    """snnTorch's membrane is an exact function of x, the initial states, beta, threshold and alpha (the reset
    is decided by the detached previous membrane): gradcheck of every state output w.r.t. all of them, and
    of the spikes w.r.t. graded_spikes_factor (S = step * gsf)."""
    shape = (6, 2, 3)
    kw = {k: (v.double() if torch.is_tensor(v) else v) for k, v in _kw(name, (6, 2, 3), ret="seq").items()}
    kw["reset_mechanism"] = reset
    if name != "alpha_neuron":
        kw["reset_delay"] = True
    x, inits = _away_from_thresholds(name, shape, kw)
    order = SPECS[name]["inits"]
    coefs = [k for k in ("beta", "threshold", "alpha") if k in kw]

    def fn(x, *rest):
        states, cs = rest[: len(order)], rest[len(order) :]
        call = dict(kw, **dict(zip(coefs, cs)))
        return getattr(ops, name)(x, *states, **call)[1:]

    inputs = (
        (x.requires_grad_(),)
        + tuple(inits[n].requires_grad_() for n in order)
        + tuple(kw[c].clone().requires_grad_() for c in coefs)
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    if name == "leaky":

        def spikes_of_gsf(g):
            return ops.leaky(
                x.detach(), beta=kw["beta"], threshold=kw["threshold"], graded_spikes_factor=g, reset_mechanism=reset
            )[0]

        assert torch.autograd.gradcheck(
            spikes_of_gsf, (kw["graded_spikes_factor"].clone().requires_grad_(),), eps=1e-6, atol=1e-7, rtol=1e-6
        )


@pytest.mark.parametrize("name", ["leaky", "synaptic"])
def test_gradcheck_snntorch_same_step_reset_float64(name):
    """reset_delay=False differentiates the spike inside the same-step reset: with sigmoid(alpha=1e4) the
    surrogate is 0 to double precision beyond 1e-2 of the threshold, so what remains is exact."""
    shape = (6, 2, 3)
    kw = {k: (v.double() if torch.is_tensor(v) else v) for k, v in _kw(name, shape, ret="seq").items()}
    kw.update(reset_delay=False, surrogate="sigmoid", surrogate_alpha=1e4)
    for reset in ("subtract", "zero"):
        kw["reset_mechanism"] = reset
        x, inits = _away_from_thresholds(name, shape, kw, margin=2e-2)

        def fn(x, beta, threshold):
            return getattr(ops, name)(
                x, beta=beta, **{k: v for k, v in kw.items() if k not in ("beta", "threshold")}, threshold=threshold
            )[1:]

        inputs = (x.requires_grad_(), kw["beta"].clone().requires_grad_(), kw["threshold"].clone().requires_grad_())
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# opcheck and the saved-values backward
# ------------------------------------------------------------------------------------------------
def _fwd_args(name, *, grad=True, save=None, ret="seq", given=True, layout="channel", dtype=torch.float32):
    shape = (4, 2, 3, 5)
    x = _x(name, shape, dtype)
    inits = _inits(name, shape, dtype) if given else {}
    kw = _kw(name, shape, layout=layout, ret=ret)
    if grad:
        x.requires_grad_()
        for t in inits.values():
            t.requires_grad_()
        for v in kw.values():
            if torch.is_tensor(v):
                v.requires_grad_()
    args, kw = _public_args(name, x, inits, kw)
    return neuron_mod.op_inputs(getattr(ops, name), *args, save=save, **kw)


FWD_VARIANTS = {
    "default": dict(),
    "saved_last_noinit": dict(save=True, ret="last", given=False),
    "scalar_coefs_nograd": dict(grad=False, layout="scalar"),
    "fp16_saved": dict(save=True, dtype=torch.float16),
}


@pytest.mark.parametrize("variant", list(FWD_VARIANTS))
@pytest.mark.parametrize("name", ALL)
def test_opcheck_neuron_fwd(name, variant):
    args = _fwd_args(name, **FWD_VARIANTS[variant])
    assert args[8] == neuron_mod.MODELS[{"ternary_lif": "ternary", "alpha_neuron": "alpha"}.get(name, name)]
    torch.library.opcheck(torch.ops.spikeforge.neuron_fwd.default, args)


@pytest.mark.parametrize("save", [False, True], ids=["recompute", "saved"])
@pytest.mark.parametrize("name", ALL)
def test_opcheck_neuron_bwd(name, save):
    fwd = _fwd_args(name, grad=False, save=save)
    outs = torch.ops.spikeforge.neuron_fwd(*fwd)
    ns = len(SPECS[name]["inits"])
    gs = torch.randn_like(fwd[0])
    grad_states = tuple(torch.randn_like(outs[1 + k]) if k < ns else None for k in range(3))
    needs = tuple(fwd[1 + k] is not None for k in range(3)) + tuple(fwd[4 + k] is not None for k in range(4))
    args = neuron_mod.bwd_inputs(fwd, outs[-1], gs, grad_states, needs)
    torch.library.opcheck(torch.ops.spikeforge.neuron_bwd.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=["fp32", "fp64", "fp16"])
@pytest.mark.parametrize("name", ALL)
def test_saved_values_backward_equals_recompute(name, dtype, monkeypatch):
    """The backward that reads the values the forward saved (the CUDA default) and the one that recomputes them
    from x (the CPU default) give the same gradients bitwise, through the public op."""
    shape = (6, 2, 3, 5)
    x = _x(name, shape, dtype)
    inits = _inits(name, shape, dtype)
    kw = _kw(name, shape)
    grads = upstream_grads(name, x, kw)
    res = []
    for recompute in (True, False):
        monkeypatch.setitem(neuron_mod.default_recompute, "cpu", recompute)
        opts = neuron_mod.op_inputs(
            getattr(ops, name), x.clone().requires_grad_(), *[inits[n] for n in SPECS[name]["inits"]], **kw
        )
        # the option the public call ran with (regression: it was memoised)
        assert neuron_mod.NeuronOptions(*opts[8:]).save is (not recompute)
        res.append(run(ops, name, x, inits, kw, grads))
    assert_same_forward(res[0], res[1], name)
    assert_grads_close(res[0], res[1], 0.0, 0.0)


# ------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True)
# ------------------------------------------------------------------------------------------------
def _zoo_net(x, v0, m0, beta, thr, alpha):
    """Every new op once, chained (per-channel coefficient tensors)."""
    s1, v1, b1 = ops.alif(x, v0, None, tau=1.5, beta_a=0.7, rho=0.8, surrogate="atan", return_v="seq")
    s2, v2 = ops.ilif(x + 0.25 * s1, D=3, tau=4.0 / 3.0, decay_input=False)
    s3, v3 = ops.ternary_lif(x - 0.5 * v1, tau=1.75, v_reset=None, two_sided=True, surrogate="erf")
    s4, m4 = ops.leaky(
        x,
        m0,
        beta=beta,
        threshold=thr,
        graded_spikes_factor=alpha + 0.5,
        reset_delay=False,
        surrogate="fast_sigmoid",
        surrogate_alpha=5.0,
        return_mem="seq",
    )
    s5, i5, m5 = ops.synaptic(0.5 * x, None, m0, alpha=alpha, beta=beta, threshold=thr, reset_mechanism="zero")
    s6, e6, i6, m6 = ops.alpha_neuron(
        x,
        None,
        None,
        m0,
        alpha=alpha * 0.1 + 0.87,
        beta=beta * 0.5,
        threshold=thr,
        reset_mechanism="subtract",
        surrogate="atan",
    )
    return (s1, v1, b1, s2, v2, s3, v3, s4, m4, s5, i5, m5, s6, e6, i6, m6)


def _zoo_inputs(shape=(5, 2, 3, 4)):
    x = (torch.randn(shape) * 0.8 + 0.5).requires_grad_()
    v0 = (torch.randn(shape[1:]) * 0.5).requires_grad_()
    m0 = (torch.randn(shape[1:]) * 0.5).requires_grad_()
    beta = torch.empty(shape[2], 1).uniform_(0.6, 0.9).requires_grad_()
    thr = torch.empty(shape[2], 1).uniform_(0.8, 1.2).requires_grad_()
    alpha = torch.empty(shape[2], 1).uniform_(0.5, 0.85).requires_grad_()
    return x, v0, m0, beta, thr, alpha


def _loss(outs, ups):
    return sum((o * u).sum() for o, u in zip(outs, ups))


def test_compile_aot_eager_matches_eager():
    """aot_eager traces the custom ops without codegen: outputs and gradients bitwise equal to eager, for two
    shapes (the second recompiles with symbolic sizes: the fake functions), and the graph holds the op."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(_zoo_net, backend=backend, fullgraph=True)
    for shape in ((5, 2, 3, 4), (7, 3, 3, 2)):
        inputs = _zoo_inputs(shape)
        outs_c = compiled(*inputs)
        outs_e = _zoo_net(*inputs)
        ups = [torch.randn_like(o) for o in outs_e]
        for a, b in zip(outs_c, outs_e):
            assert torch.equal(a, b)
        g_c = torch.autograd.grad(_loss(outs_c, ups), inputs)
        g_e = torch.autograd.grad(_loss(outs_e, ups), inputs)
        for a, b in zip(g_c, g_e):
            assert torch.equal(a, b)
    assert graphs and all(g.count("spikeforge.neuron_fwd") == 6 for g in graphs)


def test_compile_inductor_matches_eager():
    """inductor (C++ codegen around the custom ops): the ops' own outputs are untouched, gradients within float
    rounding of the fused element-wise code around them."""
    inputs = _zoo_inputs()
    torch._dynamo.reset()
    compiled = torch.compile(_zoo_net, fullgraph=True)
    outs_c = compiled(*inputs)
    outs_e = _zoo_net(*inputs)
    ups = [torch.randn_like(o) for o in outs_e]
    for k, (a, b) in enumerate(zip(outs_c, outs_e)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=lambda m: f"output {k}: {m}")
    g_c = torch.autograd.grad(_loss(outs_c, ups), inputs)
    g_e = torch.autograd.grad(_loss(outs_e, ups), inputs)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=RTOL32, atol=ATOL32 * max(1.0, b.abs().max().item()))


def test_compile_dynamic_true_float_options():
    """dynamic=True makes Python floats symbolic: the options' checks and the coefficient slots must trace."""

    def net(x):
        s, m = ops.leaky(x, beta=0.9, threshold=0.8, graded_spikes_factor=1.5, surrogate="atan")
        s2, v2, b2 = ops.alif(x, tau=1.5, beta_a=0.7, rho=0.8)
        s3, v3 = ops.ilif(x, D=3, tau=1.5, decay_input=False)
        s4, e4, i4, m4 = ops.alpha_neuron(x, alpha=0.9, beta=0.8)
        return s, m, s2, v2, b2, s3, v3, s4, m4

    x = torch.randn(5, 2, 7) + 0.5
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True, dynamic=True)
    for a, b in zip(compiled(x), net(x)):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# higher-order and functional autograd, every neuron op
# ------------------------------------------------------------------------------------------------
def _every_op():
    """(id, public op, reference, args builder) for every multi-step and single-step neuron op."""
    shape = (5, 2, 3, 4)

    def lif(x):
        return (x, torch.randn(shape[1:]) * 0.5), dict(tau=1.5, v_reset=-0.2, surrogate="atan", return_v="seq")

    def if_(x):
        return (x, torch.randn(shape[1:]) * 0.5), dict(v_reset=None, surrogate="sigmoid")

    def plif(x):
        return (x, torch.randn(3), torch.randn(shape[1:]) * 0.5), dict(surrogate="erf", return_v="seq")

    def lif_step(x):
        return (x[0], torch.randn(shape[1:]) * 0.5), dict(tau=2.0, surrogate="atan")

    def if_step(x):
        return (x[0], torch.randn(shape[1:]) * 0.5), dict(surrogate="sigmoid")

    def plif_step(x):
        return (x[0], torch.randn(3), torch.randn(shape[1:]) * 0.5), dict(surrogate="erf")

    def zoo(name):
        def build(x):
            inits = _inits(name, shape)
            return (x, *[inits[n] for n in SPECS[name]["inits"]]), _kw(name, shape)

        return build

    out = [
        ("lif", lif),
        ("if_neuron", if_),
        ("plif", plif),
        ("lif_step", lif_step),
        ("if_step", if_step),
        ("plif_step", plif_step),
    ] + [(n, zoo(n)) for n in ALL]
    return out


EVERY_OP = _every_op()


def _leaves(args, kw):
    args = tuple(a.clone().requires_grad_() for a in args)
    kw = {k: (v.clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in kw.items()}
    return args, kw, list(args) + [v for v in kw.values() if torch.is_tensor(v)]


def _x_for(name):
    return _x(name if name in ALL else "alif", (5, 2, 3, 4))


@pytest.mark.parametrize("name,build", EVERY_OP, ids=[e[0] for e in EVERY_OP])
def test_double_backward_matches_reference(name, build):
    """create_graph=True (gradient penalties): the first-order gradients are differentiable and their
    gradients are the reference's second-order gradients."""
    args, kw = build(_x_for(name))
    results = []
    for impl in (ops, reference):
        a, k, leaves = _leaves(args, kw)
        torch.manual_seed(1)
        outs = getattr(impl, name)(*a, **k)
        ups = [torch.randn_like(o) for o in outs]
        g1 = torch.autograd.grad(_loss(outs, ups), leaves, create_graph=True, allow_unused=True)
        g1 = [torch.zeros_like(l) if g is None else g for g, l in zip(g1, leaves)]
        penalty = sum((g * torch.randn_like(g)).sum() for g in g1)
        g2 = torch.autograd.grad(penalty, leaves, allow_unused=True) if penalty.requires_grad else [None] * len(leaves)
        g2 = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(g2, leaves)]
        results.append(([g.detach() for g in g1], g2))
    (g1o, g2o), (g1r, g2r) = results
    for a, b in zip(g1o, g1r):
        torch.testing.assert_close(a, b, rtol=RTOL32, atol=ATOL32 * max(1.0, b.abs().max().item()))
    if name != "ilif":  # ilif's straight-through spike and linear charge have no second-order terms
        assert any(b.abs().sum() > 0 for b in g2r), "the case should have second-order terms"
    for a, b in zip(g2o, g2r):
        torch.testing.assert_close(a, b, rtol=RTOL32, atol=ATOL32 * max(1.0, b.abs().max().item()))


ALIASED = [
    # one tensor passed as several arguments: every slot must get its own part of the gradient
    ("ssa", lambda x, s: ops.ssa(x, x, x), lambda x, s: reference.ssa(x, x, x)),
    (
        "alif",
        lambda x, s: ops.alif(x, s, s, return_states="seq"),
        lambda x, s: reference.alif(x, s, s, return_states="seq"),
    ),
    (
        "synaptic",
        lambda x, s: ops.synaptic(x, s, s, alpha=0.9, beta=0.8),
        lambda x, s: reference.synaptic(x, s, s, alpha=0.9, beta=0.8),
    ),
]


@pytest.mark.parametrize("name,op,ref", ALIASED, ids=[a[0] for a in ALIASED])
def test_double_backward_with_one_tensor_as_several_arguments(name, op, ref):
    """create_graph=True with ssa(x, x, x) or a state passed as two initial states: the first-order gradient
    was the sum over the slots once per slot (3x for ssa(x, x, x)), the second-order one too."""
    g = torch.Generator().manual_seed(3)
    shape = (3, 2, 4, 8) if name == "ssa" else (5, 2, 3)
    x0 = torch.randn(shape, dtype=torch.float64, generator=g) * 0.7 + 0.4
    s0 = 0.3 * torch.randn(shape[1:], dtype=torch.float64, generator=g)
    results = []
    for fn in (op, ref):
        x, s = x0.clone().requires_grad_(), s0.clone().requires_grad_()
        outs = fn(x, s)
        outs = outs if isinstance(outs, tuple) else (outs,)
        ups = [torch.randn(o.shape, dtype=o.dtype, generator=torch.Generator().manual_seed(5)) for o in outs]
        leaves = [x] if name == "ssa" else [x, s]
        g1 = torch.autograd.grad(_loss(outs, ups), leaves, create_graph=True)
        penalty = sum((gi * gi).sum() for gi in g1)
        g2 = torch.autograd.grad(penalty, leaves, allow_unused=True)
        results.append(
            ([gi.detach() for gi in g1], [torch.zeros_like(l) if gi is None else gi for gi, l in zip(g2, leaves)])
        )
    (g1o, g2o), (g1r, g2r) = results
    for a, b in zip(g1o + g2o, g1r + g2r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("how", ["forward_ad", "jvp"])
@pytest.mark.parametrize("name,build", EVERY_OP, ids=[e[0] for e in EVERY_OP])
def test_forward_mode_ad_is_refused_by_name(name, build, how):
    args, kw = build(_x_for(name))
    fn = getattr(ops, name)
    multi = name[:-5]  # a step op is named, or the multi-step op it runs
    public = (
        rf"spikeforge\.ops\.({name}|{multi}|{multi}_neuron)\b"
        if name.endswith("_step")
        else rf"spikeforge\.ops\.{name}\b"
    )
    if how == "forward_ad":
        import torch.autograd.forward_ad as fwAD

        with fwAD.dual_level():
            dual = fwAD.make_dual(args[0], torch.randn_like(args[0]))
            with pytest.raises(NotImplementedError, match=public):
                fn(dual, *args[1:], **kw)
    else:
        with pytest.raises(NotImplementedError, match=public):
            torch.func.jvp(lambda x: fn(x, *args[1:], **kw), (args[0],), (torch.randn_like(args[0]),))


@pytest.mark.parametrize("name,build", EVERY_OP, ids=[e[0] for e in EVERY_OP])
def test_vmap_equals_the_loop(name, build):
    """torch.func.vmap over a batch of inputs (and of the membrane's initial state) is the loop of calls."""
    fn = getattr(ops, name)
    args, kw = build(_x_for(name))
    xs = torch.stack([args[0] + 0.2 * torch.randn_like(args[0]) for _ in range(3)])
    inits = torch.stack([torch.randn_like(args[-1]) * 0.5 for _ in range(3)])

    def one(x, v):
        return fn(x, *args[1:-1], v, **kw)

    got = torch.func.vmap(one)(xs, inits)
    want = [one(xs[i], inits[i]) for i in range(3)]
    for k, g in enumerate(got):
        assert torch.equal(g, torch.stack([w[k] for w in want])), k


@pytest.mark.parametrize("name", SNN_MODELS)
def test_vmap_over_a_coefficient(name):
    """vmap over beta (a batch of per-channel decays): each slice runs with its own coefficient."""
    shape = (5, 2, 3, 4)
    x = _x(name, shape)
    kw = _kw(name, shape)
    betas = torch.stack([kw["beta"] * s for s in (1.0, 0.9, 0.8)])

    def one(b):
        return getattr(ops, name)(x, **dict(kw, beta=b))

    got = torch.func.vmap(one)(betas)
    for i in range(3):
        want = one(betas[i])
        for g, w in zip(got, want):
            assert torch.equal(g[i], w)


@pytest.mark.parametrize("name,build", EVERY_OP, ids=[e[0] for e in EVERY_OP])
def test_func_grad_equals_autograd(name, build):
    fn = getattr(ops, name)
    args, kw = build(_x_for(name))
    ups = None

    def loss(x):
        nonlocal ups
        outs = fn(x, *args[1:], **kw)
        if ups is None:
            g = torch.Generator().manual_seed(3)
            ups = [torch.randn(o.shape, generator=g) for o in outs]
        return _loss(outs, ups)

    got, value = torch.func.grad_and_value(loss)(args[0])
    x = args[0].clone().requires_grad_()
    want_value = loss(x)
    (want,) = torch.autograd.grad(want_value, [x])
    assert torch.equal(value, want_value.detach())  # the same forward numbers
    # regression: torch.func.grad raised torch's "must override the setup_context staticmethod" (a custom op's
    # registered autograd); under grad transforms the op runs the reference, whose gradients these are
    torch.testing.assert_close(got, want, rtol=RTOL32, atol=ATOL32 * max(1.0, want.abs().max().item()))
    # composed with vmap (per-example gradients) and jacrev
    xs = torch.stack([args[0], args[0] * 0.5 + 0.25])
    per_example = torch.func.vmap(torch.func.grad(loss))(xs)
    torch.testing.assert_close(per_example[0], got, rtol=RTOL32, atol=ATOL32 * max(1.0, got.abs().max().item()))
    jac = torch.func.jacrev(lambda x: fn(x, *args[1:], **kw)[1])(args[0])
    assert jac.shape == fn(args[0], *args[1:], **kw)[1].shape + args[0].shape
