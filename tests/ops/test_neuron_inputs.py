"""spikeforge.ops neurons on awkward inputs: layouts, empty and NaN tensors, single-step ops, T = 1, sizes that
straddle the CPU kernel's 256-neuron chunks, thread-count invariance, determinism, and bad arguments."""

import itertools

import pytest
import torch

from neuron_helpers import (
    assert_grads_close,
    call,
    fwd_bwd,
    make_w,
    native_fwd_args,
    ops,
    reference,
    call_native_forward,
    call_native_backward,
    native_bwd_args,
    native_params,
    upstream,
)
from spikeforge.testing import dyadic, needs_native

RTOL32, ATOL32 = 1e-5, 1e-5  # see test_neuron.py
KINDS = ("lif_tau2", "if", "plif", "plif_c")


def _compare(got, want, exact_v=True):
    assert torch.equal(got["s"], want["s"])
    if exact_v:
        assert torch.equal(got["v"], want["v"])
    assert set(got) == set(want)
    assert_grads_close(got, want, RTOL32, ATOL32)


# ------------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["permuted", "sliced"])
def test_non_contiguous_inputs(device, kind, layout):
    if layout == "permuted":
        x = dyadic((2, 3, 5, 4), -8, 40, device=device).permute(2, 0, 1, 3)  # [5, 2, 3, 4]
        v_init = dyadic((3, 2, 4), -8, 8, device=device).transpose(0, 1)
    else:
        x = dyadic((5, 2, 6, 8), -8, 40, device=device)[:, :, ::2, 1::2]  # [5, 2, 3, 4]
        v_init = dyadic((2, 3, 8), -8, 8, device=device)[..., ::2]
    assert not x.is_contiguous() and not v_init.is_contiguous()
    w = make_w(kind, 6, device=device)
    if w is not None and w.dim() == 1:
        w = w[::2] if kind == "plif_c" else w  # [3], stride 2
    gs = torch.randn(4, 5, 3, 2, device=device).permute(1, 3, 2, 0)  # non-contiguous upstream gradients
    gv = torch.randn(4, 3, 2, device=device).permute(2, 1, 0)
    got = fwd_bwd(ops, kind, x, v_init, w, gs, gv, return_v="last")
    want = fwd_bwd(reference, kind, x, v_init, w, gs, gv, return_v="last")
    _compare(got, want)
    assert 0 < got["s"].sum() < got["s"].numel()


@pytest.mark.parametrize("kind", KINDS)
def test_expanded_upstream_gradients(device, kind):
    """s.sum() / v.sum() hand backward stride-0 (expanded) gradients."""
    x = dyadic((5, 2, 3, 4), -8, 40, device=device)
    w = make_w(kind, 3, device=device)
    res = []
    for impl in (ops, reference):
        xl = x.clone().requires_grad_()
        wl = None if w is None else w.clone().requires_grad_()
        s, v = call(impl, kind, xl, None, wl, return_v="seq")
        res.append(torch.autograd.grad(s.sum() + 2 * v.sum(), [xl] + ([wl] if wl is not None else [])))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=RTOL32, atol=ATOL32 * max(1.0, b.abs().max().item()))


def test_v_init_of_another_dtype_is_converted():
    x = dyadic((4, 3, 2))
    v64 = dyadic((3, 2), -8, 8, dtype=torch.float64)
    s, v = ops.lif(x, v64)
    s2, v2 = ops.lif(x, v64.float())
    assert v.dtype == torch.float32 and torch.equal(s, s2) and torch.equal(v, v2)


@pytest.mark.parametrize("kind", ["lif_tau2", "plif_c"])
def test_high_rank_input(kind):
    """x_seq is [T, *] for any number of dimensions (here 10): the result equals the same data viewed 4-D."""
    x = dyadic((3, 2, 3, 1, 2, 1, 1, 2, 1, 2), -8, 40)
    w = make_w(kind, 3)
    s, v = call(ops, kind, x, None, w, return_v="seq")
    s4, v4 = call(ops, kind, x.reshape(3, 2, 3, 8), None, w, return_v="seq")
    assert torch.equal(s.reshape(s4.shape), s4) and torch.equal(v.reshape(v4.shape), v4)


# ------------------------------------------------------------------------------------------------
# empty tensors
# ------------------------------------------------------------------------------------------------
EMPTY_SHAPES = {"T0": (0, 2, 3), "B0": (4, 0, 3), "D0": (4, 2, 3, 0), "N0_2d": (4, 0)}


