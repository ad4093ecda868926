"""The custom ops torch.ops.spikeforge.neuron_fwd / neuron_bwd: opcheck, torch.compile(fullgraph=True), the
eager fast path against the custom-op path, saved-H against recomputed-H backward, and the reference fallback."""

import pytest
import torch

from spikeforge.testing import dyadic

from neuron_helpers import (
    assert_grads_close,
    call,
    capture_cuda_graph,
    fwd_bwd,
    h_seq,
    make_w,
    ops,
    reference,
    upstream,
)
import spikeforge.ops.neuron as neuron_mod
import spikeforge.ops._common as common_mod

RTOL32, ATOL32 = 1e-5, 1e-5  # see test_neuron.py
KINDS = ("lif_tau2", "if", "plif", "plif_c")


def _op_args(
    kind,
    x,
    v_init,
    w,
    *,
    v_threshold=1.0,
    v_reset=0.0,
    decay_input=True,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=4.0,
    v_seq=False,
    save_h=False,
):
    """Positional inputs of neuron_fwd for the same call as ops.<kind>(...) (built by the op itself)."""
    kw = dict(
        v_threshold=v_threshold,
        v_reset=v_reset,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=alpha,
        return_v="seq" if v_seq else "last",
    )
    if kind in ("lif_tau2", "lif_tau4"):
        return neuron_mod.op_inputs(
            ops.lif, x, v_init, tau=2.0 if kind == "lif_tau2" else 4.0, decay_input=decay_input, save=save_h, **kw
        )
    if kind == "if":
        return neuron_mod.op_inputs(ops.if_neuron, x, v_init, save=save_h, **kw)
    return neuron_mod.op_inputs(ops.plif, x, w, v_init, decay_input=decay_input, save=save_h, **kw)


# ------------------------------------------------------------------------------------------------
# opcheck
# ------------------------------------------------------------------------------------------------
def _fwd_arg_sets(device):
    def leaf(t):
        return t.to(device).requires_grad_()

    x4 = torch.randn(4, 2, 3, 5) + 0.5
    return {
        "lif_default": _op_args("lif_tau2", leaf(torch.randn(4, 2, 3) + 0.5), None, None),
        "plif_channel_vseq_saveh": _op_args(
            "plif_c",
            leaf(x4),
            leaf(torch.randn(2, 3, 5)),
            leaf(torch.randn(3)),
            v_reset=-0.5,
            detach_reset=True,
            surrogate="atan",
            alpha=2.0,
            v_seq=True,
            save_h=True,
        ),
        "if_soft_vseq": _op_args(
            "if",
            leaf(torch.randn(5, 7)),
            leaf(torch.randn(7)),
            None,
            v_threshold=0.5,
            v_reset=None,
            surrogate="triangle",
            alpha=1.0,
            v_seq=True,
        ),
        "plif_scalar_nodecay_soft": _op_args(
            "plif", leaf(x4), None, leaf(torch.tensor(0.3)), v_reset=None, decay_input=False, surrogate="erf", alpha=2.0
        ),
        "lif_fp16_saveh": _op_args(
            "lif_tau2",
            leaf(torch.randn(3, 4, 8).half()),
            leaf(torch.randn(4, 8).half()),
            None,
            surrogate="super_spike",
            alpha=1.0,
            save_h=True,
        ),
        "lif_no_grad": _op_args("lif_tau2", torch.randn(3, 6).to(device), None, None, v_seq=True),
    }


FWD_CASES = [
    "lif_default",
    "plif_channel_vseq_saveh",
    "if_soft_vseq",
    "plif_scalar_nodecay_soft",
    "lif_fp16_saveh",
    "lif_no_grad",
]
BWD_CASES = ["lif_recompute", "lif_vseq_vinit", "if_no_grad_v", "plif_saved_h", "plif_nodecay_h_only"]


@pytest.mark.parametrize("case", FWD_CASES)
def test_opcheck_neuron_fwd(device, case):
    """Schema, fake (meta) function, autograd registration and AOT dispatch with dynamic shapes (all of
    opcheck's default sub-tests), with inputs that require grad so the backward op is traced too."""
    sets = _fwd_arg_sets(device)
    assert list(sets) == FWD_CASES
    args = sets[case]
    torch.library.opcheck(torch.ops.spikeforge.neuron_fwd.default, args)


