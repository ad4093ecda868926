"""spikeforge.ops IF / LIF / PLIF against spikeforge.reference: every option, every surrogate, float64
gradcheck, half precision against float32.

Exactness: inputs are multiples of 1/8 and thresholds/resets are dyadic, k = 1/tau is 1/2 or 1/4 (PLIF:
sigmoid(w) exactly 1/2 or 1/4), so every intermediate of the forward pass is exact in float32 and the
spikes and membrane potentials must be bitwise equal to the reference whatever the evaluation order
(FMA contraction, vectorisation). Gradients are sums over time computed in different orders, so they
are compared with a tolerance.
"""

import itertools
import math

import pytest
import torch

from spikeforge.testing import dyadic

from neuron_helpers import NEURONS, assert_grads_close, call, fwd_bwd, h_seq, make_w, ops, reference, upstream
from spikeforge.ops import neuron as neuron_mod
from spikeforge.reference.surrogate import SURROGATES, surrogate_grad

SHAPE = (5, 2, 3, 4)  # [T, B, C, D]: PLIF's per-channel w has C = 3 entries
RESETS = {"hard0": 0.0, "hard-0.5": -0.5, "soft": None}
SURROGATE_NAMES = sorted(SURROGATES)
# A non-default alpha per surrogate (dyadic or far from the rect/triangle edges for dyadic inputs).
CUSTOM_ALPHA = {
    "sigmoid": 2.0,
    "atan": 3.0,
    "rect": 0.5,
    "triangle": 0.5,
    "piecewise_quadratic": 2.0,
    "piecewise_exp": 3.0,
    "erf": 1.0,
    "super_spike": 2.5,
    "soft_sign": 1.0,
}
THRESHOLDS = (1.0, 0.75, 1.5, 0.5)

# float32 gradient tolerance: measured worst |native - reference| over this grid is ~1.2e-6 of the
# gradient's largest magnitude (different summation order, vectorised exp); 1e-5 leaves a 10x margin.
RTOL32, ATOL32 = 1e-5, 1e-5
RTOL64, ATOL64 = 1e-10, 1e-10


def test_plif_k_is_exact_for_the_chosen_w(device):
    """Precondition of the exact PLIF tests: both implementations see k = sigmoid(w) = 1/2 and 1/4 exactly
    (if this fails on a device, the exact PLIF comparisons there fail for this reason)."""
    w = make_w("plif_c", 2, device=device)
    x = torch.ones(1, 1, 2, device=device)
    _, v = ops.plif(x, w, v_threshold=100.0)  # one step from V = 0: H = k * x = k
    assert v.flatten().tolist() == [0.5, 0.25]
    assert torch.sigmoid(w).tolist() == [0.5, 0.25]


