"""ops.norse_lif / nn.NorseLIF (Norse 1.1's current-based LIF, feed-forward): against spikeforge.reference
and against Norse's own step (lif_feed_forward_step: imported when norse is installed, else its formula
transcribed below), float64 gradcheck, opcheck, torch.compile(fullgraph=True), bad inputs, determinism,
the module's step modes and state."""

import pytest
import torch

import spikeforge.ops.neuron as neuron_mod
from spikeforge import nn as snn
from spikeforge import ops, reference
from spikeforge.surrogate import NORSE_SURROGATES, norse_method, surrogate_grad

SHAPE = (12, 2, 3, 4)  # [T, B, C, P]


def _x(shape=SHAPE, dtype=torch.float32, scale=30.0):
    # Norse's input is a current: with dt tau_mem_inv = 0.1 a membrane needs currents of tens to fire
    return (torch.randn(shape) * scale + 0.2 * scale).to(dtype)


def _coefs(dtype=torch.float32, C=SHAPE[2]):
    """Per-channel LIFParameters fields for x [T, B, C, P]."""
    return dict(
        tau_syn_inv=torch.empty(C, 1).uniform_(150.0, 250.0).to(dtype),
        tau_mem_inv=torch.empty(C, 1).uniform_(80.0, 120.0).to(dtype),
        v_leak=torch.empty(C, 1).uniform_(-0.2, 0.1).to(dtype),
        v_th=torch.empty(C, 1).uniform_(0.8, 1.2).to(dtype),
    )


def _lif_parameters() -> dict:
    """LIFParameters() as Norse holds them: float32 0-dim tensors."""
    return dict(
        tau_syn_inv=torch.as_tensor(200.0),
        tau_mem_inv=torch.as_tensor(100.0),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(1.0),
        v_reset=torch.as_tensor(0.0),
    )


# ------------------------------------------------------------------------------------------------
# Norse's step, for the comparison
# ------------------------------------------------------------------------------------------------
def _norse_step_transcribed(x, v, i, p, dt, method):
    """norse/torch/functional/lif.py, lif_feed_forward_step (Norse 1.1.0), written out with its order of
    operations; the spike is norse/torch/functional/heaviside.py's torch.gt(x, 0) with the gradient of
    threshold.py's method ("super": superspike.py's grad / (|x| + 1)^2)."""
    i_new = i + x
    dv = dt * p["tau_mem_inv"] * ((p["v_leak"] - v) + i_new)
    v_decayed = v + dv
    di = -dt * p["tau_syn_inv"] * i_new
    i_decayed = i_new + di
    z = _NorseSpike.apply(v_decayed - p["v_th"], method)
    v_new = (1 - z) * v_decayed + z * p["v_reset"]
    return z, v_new, i_decayed


class _NorseSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, method):
        ctx.save_for_backward(x)
        ctx.method = method
        return torch.gt(x, torch.as_tensor(0.0)).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.method == "super":
            return g / (torch.abs(x) + 1.0).pow(2), None
        return torch.zeros_like(g), None  # "heaviside": no gradient through the spike


def _norse_step():
    try:
        from norse.torch.functional.lif import LIFFeedForwardState, LIFParameters, lif_feed_forward_step
    except ImportError:
        return None

    def step(x, v, i, p, dt, method):
        params = LIFParameters(
            tau_syn_inv=p["tau_syn_inv"],
            tau_mem_inv=p["tau_mem_inv"],
            v_leak=p["v_leak"],
            v_th=p["v_th"],
            v_reset=p["v_reset"],
            method=method,
            alpha=torch.as_tensor(100.0),
        )
        z, s = lif_feed_forward_step(x, LIFFeedForwardState(v=v, i=i), params, dt)
        return z, s.v, s.i

    return step


STEPS = {"transcribed": _norse_step_transcribed, "norse": _norse_step()}