def _bwd_arg_sets(device):
    T, shape = 4, (2, 3, 5)
    x = torch.randn(T, *shape, device=device) + 0.5
    v_init = torch.randn(shape, device=device)
    w = torch.randn(3, device=device)
    gs = torch.randn(T, *shape, device=device)
    gv_last = torch.randn(shape, device=device)
    gv_seq = torch.randn(T, *shape, device=device)

    def case(fwd, grad_v, needs):
        saved = torch.ops.spikeforge.neuron_fwd(*fwd)[-1]
        return neuron_mod.bwd_inputs(fwd, saved, gs, (grad_v, None, None), needs)

    no, vi, vi_k, k = (
        (False,) * 7,
        (True,) + (False,) * 6,
        (True, False, False, True, False, False, False),
        (False, False, False, True, False, False, False),
    )
    return {
        "lif_recompute": case(_op_args("lif_tau2", x, None, None), gv_last, no),
        "lif_vseq_vinit": case(
            _op_args(
                "lif_tau4",
                x,
                v_init,
                None,
                v_threshold=0.75,
                v_reset=-0.5,
                decay_input=False,
                detach_reset=True,
                surrogate="atan",
                alpha=2.0,
                v_seq=True,
            ),
            gv_seq,
            vi,
        ),
        "if_no_grad_v": case(_op_args("if", x, v_init, None, v_reset=None, surrogate="triangle", alpha=1.0), None, vi),
        "plif_saved_h": case(_op_args("plif_c", x, v_init, w, save_h=True), gv_last, vi_k),
        "plif_nodecay_h_only": case(
            _op_args("plif_c", x, None, w, decay_input=False, surrogate="erf", alpha=2.0, v_seq=True, save_h=True),
            gv_seq,
            k,
        ),
    }


@pytest.mark.parametrize("case", BWD_CASES)
def test_opcheck_neuron_bwd(device, case):
    sets = _bwd_arg_sets(device)
    assert list(sets) == BWD_CASES
    args = sets[case]
    torch.library.opcheck(torch.ops.spikeforge.neuron_bwd.default, args)


# ------------------------------------------------------------------------------------------------
# the eager fast path and the custom op compute the same thing
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("save_h", [False, True], ids=["recompute_h", "saved_h"])
@pytest.mark.parametrize("return_v", ["last", "seq"])
@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_equals_custom_op(device, kind, return_v, save_h):
    """ops.<kind> (an autograd.Function, or no graph at all without grad) and a direct call of
    torch.ops.spikeforge.neuron_fwd with autograd through neuron_bwd agree bitwise, whether the op saves H
    for backward or recomputes it (float32)."""
    x = torch.randn(5, 2, 3, 4, device=device) + 0.5
    v_init = torch.randn(2, 3, 4, device=device) * 0.5
    w = (
        None
        if kind in ("lif_tau2", "if")
        else (torch.tensor(-0.4, device=device) if kind == "plif" else torch.randn(3, device=device))
    )
    gs, gv = upstream(x, return_v)
    kw = dict(v_reset=-0.5, surrogate="atan", alpha=3.0, detach_reset=False)
    fast = fwd_bwd(ops, kind, x, v_init, w, gs, gv, return_v=return_v, **kw)
    leaves = [x.clone().requires_grad_(), v_init.clone().requires_grad_()] + (
        [w.clone().requires_grad_()] if w is not None else []
    )
    w_leaf = leaves[2] if w is not None else None
    s, v, *_, h = torch.ops.spikeforge.neuron_fwd(
        *_op_args(kind, leaves[0], leaves[1], w_leaf, v_seq=return_v == "seq", save_h=save_h, **kw)
    )
    assert torch.equal(s.detach(), fast["s"]) and torch.equal(v.detach(), fast["v"])
    assert h.numel() == (x.numel() if save_h else 0)
    grads = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), leaves)
    for g, name in zip(grads, ("g_x", "g_v_init", "g_w")):
        assert g.shape == fast[name].shape
        assert torch.equal(g, fast[name]), name
    with torch.no_grad():
        s0, v0 = call(ops, kind, x, v_init, w, return_v=return_v, **kw)
    assert torch.equal(s0, fast["s"]) and torch.equal(v0, fast["v"])


@pytest.mark.parametrize("kind", KINDS)
def test_saved_h_is_the_charge(device, kind):
    """h_seq saved by the forward (what the CUDA backward reads) is H[t] of docs/ops.md (exact inputs)."""
    x = dyadic((5, 2, 3, 4), -8, 40, device=device)
    v_init = dyadic((2, 3, 4), -8, 8, device=device)
    w = make_w(kind, 3, device=device)
    for v_reset in (-0.5, None):
        h = torch.ops.spikeforge.neuron_fwd(*_op_args(kind, x, v_init, w, v_reset=v_reset, save_h=True))[-1][0]
        want = h_seq(kind, x.double(), v_init.double(), w, v_reset=v_reset)
        assert torch.equal(h.double(), want)