def _grid():
    cases = []
    for i, (kind, reset, decay, detach, return_v, given_v) in enumerate(
        itertools.product(NEURONS, RESETS, (True, False), (False, True), ("last", "seq"), (False, True))
    ):
        if kind == "if" and decay:
            continue  # IF has no decay_input option
        vth = THRESHOLDS[(i + i // 4) % len(THRESHOLDS)]  # decorrelated from the inner (return_v, v_init) loops
        sur = SURROGATE_NAMES[i % len(SURROGATE_NAMES)]
        cid = (
            f"{kind}-{reset}-{'decay' if decay else 'nodecay'}-{'detach' if detach else 'nodetach'}-"
            f"{return_v}-{'vinit' if given_v else 'novinit'}-vth{vth}-{sur}"
        )
        cases.append(pytest.param(kind, RESETS[reset], decay, detach, return_v, given_v, vth, sur, id=cid))
    return cases


def _check_against_reference(
    device, kind, v_reset, decay, detach, return_v, given_v, vth, sur, alpha=None, shape=SHAPE
):
    x = dyadic(shape, -8, 40, device=device)
    v_init = dyadic(shape[1:], -8, 8, device=device) if given_v else None
    w = make_w(kind, shape[2], device=device)
    gs, gv = upstream(x, return_v)
    kw = dict(
        v_threshold=vth,
        v_reset=v_reset,
        decay_input=decay,
        detach_reset=detach,
        surrogate=sur,
        alpha=alpha,
        return_v=return_v,
    )
    got = fwd_bwd(ops, kind, x, v_init, w, gs, gv, **kw)
    want = fwd_bwd(reference, kind, x, v_init, w, gs, gv, **kw)
    assert got["v"].shape == want["v"].shape == (x.shape if return_v == "seq" else x.shape[1:])
    assert torch.equal(got["s"], want["s"])
    assert torch.equal(got["v"], want["v"])
    assert set(got) == set(want)
    assert_grads_close(got, want, RTOL32, ATOL32)
    return got


@pytest.mark.parametrize("kind,v_reset,decay,detach,return_v,given_v,vth,sur", _grid())
def test_matches_reference(device, kind, v_reset, decay, detach, return_v, given_v, vth, sur):
    got = _check_against_reference(device, kind, v_reset, decay, detach, return_v, given_v, vth, sur)
    assert 0 < got["s"].sum() < got["s"].numel()  # the case exercises both firing and not firing


def _surrogate_grid():
    cases = []
    for sur, custom, kind, reset, detach in itertools.product(
        SURROGATE_NAMES, (False, True), ("lif_tau2", "plif_c", "if"), ("hard-0.5", "soft"), (False, True)
    ):
        alpha = CUSTOM_ALPHA[sur] if custom else None
        cid = f"{sur}-alpha{alpha}-{kind}-{reset}-{'detach' if detach else 'nodetach'}"
        cases.append(pytest.param(sur, alpha, kind, RESETS[reset], detach, id=cid))
    return cases


@pytest.mark.parametrize("sur,alpha,kind,v_reset,detach", _surrogate_grid())
def test_surrogates_match_reference(device, sur, alpha, kind, v_reset, detach):
    _check_against_reference(device, kind, v_reset, True, detach, "seq", True, 1.0, sur, alpha=alpha)


def _semantics_surrogate(name, x, a):
    """g'(x) written out independently from docs/ops.md (float64)."""
    ax = (a * x).abs()
    if name == "sigmoid":
        # a s (1 - s) with 1 - s = 1 / (1 + exp(a x)) formed apart: 1 - s itself cancels (a relative error up to
        # 1e-11 here in float64, more than the rtol below)
        s = 1 / (1 + torch.exp(-a * x))
        return a * s * (1 / (1 + torch.exp(a * x)))
    if name == "atan":
        return a / (2 * (1 + (math.pi / 2 * a * x) ** 2))
    if name == "rect":
        return (x.abs() < 1 / (2 * a)).double() * a
    if name in ("triangle", "piecewise_quadratic"):
        return torch.clamp(a - a * a * x.abs(), min=0)
    if name == "piecewise_exp":
        return a / 2 * torch.exp(-ax)
    if name == "erf":
        return a / math.sqrt(math.pi) * torch.exp(-(ax**2))
    if name == "super_spike":
        return a / (ax + 1) ** 2
    if name == "soft_sign":
        return 1 / (2 * a * (1 / a + x.abs()) ** 2)
    raise AssertionError(name)


@pytest.mark.parametrize("custom", [False, True], ids=["default_alpha", "custom_alpha"])
@pytest.mark.parametrize("sur", SURROGATE_NAMES)
def test_surrogate_formula(sur, custom):
    """Reference and native surrogate g'(H - V_th) equal the formula of docs/ops.md with its default alpha.

    Native: one IF step from V = 0 gives H = x, so d spike / d x = g'(x - V_th)."""
    default_alpha = {
        "sigmoid": 4.0,
        "atan": 2.0,
        "rect": 1.0,
        "triangle": 1.0,
        "piecewise_quadratic": 1.0,
        "piecewise_exp": 1.0,
        "erf": 2.0,
        "super_spike": 1.0,
        "soft_sign": 2.0,
    }[sur]
    assert SURROGATES[sur][1] == default_alpha
    a = CUSTOM_ALPHA[sur] if custom else default_alpha
    vth = 0.5
    xs = torch.arange(-80, 113, dtype=torch.float64) / 32  # exact in float32 too, so are x - vth
    want = _semantics_surrogate(sur, xs - vth, a)
    assert want.max() > 0
    torch.testing.assert_close(surrogate_grad(sur, xs - vth, a), want, rtol=1e-12, atol=0)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        x = xs.to(dtype).view(1, -1).requires_grad_()
        s, _ = ops.if_neuron(x, v_threshold=vth, surrogate=sur, alpha=a if custom else None)
        assert torch.equal(s[0], (xs >= vth).to(dtype))
        (g,) = torch.autograd.grad(s.sum(), x)
        torch.testing.assert_close(g[0].double(), want, rtol=rtol, atol=rtol * a)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 5e-6), (torch.float64, 1e-12)], ids=["float32", "float64"])
