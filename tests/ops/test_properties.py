"""Property tests (hypothesis): every op against spikeforge.reference over drawn shapes (empty and
size-1 dims included), dtypes, memory layouts (permuted, strided, expanded views) and option
combinations, forward and backward.

Structure: one entry per op family in FAMILIES, a function ``(data, device) -> None`` that draws a
case with hypothesis' `data` object, runs spikeforge.ops and spikeforge.reference on it and asserts.
A new op family adds its function to FAMILIES and is picked up by test_family_matches_reference.

Exactness: inputs are dyadic (multiples of 1/8, small), neuron time constants 1/2 or 1/4 and PSN
weights multiples of 1/8, so every forward value is exact in float32: spikes and membrane
potentials must match the reference bitwise. Half-precision cases are compared with the reference
run in float64 on the same (half-representable) inputs, since the kernels keep state in float32
and round once on output. Gradients go through surrogate functions whose float implementations
differ by ulps, so they are compared with tolerances.

Budget: examples per family are bounded and the run is derandomized (the same examples on every CI
run); the whole module takes a few seconds.
"""

from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spikeforge import ops, reference  # noqa: E402
from spikeforge.reference.surrogate import SURROGATES  # noqa: E402

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HALF = (torch.float16, torch.bfloat16)
W_QUARTER = -math.log(3.0)  # sigmoid = 1/4 exactly in float32 (tests/neuron_helpers.py checks it)


# ------------------------------------------------------------------------------------------------
# shared strategies
# ------------------------------------------------------------------------------------------------
def draw_shape(data, min_dims=0, max_dims=3, max_size=5):
    n = data.draw(st.integers(min_dims, max_dims), label="ndims")
    return tuple(data.draw(st.lists(st.integers(0, max_size), min_size=n, max_size=n), label="dims"))


def draw_dtype(data, device):
    choices = [torch.float32, torch.float16, torch.bfloat16] + ([torch.float64] if device == "cpu" else [])
    return data.draw(st.sampled_from(choices), label="dtype")


def draw_tensor(data, shape, dtype, device, lo=-8, hi=24, denom=8, requires_grad=False):
    """A tensor of dyadic values with a drawn memory layout. Returns (leaf, view): gradients are read
    from the contiguous leaf, the op sees the (possibly non-contiguous) view."""
    layout = data.draw(st.sampled_from(["contiguous", "permuted", "strided", "expanded"]), label="layout")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    g = torch.Generator().manual_seed(seed)

    def values(s):
        return (torch.randint(lo, hi, s, generator=g).to(torch.float64) / denom).to(dtype).to(device)

    nd = len(shape)
    if layout == "permuted" and nd >= 2:
        perm = data.draw(st.permutations(range(nd)), label="perm")
        leaf = values(tuple(shape[p] for p in perm)).requires_grad_(requires_grad)
        inv = [perm.index(d) for d in range(nd)]
        return leaf, leaf.permute(inv)
    if layout == "strided" and nd >= 1:
        leaf = values(tuple(shape[:-1]) + (2 * shape[-1],)).requires_grad_(requires_grad)
        return leaf, leaf[..., ::2]
    if layout == "expanded" and nd >= 1:
        d = data.draw(st.integers(0, nd - 1), label="expand_dim")
        leaf = values(tuple(1 if i == d else s for i, s in enumerate(shape))).requires_grad_(requires_grad)
        return leaf, leaf.expand(shape)
    leaf = values(tuple(shape)).requires_grad_(requires_grad)
    return leaf, leaf


def draw_surrogate(data):
    name = data.draw(st.sampled_from(sorted(SURROGATES)), label="surrogate")
    alpha = data.draw(st.sampled_from([None, 0.5, 1.0, 3.0]), label="alpha")
    return name, alpha


def grads_of(outputs, upstream, leaves):
    """d(sum_i <outputs[i], upstream[i]>) / d leaves (None for a leaf that does not require grad)."""
    loss = sum((o.double() * u.double()).sum() for o, u in zip(outputs, upstream))
    want = [l for l in leaves if l is not None and l.requires_grad]
    if not want or not loss.requires_grad:
        return [None] * len(leaves)
    got = iter(torch.autograd.grad(loss, want, allow_unused=True))
    return [next(got) if (l is not None and l.requires_grad) else None for l in leaves]


def as_ref(leaf, dtype):
    """A fresh leaf holding the same values, in the reference's dtype (float64 for half inputs)."""
    if leaf is None:
        return None
    want = torch.float64 if (dtype in HALF and leaf.dtype in HALF) else leaf.dtype
    return leaf.detach().to(want).requires_grad_(leaf.requires_grad)