def _empty_cases():
    out = []
    for (sid, shape), kind, return_v in itertools.product(
        EMPTY_SHAPES.items(), ("lif_tau2", "plif_c"), ("last", "seq")
    ):
        if kind == "plif_c" and len(shape) < 3:
            kind = "plif"
        out.append(pytest.param(shape, kind, True, return_v, id=f"{sid}-{kind}-{return_v}"))
    out.append(pytest.param((0, 2, 3), "if", False, "last", id="T0-if-novinit-last"))
    out.append(pytest.param((4, 0, 3), "if", False, "seq", id="B0-if-novinit-seq"))
    return out


@pytest.mark.parametrize("shape,kind,given_v,return_v", _empty_cases())
def test_empty(device, shape, kind, given_v, return_v):
    """T = 0 or N = 0: outputs of the right shapes, no crash; with T = 0 the returned last V is the
    initial state and its gradient passes straight to v_init."""
    x = torch.randn(shape, device=device)
    v_init = torch.randn(shape[1:], device=device) if given_v else None
    w = make_w(kind, shape[2] if len(shape) > 2 else 1, device=device)
    v_reset = -0.5
    xl = x.clone().requires_grad_()
    vl = None if v_init is None else v_init.clone().requires_grad_()
    wl = None if w is None else w.clone().requires_grad_()
    s, v = call(ops, kind, xl, vl, wl, v_reset=v_reset, return_v=return_v)
    s_ref, v_ref = call(reference, kind, x, v_init, w, v_reset=v_reset, return_v=return_v)
    assert s.shape == s_ref.shape == x.shape
    assert v.shape == v_ref.shape
    assert torch.equal(v.detach(), v_ref)
    leaves = [t for t in (xl, vl, wl) if t is not None]
    gv = torch.randn(v.shape, device=device)
    loss = (s * torch.randn_like(s)).sum() + (v * gv).sum()
    if loss.requires_grad:
        grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
    else:  # nothing connects the (empty) outputs to the inputs: every gradient is zero
        grads = [torch.zeros_like(t) for t in leaves]
    assert grads[0].shape == x.shape
    if vl is not None:
        want = gv if (shape[0] == 0 and return_v == "last") else torch.zeros_like(v_init)
        assert torch.equal(grads[1], want)
    if wl is not None:
        assert torch.equal(grads[-1], torch.zeros_like(w))


@pytest.mark.parametrize("return_v", ["last", "seq"])
def test_t0_with_expanded_gradients(device, return_v):
    """T = 0 and a loss of plain sums: backward receives stride-0 (expanded) empty gradients."""
    x = torch.randn(0, 2, 3, device=device, requires_grad=True)
    v_init = torch.randn(2, 3, device=device, requires_grad=True)
    s, v = ops.lif(x, v_init, return_v=return_v)
    gx, gvi = torch.autograd.grad(s.sum() + v.sum(), [x, v_init], allow_unused=True, materialize_grads=True)
    assert gx.shape == x.shape
    assert torch.equal(gvi, torch.ones_like(v_init) if return_v == "last" else torch.zeros_like(v_init))


# ------------------------------------------------------------------------------------------------
# NaN
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("v_reset", [0.0, None], ids=["hard", "soft"])
def test_nan_inputs(device, kind, v_reset):
    """NaN never fires (NaN >= V_th is false, as in the reference) and stays in that neuron's V; other
    neurons are unaffected. Gradients: no crash, and the smooth sigmoid surrogate puts NaNs exactly where
    the reference does."""
    x = dyadic((5, 2, 3, 4), -8, 40, device=device)
    x[1, 0, 1, 2] = float("nan")
    x[0, 1, 0, 0] = float("nan")
    x[4, 1, 2, 3] = float("nan")
    w = make_w(kind, 3, device=device)
    gs, gv = upstream(x, "seq")
    got = fwd_bwd(ops, kind, x, None, w, gs, gv, v_reset=v_reset, return_v="seq")
    want = fwd_bwd(reference, kind, x, None, w, gs, gv, v_reset=v_reset, return_v="seq")
    assert torch.equal(got["s"], want["s"])
    assert got["s"][x.isnan()].eq(0).all()
    torch.testing.assert_close(got["v"], want["v"], rtol=0, atol=0, equal_nan=True)
    clean = ~x.isnan().any(0)  # neurons that never saw a NaN
    assert torch.isfinite(got["v"][:, clean]).all()
    assert torch.equal(got["g_x"].isnan(), want["g_x"].isnan())
    torch.testing.assert_close(got["g_x"][:, clean], want["g_x"][:, clean], rtol=RTOL32, atol=ATOL32 * 10)


@pytest.mark.parametrize("sur", ["rect", "triangle", "atan", "soft_sign"])
def test_nan_inputs_any_surrogate_no_crash(sur):
    x = torch.randn(4, 3, 5)
    x[2, 1, 3] = float("nan")
    xl = x.clone().requires_grad_()
    s, v = ops.lif(xl, v_reset=None, surrogate=sur, return_v="seq")
    (g,) = torch.autograd.grad(s.sum() + v.sum(), xl)
    assert g.shape == x.shape and s[2, 1, 3] == 0
    assert torch.isfinite(g[:, [0, 2]]).all()