def test_sigmoid_surrogate_is_accurate_in_its_tails(device, dtype, rtol):
    """Regression: alpha s (1 - s) cancels in 1 - s (float32: 0 for |alpha x| > 17 and off by up to 100% for
    |alpha x| in 10..17). The kernels and the reference keep a small relative error out to |alpha x| = 24."""
    a, vth = 4.0, 0.5
    xs = torch.arange(-5632, 6657, dtype=torch.float64) / 1024  # exact in float32, and so is x - vth
    e = torch.exp(-a * (xs - vth).abs())
    want = a * e / (1 + e) ** 2  # float64, no cancellation
    assert want.min() < 1e-9  # the tails are in the range
    x = xs.to(device=device, dtype=dtype).view(1, -1).requires_grad_()
    s, _ = ops.if_neuron(x, v_threshold=vth, surrogate="sigmoid")  # one IF step from V = 0: H = x
    (g,) = torch.autograd.grad(s.sum(), x)
    torch.testing.assert_close(g[0].double().cpu(), want, rtol=rtol, atol=0)
    ref = surrogate_grad("sigmoid", xs.to(dtype) - vth, a)
    torch.testing.assert_close(ref.double(), want, rtol=rtol, atol=0)


@pytest.mark.parametrize("sur", SURROGATE_NAMES)
def test_alpha_is_used(sur):
    """A different alpha changes the gradient (so the custom-alpha cases above test something)."""
    x = dyadic(SHAPE)
    g = []
    for alpha in (None, CUSTOM_ALPHA[sur]):
        xl = x.clone().requires_grad_()
        s, v = ops.lif(xl, surrogate=sur, alpha=alpha, return_v="seq")
        g.append(torch.autograd.grad(s.sum() + v.sum(), xl)[0])
    assert not torch.allclose(g[0], g[1])


@pytest.mark.parametrize("kind", NEURONS)
def test_heaviside_at_zero_fires(device, kind):
    """S = Heaviside(H - V_th) with Heaviside(0) = 1: H exactly at the threshold fires."""
    vth = 0.75
    w = make_w(kind, 2, device=device)
    # one step from V = 0 with decay_input: H = k x; choose x so H = vth exactly.
    k = {"lif_tau2": 0.5, "lif_tau4": 0.25, "if": 1.0, "plif": 0.25}.get(kind)
    ks = torch.tensor([k, k] if k is not None else [0.5, 0.25], device=device)
    x = (vth / ks).view(1, 1, 2)
    below = x - 2.0**-10
    for xx, fires in ((x, 1.0), (below, 0.0)):
        s, v = call(ops, kind, xx, None, w, v_threshold=vth, return_v="seq")
        s_ref, _ = call(reference, kind, xx, None, w, v_threshold=vth, return_v="seq")
        assert s.flatten().tolist() == [fires, fires]
        assert torch.equal(s, s_ref)


@pytest.mark.parametrize("kind", NEURONS)
@pytest.mark.parametrize("v_reset", [0.0, -0.5, None], ids=["hard0", "hard-0.5", "soft"])
def test_default_v_init(kind, v_reset):
    """v_init=None means V[-1] = v_reset (hard reset) or 0 (soft reset), outputs and gradients alike."""
    x = dyadic(SHAPE)
    w = make_w(kind, SHAPE[2])
    gs, gv = upstream(x, "seq")
    kw = dict(v_reset=v_reset, return_v="seq")
    got = fwd_bwd(ops, kind, x, None, w, gs, gv, **kw)
    v0 = torch.full(SHAPE[1:], 0.0 if v_reset is None else v_reset)
    want = fwd_bwd(ops, kind, x, v0, w, gs, gv, **kw)
    for key in got:
        assert torch.equal(got[key], want[key]), key