def test_tensor_subclass_takes_the_custom_op_path():
    """A Parameter (not exactly torch.Tensor) goes through the custom op: same numbers."""
    x = torch.randn(4, 2, 3) + 0.5
    w = torch.randn(3)
    gs, gv = upstream(x, "last")
    want = fwd_bwd(ops, "plif_c", x, None, w, gs, gv)
    xp = torch.nn.Parameter(x.clone())
    wp = torch.nn.Parameter(w.clone())
    s, v = ops.plif(xp, wp)
    gx, gw = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), [xp, wp])
    assert torch.equal(s.detach(), want["s"]) and torch.equal(v.detach(), want["v"])
    assert torch.equal(gx, want["g_x"]) and torch.equal(gw, want["g_w"])


# ------------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True)
# ------------------------------------------------------------------------------------------------
def _net(x, v_init, w_c, w_s):
    """A small chain of every neuron: LIF -> PLIF (per-channel) -> IF -> PLIF step (scalar w)."""
    s1, v1 = ops.lif(x, v_init, tau=2.0, surrogate="atan", return_v="seq")
    s2, v2 = ops.plif(s1 * 0.75 + x, w_c, v_reset=None, decay_input=False)
    s3, v3 = ops.if_neuron(s2 + 0.25 * v1, v_threshold=0.5, detach_reset=True, surrogate="rect", alpha=0.5)
    s4, v4 = ops.plif_step(x[-1], w_s, v3, surrogate="erf")
    return (s3 * x).sum() + (v2 * v3).sum() + (s4 * v4).sum() + v1.square().sum()


def _net_inputs(device, shape=(4, 2, 3, 5)):
    x = (torch.randn(shape, device=device) + 0.5).requires_grad_()
    v_init = (torch.randn(shape[1:], device=device) * 0.5).requires_grad_()
    w_c = torch.randn(shape[2], device=device).requires_grad_()
    w_s = torch.tensor(-0.3, device=device).requires_grad_()
    return x, v_init, w_c, w_s


def _eager_and_compiled(fn, inputs, backend, **compile_kw):
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=backend, fullgraph=True, **compile_kw)
    out_c = compiled(*inputs)
    g_c = torch.autograd.grad(out_c, inputs)
    out_e = fn(*inputs)
    g_e = torch.autograd.grad(out_e, inputs)
    return (out_c, g_c), (out_e, g_e), compiled


def test_compile_aot_eager_matches_eager(device):
    """aot_eager runs the traced custom ops without codegen: bitwise equal to eager, forward and backward,
    and the graph holds the custom op (no fallback to a Python loop). New shapes recompile with symbolic
    sizes (automatic dynamic shapes), which exercises the fake (meta) functions."""
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(_net, backend=recording_backend, fullgraph=True)
    for shape in ((4, 2, 3, 5), (3, 3, 3, 2), (6, 1, 4, 3)):
        inputs = _net_inputs(device, shape)
        out_c = compiled(*inputs)
        g_c = torch.autograd.grad(out_c, inputs)
        out_e = _net(*inputs)
        g_e = torch.autograd.grad(out_e, inputs)
        assert torch.equal(out_c, out_e)
        for a, b in zip(g_c, g_e):
            assert torch.equal(a, b)
    assert graphs and all("spikeforge.neuron_fwd" in g for g in graphs)


def test_compile_dynamic_true(device):
    """torch.compile(dynamic=True) traces Python floats symbolically; the ops' argument checks must not
    break the graph."""
    torch._dynamo.reset()
    compiled = torch.compile(_net, backend="aot_eager", fullgraph=True, dynamic=True)
    inputs = _net_inputs(device)
    out_c = compiled(*inputs)
    out_e = _net(*inputs)
    assert torch.equal(out_c, out_e)


def _outputs_fn(x, v_init, w):
    s, v = ops.plif(x, w, v_init, v_reset=-0.5, surrogate="sigmoid", return_v="seq")
    s2, v2 = ops.lif(x, None, tau=4.0, v_reset=None, decay_input=False, surrogate="piecewise_exp")
    return s, v, s2, v2