def assert_forward_equal(out, ref):
    """Forward outputs: bitwise equal (NaN-free dyadic inputs), the reference rounded to out's dtype."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.equal(out, ref.to(out.dtype)), (out, ref)


def assert_grads_close(got, want, dtype):
    for g, w in zip(got, want):
        if w is None:
            continue
        assert g is not None and g.shape == w.shape
        tol = (
            dict(rtol=2e-2, atol=2e-2)
            if dtype in HALF
            else (dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4))
        )
        torch.testing.assert_close(g.double(), w.double(), **tol)


# ------------------------------------------------------------------------------------------------
# family: IF / LIF / PLIF (multi-step and single-step)
# ------------------------------------------------------------------------------------------------
def _neuron_case(data, device, step: bool):
    kind = data.draw(st.sampled_from(["lif", "if", "plif", "plif_c"]), label="kind")
    dtype = draw_dtype(data, device)
    if step:
        shape = draw_shape(data, 0 if kind != "plif_c" else 2, 3)
        seq_shape = (1,) + shape
    else:
        T = data.draw(st.integers(0, 6), label="T")
        shape = draw_shape(data, 0 if kind != "plif_c" else 2, 3)
        seq_shape = (T,) + shape
    x_leaf, x = draw_tensor(data, shape if step else seq_shape, dtype, device, requires_grad=True)
    v_leaf = v = None
    if data.draw(st.booleans(), label="v_init"):
        v_leaf, v = draw_tensor(
            data, shape, dtype, device, lo=-8, hi=8, requires_grad=data.draw(st.booleans(), label="v_grad")
        )
    kw = dict(
        v_threshold=data.draw(st.sampled_from([1.0, 0.5]), label="v_th"),
        v_reset=data.draw(st.sampled_from([0.0, None, -0.5]), label="v_reset"),
        detach_reset=data.draw(st.booleans(), label="detach_reset"),
    )
    kw["surrogate"], kw["alpha"] = draw_surrogate(data)
    if not step:
        kw["return_v"] = data.draw(st.sampled_from(["last", "seq"]), label="return_v")
    if kind != "if":
        kw["decay_input"] = data.draw(st.booleans(), label="decay_input")
    w_leaf = None
    if kind == "lif":
        kw["tau"] = data.draw(st.sampled_from([2.0, 4.0]), label="tau")
    elif kind.startswith("plif"):
        # sigmoid(w) in {1/2, 1/4} exactly (float64 kernels recompute sigmoid in double: only w = 0)
        wv = [0.0] if dtype == torch.float64 else [0.0, W_QUARTER]
        wdtype = torch.float64 if dtype == torch.float64 else torch.float32
        C = (shape[1] if step else seq_shape[2]) if kind == "plif_c" else None
        vals = [data.draw(st.sampled_from(wv), label="w") for _ in range(C if C is not None else 1)]
        w_leaf = torch.tensor(vals if C is not None else vals[0], dtype=wdtype, device=device)
        w_leaf.requires_grad_(data.draw(st.booleans(), label="w_grad"))
    return kind, dtype, x_leaf, x, v_leaf, v, w_leaf, kw


def _neuron_call(impl, kind, step, x, v, w, kw):
    if step:
        fn = {"lif": impl.lif_step, "if": impl.if_step}.get(kind)
        return fn(x, v, **kw) if fn else impl.plif_step(x, w, v, **kw)
    if kind == "lif":
        return impl.lif(x, v, **kw)
    if kind == "if":
        return impl.if_neuron(x, v, **kw)
    return impl.plif(x, w, v, **kw)


def _relayout(leaf_ref, leaf, view):
    """Applies view's layout (derived from leaf) to leaf_ref: the reference sees the same strides."""
    if leaf is None:
        return None
    return torch.as_strided(leaf_ref, view.shape, view.stride(), view.storage_offset() - leaf.storage_offset())


def _check_neuron(data, device, step):
    kind, dtype, x_leaf, x, v_leaf, v, w_leaf, kw = _neuron_case(data, device, step)
    s, vo = _neuron_call(ops, kind, step, x, v, w_leaf, kw)
    xr, vr, wr = as_ref(x_leaf, dtype), as_ref(v_leaf, dtype), as_ref(w_leaf, dtype)
    s_ref, vo_ref = _neuron_call(reference, kind, step, _relayout(xr, x_leaf, x), _relayout(vr, v_leaf, v), wr, kw)
    assert_forward_equal(s, s_ref)
    assert_forward_equal(vo, vo_ref)
    assert s.dtype == dtype and vo.dtype == dtype
    g = data.draw(st.integers(0, 2**31 - 1), label="grad_seed")
    gen = torch.Generator().manual_seed(g)
    ups = [(torch.randint(-4, 5, o.shape, generator=gen).double() / 4).to(device) for o in (s, vo)]
    got = grads_of((s, vo), ups, (x_leaf, v_leaf, w_leaf))
    want = grads_of((s_ref, vo_ref), ups, (xr, vr, wr))
    assert_grads_close(got, want, dtype)