# ------------------------------------------------------------------------------------------------
# float64: gradcheck and the surrogate gradient path
# ------------------------------------------------------------------------------------------------
def _away_from_threshold(kind, shape, vth, v_reset, decay, margin=1e-3, w=None, tries=200):
    """float64 x, v_init with every H[t] at least `margin` from the threshold (finite differences of
    gradcheck never flip a spike)."""
    for _ in range(tries):
        x = torch.randn(shape, dtype=torch.float64) * 1.5 + 0.5
        v_init = torch.randn(shape[1:], dtype=torch.float64) * 0.5
        h = h_seq(kind, x, v_init, w, v_threshold=vth, v_reset=v_reset, decay_input=decay)
        if (h - vth).abs().min() > margin and 0 < (h >= vth).sum() < h.numel():
            return x, v_init
    raise AssertionError("no input away from the threshold found")


def _gradcheck_cases():
    out = []
    for kind, reset, decay in itertools.product(NEURONS, ("hard-0.5", "soft"), (True, False)):
        if kind == "if" and decay:
            continue
        out.append(pytest.param(kind, RESETS[reset], decay, id=f"{kind}-{reset}-{'decay' if decay else 'nodecay'}"))
    return out


def _v_seq_fn(kind, path, vth, v_reset, decay):
    """(x, v_init[, w]) -> v_seq with detach_reset=True, through the eager fast path or the custom op."""
    if path == "fast":

        def fn(x, v_init, w=None):
            return call(
                ops,
                kind,
                x,
                v_init,
                w,
                v_threshold=vth,
                v_reset=v_reset,
                decay_input=decay,
                detach_reset=True,
                return_v="seq",
            )[1]

        return fn

    def fn(x, v_init, w=None):
        # the custom op's own inputs for this call (PLIF's k = sigmoid(w) is formed by the op's torch code)
        kw = dict(v_threshold=vth, v_reset=v_reset, detach_reset=True, return_v="seq")
        if kind == "if":
            args = neuron_mod.op_inputs(ops.if_neuron, x, v_init, **kw)
        elif kind.startswith("lif"):
            args = neuron_mod.op_inputs(
                ops.lif, x, v_init, tau=2.0 if kind == "lif_tau2" else 4.0, decay_input=decay, **kw
            )
        else:
            args = neuron_mod.op_inputs(ops.plif, x, w, v_init, decay_input=decay, **kw)
        return torch.ops.spikeforge.neuron_fwd(*args)[1]

    return fn


@pytest.mark.parametrize("path", ["fast", "op"])
@pytest.mark.parametrize("kind,v_reset,decay", _gradcheck_cases())
def test_gradcheck_v_seq_float64(kind, v_reset, decay, path):
    """Spikes have derivative zero almost everywhere, so finite differences can only check V: with
    detach_reset=True, dV/dH = 1 - S (hard) or 1 (soft) exactly and no surrogate enters."""
    shape = (4, 2, 3)
    vth = 1.0
    w = None
    if kind.startswith("plif"):
        w = (
            torch.tensor(-0.7, dtype=torch.float64)
            if kind == "plif"
            else torch.tensor([0.3, -1.1, 0.8], dtype=torch.float64)
        )
    x, v_init = _away_from_threshold(kind, shape, vth, v_reset, decay, w=w)
    fn = _v_seq_fn(kind, path, vth, v_reset, decay)
    inputs = (x.requires_grad_(), v_init.requires_grad_()) + ((w.requires_grad_(),) if w is not None else ())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def _fp64_cases():
    out = []
    for sur, kind, reset in itertools.product(SURROGATE_NAMES, ("lif_tau4", "plif_c", "if"), ("hard-0.5", "soft")):
        out.append(pytest.param(sur, kind, RESETS[reset], id=f"{sur}-{kind}-{reset}"))
    return out