def _run_norse(step, x, p, dt, method, v0=None, i0=None):
    v = (
        v0
        if v0 is not None
        else torch.full(x.shape[1:], float(p["v_leak"]))
        if p["v_leak"].numel() == 1
        else torch.broadcast_to(p["v_leak"], x.shape[1:]).clone()
    )
    i = i0 if i0 is not None else torch.zeros(x.shape[1:], dtype=x.dtype)
    zs = []
    for t in range(x.shape[0]):
        z, v, i = step(x[t], v, i, p, dt, method)
        zs.append(z)
    return torch.stack(zs), v, i


@pytest.mark.parametrize("which", list(STEPS))
@pytest.mark.parametrize("params", ["default", "per_channel"])
def test_matches_norse_step_bitwise_and_its_gradients(which, params):
    step = STEPS[which]
    if step is None:
        pytest.skip("norse is not installed (the transcribed step runs instead)")
    torch.manual_seed(1)
    x = _x()
    if params == "default":  # LIFParameters() as Norse holds them: float32 0-dim tensors
        p = _lif_parameters()
        dt = 0.001
    else:
        p = dict(_coefs(), v_reset=torch.as_tensor(-0.1))
        dt = 0.0015
    v0 = torch.randn(SHAPE[1:]) * 0.5
    i0 = torch.randn(SHAPE[1:]) * 5
    kw = dict(
        dt=dt,
        tau_syn_inv=p["tau_syn_inv"],
        tau_mem_inv=p["tau_mem_inv"],
        v_leak=p["v_leak"],
        v_th=p["v_th"],
        v_reset=float(p["v_reset"]),
        return_v="last",
    )
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    z_ref, v_ref, i_ref = _run_norse(step, xa, p, dt, "super", v0, i0)
    z, v, i = ops.norse_lif(xb, v0, i0, **kw)
    assert 0.05 < z.mean().item() < 0.8
    assert torch.equal(z, z_ref) and torch.equal(v, v_ref) and torch.equal(i, i_ref)
    up = torch.randn_like(v)
    ((z_ref * x).sum() + (v_ref * up).sum() + i_ref.sum()).backward()
    ((z * x).sum() + (v * up).sum() + i.sum()).backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", list(STEPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("params", ["default", "numbers"])
def test_defaults_and_numbers_as_norse_holds_them(which, dtype, params):
    """LIFParameters()' rates are float32 tensors (Norse's dt * tau: float32, widened for float64 input); a
    rate given as a number is a Python float there (dt * tau: a double product, rounded once). float64
    input once took the defaults' 0.1 exactly (Norse: float32's 0.1, a spike apart at x = 10), float32
    input rounded a number's dt and tau before their product (40% of random rates one ulp apart)."""
    step = STEPS[which]
    if step is None:
        pytest.skip("norse is not installed (the transcribed step runs instead)")
    g = torch.Generator().manual_seed(4)
    x = (torch.randn((6, 3, 40), generator=g) * 6 + 3).to(dtype)
    v0, i0 = torch.zeros(x.shape[1:], dtype=dtype), torch.zeros(x.shape[1:], dtype=dtype)
    if params == "default":
        p = _lif_parameters()
        kw: dict = {}
        dt = 0.001
        x[0, 0, 0] = 10.0  # Vd = dt tau_mem_inv x: float32's 0.1 (Norse) fires, 0.1 exactly does not
    else:
        p = dict(tau_syn_inv=171.7, tau_mem_inv=91.1, v_leak=0.013, v_th=0.93, v_reset=-0.07)
        kw = {k: p[k] for k in ("tau_syn_inv", "tau_mem_inv", "v_leak", "v_th", "v_reset")}
        dt = 0.0013
    z_ref, v_ref, i_ref = _run_norse(step, x, p, dt, "super", v0, i0)
    z, v, i = ops.norse_lif(x, v0, i0, dt=dt, **kw)
    assert torch.equal(z, z_ref) and torch.equal(v, v_ref) and torch.equal(i, i_ref)
    node = snn.NorseLIF(dt=dt, **kw)
    node.v, node.i = v0, i0
    assert torch.equal(node(x), z_ref) and torch.equal(node.v, v_ref) and torch.equal(node.i, i_ref)


