"""The newer neuron ops against spikeforge.reference over their option grids: alif, ilif, ternary_lif
(SpikingJelly conventions) and leaky, synaptic, alpha_neuron (snnTorch conventions).

The kernels promise to round every forward operation once, in the order the reference (and the peer) writes
it, so spikes and states are compared bitwise on random (not dyadic) inputs in float32 and float64. In
float16 / bfloat16 the kernels keep states and arithmetic in float32, which is the reference run in float32
on the rounded inputs: outputs are compared bitwise after rounding. Gradients are sums over time in another
order: compared with a tolerance relative to the gradient's scale.
"""

import itertools

import pytest
import torch

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

SHAPE = (10, 2, 3, 2, 4)  # [T, B, C, H, W]: per-channel coefficients have C = 3 entries, per-W ones 4
RTOL32, ATOL32 = 1e-5, 1e-5
RTOL64, ATOL64 = 1e-10, 1e-10

SJ_SURROGATES = (
    ("sigmoid", None),
    ("atan", 3.0),
    ("erf", None),
    ("super_spike", 1.5),
    ("soft_sign", None),
    ("piecewise_exp", 2.0),
    ("triangle", 0.5),
    ("rect", 0.5),
)
# snnTorch's functions with their parameters (surrogate, surrogate_alpha, surrogate_beta); parameters kept
# where BPTT's products of (1 - thr g') stay moderate over T steps, so that the gradients are well conditioned
SNN_SURROGATES = (
    ("atan", None, None),
    ("fast_sigmoid", None, None),
    ("sigmoid", 5.0, None),
    ("snntorch_triangular", 0.5, None),
    ("straight_through", None, None),
    ("spike_rate_escape", 1.0, 2.0),
    ("heaviside", None, None),
    ("fast_sigmoid", 10.0, None),
    ("atan", 1.0, None),
    ("disabled", None, None),
    ("sigmoid", None, None),
)
LAYOUTS = ("float", "scalar", "last", "channel", "neuron", "pattern", "clamped")


def _x(name, shape, dtype=torch.float32, gen=None):
    """Inputs that make every model fire in a fair share of its steps (and not fire in the others)."""
    mean, std = {
        "alif": (0.7, 1.0),
        "ilif": (0.8, 1.5),
        "ternary_lif": (0.0, 1.6),
        "leaky": (0.35, 0.6),
        "synaptic": (0.12, 0.4),
        "alpha_neuron": (0.25, 0.8),
    }[name]
    return (torch.randn(shape, generator=gen) * std + mean).to(dtype)


def _inits(name, shape, given, dtype=torch.float32):
    """Initial states: None, or random tensors of one step's shape (alif's b >= 0)."""
    if not given:
        return {}
    out = {}
    for n in SPECS[name]["inits"]:
        t = torch.randn(shape[1:]) * 0.5
        out[n] = (t.abs() if n == "b_init" else t).to(dtype)
    return out


def _coef(layout, shape, lo, hi, dtype=torch.float32):
    """A coefficient of the snnTorch models in one of the layouts the ops accept (state shape[1:] = [B, C, H, W])."""
    B, C, H, W = shape[1:]
    if layout == "float":
        return float(torch.empty(()).uniform_(lo, hi))
    size = {
        "scalar": (),
        "last": (W,),
        "channel": (C, 1, 1),
        "neuron": (B, C, H, W),
        "pattern": (C, 1, W),
        "clamped": (B, C, H, W),
    }[layout]
    t = torch.empty(size).uniform_(lo, hi)
    return t.to(dtype)