@pytest.mark.parametrize("device", ["cpu"])
def test_compile_inductor_matches_eager(device):
    """The default inductor backend (C++ codegen on CPU) around the custom ops: spikes equal, everything
    else within float32 rounding of the fused element-wise code inductor generates around the op."""
    x = dyadic((4, 2, 3, 5), -8, 40, device=device).requires_grad_()
    v_init = dyadic((2, 3, 5), -8, 8, device=device).requires_grad_()
    w = make_w("plif_c", 3, device=device).requires_grad_()
    ups = [torch.randn(4, 2, 3, 5, device=device) for _ in range(3)] + [torch.randn(2, 3, 5, device=device)]

    def loss_of(outs):
        return sum((o * u).sum() for o, u in zip(outs, ups))

    torch._dynamo.reset()
    compiled = torch.compile(_outputs_fn, fullgraph=True)
    outs_c = compiled(x, v_init, w)
    outs_e = _outputs_fn(x, v_init, w)
    for a, b in zip(outs_c, outs_e):
        assert torch.equal(a, b)  # the op's outputs are not touched by codegen
    g_c = torch.autograd.grad(loss_of(outs_c), [x, v_init, w])
    g_e = torch.autograd.grad(loss_of(outs_e), [x, v_init, w])
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=RTOL32, atol=ATOL32 * max(1.0, b.abs().max().item()))


# ------------------------------------------------------------------------------------------------
# fallback to the reference when the native module lacks the device
# ------------------------------------------------------------------------------------------------
class _NoNative:
    def __getattr__(self, name):
        raise AssertionError(f"native.{name} called although the fallback should be used")


@pytest.mark.parametrize("how", ["no_device_support", "no_native_module"])
@pytest.mark.parametrize("kind", KINDS)
def test_fallback_to_reference(monkeypatch, kind, how):
    x = dyadic((5, 2, 3, 4), -8, 40)
    v_init = dyadic((2, 3, 4), -8, 8)
    w = make_w(kind, 3)
    gs, gv = upstream(x, "seq")
    kw = dict(
        v_threshold=0.75,
        v_reset=None,
        decay_input=False,
        detach_reset=True,
        surrogate="super_spike",
        alpha=2.5,
        return_v="seq",
    )
    native_res = fwd_bwd(ops, kind, x, v_init, w, gs, gv, **kw)
    ref_res = fwd_bwd(reference, kind, x, v_init, w, gs, gv, **kw)
    if how == "no_device_support":
        monkeypatch.setattr(neuron_mod, "_has_native", lambda device: False)
        monkeypatch.setattr(neuron_mod, "native", _NoNative())
    else:  # the availability check lives in ops/_common.py, the native calls in ops/neuron.py
        monkeypatch.setattr(common_mod, "native", None)
        monkeypatch.setattr(neuron_mod, "native", None)
    fb = fwd_bwd(ops, kind, x, v_init, w, gs, gv, **kw)
    for key in ref_res:  # the fallback is the reference, with every option passed through
        assert torch.equal(fb[key], ref_res[key]), key
    assert torch.equal(fb["s"], native_res["s"]) and torch.equal(fb["v"], native_res["v"])
    assert_grads_close(fb, native_res, RTOL32, ATOL32)
    step = {"lif_tau2": ops.lif_step, "if": ops.if_step, "plif": ops.plif_step, "plif_c": ops.plif_step}[kind]
    skw = {k: v for k, v in kw.items() if k != "return_v" and not (kind == "if" and k == "decay_input")}
    if kind == "lif_tau2":
        skw["tau"] = 2.0
    s, v = step(x[0], *((w,) if w is not None else ()), v_init, **skw)
    assert torch.equal(s, ref_res["s"][0]) and torch.equal(v, ref_res["v"][0])
    with pytest.raises(ValueError, match="tau"):  # validation still happens before the fallback
        ops.lif(x, tau=-1.0)


# ------------------------------------------------------------------------------------------------
# CUDA graphs (the ops allocate with the caching allocator and never synchronise the host)
# ------------------------------------------------------------------------------------------------
def test_cuda_graph_replay(device):
    if device != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    x = torch.randn(6, 4, 3, 17, device=device, requires_grad=True)
    v_init = torch.randn(4, 3, 17, device=device, requires_grad=True)
    w = torch.randn(3, device=device, requires_grad=True)
    gs, gv = upstream(x.detach(), "seq")

    def step():
        s, v = ops.plif(x, w, v_init, v_reset=None, surrogate="atan", return_v="seq")
        grads = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), [x, v_init, w])
        return (s, v) + grads

    graph, static_out = capture_cuda_graph(step)
    for _ in range(2):
        with torch.no_grad():
            x.copy_(torch.randn_like(x) + 0.5)
            v_init.copy_(torch.randn_like(v_init))
            w.copy_(torch.randn_like(w))
        graph.replay()
        torch.cuda.synchronize()
        want = step()
        for a, b in zip(static_out, want):
            assert torch.equal(a, b)