# ------------------------------------------------------------------------------------------------
# single-step ops and T = 1
# ------------------------------------------------------------------------------------------------
STEP_KW = [
    dict(),
    dict(v_reset=None, surrogate="atan"),
    dict(v_reset=-0.5, decay_input=False, v_threshold=0.75),
    dict(detach_reset=True, surrogate="rect", alpha=0.5),
]


@pytest.mark.parametrize("kw", STEP_KW, ids=["default", "soft_atan", "nodecay", "detach_rect"])
@pytest.mark.parametrize("kind", KINDS)
def test_single_step_equals_multi_step(device, kind, kw):
    kw = dict(kw)
    step = {"lif_tau2": ops.lif_step, "if": ops.if_step, "plif": ops.plif_step, "plif_c": ops.plif_step}[kind]
    if kind == "if":
        kw.pop("decay_input", None)
    if kind == "lif_tau2":
        kw["tau"] = 2.0
    x = dyadic((6, 2, 3, 4), -8, 40, device=device)
    v_init = dyadic((2, 3, 4), -8, 8, device=device)
    w = make_w(kind, 3, device=device)
    wargs = (w,) if w is not None else ()
    multi = {"lif_tau2": ops.lif, "if": ops.if_neuron, "plif": ops.plif, "plif_c": ops.plif}[kind]
    # forward, bitwise: step by step against the multi-step op, starting from None and from v_init
    for v0 in (None, v_init):
        s_seq, v_seq = multi(x, *wargs, v0, return_v="seq", **kw)
        v = v0
        for t in range(x.shape[0]):
            s, v = step(x[t], *wargs, v, **kw)
            assert s.shape == x[t].shape and v.shape == x[t].shape
            assert torch.equal(s, s_seq[t]) and torch.equal(v, v_seq[t]), t
            s1, v1 = multi(x[t : t + 1], *wargs, v_seq[t - 1] if t else v0, **kw)
            assert torch.equal(s, s1[0]) and torch.equal(v, v1)
    # backward: unrolled single steps against BPTT of the multi-step op
    gs, gv = upstream(x, "last")
    leaves = [x.clone().requires_grad_(), v_init.clone().requires_grad_()] + (
        [w.clone().requires_grad_()] if w is not None else []
    )
    wl = leaves[2:]
    v = leaves[1]
    loss = 0
    for t in range(x.shape[0]):
        s, v = step(leaves[0][t], *wl, v, **kw)
        loss = loss + (s * gs[t]).sum()
    loss = loss + (v * gv).sum()
    g_steps = torch.autograd.grad(loss, leaves)
    want = fwd_bwd(ops, kind, x, v_init, w, gs, gv, return_v="last", **kw)
    for g, name in zip(g_steps, ("g_x", "g_v_init", "g_w")):
        torch.testing.assert_close(g, want[name], rtol=RTOL32, atol=ATOL32 * max(1.0, want[name].abs().max().item()))


@pytest.mark.parametrize("kind", ["lif_tau2", "if", "plif"])
def test_single_step_zero_dim(kind):
    """A single neuron: x and v are 0-dim."""
    x = torch.tensor(1.5)
    w = make_w(kind, 1)
    step = {"lif_tau2": ops.lif_step, "if": ops.if_step, "plif": ops.plif_step}[kind]
    s, v = step(x, *((w,) if w is not None else ()), None)
    s1, v1 = call(ops, kind, x.view(1), None, w)
    assert s.shape == () and v.shape == ()
    assert s == s1[0] and v == v1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_v", ["last", "seq"])
@pytest.mark.parametrize("v_reset", [0.0, None], ids=["hard", "soft"])
def test_t1(device, kind, return_v, v_reset):
    x = dyadic((1, 2, 3, 4), 0, 24, device=device)
    v_init = dyadic((2, 3, 4), -8, 8, device=device)
    w = make_w(kind, 3, device=device)
    gs, gv = upstream(x, return_v)
    kw = dict(v_reset=v_reset, return_v=return_v)
    got = fwd_bwd(ops, kind, x, v_init, w, gs, gv, **kw)
    want = fwd_bwd(reference, kind, x, v_init, w, gs, gv, **kw)
    _compare(got, want)
    assert 0 < got["s"].sum() < got["s"].numel()