def _snn_kw(name, layout, shape, dtype=torch.float32):
    """beta / threshold / graded_spikes_factor / alpha of an snnTorch model in a layout."""
    kw = {"threshold": _coef(layout, shape, 0.7, 1.3, dtype)}
    if name == "alpha_neuron":
        kw["alpha"] = _coef(layout, shape, 0.86, 0.95, dtype)
        kw["beta"] = _coef(layout, shape, 0.6, 0.8, dtype)
        return kw
    kw["beta"] = _coef(layout, shape, 0.5, 0.95, dtype)
    if layout == "clamped":  # snnTorch clamps beta (and Synaptic's alpha) to [0, 1]: values outside too
        kw["beta"].view(-1)[::3] = 1.25
        kw["beta"].view(-1)[1::5] = -0.2
    if name == "leaky":
        kw["graded_spikes_factor"] = _coef(layout, shape, 0.5, 1.5, dtype) if layout != "float" else 1.0
    else:
        kw["alpha"] = _coef(layout, shape, 0.5, 0.9, dtype)
        if layout == "clamped":
            kw["alpha"].view(-1)[2::4] = 1.1
    return kw


def _check(name, x, inits, kw, *, rtol=RTOL32, atol=ATOL32, fires=True):
    grads = upstream_grads(name, x, kw)
    got = run(ops, name, x, inits, kw, grads)
    want = run(reference, name, x, inits, kw, grads)
    assert_same_forward(got, want, name)
    assert set(got) == set(want)
    assert_grads_close(got, want, rtol, atol)
    if fires:
        s = got["out"][0]
        assert 0 < (s != 0).sum() < s.numel(), "the case should exercise both firing and not firing"
    return got


