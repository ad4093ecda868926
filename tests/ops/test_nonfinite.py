"""Non-finite values through the event-driven ops (docs/bad_inputs.md "Numerics"): spike_linear,
spike_conv2d and the attention ops give NaN / +inf / -inf exactly where the dense torch computation does,
forward and backward, in every mode and for every input kind, although the event kernels skip the zero
inputs that the dense product multiplies (0 * inf = NaN).

The dense ground truth: F.linear; F.conv2d of the explicitly zero-padded input (padding counts as zeros:
some oneDNN kernels skip padded taps, so F.conv2d with padding= can show fewer NaN on the borders); grad_mask
multiplies, as the reference does ((dY W) * mask: NaN outside the mask where dY W is not finite); the
attention ops' torch composition (K^T V first for SSA). Finite values are dyadic, so the finite entries
must agree to the last bit as well.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikeforge import ops
from spikeforge.ops import attention as attention_mod
from spikeforge.testing import dyadic

INF, NAN = float("inf"), float("nan")


def spikes(shape, rate, kind, dtype=torch.float32, device="cpu"):
    on = (torch.rand(tuple(shape)) < rate).to(dtype)
    if kind == "counts":
        on = on * torch.randint(1, 9, tuple(shape)).to(dtype)
    elif kind == "ternary":
        on = on * (torch.randint(0, 2, tuple(shape)) * 2 - 1).to(dtype)
    elif kind == "float":
        on = on * dyadic(shape, -16, 16, 8, dtype)
    return on.to(device)


def poke(t, values):
    """t with the given values written at random distinct positions (a copy)."""
    t = t.clone()
    flat = t.view(-1)
    at = torch.randperm(flat.numel())[: len(values)].to(t.device)
    flat[at] = torch.tensor(values, dtype=t.dtype, device=t.device)
    return t


def assert_same(a, b, what=""):
    """Same NaN, +inf and -inf positions, and the same finite values (a few ulps: the sums run in another
    order, exact on dyadic values)."""
    assert a.shape == b.shape, what
    for name, f in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        fa, fb = f(a), f(b)
        assert torch.equal(fa, fb), f"{what}: {name} at {int(fa.sum())} entries, dense at {int(fb.sum())}"
    fin = torch.isfinite(b)
    scale = max(float(b[fin].abs().max()) if fin.any() else 0.0, 1.0)
    torch.testing.assert_close(a[fin], b[fin], rtol=0, atol=1e-6 * scale, msg=what)


def run(fn, inputs, gy):
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*inputs)
    return [y.detach()] + list(torch.autograd.grad(y, inputs, gy))


# --------------------------------------------------------------------------------------------
# spike_linear
# --------------------------------------------------------------------------------------------
WHERE = ["weight", "input", "grad_y", "bias", "all"]


def _linear_case(where, kind, device, dtype=torch.float32, M=13, K=150, N=37, rate=0.1):
    s = spikes((M, K), rate, kind, dtype, device)
    w = dyadic((N, K), -16, 16, 16, dtype, device)
    b = dyadic((N,), -16, 16, 16, dtype, device)
    gy = dyadic((M, N), -8, 8, 16, dtype, device)
    if where in ("weight", "all"):
        w = poke(w, [INF, -INF, NAN, INF])
    if where in ("input", "all") and kind == "float":  # spikes cannot hold inf: only float inputs
        s = poke(s, [INF, NAN, -INF])
    if where in ("grad_y", "all"):
        gy = poke(gy, [INF, NAN, -INF])
    if where == "bias":
        b = poke(b, [INF, NAN])
    return s, w, b, gy


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", ["binary", "counts", "ternary", "float"])
@pytest.mark.parametrize("mode", ["sparse", "auto", "dense"])
def test_linear_nonfinite_like_dense(device, where, kind, mode):
    s, w, b, gy = _linear_case(where, kind, device)
    got = run(lambda s_, w_, b_: ops.spike_linear(s_, w_, b_, mode=mode), [s, w, b], gy)
    want = run(F.linear, [s, w, b], gy)
    for a, r, name in zip(got, want, ("y", "grad_s", "grad_w", "grad_b")):
        assert_same(a, r, f"{name} ({where}, {kind}, {mode})")


def test_linear_nonfinite_issue_numbers(device):
    """The issue's cases: a NaN weight that no spike touches still makes its output NaN (as 0 * NaN), and
    an inf in grad_y makes grad_weight NaN wherever that row's input is 0."""
    s = spikes((8, 64), 0.1, "binary", device=device)
    w = dyadic((4, 64), -16, 16, 16, device=device)
    k = int((s.sum(0) == 0).nonzero()[0])  # an input no row fires
    w[1, k] = NAN
    y = ops.spike_linear(s, w, mode="sparse")
    assert y[:, 1].isnan().all() and not y[:, [0, 2, 3]].isnan().any()
    gy = dyadic((8, 4), -8, 8, 16, device=device)
    gy[3, 2] = INF
    _, _, gw = run(lambda s_, w_: ops.spike_linear(s_, w_, mode="sparse"), [s, w], gy)
    assert torch.equal(gw[2].isnan(), s[3] == 0)