# ------------------------------------------------------------------------------------------------
# sizes, threads, determinism
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_neurons_not_a_multiple_of_the_chunk(device, kind):
    """N = 2 * 5 * 101 = 1010 (chunks of 256 on CPU: the last is partial; channel runs of 101 neurons
    straddle chunk boundaries)."""
    x = dyadic((3, 2, 5, 101), -8, 40, device=device)
    v_init = dyadic((2, 5, 101), -8, 8, device=device)
    w = make_w(kind, 5, device=device)
    gs, gv = upstream(x, "seq")
    got = fwd_bwd(ops, kind, x, v_init, w, gs, gv, return_v="seq", surrogate="atan")
    want = fwd_bwd(reference, kind, x, v_init, w, gs, gv, return_v="seq", surrogate="atan")
    _compare(got, want)


def _thread_case(kind):
    if kind == "plif":  # scalar w: more than 2^14 neurons, so the w-gradient reduction is split in parts
        shape = (3, 2 * 16384 + 5)
    else:
        shape = (4, 3, 7, 101)
    x = torch.randn(shape) * 1.5 + 0.5
    v_init = torch.randn(shape[1:]) * 0.5
    w = None
    if kind == "plif":
        w = torch.tensor(-0.3)
    elif kind == "plif_c":
        w = torch.randn(7)
    gs, gv = upstream(x, "seq")
    return x, v_init, w, gs, gv


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_thread_count_invariance(kind, dtype):
    """Chunking depends on N only, and the w reduction has a fixed order: 1, 2 and 3 threads give
    bitwise-identical outputs and gradients (PLIF's w included). Non-dyadic inputs on purpose."""
    x, v_init, w, gs, gv = _thread_case(kind)
    x, v_init, gs, gv = (t.to(dtype) for t in (x, v_init, gs, gv))
    results = []
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        results.append(fwd_bwd(ops, kind, x, v_init, w, gs, gv, return_v="seq", surrogate="sigmoid"))
    for r in results[1:]:
        assert set(r) == set(results[0])
        for key in r:
            assert torch.equal(r[key], results[0][key]), key


@pytest.mark.parametrize("kind", KINDS)
def test_run_to_run_determinism(device, kind):
    x, v_init, w, gs, gv = _thread_case(kind)
    x, v_init, gs, gv = (t.to(device) for t in (x, v_init, gs, gv))
    w = None if w is None else w.to(device)
    a = fwd_bwd(ops, kind, x, v_init, w, gs, gv, return_v="last", surrogate="erf")
    for _ in range(2):
        b = fwd_bwd(ops, kind, x, v_init, w, gs, gv, return_v="last", surrogate="erf")
        for key in a:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("kind", ["lif_tau2", "plif_c"])
def test_partial_requires_grad(device, kind):
    """Any subset of (x, v_init, w) may require grad: the gradients computed are the same numbers as when
    all of them do, and the others get none."""
    x = torch.randn(5, 2, 3, 4, device=device) + 0.5
    v_init = torch.randn(2, 3, 4, device=device) * 0.5
    w = torch.randn(3, device=device) if kind == "plif_c" else None
    gs, gv = upstream(x, "seq")
    full = fwd_bwd(ops, kind, x, v_init, w, gs, gv, return_v="seq")
    names = ["x", "v_init"] + (["w"] if w is not None else [])
    for which in names:
        leaves = {"x": x.clone(), "v_init": v_init.clone(), "w": None if w is None else w.clone()}
        leaves[which].requires_grad_()
        s, v = call(ops, kind, leaves["x"], leaves["v_init"], leaves["w"], return_v="seq")
        assert torch.equal(s.detach(), full["s"]) and torch.equal(v.detach(), full["v"])
        (g,) = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), [leaves[which]])
        assert torch.equal(g, full["g_" + which]), which


@pytest.mark.parametrize("used", ["spikes_only", "v_only"])
@pytest.mark.parametrize("return_v", ["last", "seq"])
def test_one_output_unused(device, used, return_v):
    """A loss of only the spikes (or only V): the other output's gradient is zero."""
    x = torch.randn(5, 2, 3, 4, device=device) + 0.5
    w = torch.randn(3, device=device)
    gs, gv = upstream(x, return_v)
    if used == "spikes_only":
        gv = torch.zeros_like(gv)
    else:
        gs = torch.zeros_like(gs)
    want = fwd_bwd(ops, "plif_c", x, None, w, gs, gv, return_v=return_v)
    ref = fwd_bwd(reference, "plif_c", x, None, w, gs, gv, return_v=return_v)
    assert_grads_close(want, ref, RTOL32, ATOL32)
    xl, wl = x.clone().requires_grad_(), w.clone().requires_grad_()
    s, v = ops.plif(xl, wl, return_v=return_v)
    loss = (s * gs).sum() if used == "spikes_only" else (v * gv).sum()
    gx, gw = torch.autograd.grad(loss, [xl, wl])
    assert torch.equal(gx, want["g_x"]) and torch.equal(gw, want["g_w"])