# ------------------------------------------------------------------------------------------------
# SpikingJelly family
# ------------------------------------------------------------------------------------------------
def _alif_cases():
    out = []
    for i, (v_reset, decay, detach, ret, given) in enumerate(
        itertools.product((None, 0.0, -0.3), (True, False), (False, True), ("last", "seq"), (False, True))
    ):
        sur, alpha = SJ_SURROGATES[i % len(SJ_SURROGATES)]
        tau = (2.0, 1.5, 3.0)[i % 3]
        beta_a, rho = ((1.8, 0.9), (0.5, 0.6), (-0.3, 0.95), (2.5, 0.0), (1.0, 1.0))[i % 5]
        vth = (1.0, 0.8)[(i // 5) % 2]
        kw = dict(
            tau=tau,
            v_threshold=vth,
            v_reset=v_reset,
            beta_a=beta_a,
            rho=rho,
            decay_input=decay,
            detach_reset=detach,
            surrogate=sur,
            alpha=alpha,
            return_v=ret,
        )
        out.append(
            pytest.param(
                kw,
                given,
                id=f"{i}-vr{v_reset}-{'decay' if decay else 'nodecay'}-"
                f"{'detach' if detach else 'nodetach'}-{ret}-"
                f"{'init' if given else 'noinit'}"
                f"-{sur}-tau{tau}-ba{beta_a}-rho{rho}",
            )
        )
    return out


@pytest.mark.parametrize("kw,given", _alif_cases())
def test_alif_matches_reference(kw, given):
    x = _x("alif", SHAPE)
    _check("alif", x, _inits("alif", SHAPE, given), kw)


def _ilif_cases():
    out = []
    for i, (tau, decay, detach, ret, given) in enumerate(
        itertools.product((2.0, 4.0 / 3.0, None), (True, False), (False, True), ("last", "seq"), (False, True))
    ):
        if tau is None and decay:
            continue  # decay_input has no meaning without a leak
        D = (4, 1, 2, 7, 3)[i % 5]
        vth = (1.0, 0.6, 1.7)[i % 3]
        kw = dict(D=D, tau=tau, v_threshold=vth, decay_input=decay, detach_reset=detach, return_v=ret)
        out.append(
            pytest.param(
                kw,
                given,
                id=f"{i}-tau{tau}-{'decay' if decay else 'nodecay'}-"
                f"{'detach' if detach else 'nodetach'}-{ret}-"
                f"{'init' if given else 'noinit'}"
                f"-D{D}-vth{vth}",
            )
        )
    return out


@pytest.mark.parametrize("kw,given", _ilif_cases())
def test_ilif_matches_reference(kw, given):
    # in units of the threshold (the I-LIF is linear in it): H / v_th spreads as at v_th = 1, so every case
    # emits counts above 1 whatever the seed
    x = _x("ilif", SHAPE) * kw.get("v_threshold", 1.0)
    got = _check("ilif", x, _inits("ilif", SHAPE, given), kw)
    s = got["out"][0]
    assert torch.equal(s, s.round()) and s.min() >= 0 and s.max() <= kw["D"]
    if kw["D"] > 1:
        assert (s > 1).any(), "the case should emit counts above 1"


def test_ilif_rounds_half_to_even():
    """S = round(H / v_th) with ties to even, as torch.round (SpikingJelly's MultiLevelSpikeCount): 0.5 -> 0,
    1.5 -> 2, 2.5 -> 2, 3.5 -> 4 (capped at D)."""
    x = torch.tensor([[0.5, 1.5, 2.5, 3.5, 4.5, -0.5, 0.49999997]])
    s, v = ops.ilif(x, tau=None, D=4)
    assert s.tolist() == [[0.0, 2.0, 2.0, 4.0, 4.0, 0.0, 0.0]]
    assert torch.equal(v, x[0] - s[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [4.0 / 3.0, 1.5, 3.0])
def test_ilif_without_decay_input_charges_as_spikingjelly_ilifnode(tau, dtype):
    """Regression: ilif(decay_input=False) is SpikingJelly 2.0's multi-step ILIFNode, which charges
    H = (1 - 1/tau) V + X with 1 - 1/tau rounded once from double; the LIF form V - V / tau + X (the kernels'
    first version) differs in the last bit for most V when 1/tau is not a power of two, and the
    membranes drifted apart from SpikingJelly's (tests/interop/test_neuron_peers.py compares with ILIFNode itself)."""
    x = torch.randn(32, 4, 64, dtype=dtype) * 1.2 + 0.9
    s, v = ops.ilif(x, D=4, tau=tau, decay_input=False, return_v="seq")
    keep = 1.0 - 1.0 / tau
    vp = torch.zeros_like(x[0])
    lif_form_differs = False
    for t in range(x.shape[0]):
        h = keep * vp + x[t]
        lif_form_differs |= not torch.equal(h, vp - vp / tau + x[t])
        st = torch.round(torch.clamp(h / 1.0, 0, 4))
        vp = h - st * 1.0
        assert torch.equal(s[t], st) and torch.equal(v[t], vp), t
    assert lif_form_differs  # the check can tell the two roundings apart


def _ternary_cases():
    out = []
    for i, (tau, v_reset, decay, detach, two_sided) in enumerate(
        itertools.product((2.0, 1.75, None), (0.0, -0.25, None), (True, False), (False, True), (False, True))
    ):
        if tau is None and decay:
            continue
        sur, alpha = SJ_SURROGATES[i % len(SJ_SURROGATES)]
        ret = ("last", "seq")[i % 2]
        given = (i // 2) % 2 == 1
        vth = (1.0, 0.7)[(i // 3) % 2]
        kw = dict(
            tau=tau,
            v_threshold=vth,
            v_reset=v_reset,
            decay_input=decay,
            detach_reset=detach,
            surrogate=sur,
            alpha=alpha,
            two_sided=two_sided,
            return_v=ret,
        )
        out.append(
            pytest.param(
                kw,
                given,
                id=f"{i}-tau{tau}-vr{v_reset}-{'decay' if decay else 'nodecay'}-"
                f"{'detach' if detach else 'nodetach'}-"
                f"{'two' if two_sided else 'one'}sided-{sur}-{ret}-vth{vth}",
            )
        )
    return out


@pytest.mark.parametrize("kw,given", _ternary_cases())
def test_ternary_lif_matches_reference(kw, given):
    x = _x("ternary_lif", SHAPE)
    got = _check("ternary_lif", x, _inits("ternary_lif", SHAPE, given), kw)
    s = got["out"][0]
    assert (s == 1).any() and (s == -1).any() and set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize(
    "alpha,vth",
    [(None, 1.0), (4.0, 0.7), (2.5, 0.3), (30.0, 1.0), (4.0, 6.0)],
    ids=["default", "vth0.7", "vth0.3", "alpha30", "vth6"],
)
def test_ternary_two_sided_sigmoid_matches_reference(alpha, vth):
    """SpikingJelly's TernaryLIFNode default, the two-sided sigmoid: in float32 the CPU kernel forms both sides' g'
    from one exp where |2 alpha v_th| <= 40 (the first three cases), two exps otherwise; both against the
    reference, on random sequences and on one step whose H sweeps far into the sigmoid's tails."""
    kw = dict(tau=2.0, v_threshold=vth, v_reset=0.0, surrogate="sigmoid", alpha=alpha, two_sided=True, return_v="seq")
    scale = 1.6 * max(1.0, abs(vth))
    _check("ternary_lif", torch.randn(SHAPE) * scale, {}, kw)
    sweep = torch.linspace(-24.0, 24.0, 4001) * max(1.0, abs(vth))
    _check("ternary_lif", sweep.reshape(1, -1), {}, kw)


# ------------------------------------------------------------------------------------------------
# snnTorch family
# ------------------------------------------------------------------------------------------------
def _snn_cases(name):
    out = []
    resets = ("subtract", "zero", "none")
    delays = (True,) if name == "alpha_neuron" else (True, False)
    # alpha_neuron needs alpha > beta within [0, 1]: no clamped layout
    layouts = tuple(lay for lay in LAYOUTS if not (name == "alpha_neuron" and lay == "clamped"))
    for i, (reset, delay, layout, ret) in enumerate(itertools.product(resets, delays, layouts, ("last", "seq"))):
        sur, sa, sb = SNN_SURROGATES[i % len(SNN_SURROGATES)]
        given = (i // 3) % 2 == 1
        out.append(
            pytest.param(
                reset,
                delay,
                layout,
                ret,
                given,
                sur,
                sa,
                sb,
                id=f"{i}-{reset}-{'delay' if delay else 'nodelay'}-{layout}-{ret}-"
                f"{'init' if given else 'noinit'}-{sur}{sa if sa is not None else ''}",
            )
        )
    return out


def _snn_call_kw(name, reset, delay, ret, sur, sa, sb, coefs):
    kw = dict(coefs, reset_mechanism=reset, surrogate=sur, surrogate_alpha=sa, surrogate_beta=sb, return_mem=ret)
    if name != "alpha_neuron":
        kw["reset_delay"] = delay
    return kw


@pytest.mark.parametrize("reset,delay,layout,ret,given,sur,sa,sb", _snn_cases("leaky"))
def test_leaky_matches_reference(reset, delay, layout, ret, given, sur, sa, sb):
    kw = _snn_call_kw("leaky", reset, delay, ret, sur, sa, sb, _snn_kw("leaky", layout, SHAPE))
    _check("leaky", _x("leaky", SHAPE), _inits("leaky", SHAPE, given), kw)


@pytest.mark.parametrize("reset,delay,layout,ret,given,sur,sa,sb", _snn_cases("synaptic"))
def test_synaptic_matches_reference(reset, delay, layout, ret, given, sur, sa, sb):
    kw = _snn_call_kw("synaptic", reset, delay, ret, sur, sa, sb, _snn_kw("synaptic", layout, SHAPE))
    _check("synaptic", _x("synaptic", SHAPE), _inits("synaptic", SHAPE, given), kw)


@pytest.mark.parametrize("reset,delay,layout,ret,given,sur,sa,sb", _snn_cases("alpha_neuron"))
def test_alpha_neuron_matches_reference(reset, delay, layout, ret, given, sur, sa, sb):
    kw = _snn_call_kw("alpha_neuron", reset, delay, ret, sur, sa, sb, _snn_kw("alpha_neuron", layout, SHAPE))
    _check("alpha_neuron", _x("alpha_neuron", SHAPE), _inits("alpha_neuron", SHAPE, given), kw)


@pytest.mark.parametrize("name", SNN_MODELS)
def test_snntorch_models_use_snntorch_surrogate_defaults(name):
    """Regression: the snnTorch models' surrogate="sigmoid" is snntorch.surrogate.sigmoid() (slope 25), not
    SpikingJelly's sigmoid (alpha 4, the other models' default); the reference agrees."""
    x = _x(name, SHAPE)
    kw = _snn_kw(name, "channel", SHAPE)
    grads = upstream_grads(name, x, kw)
    default = run(ops, name, x, {}, dict(kw, surrogate="sigmoid"), grads)
    slope25 = run(ops, name, x, {}, dict(kw, surrogate="sigmoid", surrogate_alpha=25.0), grads)
    slope4 = run(ops, name, x, {}, dict(kw, surrogate="sigmoid", surrogate_alpha=4.0), grads)
    ref = run(reference, name, x, {}, dict(kw, surrogate="sigmoid"), grads)
    assert torch.equal(default["g_x"], slope25["g_x"]) and not torch.equal(default["g_x"], slope4["g_x"])
    assert_grads_close(default, ref, RTOL32, ATOL32)
    # and the SpikingJelly models keep SpikingJelly's default
    xa = _x("alif", SHAPE)
    ga = upstream_grads("alif", xa, {})
    sj = run(ops, "alif", xa, {}, dict(surrogate="sigmoid"), ga)
    sj4 = run(ops, "alif", xa, {}, dict(surrogate="sigmoid", alpha=4.0), ga)
    assert torch.equal(sj["g_x"], sj4["g_x"])


@pytest.mark.parametrize("name", SNN_MODELS)
def test_disabled_surrogate_passes_no_gradient_through_spikes(name):
    """surrogate="disabled" (snnTorch's surrogate_disable=True): the spikes carry no gradient; the states' own
    gradients are unchanged (the reset is decided by the detached previous membrane)."""
    x = _x(name, SHAPE)
    kw = dict(_snn_kw(name, "channel", SHAPE), return_mem="seq")
    grads = upstream_grads(name, x, kw)
    only_states = [torch.zeros_like(grads[0])] + grads[1:]
    dis = run(ops, name, x, {}, dict(kw, surrogate="disabled"), grads)
    states = run(ops, name, x, {}, dict(kw, surrogate="atan"), only_states)
    assert torch.equal(dis["g_x"], states["g_x"])
    spikes_only = run(
        ops, name, x, {}, dict(kw, surrogate="disabled"), [grads[0]] + [torch.zeros_like(g) for g in grads[1:]]
    )
    assert not spikes_only["g_x"].any()


# ------------------------------------------------------------------------------------------------
# every model: float64, half precision, T = 0, N = 0, many dims
# ------------------------------------------------------------------------------------------------
# One representative call per model with non-default options everywhere (per-neuron coefficients).
def _representative(name, shape=SHAPE, dtype=torch.float32, layout="neuron"):
    if name == "alif":
        return dict(
            tau=1.5, v_threshold=0.8, v_reset=None, beta_a=0.7, rho=0.8, surrogate="atan", alpha=3.0, return_v="seq"
        )
    if name == "ilif":
        return dict(D=3, tau=4.0 / 3.0, v_threshold=0.7, decay_input=False, return_v="seq")
    if name == "ternary_lif":
        return dict(tau=1.75, v_threshold=0.9, v_reset=-0.2, surrogate="erf", two_sided=True, return_v="seq")
    kw = dict(
        _snn_kw(name, layout, shape, dtype),
        reset_mechanism="subtract",
        surrogate="fast_sigmoid",
        surrogate_alpha=5.0,
        return_mem="seq",
    )
    if name != "alpha_neuron":
        kw["reset_delay"] = False
    return kw


ALL = SJ_MODELS + SNN_MODELS


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("given", [False, True], ids=["noinit", "init"])
def test_float64_matches_reference(name, given):
    x = _x(name, SHAPE, torch.float64)
    kw = _representative(name, dtype=torch.float64)
    _check(name, x, _inits(name, SHAPE, given, torch.float64), kw, rtol=RTOL64, atol=ATOL64)


@pytest.mark.parametrize("name", SNN_MODELS)
@pytest.mark.parametrize("layout", ["float", "scalar", "last"])
def test_float64_with_float32_coefficients(name, layout):
    """float64 activations with float32 coefficient tensors (snnTorch's buffers are float32): the kernels
    read the coefficients' values exactly, as the reference's type promotion does."""
    x = _x(name, SHAPE, torch.float64)
    kw = _representative(name, layout=layout)
    grads = upstream_grads(name, x, kw)
    got = run(ops, name, x, {}, kw, grads)
    want = run(reference, name, x, {}, kw, grads)
    assert_same_forward(got, want, name)
    assert_grads_close(got, want, RTOL64, ATOL64, skip=[k for k in kw if torch.is_tensor(kw[k])])
    # the float32 coefficients' gradients: float64 sums rounded to float32 (one rounding apart at most)
    assert_grads_close(got, want, 1e-6, 1e-7)


HALF_TOL = 4.0  # in units of the dtype's eps, relative to the gradient's scale


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ALL)
def test_half_precision_is_float32_rounded(name, dtype):
    """16-bit activations: the kernels compute in float32 from the rounded inputs and round the outputs once,
    which is the reference in float32 on the same values: spikes and states bitwise after rounding;
    gradients within a few eps of the dtype."""
    x = _x(name, SHAPE, dtype)
    inits = _inits(name, SHAPE, True, dtype)
    kw = _representative(name)  # float32 coefficients
    grads = upstream_grads(name, x, kw)
    got = run(ops, name, x, inits, kw, grads)
    want = run(reference, name, x.float(), {k: v.float() for k, v in inits.items()}, kw, [g.float() for g in grads])
    want_rounded = {"out": [o.to(dtype) for o in want["out"]]}
    assert [o.dtype for o in got["out"]] == [dtype] * len(got["out"])
    assert_same_forward(got, want_rounded, name)
    eps = torch.finfo(dtype).eps
    for key in want:
        if not key.startswith("g_"):
            continue
        a, b = got[key], want[key]
        assert a.shape == b.shape, key
        assert a.dtype == (dtype if key[2:] == "x" or key[2:].endswith("init") else b.dtype), (key, a.dtype)
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(
            a.float(), b.float(), rtol=HALF_TOL * eps, atol=HALF_TOL * eps * scale, msg=lambda m: f"{key}: {m}"
        )


@pytest.mark.parametrize("ret", ["last", "seq"])
@pytest.mark.parametrize("given", [False, True], ids=["noinit", "init"])
@pytest.mark.parametrize("name", ALL)
def test_zero_steps(name, given, ret):
    """T = 0: empty spikes (and an empty sequence of states), the last states are the initial ones (the
    defaults without them), and their gradients pass straight back."""
    shape = (0, 2, 3)
    x = torch.randn(shape)
    inits = _inits(name, shape, given)
    kw = dict(_representative(name, shape=(0, 1, 2, 1, 3), layout="scalar"))
    kw[SPECS[name]["ret"]] = ret
    grads = upstream_grads(name, x, kw)
    got = run(ops, name, x, inits, kw, grads)
    want = run(reference, name, x, inits, kw, grads)
    assert_same_forward(got, want, name)
    assert_grads_close(got, want, 0.0, 0.0)
    for k, n in enumerate(SPECS[name]["inits"]):
        out = got["out"][1 + k] if n != "mem_init" else got["out"][SPECS[name]["seq"]]
        if ret == "seq" and (1 + k == SPECS[name]["seq"] or n == "mem_init"):
            assert out.shape == shape
            continue
        default = 0.0
        if name == "ternary_lif" and n == "v_init":
            default = kw["v_reset"] if kw["v_reset"] is not None else 0.0
        if given:
            assert torch.equal(out, inits[n]), n
        else:
            assert torch.equal(out, torch.full(shape[1:], default)), n


@pytest.mark.parametrize("ret", ["last", "seq"])
@pytest.mark.parametrize("name", ALL)
def test_one_step(name, ret):
    """T = 1: the sequence of states and the last state are the same [1, N] values (the kernels take either)."""
    shape = (1, 2, 3, 2, 4)
    x = _x(name, shape)
    kw = dict(_representative(name, shape=shape))
    kw[SPECS[name]["ret"]] = ret
    _check(name, x, _inits(name, shape, True), kw, fires=False)


@pytest.mark.parametrize("given", [False, True], ids=["noinit", "init"])
@pytest.mark.parametrize("name", ALL)
def test_zero_neurons(name, given):
    shape = (5, 2, 0, 3)
    x = torch.randn(shape)
    inits = _inits(name, shape, given)
    kw = _representative(name, shape=(5, 2, 0, 1, 3), layout="scalar")
    grads = upstream_grads(name, x, kw)
    got = run(ops, name, x, inits, kw, grads)
    want = run(reference, name, x, inits, kw, grads)
    assert_same_forward(got, want, name)
    assert_grads_close(got, want, 0.0, 0.0)


@pytest.mark.parametrize("shape", [(5, 2, 0), (0, 2, 3), (0, 2, 0)], ids=["N0", "T0", "T0N0"])
@pytest.mark.parametrize("name", SNN_MODELS)
def test_empty_with_per_neuron_coefficients(name, shape):
    """Regression: N = 0 with per-neuron coefficients (empty slots) failed in backward ("beta has 0 elements,
    expected 1"); their gradients are zeros of their own shapes."""
    x = torch.randn(shape)
    third = "graded_spikes_factor" if name == "leaky" else "alpha"
    kw = {
        "beta": torch.rand(shape[-1]) * 0.2 + 0.6,
        "threshold": torch.rand(shape[1:]) + 0.5,
        third: torch.rand(2, 1) * 0.05 + 0.9,
    }
    grads = upstream_grads(name, x, kw)
    got = run(ops, name, x, {}, kw, grads)
    want = run(reference, name, x, {}, kw, grads)
    assert_same_forward(got, want, name)
    assert_grads_close(got, want, 0.0, 0.0)
    for k, v in kw.items():
        assert got["g_" + k].shape == v.shape and not got["g_" + k].any()


@pytest.mark.parametrize("name", ALL)
def test_more_than_eight_dims(name):
    """Native views hold 8 dims; the ops flatten beyond (10 dims here), per-channel coefficients included."""
    shape = (6, 2, 3, 1, 2, 1, 2, 1, 2, 3)
    x = _x(name, shape)
    inits = _inits(name, shape, True)
    kw = _representative(name, layout="scalar")
    if name in SNN_MODELS:  # coefficients per channel (dim 1 of a step), per last dim, per neuron
        kw["threshold"] = torch.empty(3, 1, 1, 1, 1, 1, 1, 1).uniform_(0.7, 1.3)
        kw["beta"] = torch.empty(3).uniform_(0.55, 0.8)
        third = "graded_spikes_factor" if name == "leaky" else "alpha"
        kw[third] = torch.empty(shape[1:]).uniform_(0.86, 0.95)
    _check(name, x, inits, kw)


@pytest.mark.parametrize("name", SNN_MODELS)
def test_coefficient_layouts_read_the_right_entries(name):
    """Each layout against the same coefficient expanded to one value per neuron (what the reference's
    broadcasting computes), so a wrong (C, S) mapping cannot cancel out: bitwise equal outputs."""
    x = _x(name, SHAPE)
    for layout in ("last", "channel", "pattern"):
        kw = _representative(name, layout=layout)
        full = {k: (v.expand(SHAPE[1:]).contiguous() if torch.is_tensor(v) else v) for k, v in kw.items()}
        a = run(ops, name, x, {}, kw)["out"]
        b = run(ops, name, x, {}, full)["out"]
        for p, q in zip(a, b):
            assert torch.equal(p, q), layout


# ------------------------------------------------------------------------------------------------
# counts_to_binary
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("D", [1, 3, 4])
def test_counts_to_binary(D):
    s, _ = ops.ilif(_x("ilif", (6, 3, 5)), D=D)
    b = ops.counts_to_binary(s, D)
    assert b.shape == (D,) + s.shape and b.dtype == s.dtype
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(b.sum(0), s)
    assert torch.equal(b, torch.stack([(s > d).to(s.dtype) for d in range(D)]))
    # thermometer code: the ones come first
    assert (b[1:] <= b[:-1]).all()
    ints = ops.counts_to_binary(s.to(torch.int64), D)
    assert ints.dtype == torch.float32 and torch.equal(ints, b)