@pytest.mark.parametrize("mask_rate", [0.0, 0.05, 0.5])
@pytest.mark.parametrize("where", ["weight", "grad_y", "all"])
@pytest.mark.parametrize("mode", ["sparse", "dense"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_masked_grad_input_nonfinite(device, mask_rate, where, mode, dtype):
    """grad_mask multiplies (the reference's (dY W) * mask): outside the mask the gradient is 0, or NaN where
    dY W is not finite (a non-finite value in row m of dY or column k of W); inside it, dY W exactly. The
    native masked kernel (mask densities below MASKED_CROSSOVER) and the masked GEMM agree with it."""
    if device == "cuda" and dtype == torch.float64:
        pytest.skip("CUDA kernels take float32")
    s, w, b, gy = _linear_case(where, "binary", device, dtype, M=21, K=101, N=70)
    mask = torch.rand(s.shape, device=device) < mask_rate
    _, gs, gw = run(lambda s_, w_: ops.spike_linear(s_, w_, mode=mode, grad_mask=mask), [s, w], gy)
    _, gs0, gw0 = run(F.linear, [s, w], gy)
    assert_same(gs, gs0 * mask, "grad_s")
    assert_same(gw, gw0, "grad_w")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_nonfinite_native_kernels_and_threads(dtype):
    """The native kernels directly, float32 and float64 (float64 and K not a multiple of 8 take the scalar
    tile loads), on 1 and 2 threads: bitwise the same, NaN and inf included."""
    out = []
    for nt in (1, 2):
        torch.set_num_threads(nt)
        torch.manual_seed(3)
        s, w, b, gy = _linear_case("all", "counts", "cpu", dtype, M=40, K=203, N=70)
        got = run(lambda s_, w_, b_: ops.spike_linear(s_, w_, b_, mode="sparse"), [s, w, b], gy)
        for a, r in zip(got, run(F.linear, [s, w, b], gy)):
            assert_same(a, r)
        out.append(got)
    for a, c in zip(*out):
        assert torch.equal(a.nan_to_num(), c.nan_to_num()) and torch.equal(a.isnan(), c.isnan())


@pytest.mark.parametrize(
    "M, K, N",
    [
        (24, 2048, 2048),  # rows <= inputs: grad_weight by input; grad_w 16 MiB: written with streaming stores
        (40, 203, 70),  # by input, K not a multiple of 16 (plain stores)
        (300, 64, 50),  # rows > inputs: grad_weight by row
    ],
)
@pytest.mark.parametrize("kind", ["binary", "ternary", "counts"])
@pytest.mark.parametrize("where", ["none", "grad_y"])
def test_linear_grad_weight_paths(M, K, N, kind, where):
    """Each way the CPU kernel forms grad_weight (by input or by row, streamed or stored) against the dense op,
    with and without non-finite grad_y values, and bitwise across 1 and 2 threads."""
    s = spikes((M, K), 0.05, kind)
    w = dyadic((N, K), -16, 16, 16)
    gy = dyadic((M, N), -8, 8, 16)
    if where == "grad_y":
        gy = poke(gy, [INF, NAN, -INF])
    want = run(F.linear, [s, w], gy)[2]
    out = []
    for nt in (1, 2):
        torch.set_num_threads(nt)
        out.append(run(lambda s_, w_: ops.spike_linear(s_, w_, mode="sparse"), [s, w], gy)[2])
    assert_same(out[0], want, f"grad_w ({M}x{K}->{N}, {kind}, {where})")
    assert torch.equal(out[0].nan_to_num(), out[1].nan_to_num()) and torch.equal(out[0].isnan(), out[1].isnan())


def test_linear_overflowing_finite_weights():
    """Large finite weights whose sum overflows only send the kernel to its exact per-value check, which finds
    no non-finite weight: the result is the dense one (inf from the overflow, no NaN)."""
    s = spikes((5, 64), 0.5, "binary")
    w = torch.full((16, 64), 3e38)
    w[::2] *= -1
    assert_same(ops.spike_linear(s, w, mode="sparse"), F.linear(s, w))


# --------------------------------------------------------------------------------------------
# spike_conv2d
# --------------------------------------------------------------------------------------------
CONV_CASES = [  # (Cin, Cout, kernel, stride, padding, dilation, groups, H, W)
    (3, 8, 3, 1, 1, 1, 1, 9, 9),  # list kernels, padding 1
    (4, 6, (1, 3), (2, 1), (0, 2), 1, 2, 8, 7),  # scatter kernels (grouped)
    (6, 6, 3, 2, 2, 2, 3, 11, 10),
    (2, 4, (3, 2), 1, 0, (1, 3), 1, 7, 9),  # no padding
    (2, 3, 3, 1, 1, 1, 1, 120, 90),  # a map too large for the list kernels: scatter, groups 1
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def dense_conv(s, w, b, stride, padding, dilation, groups):
    """F.conv2d with the zero padding written out (every tap multiplies, as im2col does)."""
    ph, pw = _pair(padding)
    return F.conv2d(F.pad(s, (pw, pw, ph, ph)), w, b, stride, 0, dilation, groups)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("kind", ["binary", "ternary", "float"])
def test_conv2d_nonfinite_like_dense(device, case, where, kind):
    Cin, Cout, k, st, pd, dl, g, H, W = case
    kh, kw = _pair(k)
    s = spikes((2, Cin, H, W), 0.1, kind, device=device)
    w = dyadic((Cout, Cin // g, kh, kw), -16, 16, 16, device=device)
    b = dyadic((Cout,), -16, 16, 16, device=device)
    if where in ("weight", "all"):
        w = poke(w, [INF, NAN, -INF])
    if where in ("input", "all") and kind == "float":
        s = poke(s, [INF, NAN])
    if where == "bias":
        b = poke(b, [INF])
    gy = dyadic(dense_conv(s, w, b, st, pd, dl, g).shape, -8, 8, 16, device=device)
    if where in ("grad_y", "all"):
        gy = poke(gy, [INF, NAN, -INF])
    want = run(lambda s_, w_, b_: dense_conv(s_, w_, b_, st, pd, dl, g), [s, w, b], gy)
    got = run(lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, st, pd, dl, g, mode="sparse"), [s, w, b], gy)
    for a, r, name in zip(got, want, ("y", "grad_s", "grad_w", "grad_b")):
        assert_same(a, r, f"{name} (sparse, {where}, {kind})")
    # dense mode is torch's own op (padding= as given): its backward runs from the saved compact input
    want = run(lambda s_, w_, b_: F.conv2d(s_, w_, b_, st, pd, dl, g), [s, w, b], gy)
    got = run(lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, st, pd, dl, g, mode="dense"), [s, w, b], gy)
    for a, r, name in zip(got, want, ("y", "grad_s", "grad_w", "grad_b")):
        assert_same(a, r, f"{name} (dense, {where}, {kind})")


@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_nonfinite_threads_and_mask(groups):
    """List (groups 1) and scatter (groups 2) kernels on 1 and 2 threads: the same NaN positions; grad_mask
    multiplies the dense grad_input."""
    s = spikes((20, 4, 6, 6), 0.2, "counts")
    w = poke(dyadic((8, 4 // groups, 3, 3), -16, 16, 16), [INF, NAN])
    gy = poke(dyadic((20, 8, 6, 6), -8, 8, 16), [INF, -INF])
    mask = torch.rand(s.shape) < 0.3
    want = run(lambda s_, w_: dense_conv(s_, w_, None, 1, 1, 1, groups), [s, w], gy)
    want[1] = want[1] * mask
    out = []
    for nt in (1, 2):
        torch.set_num_threads(nt)
        got = run(
            lambda s_, w_: ops.spike_conv2d(s_, w_, None, 1, 1, 1, groups, mode="sparse", grad_mask=mask), [s, w], gy
        )
        for a, r in zip(got, want):
            assert_same(a, r)
        out.append(got)
    for a, c in zip(*out):
        assert torch.equal(a.isnan(), c.isnan()) and torch.equal(a.nan_to_num(), c.nan_to_num())


def test_conv2d_padding_counts_as_zeros():
    """An inf weight on a tap that reads the padding makes that border output NaN (0 * inf), even where every
    input is 1: the event kernel visits no padding, the fix-up writes what the zero-padded product gives."""
    s = torch.ones(1, 1, 4, 4)
    w = torch.ones(1, 1, 3, 3)
    w[0, 0, 0, 0] = INF
    y = ops.spike_conv2d(s, w, None, 1, 1, mode="sparse")
    want = torch.full((4, 4), INF)
    want[0, :] = NAN
    want[:, 0] = NAN
    assert_same(y[0, 0], want)


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------
ATTENTION = {"ssa": 3, "sdsa": 3, "qk_token_attention": 2, "qk_channel_attention": 2}


def _attention_inputs(n, device, dtype, spiking, poke_at):
    shape = (3, 2, 9, 70)  # D > 64: two mask words per row in the CPU SSA kernel
    ts = [spikes(shape, 0.3, "binary" if spiking else "float", dtype, device) for _ in range(n)]
    if poke_at is not None:
        ts[poke_at] = poke(ts[poke_at], [INF, NAN, -INF] if not spiking else [INF])
    return ts


@pytest.mark.parametrize("name", list(ATTENTION))
@pytest.mark.parametrize("poke_at", [None, 0, 1, 2])
@pytest.mark.parametrize("spiking", [True, False])
@pytest.mark.parametrize("bad_grad", [False, True])
def test_attention_nonfinite_like_composition(device, name, poke_at, spiking, bad_grad):
    """The attention ops (on CPU the event-driven SSA kernel; on CUDA the fused kernels) against their torch
    composition, forward and backward, with inf / NaN in an input or in the upstream gradient."""
    n = ATTENTION[name]
    if poke_at is not None and poke_at >= n:
        pytest.skip("the op has fewer inputs")
    if poke_at is None and not bad_grad:
        pytest.skip("nothing non-finite")
    ts = _attention_inputs(n, device, torch.float32, spiking, poke_at)
    gy = dyadic(ts[0].shape, -8, 8, 16, device=device)
    if bad_grad:
        gy = poke(gy, [INF, NAN])
    got = run(getattr(ops, name), ts, gy)
    want = run(attention_mod.composed(name), ts, gy)
    for i, (a, r) in enumerate(zip(got, want)):
        assert_same(a, r, f"{name} output {i}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_ssa_cpu_nonfinite_dtypes(dtype):
    """The CPU SSA kernel's dense fallback (a slice whose K^T V meets inf or NaN) in float64 and, through the
    float32 compute type, bfloat16."""
    q, k, v = _attention_inputs(3, "cpu", dtype, True, None)
    v = poke(v, [INF])
    k = poke(k, [NAN])
    gy = poke(dyadic(q.shape, -8, 8, 16, dtype), [INF])
    got = run(ops.ssa, [q, k, v], gy)
    want = run(attention_mod.composed("ssa"), [q, k, v], gy)
    for a, r in zip(got, want):
        assert_same(a.double(), r.double())


@pytest.mark.parametrize("reduce_tokens", [True, False])
def test_reduce_attention_cpu_kernel_nonfinite(reduce_tokens):
    """The CPU kernel of sdsa / qk attention (reachable as a custom op; the public ops compose on CPU)."""
    a, b, m = _attention_inputs(3, "cpu", torch.float32, False, 0)
    m = poke(m, [INF, NAN])
    lif, _ = attention_mod._options(2.0, 0.5, 0.0, True, True, "sigmoid", None, a)
    run = attention_mod.fused_kernel("sdsa" if reduce_tokens else "qk_token_attention")
    out = run(m, a, b) if reduce_tokens else run(a, m)
    pre = (a * b).sum(-2, keepdim=True) if reduce_tokens else a.sum(-1, keepdim=True)
    assert_same(out, m * ops.lif(pre, **lif)[0])


def test_nonfinite_workspace_is_checked():
    """The CUDA flag workspace (int64 [1]) is checked on every device, like the other workspaces."""
    from spikeforge._native import native

    s, w, y = torch.zeros(4, 10), torch.zeros(3, 10), torch.zeros(4, 3)
    native.spike_linear_forward(s, w, None, y, None, 1, 0, torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="nonfinite must be int64"):
        native.spike_linear_forward(s, w, None, y, None, 1, 0, torch.zeros(1))
    with pytest.raises(ValueError, match="nonfinite"):
        native.spike_linear_grad_input_masked(
            torch.zeros(4, 1, dtype=torch.int64),
            y,
            w,
            torch.zeros(4, 10),
            None,
            1,
            0,
            torch.zeros(2, dtype=torch.int64),
        )


# --------------------------------------------------------------------------------------------
# property test: drawn shapes, kinds, rates, geometry and injection sites
# --------------------------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_property_nonfinite_like_dense(data):
    """spike_linear and spike_conv2d (mode="sparse", CPU) against the dense computation over drawn sizes,
    kinds, firing rates, conv geometry and sets of inf / -inf / NaN in the weight, the input (float kind)
    and grad_y: the same NaN / inf positions and the same finite values."""
    d = data.draw
    torch.manual_seed(d(st.integers(0, 2**31 - 1), label="seed"))
    kind = d(st.sampled_from(["binary", "counts", "ternary", "float"]), label="kind")
    rate = d(st.sampled_from([0.0, 0.05, 0.3, 1.0]), label="rate")
    bad = st.lists(st.sampled_from([INF, -INF, NAN]), max_size=3)
    bad_w, bad_s, bad_g = d(bad, label="weight"), d(bad, label="input"), d(bad, label="grad_y")
    if d(st.booleans(), label="conv"):
        g = d(st.sampled_from([1, 2]), label="groups")
        cin, cout = g * d(st.integers(1, 3)), g * d(st.integers(1, 3))
        kh, kw = d(st.integers(1, 3)), d(st.integers(1, 3))
        st_, pd, dl = d(st.integers(1, 2)), d(st.integers(0, 2)), d(st.integers(1, 2))
        H = d(st.integers(dl * (kh - 1) + 1, 7))
        W = d(st.integers(dl * (kw - 1) + 1, 7))
        s = spikes((d(st.integers(1, 3)), cin, H, W), rate, kind)
        w = dyadic((cout, cin // g, kh, kw), -16, 16, 16)
        dense = lambda s_, w_: dense_conv(s_, w_, None, st_, pd, dl, g)  # noqa: E731
        fn = lambda s_, w_: ops.spike_conv2d(s_, w_, None, st_, pd, dl, g, mode="sparse")  # noqa: E731
    else:
        K, N = d(st.integers(1, 140)), d(st.integers(1, 40))
        s = spikes((d(st.integers(1, 9)), K), rate, kind)
        w = dyadic((N, K), -16, 16, 16)
        dense, fn = F.linear, (lambda s_, w_: ops.spike_linear(s_, w_, mode="sparse"))
    if bad_w:
        w = poke(w, bad_w[: w.numel()])
    if bad_s and kind == "float":
        s = poke(s, bad_s[: s.numel()])
    gy = dyadic(dense(s, w).shape, -8, 8, 16)
    if bad_g:
        gy = poke(gy, bad_g[: gy.numel()])
    for a, r, name in zip(run(fn, [s, w], gy), run(dense, [s, w], gy), ("y", "grad_s", "grad_w")):
        assert_same(a, r, name)