@pytest.mark.parametrize("w_dtype,x_dtype", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_w_of_another_dtype(w_dtype, x_dtype):
    """k = sigmoid(w) in w's own dtype, then in x's (SpikingJelly's w.sigmoid() meeting the input): a float64 w with
    float32 x gives float32(sigmoid64(w)), a float32 w with float64 x float32's sigmoid widened; w's gradient has
    w's dtype (sigmoid's backward there). The op equals the reference, which does the same."""
    x = (torch.randn(4, 2, 3) + 0.5).to(x_dtype)
    w = torch.randn(3).to(w_dtype)
    gs, gv = upstream(x, "last")
    got = fwd_bwd(ops, "plif_c", x, None, w, gs, gv)
    ref = fwd_bwd(reference, "plif_c", x, None, w, gs, gv)
    assert got["g_w"].dtype == w_dtype
    assert torch.equal(got["s"], ref["s"]) and torch.equal(got["v"], ref["v"])
    assert_grads_close(got, ref, RTOL32, ATOL32)


def test_inputs_are_not_modified():
    x = torch.randn(4, 2, 3).requires_grad_()
    v_init = torch.randn(2, 3).requires_grad_()
    w = torch.randn(3).requires_grad_()
    before = [t.detach().clone() for t in (x, v_init, w)]
    s, v = ops.plif(x, w, v_init, return_v="seq")
    (s.sum() + v.sum()).backward()
    for t, b in zip((x, v_init, w), before):
        assert torch.equal(t.detach(), b)


# ------------------------------------------------------------------------------------------------
# bad arguments: a clear ValueError / TypeError naming the argument, nothing computed
# ------------------------------------------------------------------------------------------------
def _bad_calls():
    x = torch.randn(3, 2, 4)
    w = torch.zeros(4)
    f = float
    return [
        ("x_int", lambda: ops.lif(torch.ones(3, 2, dtype=torch.int32)), TypeError, "x_seq"),
        ("x_complex", lambda: ops.lif(torch.ones(3, 2, dtype=torch.complex64)), TypeError, "x_seq"),
        ("x_bool", lambda: ops.if_neuron(torch.ones(3, 2, dtype=torch.bool)), TypeError, "x_seq"),
        ("x_python_scalar", lambda: ops.lif(1.5), TypeError, "x_seq"),
        ("x_list", lambda: ops.plif([[1.0]], w), TypeError, "x_seq"),
        ("x_0dim", lambda: ops.lif(torch.tensor(1.5)), ValueError, "x_seq"),
        ("x_0dim_if", lambda: ops.if_neuron(torch.tensor(1.5)), ValueError, "x_seq"),
        ("x_0dim_plif", lambda: ops.plif(torch.tensor(1.5), torch.zeros(())), ValueError, "x_seq"),
        ("tau_zero", lambda: ops.lif(x, tau=0.0), ValueError, "tau"),
        ("tau_negative", lambda: ops.lif(x, tau=-2), ValueError, "tau"),
        ("tau_nan", lambda: ops.lif(x, tau=f("nan")), ValueError, "tau"),
        ("tau_inf", lambda: ops.lif(x, tau=f("inf")), ValueError, "tau"),
        ("tau_str", lambda: ops.lif(x, tau="2"), TypeError, "tau"),
        ("tau_bool", lambda: ops.lif(x, tau=True), TypeError, "tau"),
        ("tau_tensor", lambda: ops.lif(x, tau=torch.tensor(2.0)), TypeError, "tau"),
        ("surrogate_unknown", lambda: ops.lif(x, surrogate="sigmod"), ValueError, "surrogate"),
        ("surrogate_unknown_if", lambda: ops.if_neuron(x, surrogate="gauss"), ValueError, "surrogate"),
        ("surrogate_unknown_plif", lambda: ops.plif(x, w, surrogate="Sigmoid"), ValueError, "surrogate"),
        ("surrogate_none", lambda: ops.lif(x, surrogate=None), TypeError, "surrogate"),
        ("alpha_zero", lambda: ops.lif(x, alpha=0.0), ValueError, "alpha"),
        ("alpha_negative", lambda: ops.if_neuron(x, alpha=-1.0), ValueError, "alpha"),
        ("alpha_nan", lambda: ops.plif(x, w, alpha=f("nan")), ValueError, "alpha"),
        ("alpha_str", lambda: ops.lif(x, alpha="4"), TypeError, "alpha"),
        ("v_init_shape", lambda: ops.lif(x, torch.zeros(2, 3)), ValueError, "v_init"),
        ("v_init_with_T", lambda: ops.if_neuron(x, torch.zeros(3, 2, 4)), ValueError, "v_init"),
        ("v_init_shape_plif", lambda: ops.plif(x, w, torch.zeros(4)), ValueError, "v_init"),
        ("v_init_int", lambda: ops.lif(x, torch.zeros(2, 4, dtype=torch.int64)), TypeError, "v_init"),
        ("v_init_list", lambda: ops.lif(x, [0.0]), TypeError, "v_init"),
        ("v_init_device", lambda: ops.lif(x, torch.zeros(2, 4, device="meta")), ValueError, "v_init"),
        ("w_shape", lambda: ops.plif(x, torch.zeros(3)), ValueError, "w"),
        ("w_2d", lambda: ops.plif(x, torch.zeros(4, 1)), ValueError, "w"),
        ("w_none", lambda: ops.plif(x, None), TypeError, "w"),
        ("w_float", lambda: ops.plif(x, 0.5), TypeError, "w"),
        ("w_int", lambda: ops.plif(x, torch.zeros(4, dtype=torch.int32)), TypeError, "w"),
        ("w_step", lambda: ops.plif_step(x[0], torch.zeros(3)), ValueError, "w"),
        ("return_v_bad", lambda: ops.lif(x, return_v="all"), ValueError, "return_v"),
        ("return_v_none", lambda: ops.plif(x, w, return_v=None), ValueError, "return_v"),
        ("return_v_if", lambda: ops.if_neuron(x, return_v="first"), ValueError, "return_v"),
        ("decay_input_int", lambda: ops.lif(x, decay_input=1), TypeError, "decay_input"),
        ("decay_input_plif", lambda: ops.plif(x, w, decay_input="yes"), TypeError, "decay_input"),
        ("detach_reset_str", lambda: ops.if_neuron(x, detach_reset="yes"), TypeError, "detach_reset"),
        ("detach_reset_tensor", lambda: ops.plif(x, w, detach_reset=torch.tensor(True)), TypeError, "detach_reset"),
        ("detach_reset_none", lambda: ops.lif(x, detach_reset=None), TypeError, "detach_reset"),
        ("v_threshold_nan", lambda: ops.lif(x, v_threshold=f("nan")), ValueError, "v_threshold"),
        ("v_threshold_str", lambda: ops.if_neuron(x, v_threshold="1"), TypeError, "v_threshold"),
        ("v_reset_inf", lambda: ops.lif(x, v_reset=f("-inf")), ValueError, "v_reset"),
        ("v_reset_str", lambda: ops.plif(x, w, v_reset="soft"), TypeError, "v_reset"),
        ("step_x_int", lambda: ops.lif_step(torch.ones(3, dtype=torch.int64)), TypeError, "x"),
        ("step_x_scalar", lambda: ops.if_step(2.0), TypeError, "x"),
        ("step_v_shape", lambda: ops.lif_step(x[0], torch.zeros(3)), ValueError, "v"),
        ("step_v_list", lambda: ops.if_step(x[0], [0.0]), TypeError, "v"),
        ("step_tau", lambda: ops.lif_step(x[0], tau=-1.0), ValueError, "tau"),
        ("plif_step_v_shape", lambda: ops.plif_step(x[0], torch.zeros(()), torch.zeros(3)), ValueError, "v"),
    ]


_BAD = _bad_calls()


@pytest.mark.parametrize("idx", range(len(_BAD)), ids=[c[0] for c in _BAD])
def test_bad_arguments(idx):
    _, fn, exc, name = _BAD[idx]
    with pytest.raises(exc, match=rf"\b{name}\b"):
        fn()


def test_bad_argument_leaves_state_alone():
    """Validation happens before any work: the inputs are untouched and no graph is built."""
    x = torch.randn(3, 2, 4, requires_grad=True)
    v_init = torch.randn(2, 4, requires_grad=True)
    before = (x.detach().clone(), v_init.detach().clone())
    for kw in (dict(tau=0.0), dict(surrogate="nope"), dict(return_v="x"), dict(alpha=-1.0)):
        with pytest.raises(ValueError):
            ops.lif(x, v_init, **kw)
    assert torch.equal(x.detach(), before[0]) and torch.equal(v_init.detach(), before[1])
    assert x.grad is None and v_init.grad is None
    s, v = ops.lif(x, v_init)  # and the op still works afterwards
    s_ref, v_ref = reference.lif(x.detach(), v_init.detach())
    assert torch.equal(s.detach(), s_ref)


# The native layer checks again and raises ValueError (never crashes), before writing any output.
NATIVE_BAD_FWD = {
    "spike_numel": (dict(spike=torch.full((3, 7), 7.0)), "spike_seq"),
    "x_noncontiguous": (dict(x=torch.randn(8, 3).t()), "x_seq"),
    "x_int": (dict(x=torch.zeros(3, 8, dtype=torch.int32)), "dtype"),
    "x_none": (dict(x=None), "x"),
    "v_out_dtype": (dict(v_out=torch.full((8,), 7.0, dtype=torch.float64)), r"v \(state_out\)"),
    "v_out_numel": (dict(v_out=torch.full((5,), 7.0)), r"v \(state_out\)"),
    "v_init_numel": (dict(v_init=torch.zeros(7)), "v_init"),
    "v_init_dtype": (dict(v_init=torch.zeros(8, dtype=torch.float16)), "v_init"),
    "tau_negative": (dict(tau=-0.5), "tau"),
    "tau_nan": (dict(tau=float("nan")), "tau"),
    "surrogate_id": (dict(surrogate=42), "surrogate"),
    "alpha_inf": (dict(alpha=float("inf")), "alpha"),
    "v_threshold_inf": (dict(v_threshold=float("inf")), "v_threshold"),
    "w_dtype": (dict(w=torch.zeros(1, dtype=torch.float64)), r"k \(PLIF"),
    "w_layout": (dict(w=torch.zeros(3), C=3), r"k \(PLIF"),
    "model_id": (dict(model=9), "model"),
    "second_state_for_lif": (dict(x=torch.randn(3, 8)), None),
    "h_numel": (dict(h_out=torch.zeros(2, 8)), "saved"),
    "N_mismatch": (dict(N=9), "x_seq"),
    # the last state written apart is one step: a sequence there is refused, as is another dtype
    "v_last_numel": (dict(v_last=torch.full((3, 8), 7.0)), r"v \(state_last\)"),
    "v_last_dtype": (dict(v_last=torch.full((8,), 7.0, dtype=torch.float64)), r"v \(state_last\)"),
}


@needs_native
@pytest.mark.parametrize("case", list(NATIVE_BAD_FWD))
def test_native_forward_rejects(case):
    over, name = NATIVE_BAD_FWD[case]
    a = native_fwd_args(**over)
    if case == "second_state_for_lif":  # a state the model does not have
        from spikeforge import native as nat

        params = native_params(model=0)
        with pytest.raises(ValueError, match="b_init"):
            nat.neuron_forward(
                a["x"],
                (None, torch.zeros(8), None),
                (None,) * 4,
                a["spike"],
                (a["v_out"], None, None),
                None,
                params,
                3,
                8,
                (1,) * 8,
                1,
                0,
            )
        return
    exc = TypeError if case == "x_none" else ValueError  # None where a tensor is required: nanobind's TypeError
    with pytest.raises(exc, match=name):
        call_native_forward(a)
    assert a["spike"].eq(7.0).all() and a["v_out"].eq(7.0).all()  # nothing written
    assert a["v_last"] is None or a["v_last"].eq(7.0).all()


NATIVE_BAD_BWD = {
    "no_x_no_h": (dict(x=None, w=None, grad_w=None, grad_k_ws=None), "saved values or x_seq"),
    "plif_decay_without_x": (dict(x=None, h=torch.randn(3, 8)), "x_seq"),
    "grad_v_numel": (dict(grad_v=torch.zeros(5)), r"v \(grad_state_out\)"),
    "grad_x_dtype": (dict(grad_x=torch.full((3, 8), 7.0, dtype=torch.float64)), "grad_x"),
    "grad_w_without_ws": (dict(grad_k_ws=None), "grad_slot_ws"),
    "grad_k_ws_numel": (dict(grad_k_ws=torch.zeros(3)), "grad_slot_ws"),
    "surrogate_id": (dict(surrogate=-1), "surrogate"),
}


@needs_native
@pytest.mark.parametrize("case", list(NATIVE_BAD_BWD))
def test_native_backward_rejects(case):
    over, name = NATIVE_BAD_BWD[case]
    a = native_bwd_args(**over)
    with pytest.raises(ValueError, match=name):
        call_native_backward(a)
    assert a["grad_x"].eq(7.0).all()
    if a["grad_w"] is not None:
        assert a["grad_w"].eq(7.0).all()


def test_many_chunks_thread_invariant_and_equal_to_reference():
    """N spans several CPU chunks (chunk_for(T=8) = 1024 neurons) with a ragged tail."""
    torch.manual_seed(7)
    N = 3 * 4096 + 77
    x = (torch.randint(-16, 24, (8, N)).float() / 8).requires_grad_()
    w = torch.tensor(0.0, requires_grad=True)
    g = torch.randn(8, N)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for z in (x, w):
            z.grad = None
        s, v = ops.plif(x, w, return_v="seq")
        (s * g + v).sum().backward()
        results.append((s, v, x.grad.clone(), w.grad.clone()))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    xr = x.detach().clone().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    sr, vr = reference.plif(xr, wr, return_v="seq")
    (sr * g + vr).sum().backward()
    assert torch.equal(results[0][0], sr) and torch.equal(results[0][1], vr)
    torch.testing.assert_close(results[0][2], xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][3], wr.grad, rtol=1e-4, atol=1e-3)