def test_matches_norse_module_from_rest():
    """norse.torch.LIF from its initial state (v = v_leak, i = 0) against nn.NorseLIF, with the p it takes."""
    nt = pytest.importorskip("norse.torch")
    from norse.torch.functional.lif import LIFParameters

    torch.manual_seed(2)
    p = LIFParameters(v_leak=torch.as_tensor(0.05), v_reset=torch.as_tensor(-0.1), v_th=torch.as_tensor(0.9))
    x = _x()
    z_n, (v_n, i_n) = nt.LIF(p)(x)
    node = snn.NorseLIF(p)
    z = node(x)
    assert torch.equal(z, z_n) and torch.equal(node.v, v_n) and torch.equal(node.i, i_n)


@pytest.mark.parametrize("which", list(STEPS))
def test_heaviside_method_is_disabled(which):
    step = STEPS[which]
    if step is None:
        pytest.skip("norse is not installed")
    torch.manual_seed(3)
    x = _x((8, 5))
    p = dict(
        tau_syn_inv=torch.as_tensor(200.0),
        tau_mem_inv=torch.as_tensor(100.0),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(1.0),
        v_reset=torch.as_tensor(0.0),
    )
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    z_ref, v_ref, _ = _run_norse(step, xa, p, 0.001, "heaviside")
    sg, sa = norse_method("heaviside", 100.0)
    z, v, _ = ops.norse_lif(xb, surrogate=sg, surrogate_alpha=sa)
    assert torch.equal(z, z_ref) and torch.equal(v, v_ref)
    v_ref.sum().backward()
    v.sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-6)


def test_norse_method_mapping():
    assert norse_method("super", 100.0) == ("fast_sigmoid", 1.0)
    assert norse_method("heaviside", 3.0) == ("disabled", 1.0)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)
    # the mapped surrogate is Norse's derivative (threshold.py) as a function
    k = 2.0
    name, a = norse_method("tanh", k)
    torch.testing.assert_close(surrogate_grad(name, x, a), 1 - torch.tanh(k * x) ** 2)
    torch.testing.assert_close(
        surrogate_grad("erf", x, norse_method("heavi_erfc", k)[1]), 2 * torch.exp(-((k * x) ** 2)) / torch.pi**0.5
    )
    torch.testing.assert_close(surrogate_grad("triangle", x, norse_method("triangle", 1.0)[1]), torch.relu(1 - x.abs()))
    torch.testing.assert_close(surrogate_grad("fast_sigmoid", x, 1.0), 1 / (x.abs() + 1) ** 2)
    for method, alpha, match in (
        ("triangle", 0.3, "alpha"),
        ("tanh", 1.0, "alpha"),
        ("circ", 1.0, "circ"),
        ("adjoint", 1.0, "adjoint"),
        ("nope", 1.0, "nope"),
    ):
        with pytest.raises(ValueError, match=match):
            norse_method(method, alpha)
    with pytest.raises(TypeError, match="method"):
        norse_method(3, 1.0)