def check_neuron(data, device):
    _check_neuron(data, device, step=False)


def check_neuron_step(data, device):
    _check_neuron(data, device, step=True)


# ------------------------------------------------------------------------------------------------
# family: PSN, masked PSN, sliding PSN
# ------------------------------------------------------------------------------------------------
def check_psn(data, device):
    op = data.draw(st.sampled_from(["psn", "masked_psn", "sliding_psn"]), label="op")
    dtype = draw_dtype(data, device)
    T = data.draw(st.integers(1 if op == "masked_psn" else 0, 8), label="T")
    shape = (T,) + draw_shape(data, 0, 3)
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32
    x_leaf, x = draw_tensor(data, shape, dtype, device, lo=-16, hi=16, requires_grad=True)
    wgrad, bgrad = data.draw(st.booleans(), label="w_grad"), data.draw(st.booleans(), label="b_grad")
    extra = {}
    if op == "sliding_psn":
        k = data.draw(st.integers(1, 5), label="k")
        w_leaf, w = draw_tensor(data, (k,), pdtype, device, requires_grad=wgrad)
        b_leaf, b = draw_tensor(data, (), pdtype, device, requires_grad=bgrad)
    else:
        w_leaf, w = draw_tensor(data, (T, T), pdtype, device, lo=-8, hi=8, requires_grad=wgrad)
        b_leaf, b = draw_tensor(data, (T,), pdtype, device, lo=-8, hi=8, requires_grad=bgrad)
        if op == "masked_psn":
            extra = dict(
                k=data.draw(st.integers(1, T), label="k"),
                lam=data.draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]), label="lam"),
            )
    sur, alpha = draw_surrogate(data)
    fn, ref_fn = getattr(ops, op), getattr(reference, op)
    s = fn(x, w, b, **extra, surrogate=sur, alpha=alpha)
    xr, wr, br = as_ref(x_leaf, dtype), as_ref(w_leaf, dtype), as_ref(b_leaf, dtype)
    s_ref = ref_fn(
        _relayout(xr, x_leaf, x),
        _relayout(wr, w_leaf, w),
        _relayout(br, b_leaf, b),
        **extra,
        surrogate=sur,
        alpha=alpha,
    )
    assert s.dtype == dtype
    assert_forward_equal(s, s_ref)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="grad_seed"))
    up = (torch.randint(-4, 5, s.shape, generator=gen).double() / 4).to(device)
    got = grads_of((s,), (up,), (x_leaf, w_leaf, b_leaf))
    want = grads_of((s_ref,), (up,), (xr, wr, br))
    assert_grads_close(got, want, dtype)


# ------------------------------------------------------------------------------------------------
# family: event-driven spike propagation (spike_linear, spike_conv2d)
# ------------------------------------------------------------------------------------------------
def check_spike(data, device):
    """Binary spikes, small integer counts or dyadic floats against F.linear / F.conv2d. float32 and
    float64 only: the native kernels take those (other dtypes fall back to the reference itself)."""
    layer = data.draw(st.sampled_from(["linear", "conv2d"]), label="layer")
    dtype = data.draw(st.sampled_from([torch.float32] + ([torch.float64] if device == "cpu" else [])), label="dtype")
    kind = data.draw(st.sampled_from(["binary", "counts", "float"]), label="kind")
    lo, hi, denom = {"binary": (0, 2, 1), "counts": (0, 4, 1), "float": (-8, 9, 8)}[kind]
    mode = data.draw(st.sampled_from(["auto", "sparse", "dense"]), label="mode")
    with_bias = data.draw(st.booleans(), label="bias")
    if layer == "linear":
        K, Nout = data.draw(st.integers(0, 70), label="K"), data.draw(st.integers(1, 5), label="N")
        s_shape = draw_shape(data, 0, 2, 4) + (K,)
        w_shape, kw = (Nout, K), {}
    else:
        groups = data.draw(st.sampled_from([1, 2]), label="groups")
        cin, cout = groups * data.draw(st.integers(1, 3), label="cin_g"), groups * data.draw(st.integers(1, 2))
        kh, kw_ = data.draw(st.integers(1, 3), label="kh"), data.draw(st.integers(1, 3), label="kw")
        kw = dict(
            stride=data.draw(st.sampled_from([1, 2, (1, 2)]), label="stride"),
            padding=data.draw(st.sampled_from([0, 1, (1, 0)]), label="padding"),
            dilation=data.draw(st.sampled_from([1, 2]), label="dilation"),
            groups=groups,
        )
        d = kw["dilation"]
        H = data.draw(st.integers(d * (kh - 1) + 1, 7), label="H")
        W = data.draw(st.integers(d * (kw_ - 1) + 1, 7), label="W")
        lead = data.draw(st.sampled_from([(2,), (0,), (2, 1), (1, 2)]), label="lead")
        s_shape, w_shape = lead + (cin, H, W), (cout, cin // groups, kh, kw_)
    s_leaf, s_view = draw_tensor(
        data, s_shape, dtype, device, lo=lo, hi=hi, denom=denom, requires_grad=data.draw(st.booleans(), label="s_grad")
    )
    w_leaf, w = draw_tensor(data, w_shape, dtype, device, lo=-8, hi=9, requires_grad=True)
    b_leaf, b = (
        draw_tensor(data, w_shape[:1], dtype, device, lo=-8, hi=9, requires_grad=True) if with_bias else (None, None)
    )
    y = getattr(ops, f"spike_{layer}")(s_view, w, b, **kw, mode=mode)
    sr, wr, br = as_ref(s_leaf, dtype), as_ref(w_leaf, dtype), as_ref(b_leaf, dtype)
    y_ref = getattr(reference, f"spike_{layer}")(
        _relayout(sr, s_leaf, s_view), _relayout(wr, w_leaf, w), _relayout(br, b_leaf, b), **kw
    )
    assert y.dtype == dtype
    assert_forward_equal(y, y_ref)  # dyadic sums: exact in any order
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="grad_seed"))
    up = (torch.randint(-4, 5, y.shape, generator=gen).double() / 4).to(device)
    assert_grads_close(grads_of((y,), (up,), (s_leaf, w_leaf, b_leaf)), grads_of((y_ref,), (up,), (sr, wr, br)), dtype)