_STREAMED = {  # model -> (op, options that return every state as a [T, *] sequence)
    "lif": (ops.lif, {"return_v": "seq"}),
    "alif": (ops.alif, {"return_v": "seq", "return_states": "seq"}),
    "leaky": (ops.leaky, {"beta": 0.9, "return_mem": "seq"}),
    "synaptic": (ops.synaptic, {"alpha": 0.9, "beta": 0.8, "return_mem": "seq", "return_states": "seq"}),
    "alpha": (ops.alpha_neuron, {"alpha": 0.9, "beta": 0.8, "return_mem": "seq", "return_states": "seq"}),
}


@needs_native
@pytest.mark.parametrize("model", sorted(_STREAMED))
@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("save", [False, True], ids=["recompute", "saved"])
def test_large_outputs_written_with_streaming_stores(model, T, save, monkeypatch, spy_native):
    """float32 spike / state sequences and grad_x of 16 MiB or more are written with streaming stores
    (cpu_common.h stream_row; T = 1: the state as the last state, plainly): every value equals that of the same
    neurons run in two calls under the threshold (plain stores; neurons are independent). N is odd, so that the
    rows after the first start off a cache line; 1 and 2 threads (chunk edges between threads); the backward
    recomputing and reading the forward's saved values."""
    from spikeforge.ops import neuron as neuron_mod

    monkeypatch.setitem(neuron_mod.default_recompute, "cpu", not save)
    calls = spy_native(neuron_mod)
    torch.manual_seed(3)
    N = (16 << 20) // (4 * T) + 37  # 16 MiB + 148 bytes per [T, N] tensor
    x = (torch.randn(T, N) * 1.5 + 0.5).requires_grad_()
    g = torch.randn(T, N)
    call, kw = _STREAMED[model]
    half = N // 2 + 5
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            out = call(x, **kw)
            (gx,) = torch.autograd.grad(out[0], [x], g)
            for lo, hi in ((0, half), (half, N)):
                xp = x.detach()[:, lo:hi].clone().requires_grad_()
                part = call(xp, **kw)
                (gp,) = torch.autograd.grad(part[0], [xp], g[:, lo:hi])
                assert torch.equal(gx[:, lo:hi], gp)
                for whole, piece in zip(out, part):
                    assert whole.shape[0] == T and torch.equal(whole[:, lo:hi], piece)
    finally:
        torch.set_num_threads(threads)
    assert "neuron_forward" in calls and "neuron_backward" in calls
    if model == "lif":
        xr = x.detach()[:, :4096].clone().requires_grad_()
        sr, vr = reference.lif(xr, return_v="seq")
        (gr,) = torch.autograd.grad(sr, [xr], g[:, :4096])
        assert torch.equal(out[0][:, :4096], sr) and torch.equal(out[1][:, :4096], vr)
        torch.testing.assert_close(gx[:, :4096], gr, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(0, 0, 2), (3, 0, 2), (0, 0, 1)])