@pytest.mark.parametrize("sur,kind,v_reset", _fp64_cases())
def test_surrogate_gradient_float64(sur, kind, v_reset):
    """The full surrogate BPTT (detach_reset=False) in float64 on random, non-dyadic inputs: outputs and
    gradients agree with reference autograd to ~1e-10 (only the summation order differs)."""
    x = torch.randn(SHAPE, dtype=torch.float64) * 1.5 + 0.5
    v_init = torch.randn(SHAPE[1:], dtype=torch.float64) * 0.5
    w = torch.randn(SHAPE[2], dtype=torch.float64) if kind == "plif_c" else None
    gs, gv = upstream(x, "seq")
    kw = dict(v_reset=v_reset, surrogate=sur, return_v="seq")
    got = fwd_bwd(ops, kind, x, v_init, w, gs, gv, **kw)
    want = fwd_bwd(reference, kind, x, v_init, w, gs, gv, **kw)
    assert torch.equal(got["s"], want["s"])
    assert 0 < want["s"].sum() < want["s"].numel()
    torch.testing.assert_close(got["v"], want["v"], rtol=RTOL64, atol=ATOL64)
    assert_grads_close(got, want, RTOL64, ATOL64)


@pytest.mark.parametrize("v_reset", [0.0, None], ids=["hard", "soft"])
def test_float64_keeps_float64_parameters(v_reset):
    """float64 must compute with float64 constants: tau = 3 (k = 1/3), v_threshold = 0.3, alpha = 3 are
    not float32 numbers, and the reference uses them at full precision."""
    x = torch.randn(SHAPE, dtype=torch.float64) + 0.5
    gs, gv = upstream(x, "seq")
    kw = dict(tau=3.0, v_threshold=0.3, v_reset=v_reset, surrogate="atan", alpha=3.0, return_v="seq")
    got = fwd_bwd(ops, "lif_tau2", x, None, None, gs, gv, **kw)
    want = fwd_bwd(reference, "lif_tau2", x, None, None, gs, gv, **kw)
    assert torch.equal(got["s"], want["s"])
    torch.testing.assert_close(got["v"], want["v"], rtol=RTOL64, atol=ATOL64)
    assert_grads_close(got, want, RTOL64, ATOL64)


# ------------------------------------------------------------------------------------------------
# float16 / bfloat16 against float32
# ------------------------------------------------------------------------------------------------
# Tolerances (eps = torch.finfo(dtype).eps: 2^-10 for float16, 2^-7 for bfloat16):
# - H: state and accumulation are float32 (docs/design.md), but an implementation may round
#   H or V to the activation dtype once per step (relative error eps/2); an error in V[t-1] reaches H[t]
#   with a factor <= 1, so |H_half - H_fp32| <= T * eps/2 * max|H|. A neuron whose fp32 H comes within
#   that distance of the threshold at any step may legitimately fire differently (and then everything
#   after differs), so it is excluded; every other neuron must fire exactly as in float32.
# - v and gradients of the remaining neurons: within 4 eps of the tensor's largest value (measured:
#   <= 1.1 eps; sources are the final rounding of the output and, when H is saved in the activation dtype
#   for backward, its rounding fed through the surrogate's slope and the T-step recursion).
# The inputs and upstream gradients are the same half-precision numbers in both runs.
LOW_TOL = 4.0