# ------------------------------------------------------------------------------------------------
# family: attention on spikes (ssa, sdsa, qk_token_attention, qk_channel_attention)
# ------------------------------------------------------------------------------------------------
def check_attention(data, device):
    """Spike q, k, v [T, *batch, N, D]: every sum is an integer (times 1/8 for SSA's scale), the LIF's
    leak is 1/2 or 1/4, so spikes equal the reference's bitwise in every dtype and path."""
    import spikeforge.ops.attention as attention_mod

    op = data.draw(st.sampled_from(["ssa", "sdsa", "qk_token_attention", "qk_channel_attention"]), label="op")
    dtype = draw_dtype(data, device)
    T = data.draw(st.integers(0, 4), label="T")
    shape = (
        (T,)
        + draw_shape(data, 0, 2, 3)
        + (data.draw(st.integers(0, 5), label="N"), data.draw(st.integers(0, 6), label="D"))
    )
    n_in = 3 if op in ("ssa", "sdsa") else 2
    leaves, views = zip(
        *[
            draw_tensor(
                data,
                shape,
                dtype,
                device,
                lo=0,
                hi=2,
                denom=1,
                requires_grad=data.draw(st.booleans(), label=f"grad{i}"),
            )
            for i in range(n_in)
        ]
    )
    kw = dict(
        tau=data.draw(st.sampled_from([2.0, 4.0]), label="tau"),
        v_threshold=data.draw(st.sampled_from([0.5, 1.0]), label="v_th"),
        v_reset=data.draw(st.sampled_from([0.0, None]), label="v_reset"),
        detach_reset=data.draw(st.booleans(), label="detach_reset"),
        decay_input=data.draw(st.booleans(), label="decay_input"),
    )
    kw["surrogate"], kw["alpha"] = draw_surrogate(data)
    # the fused reduce kernel runs on CUDA by default; on CPU draw it too (it is exact as well)
    fused = data.draw(st.booleans(), label="reduce_kernel")
    saved = attention_mod.REDUCE_KERNEL_DEVICES
    attention_mod.REDUCE_KERNEL_DEVICES = ("cpu", "cuda") if fused else saved
    try:
        out = getattr(ops, op)(*views, **kw)
    finally:
        attention_mod.REDUCE_KERNEL_DEVICES = saved
    refs = [as_ref(l, dtype) for l in leaves]
    out_ref = getattr(reference, op)(*[_relayout(r, l, v) for r, l, v in zip(refs, leaves, views)], **kw)
    assert out.dtype == dtype
    assert_forward_equal(out, out_ref)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="grad_seed"))
    up = (torch.randint(-4, 5, out.shape, generator=gen).double() / 4).to(device)
    assert_grads_close(grads_of((out,), (up,), leaves), grads_of((out_ref,), (up,), refs), dtype)


# New op families register here: name -> check(data, device).
FAMILIES = {
    "neuron": check_neuron,
    "neuron_step": check_neuron_step,
    "psn": check_psn,
    "spike": check_spike,
    "attention": check_attention,
}


@pytest.mark.parametrize("family", list(FAMILIES))
@SETTINGS
@given(data=st.data())
def test_family_matches_reference(family, device, data):
    FAMILIES[family](data, device)