# ------------------------------------------------------------------------------------------------
# against spikeforge.reference
# ------------------------------------------------------------------------------------------------
def _both(fn, x, inits, kw, up):
    xs = x.clone().requires_grad_()
    ins = [None if t is None else t.clone().requires_grad_() for t in inits]
    kw = {k: (v.clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in kw.items()}
    out = fn(xs, *ins, **kw)
    loss = sum((o * u).sum() for o, u in zip(out, up))
    leaves = [xs] + [t for t in ins if t is not None] + [v for v in kw.values() if torch.is_tensor(v)]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out, grads


CASES = {
    "default": (False, dict()),
    "per_channel_seq": (True, dict(return_v="seq", v_reset=-0.1)),
    "detach_reset_atan": (True, dict(detach_reset=True, surrogate="atan", surrogate_alpha=3.0)),
    "sigmoid_scalar_tensors": (
        False,
        dict(v_th=torch.tensor(0.9), tau_mem_inv=torch.tensor(90.0), surrogate="sigmoid"),
    ),
    "erf_triangle_dt": (True, dict(dt=0.002, surrogate="triangle")),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("given", [False, True], ids=["rest", "given"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case, given, dtype):
    torch.manual_seed(4)
    per_channel, kw = CASES[case]
    kw = dict(kw)
    if per_channel:
        kw.update(_coefs(dtype))
    kw = {k: (v.to(dtype) if torch.is_tensor(v) else v) for k, v in kw.items()}
    x = _x(dtype=dtype)
    inits = (
        [(torch.randn(SHAPE[1:]) * 0.5).to(dtype), (torch.randn(SHAPE[1:]) * 5).to(dtype)] if given else [None, None]
    )
    seq = kw.get("return_v") == "seq"
    up = [
        torch.randn(SHAPE, dtype=dtype),
        torch.randn(SHAPE if seq else SHAPE[1:], dtype=dtype),
        torch.randn(SHAPE[1:], dtype=dtype),
    ]
    got, g_got = _both(ops.norse_lif, x, inits, kw, up)
    ref, g_ref = _both(reference.norse_lif, x, inits, kw, up)
    assert 0.02 < got[0].mean().item() < 0.8
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for a, b in zip(g_got, g_ref):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, **tol)


def test_half_precision_runs_in_float32_and_rounds_once():
    torch.manual_seed(5)
    x = _x()
    for dt in (torch.float16, torch.bfloat16):
        z, v, i = ops.norse_lif(x.to(dt))
        z32, v32, i32 = ops.norse_lif(x.to(dt).float())
        assert z.dtype == dt and torch.equal(z.float(), z32)
        assert torch.equal(v, v32.to(dt)) and torch.equal(i, i32.to(dt))


def test_saved_values_backward_equals_recompute(monkeypatch):
    torch.manual_seed(6)
    x = _x()
    kw = _coefs()
    res = []
    for recompute in (True, False):
        monkeypatch.setitem(neuron_mod.default_recompute, "cpu", recompute)
        up = [torch.ones(SHAPE), torch.full(SHAPE[1:], 0.5), torch.full(SHAPE[1:], 0.25)]
        res.append(_both(ops.norse_lif, x, [None, None], kw, up))
    for a, b in zip(res[0][0], res[1][0]):
        assert torch.equal(a, b)
    for a, b in zip(res[0][1], res[1][1]):
        assert torch.equal(a, b)


def test_deterministic_and_thread_independent():
    torch.manual_seed(7)
    x = _x((6, 64, 3, 50))
    kw = _coefs()
    up = [torch.randn(6, 64, 3, 50), torch.randn(64, 3, 50), torch.randn(64, 3, 50)]
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            outs.append(_both(ops.norse_lif, x, [None, None], kw, up))
    finally:
        torch.set_num_threads(threads)
    for o in outs[1:]:
        for a, b in zip(o[0] + o[1], outs[0][0] + outs[0][1]):
            assert torch.equal(a, b)


def test_zero_steps_returns_the_initial_state():
    x = torch.zeros(0, 2, 3)
    z, v, i = ops.norse_lif(x, v_leak=0.25)
    assert z.shape == (0, 2, 3) and torch.equal(v, torch.full((2, 3), 0.25)) and torch.equal(i, torch.zeros(2, 3))
    v0, i0 = torch.randn(2, 3), torch.randn(2, 3)
    _, v, i = ops.norse_lif(x, v0, i0)
    assert torch.equal(v, v0) and torch.equal(i, i0)


# ------------------------------------------------------------------------------------------------
# float64 gradcheck, opcheck, compile
# ------------------------------------------------------------------------------------------------
def test_gradcheck_float64():
    """Every output w.r.t. x, both initial states and all four coefficient tensors. The reset's gradient runs
    through the surrogate, so the inputs are kept away from the threshold and rect (g' = 0 beyond 5e-4 of it)
    makes finite differences exact; the spike output's gradient is checked by the reference comparison."""
    torch.manual_seed(8)
    shape = (5, 2, 3)
    for _ in range(200):
        x = _x(shape, torch.float64)
        co = _coefs(torch.float64, C=3)
        co = {k: v.reshape(3) for k, v in co.items()}
        v0 = torch.randn(shape[1:], dtype=torch.float64) * 0.5
        i0 = torch.randn(shape[1:], dtype=torch.float64) * 5
        _, v_seq, _ = reference.norse_lif(x, v0, i0, **co, return_v="seq")
        # the decayed membranes: recompute them to measure the margin
        vd, v, i = [], v0, i0
        for t in range(shape[0]):
            j = i + x[t]
            d = v + 0.001 * co["tau_mem_inv"] * ((co["v_leak"] - v) + j)
            vd.append(d)
            v, i = v_seq[t], j - 0.001 * co["tau_syn_inv"] * j
        if min((d - co["v_th"]).abs().min().item() for d in vd) > 1e-2:
            break
    else:
        raise AssertionError("no input away from the threshold")

    def fn(x, v0, i0, tsi, tmi, vl, vth):
        _, v, i = ops.norse_lif(
            x,
            v0,
            i0,
            tau_syn_inv=tsi,
            tau_mem_inv=tmi,
            v_leak=vl,
            v_th=vth,
            v_reset=-0.1,
            surrogate="disabled",
            return_v="seq",
        )
        return v, i

    inputs = tuple(
        t.clone().requires_grad_() for t in (x, v0, i0, co["tau_syn_inv"], co["tau_mem_inv"], co["v_leak"], co["v_th"])
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def _fwd_args(save=None, grad=True, ret="seq", dtype=torch.float32):
    torch.manual_seed(9)
    x = _x((4, 2, 3, 5), dtype)
    kw = {k: v.to(dtype) for k, v in _coefs().items()}
    v0, i0 = torch.randn(2, 3, 5).to(dtype), torch.randn(2, 3, 5).to(dtype)
    if grad:
        for t in [x, v0, i0, *kw.values()]:
            t.requires_grad_()
    return neuron_mod.op_inputs(ops.norse_lif, x, v0, i0, save=save, return_v=ret, **kw)


@pytest.mark.parametrize(
    "variant",
    [dict(), dict(save=True, ret="last"), dict(grad=False), dict(save=True, dtype=torch.float16)],
    ids=["default", "saved", "nograd", "fp16"],
)
def test_opcheck_neuron_fwd(variant):
    args = _fwd_args(**variant)
    assert args[8] == neuron_mod.MODELS["norse_lif"]
    torch.library.opcheck(torch.ops.spikeforge.neuron_fwd.default, args)


@pytest.mark.parametrize("save", [False, True], ids=["recompute", "saved"])
def test_opcheck_neuron_bwd(save):
    fwd = _fwd_args(save=save, grad=False)
    outs = torch.ops.spikeforge.neuron_fwd(*fwd)
    gs = torch.randn_like(fwd[0])
    grad_states = (torch.randn_like(outs[1]), torch.randn_like(outs[2]), None)
    args = neuron_mod.bwd_inputs(fwd, outs[-1], gs, grad_states, (True, True, False, True, True, True, True))
    torch.library.opcheck(torch.ops.spikeforge.neuron_bwd.default, args)


def test_compile_fullgraph_matches_eager():
    torch.manual_seed(10)
    x = _x((5, 2, 3, 4))
    co = _coefs()

    def net(x, tmi, vth):
        s, v, i = ops.norse_lif(x, tau_mem_inv=tmi, v_th=vth, v_leak=0.05, return_v="seq")
        s2, v2, i2 = ops.norse_lif(20.0 * s + x, None, i, surrogate="atan")
        return s, v, i, s2, v2, i2

    def grads(fn):
        xs, tmi, vth = (t.clone().requires_grad_() for t in (x, co["tau_mem_inv"], co["v_th"]))
        out = fn(xs, tmi, vth)
        loss = sum((o * (k + 1)).sum() for k, o in enumerate(out))
        return out, torch.autograd.grad(loss, (xs, tmi, vth))

    eager = grads(net)
    compiled = grads(torch.compile(net, fullgraph=True, backend="aot_eager"))
    for a, b in zip(eager[0] + eager[1], compiled[0] + compiled[1]):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------
BAD = [
    (dict(dt=0.0), ValueError, "dt"),
    (dict(dt="x"), TypeError, "dt"),
    (dict(tau_mem_inv=float("nan")), ValueError, "tau_mem_inv"),
    (dict(tau_syn_inv=torch.ones(5)), ValueError, "tau_syn_inv"),
    (dict(v_leak=torch.ones(3, dtype=torch.int64)), TypeError, "v_leak"),
    (dict(v_th="1"), TypeError, "v_th"),
    (dict(v_reset=torch.tensor(0.0)), TypeError, "v_reset"),
    (dict(v_reset=float("inf")), ValueError, "v_reset"),
    (dict(detach_reset=1), TypeError, "detach_reset"),
    (dict(surrogate="rect"), ValueError, "surrogate"),
    (dict(surrogate="atan", surrogate_alpha=-1.0), ValueError, "surrogate_alpha"),
    (dict(return_v="all"), ValueError, "return_v"),
    (dict(v_init=torch.zeros(3)), ValueError, "v_init"),
    (dict(i_init=torch.zeros(2, 3, dtype=torch.int32)), TypeError, "i_init"),
]


@pytest.mark.parametrize("kw,exc,match", BAD, ids=[b[2] + str(k) for k, b in enumerate(BAD)])
def test_bad_inputs_name_the_argument(kw, exc, match):
    x = torch.randn(4, 2, 3)
    kw = dict(kw)
    inits = (kw.pop("v_init", None), kw.pop("i_init", None))
    with pytest.raises(exc, match=match):
        ops.norse_lif(x, *inits, **kw)


def test_bad_x():
    with pytest.raises(TypeError, match="x_seq"):
        ops.norse_lif(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="x_seq"):
        ops.norse_lif(torch.tensor(1.0))


# ------------------------------------------------------------------------------------------------
# nn.NorseLIF
# ------------------------------------------------------------------------------------------------
def test_module_step_modes_and_chunks_match_one_call():
    torch.manual_seed(11)
    x = _x((10, 2, 3))
    kw = dict(v_leak=0.1, v_th=0.9, v_reset=-0.05, tau_mem_inv=120.0)
    z, v, i = ops.norse_lif(x, **kw)
    m = snn.NorseLIF(**kw)
    assert torch.equal(torch.cat([m(x[:4]), m(x[4:])]), z)
    assert torch.equal(m.v, v) and torch.equal(m.i, i)
    s = snn.NorseLIF(**kw, step_mode="s")
    assert torch.equal(torch.stack([s(x[t]) for t in range(10)]), z)
    assert torch.equal(s.v, v) and torch.equal(s.i, i)
    s.reset()
    assert s.v is None and s.i is None


def test_module_state_carries_the_graph():
    torch.manual_seed(12)
    x = _x((8, 2, 3)).requires_grad_()
    m = snn.NorseLIF()
    m(x[:4])
    m(x[4:])
    (m.v.sum() + m.i.sum()).backward()
    g_chunks = x.grad.clone()
    x.grad = None
    _, v, i = ops.norse_lif(x)
    (v.sum() + i.sum()).backward()
    torch.testing.assert_close(g_chunks, x.grad, rtol=1e-6, atol=1e-6)
    assert g_chunks[:4].abs().sum() > 0


def test_module_methods_and_parameters():
    assert snn.NorseLIF().surrogate == "fast_sigmoid" and snn.NorseLIF().alpha == 1.0
    assert snn.NorseLIF(method="tanh", alpha=2.0).surrogate == "sigmoid"
    assert snn.NorseLIF(surrogate="atan").surrogate == "atan"
    with pytest.raises(ValueError, match="alpha"):
        snn.NorseLIF(method="triangle", alpha=100.0)
    with pytest.raises(ValueError, match="v_reset"):
        snn.NorseLIF(v_reset=torch.zeros(3))
    with pytest.raises(TypeError, match="LIFParameters"):
        snn.NorseLIF(p=object())
    tmi = torch.nn.Parameter(torch.full((3,), 100.0))
    m = snn.NorseLIF(tau_mem_inv=tmi)
    assert any(p is tmi for p in m.parameters())
    m(_x((6, 2, 3))).sum().backward()
    assert tmi.grad is not None and tmi.grad.abs().sum() > 0
    assert set(NORSE_SURROGATES) == {"fast_sigmoid", "disabled", "triangle", "sigmoid", "erf", "atan"}