def test_plif_step_zero_channels(device, shape):
    """Per-channel PLIF with C = 0 (an empty channel dim, w of shape [0]): the reference once treated
    w [0] like a scalar and failed to broadcast (found by the property tests on CUDA)."""
    x = torch.randn(shape, device=device)
    w = torch.zeros(0, device=device)
    for step in (True, False):
        xs = x if step else x.unsqueeze(0)
        fn = (lambda m: m.plif_step(xs, w)) if step else (lambda m: m.plif(xs, w))
        got, want = fn(ops), fn(reference)
        for a, b in zip(got, want):
            assert a.shape == b.shape and torch.equal(a, b)


def test_memoised_options_never_mask_a_bad_argument():
    """ops/neuron.py memoises validated options by value *and type*: after tau=1 / decay_input=True /
    alpha=2 were accepted, the equal-valued True / 1 / 2.0-as-bool still raise, every time, and each
    option value keeps its own result."""
    x = torch.randn(3, 5)
    s1, _ = ops.lif(x, tau=1, decay_input=True)
    s2, _ = ops.lif(x, tau=1.0, decay_input=True)
    assert torch.equal(s1, s2)
    for _ in range(2):
        with pytest.raises(TypeError, match="tau"):
            ops.lif(x, tau=True)
        with pytest.raises(TypeError, match="decay_input"):
            ops.lif(x, decay_input=1)
        with pytest.raises(TypeError, match="tau"):
            ops.lif(x, tau=[2.0])  # unhashable: validation still names it
    want, _ = reference.lif(x, tau=4.0, surrogate="atan", alpha=3.0)
    for _ in range(2):  # a second call takes the memoised options
        got, _ = ops.lif(x, tau=4.0, surrogate="atan", alpha=3.0)
        assert torch.equal(got, want)