@pytest.mark.parametrize("kind", ["lif_tau2", "if", "plif", "plif_c"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("v_reset", [0.0, None], ids=["hard", "soft"])
def test_half_precision_against_float32(device, dtype, kind, v_reset):
    T = 6
    shape = (T, 4, 3, 40)
    x = (torch.randn(shape, device=device) * 1.2 + 0.4).to(dtype)
    v_init = (torch.randn(shape[1:], device=device) * 0.5).to(dtype)
    w = None
    if kind == "plif":
        w = torch.tensor(-0.4, device=device)
    elif kind == "plif_c":
        w = torch.randn(3, device=device)
    vth = 1.0
    eps = torch.finfo(dtype).eps
    h = h_seq(kind, x.double(), v_init.double(), w, v_threshold=vth, v_reset=v_reset)
    tol_h = T * eps / 2 * max(1.0, h.abs().max().item())
    safe = ((h - vth).abs() > tol_h).all(0)  # per neuron, over all steps
    assert safe.float().mean() > 0.5
    gs, gv = upstream(x, "seq")
    # Excluded neurons get no upstream gradient, so PLIF's w gradient (a sum over neurons) only sees
    # the neurons whose spikes must match.
    gs, gv = gs * safe, gv * safe
    kw = dict(v_reset=v_reset, v_threshold=vth, return_v="seq", surrogate="sigmoid")
    got = fwd_bwd(ops, kind, x, v_init, w, gs, gv, **kw)
    want = fwd_bwd(ops, kind, x.float(), v_init.float(), w, gs.float(), gv.float(), **kw)
    assert got["s"].dtype == dtype and got["v"].dtype == dtype and got["g_x"].dtype == dtype
    assert torch.equal(got["s"][:, safe].float(), want["s"][:, safe])
    assert 0 < want["s"][:, safe].sum() < want["s"][:, safe].numel()
    for key in ("v", "g_x", "g_v_init", "g_w"):
        if key not in want:
            continue
        a, b = got[key].float(), want[key]
        if key != "g_w":
            a, b = a[..., safe], b[..., safe]
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, rtol=LOW_TOL * eps, atol=LOW_TOL * eps * scale, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("save_h", [False, True], ids=["recompute_h", "saved_h"])
def test_half_precision_backward_uses_forward_spikes(device, save_h, monkeypatch):
    """H = 1 - 2^-13 is below the threshold in float32 (no spike) but rounds to 1.0 in float16. Whether
    backward recomputes H or reads it from a float16 buffer saved by the forward (the CUDA default), it
    must use the forward's decision S = 0: dV/dH = 1 - S + ..., an O(1) term.

    LIF tau=2, hard reset 0: H0 = x0/2 = 1/2 - 2^-12, H1 = H0/2 + x1/2 = 1 - 2^-13."""
    from spikeforge.ops import neuron as neuron_mod

    monkeypatch.setitem(neuron_mod.default_recompute, device, not save_h)
    x16 = torch.tensor([[1 - 2.0**-11], [1.5], [0.0]], dtype=torch.float16, device=device)
    gs, gv = torch.ones_like(x16), torch.ones_like(x16)
    got = fwd_bwd(ops, "lif_tau2", x16, None, None, gs, gv, return_v="seq")
    want = fwd_bwd(ops, "lif_tau2", x16.float(), None, None, gs.float(), gv.float(), return_v="seq")
    assert got["s"].sum() == 0 and want["s"].sum() == 0
    eps = torch.finfo(torch.float16).eps
    torch.testing.assert_close(got["g_x"].float(), want["g_x"], rtol=LOW_TOL * eps, atol=LOW_TOL * eps)


_TAU_MODELS = {  # the SpikingJelly-family neurons that divide by tau (the op's name), each with its resets
    "lif": ({"v_reset": 0.0}, {"v_reset": None}),
    "alif": ({"v_reset": None}, {"v_reset": 0.0}),
    "ilif": ({},),
    "ternary_lif": ({"v_reset": 0.0}, {"v_reset": None}),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("decay", [True, False], ids=["decay_input", "no_decay_input"])
@pytest.mark.parametrize("tau", [2.0, 4.0, 0.5, 1.0, 0.125, 2.0**40, 3.0, 2.0 * (1 + 2.0**-23)])
@pytest.mark.parametrize("model", sorted(_TAU_MODELS))
def test_divide_by_tau_bitwise_on_any_input(device, model, dtype, decay, tau):
    """SpikingJelly divides by tau, and so do the kernels, bit for bit on inputs that round in every step
    (random, subnormal, huge, NaN, signed zeros), not only on the dyadic inputs of the tests above: powers of two
    (where a multiply by 1/tau would give the same numbers) and taus where only a division does (3,
    2 (1 + 2^-23)). (Infinities are left out: the reference's hard reset S v_reset + (1 - S) H is NaN there,
    docs/bad_inputs.md.)"""
    g = torch.Generator().manual_seed(7)
    tiny = torch.finfo(dtype).tiny
    big = torch.finfo(dtype).max / 2**24  # (no overflow over the 6 steps at tau = 1/8)
    special = torch.tensor([0.0, -0.0, tiny / 8, -tiny / 3, tiny, big, -big, math.nan], dtype=dtype)
    x = torch.randn(6, 4, 40, generator=g, dtype=torch.float64).to(dtype) * 1.7
    x.view(-1)[: special.numel() * 7 : 7] = special
    for reset in _TAU_MODELS[model]:
        kw = dict(tau=tau, v_threshold=0.7, decay_input=decay, return_v="seq", **reset)
        got = getattr(ops, model)(x.to(device), **kw)
        want = getattr(reference, model)(x, **kw)
        for a, b in zip(got, want):
            torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0, equal_nan=True)
