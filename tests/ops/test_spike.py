"""Spike propagation (docs/spike_propagation.md): spikeforge.ops.spike_linear /
spike_conv2d / pack_spikes / unpack_spikes, the custom ops torch.ops.spikeforge.spike_*, and the modules
spikeforge.nn.SpikeLinear / SpikeConv2d.

Ground truth is spikeforge.reference (the dense torch ops). Weights, biases and upstream gradients are
dyadic (multiples of 1/16 of small magnitude) and inputs are 0/1, small integer counts or multiples of
1/8: every sum is exact in float32 whatever its order, so the event-driven and dense paths must agree
with the reference to the last bit (checked with a tolerance of a few ulps of the largest magnitude,
which also covers cuBLAS / cuDNN on CUDA that may use TF32-free but reordered reductions).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import spikeforge as sf
from spikeforge import ops
from spikeforge import reference as R
from spikeforge.ops import spike as S
from spikeforge.testing import dyadic, grads

from neuron_helpers import capture_cuda_graph

MODES = ["sparse", "dense", "auto"]
RATES = [0.0, 0.05, 0.5, 1.0]


def spikes(shape, rate, kind="binary", dtype=torch.float32, device="cpu"):
    on = torch.rand(tuple(shape)) < rate
    if kind == "binary":
        v = on.to(dtype)
    elif kind == "counts":
        v = on.to(dtype) * torch.randint(1, 4, tuple(shape)).to(dtype)
    else:  # arbitrary floats, zeros kept at the same rate
        v = on.to(dtype) * dyadic(shape, -16, 16, 8, dtype)
    return v.to(device)


def close(a, b):
    scale = max(float(b.detach().abs().max()) if b.numel() else 0.0, 1.0)
    torch.testing.assert_close(a, b, rtol=0, atol=4e-7 * scale if a.dtype == torch.float32 else 1e-12 * scale)


# --------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K", [1, 63, 64, 65, 200])
def test_pack_roundtrip(device, K):
    s = spikes((7, 3, K), 0.3, device=device)
    p = ops.pack_spikes(s)
    assert p.bits.dtype == torch.int64 and p.bits.shape == (21, (K + 63) // 64)
    assert torch.equal(p.bits, R.pack_bits(s.reshape(-1, K)))
    assert torch.equal(ops.unpack_spikes(p), s)
    assert torch.equal(R.unpack_bits(p.bits, K), s.reshape(-1, K))
    if K >= 32:  # rows are padded to whole 64-bit words
        assert p.nbytes() * 16 <= s.numel() * 4


def test_pack_rejects_non_binary(device):
    with pytest.raises(ValueError, match="only 0 and 1"):
        ops.pack_spikes(torch.tensor([[0.0, 2.0]], device=device))
    with pytest.raises(TypeError, match="s must be a torch.Tensor"):
        ops.pack_spikes([0, 1])


@pytest.mark.parametrize("kind", ["binary", "counts", "float"])
def test_spike_stats(device, kind):
    s = spikes((5, 130), 0.2, kind, device=device)
    nnz, k = ops.spike_stats(s)
    assert nnz == int((s != 0).sum())
    assert k == (kind if s.ne(0).any() else "binary")
    assert ops.spike_stats(torch.tensor([[-1.0, 0.0, 1.0]], device=device))[1] == "ternary"
    for other in ([[-2.0]], [[0.5]], [[-1.0, 2.0]], [[256.0]], [[float("inf")]], [[float("nan")]]):
        assert ops.spike_stats(torch.tensor(other, device=device))[1] == "float", other


# --------------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["binary", "counts", "float"])
def test_linear_matches_reference(device, rate, mode, kind):
    s = spikes((3, 4, 150), rate, kind, device=device)
    w = dyadic((37, 150), -16, 16, 16, device=device)
    b = dyadic((37,), -16, 16, 16, device=device)
    gy = dyadic((3, 4, 37), -8, 8, 16, device=device)
    y, (gs, gw, gb) = grads(lambda s_, w_, b_: ops.spike_linear(s_, w_, b_, mode=mode), [s, w, b], gy)
    y0, (gs0, gw0, gb0) = grads(R.spike_linear, [s, w, b], gy)
    for a, r in ((y, y0), (gs, gs0), (gw, gw0), (gb, gb0)):
        close(a, r)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_linear_no_bias_integer_dtype_and_empty(device, mode):
    s = spikes((9, 70), 0.2, device=device)
    w = dyadic((5, 70), -16, 16, 16, device=device)
    close(ops.spike_linear(s.to(torch.uint8), w, mode=mode), F.linear(s, w))
    close(ops.spike_linear(s.bool(), w, mode=mode), F.linear(s, w))
    e = ops.spike_linear(s[:0], w, mode=mode)
    assert e.shape == (0, 5)
    b = dyadic((5,), -16, 16, 16, device=device)
    close(ops.spike_linear(s[:, :0], w[:, :0], b, mode=mode), b.expand(9, 5))


@pytest.mark.parametrize("mode", ["auto", "sparse", "dense"])
def test_conv_empty_batch(device, mode):
    """A conv over zero samples (batch 0, or T = 0 of a sequence) returns an empty output and zero
    weight gradients (a reshape of no rows used to fail)."""
    w = dyadic((4, 3, 3, 3), -16, 16, 16, device=device).requires_grad_(True)
    b = dyadic((4,), -16, 16, 16, device=device).requires_grad_(True)
    for shape in ((0, 3, 5, 5), (0, 2, 3, 5, 5)):
        s = torch.zeros(shape, device=device)
        y = ops.spike_conv2d(s, w, b, padding=1, mode=mode)
        assert y.shape == shape[:-3] + (4, 5, 5)
        gw, gb = torch.autograd.grad(y.sum(), [w, b])
        assert not gw.any() and not gb.any()


def test_linear_grad_mask(device):
    s = spikes((6, 90), 0.1, device=device)
    mask = torch.rand(6, 90, device=device) < 0.3
    w = dyadic((11, 90), -16, 16, 16, device=device)
    gy = dyadic((6, 11), -8, 8, 16, device=device)
    for mode in ("sparse", "dense"):
        _, (gs, gw) = grads(lambda s_, w_: ops.spike_linear(s_, w_, mode=mode, grad_mask=mask), [s, w], gy)
        _, (gs0, gw0) = grads(lambda s_, w_: R.spike_linear(s_, w_, grad_mask=mask), [s, w], gy)
        close(gs, gs0)
        close(gw, gw0)
        assert not gs[~mask].any()


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_linear_grad_mask_not_contiguous(device, mask_dtype):
    """A transposed mask of s's shape: the masked gradient, in every mode (its bits are packed from a contiguous
    copy)."""
    s = spikes((6, 90), 0.1, device=device)
    mask = (torch.rand(90, 6, device=device) < 0.3).t().to(mask_dtype)
    assert not mask.is_contiguous()
    w = dyadic((11, 90), -16, 16, 16, device=device)
    gy = dyadic((6, 11), -8, 8, 16, device=device)
    for mode in ("auto", "sparse", "dense"):
        _, (gs,) = grads(lambda s_: ops.spike_linear(s_, w, mode=mode, grad_mask=mask), [s], gy)
        close(gs, (gy @ w) * mask.to(gs.dtype))


@pytest.mark.parametrize("mask_rate", [0.0, 0.05, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_masked_grad_input_native(device, mask_rate, dtype):
    """The masked grad_input kernel computes exactly the masked entries of dY W (zero elsewhere), for any
    thread count (fixed partitions of the output features)."""
    if device == "cuda" and dtype == torch.float64:
        pytest.skip("CUDA kernels take float32")
    M, N, K = 37, 333, 101  # N > 8 tiles of 16 with a remainder, K not a multiple of 8
    s = spikes((M, K), 0.1, dtype=dtype, device=device)
    mask = torch.rand(M, K, device=device) < mask_rate
    w = dyadic((N, K), -16, 16, 16, dtype=dtype, device=device)
    gy = dyadic((M, N), -8, 8, 16, dtype=dtype, device=device)
    want = (gy @ w) * mask
    got = []
    for nt in (1, 2):
        torch.set_num_threads(nt)
        _, (gs, _) = grads(lambda s_, w_: ops.spike_linear(s_, w_, mode="sparse", grad_mask=mask), [s, w], gy)
        got.append(gs)
    close(got[0], want)
    assert torch.equal(got[0], got[1])
    assert not got[0][~mask].any()


def test_linear_input_kind_promise(device):
    w = torch.randn(3, 4, device=device)
    counts = torch.tensor([[0.0, 2.0, 1.0, 0.0]], device=device)
    assert ops.spike_linear(counts, w, input_kind="counts").shape == (1, 3)
    if device == "cpu":  # on CUDA a broken promise is a device-side assertion (not recoverable in-process)
        with pytest.raises(ValueError, match="input_kind=binary"):
            ops.spike_linear(counts.requires_grad_(), w, input_kind="binary")


def test_linear_gradcheck_float64():
    s = spikes((3, 70), 0.3, dtype=torch.float64).requires_grad_()
    w = torch.randn(5, 70, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for mode in ("sparse", "dense"):
        assert torch.autograd.gradcheck(
            lambda s_, w_, b_: ops.spike_linear(s_, w_, b_, mode=mode), (s, w, b), fast_mode=True
        )


def test_linear_saved_bytes_one_bit(device):
    """What autograd keeps of a binary input is the packed bits: <= 1/16 of the float32 input."""
    s = spikes((64, 512), 0.05, device=device)
    w = torch.randn(256, 512, device=device, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = ops.spike_linear(s, w, mode="sparse")
    # everything but the weight and the 2-element info (non-zeros, kind)
    big = [t for t in saved if t is not None and t.data_ptr() != w.data_ptr() and t.numel() > 2]
    nbytes = sum(t.numel() * t.element_size() for t in big)
    assert nbytes * 16 <= s.numel() * 4, [(t.dtype, t.shape) for t in big]
    assert nbytes == S.saved_bytes(s) == S.saved_bytes(s, "binary", "linear")
    assert S.saved_bytes(s.view(4, 16, 2, 16, 16), layer="conv2d") == 64 * 512 // 8
    y.sum().backward()
    close(w.grad, torch.ones(256, 64, device=device) @ s)


def test_conv2d_saved_bytes_one_bit(device):
    s = spikes((2, 4, 16, 8, 8), 0.05, device=device)  # [T, B, C, H, W]
    w = torch.randn(16, 16, 3, 3, device=device, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ops.spike_conv2d(s, w, None, 1, 1, mode="sparse")
    big = [t for t in saved if t is not None and t.data_ptr() != w.data_ptr() and t.numel() > 2]
    nbytes = sum(t.numel() * t.element_size() for t in big)
    assert nbytes == S.saved_bytes(s) == 8 * 1024 // 8 and nbytes * 32 == s.numel() * 4


def test_linear_deterministic_over_threads():
    s = spikes((40, 300), 0.2)
    w = torch.randn(70, 300)
    gy = torch.randn(40, 70)
    out = []
    for nt in (1, 2):
        torch.set_num_threads(nt)
        out.append(grads(lambda s_, w_: ops.spike_linear(s_, w_, mode="sparse"), [s, w], gy))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1][1], out[1][1][1])


# --------------------------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------------------------
CONV_CASES = [  # (Cin, Cout, kernel, stride, padding, dilation, groups, H, W)
    (3, 8, 3, 1, 1, 1, 1, 9, 9),
    (4, 6, (1, 3), (2, 1), (0, 2), 1, 2, 8, 7),
    (6, 6, 3, 2, 2, 2, 3, 11, 10),
    (2, 4, (3, 2), 1, 0, (1, 3), 1, 7, 9),
    (4, 8, 1, 1, 0, 1, 4, 5, 5),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("rate", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_conv2d_matches_reference(device, case, rate, mode):
    Cin, Cout, k, st, pd, dl, g, H, W = case
    kh, kw = (k, k) if isinstance(k, int) else k
    s = spikes((2, 3, Cin, H, W), rate, "counts" if rate == 0.1 else "binary", device=device)
    w = dyadic((Cout, Cin // g, kh, kw), -16, 16, 16, device=device)
    b = dyadic((Cout,), -16, 16, 16, device=device)
    y0 = R.spike_conv2d(s, w, b, st, pd, dl, g)
    gy = dyadic(y0.shape, -8, 8, 16, device=device)
    y, (gs, gw, gb) = grads(lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, st, pd, dl, g, mode=mode), [s, w, b], gy)
    y0, (gs0, gw0, gb0) = grads(lambda s_, w_, b_: R.spike_conv2d(s_, w_, b_, st, pd, dl, g), [s, w, b], gy)
    assert y.shape == y0.shape == (2, 3, Cout) + tuple(y0.shape[-2:])
    for a, r in ((y, y0), (gs, gs0), (gw, gw0), (gb, gb0)):
        close(a, r)


def test_conv2d_float_input_and_mask(device):
    s = spikes((5, 3, 8, 8), 0.3, "float", device=device)
    mask = torch.rand(s.shape, device=device) < 0.5
    w = dyadic((4, 3, 3, 3), -16, 16, 16, device=device)
    gy = dyadic((5, 4, 8, 8), -8, 8, 16, device=device)
    for mode in MODES:
        y, (gs, gw) = grads(lambda s_, w_: ops.spike_conv2d(s_, w_, None, 1, 1, mode=mode, grad_mask=mask), [s, w], gy)
        y0, (gs0, gw0) = grads(lambda s_, w_: R.spike_conv2d(s_, w_, None, 1, 1, grad_mask=mask), [s, w], gy)
        for a, r in ((y, y0), (gs, gs0), (gw, gw0)):
            close(a, r)


def test_conv2d_gradcheck_float64():
    s = spikes((2, 2, 4, 4), 0.4, dtype=torch.float64).requires_grad_()
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    for mode in ("sparse", "dense"):
        assert torch.autograd.gradcheck(
            lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, 2, 1, 1, 2, mode=mode), (s, w, b), fast_mode=True
        )


@pytest.mark.parametrize("groups", [1, 3])
def test_conv2d_deterministic_over_threads(groups):
    """The event-driven conv sums in a fixed order whatever the thread count: the list kernels (groups 1) and
    the scatter kernels (grouped convs) alike."""
    s = spikes((40, 3, 6, 6), 0.3)
    w = torch.randn(66, 3 // groups, 3, 3)
    gy = torch.randn(40, 66, 6, 6)
    out = []
    threads = torch.get_num_threads()
    try:
        for nt in (1, 2, 3):
            torch.set_num_threads(nt)
            out.append(
                grads(lambda s_, w_: ops.spike_conv2d(s_, w_, None, 1, 1, groups=groups, mode="sparse"), [s, w], gy)
            )
    finally:
        torch.set_num_threads(threads)
    for o in out[1:]:
        assert torch.equal(out[0][0], o[0]) and torch.equal(out[0][1][1], o[1][1])


# (B, Cin, Cout, groups, H, stride, dilation): tilings of the CPU kernels. Grouped convs take the scatter
# kernels: output-channel chunks that straddle groups (72 = 3 x 24 in chunks of 40), several samples per
# block, grad_weight chunks within a group (cout/g = 64); groups 1 the list kernels: a partial 16-channel
# tile (40), strides and dilation.
TILING_CASES = [(20, 6, 72, 3, 4, 1, 1), (3, 2, 128, 2, 5, 1, 1), (7, 5, 40, 1, 6, 2, 2), (9, 16, 24, 1, 3, 1, 1)]


@pytest.mark.parametrize("case", TILING_CASES)
def test_conv2d_kernel_tilings_match_reference(case):
    B, Cin, Cout, g, H, st, dl = case
    s = spikes((B, Cin, H, H), 0.3, "counts", dtype=torch.float64)
    w = torch.randn(Cout, Cin // g, 3, 3, dtype=torch.float64)
    b = torch.randn(Cout, dtype=torch.float64)
    y0 = R.spike_conv2d(s, w, b, st, dl, dl, g)
    gy = torch.randn(y0.shape, dtype=torch.float64)
    y, gr = grads(lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, st, dl, dl, g, mode="sparse"), [s, w, b], gy)
    y0, gr0 = grads(lambda s_, w_, b_: R.spike_conv2d(s_, w_, b_, st, dl, dl, g), [s, w, b], gy)
    for a, r in zip([y] + gr, [y0] + gr0):
        close(a, r)


# (B, Cin, Cout, groups, H or (H, W), kernel, stride, padding, dilation): tilings of the CUDA kernels. Forward: blocks
# of 32 positions x 64 channels with partial ones (7 x 7 = 49 positions, 40 channels per group), groups whose
# input channels straddle a 64-bit mask word (130 = 2 x 65), several mask words per pixel, depthwise.
# grad_weight: a channel's plane longer than one compaction round (70 x 70), more (tap, channel) pairs than a
# block holds (160 x 9), B > 16 (chunks of 1 and 2 samples), a 3 x 1 kernel with padding != dilation on a
# non-square map, grouped. Dyadic values keep every sum exact: the results equal the reference whatever the order.
CUDA_TILING_CASES = [
    (3, 130, 80, 2, 7, 3, 1, 1, 1),
    (2, 70, 40, 1, 9, 3, 2, 2, 2),
    (5, 96, 96, 3, 6, 3, 1, 1, 1),
    (1, 8, 33, 1, 5, 3, 1, 1, 1),
    (2, 8, 8, 1, 70, 3, 1, 1, 1),
    (2, 4, 160, 1, 5, 3, 1, 1, 1),
    (18, 6, 6, 6, 6, 3, 1, 1, 1),
    (3, 5, 7, 1, 9, (3, 1), (2, 1), (0, 2), (2, 1)),
    (2, 70, 40, 2, (5, 9), (3, 1), (2, 1), (1, 0), (1, 1)),
]


@pytest.mark.parametrize("case", CUDA_TILING_CASES)
@pytest.mark.parametrize("kind", ["binary", "counts"])
def test_conv2d_cuda_tilings_match_reference(device, case, kind):
    if device != "cuda":
        pytest.skip("tilings of the CUDA kernels (the CPU ones: test_conv2d_kernel_tilings_match_reference)")
    B, Cin, Cout, g, hw, k, st, pd, dl = case
    (H, W), (kh, kw) = ((hw, hw) if isinstance(hw, int) else hw), ((k, k) if isinstance(k, int) else k)
    s = spikes((B, Cin, H, W), 0.2, kind, device="cuda")
    w = dyadic((Cout, Cin // g, kh, kw), -16, 16, 16, device="cuda")
    b = dyadic((Cout,), -16, 16, 16, device="cuda")
    gy = dyadic(R.spike_conv2d(s, w, b, st, pd, dl, g).shape, -8, 8, 16, device="cuda")
    runs = [
        grads(lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, st, pd, dl, g, mode="sparse"), [s, w, b], gy)
        for _ in range(2)
    ]
    # the reference in float64 on the CPU: exact on these values (cuDNN may pick an inexact algorithm)
    y0, gr0 = grads(
        lambda s_, w_, b_: R.spike_conv2d(s_, w_, b_, st, pd, dl, g),
        [t.cpu().double() for t in (s, w, b)],
        gy.cpu().double(),
    )
    for y, gr in runs:
        for a, r in zip([y] + gr, [y0] + gr0):
            torch.testing.assert_close(a.cpu().double(), r, rtol=0, atol=0)


def test_conv2d_crossover_by_geometry(monkeypatch, spy_native):
    """auto's conv crossover: the small-map entries raise it for small output maps (forward+backward only),
    pointwise convs have their own entry, and a stride larger than the kernel always takes the dense op."""
    monkeypatch.setitem(
        S.CROSSOVER,
        "cpu",
        {
            "linear": 0.3,
            "conv2d": 0.1,
            "linear_fwd": 0.3,
            "conv2d_fwd": 0.1,
            "conv2d_1x1": 0.05,
            "conv2d_1x1_fwd": None,
        },
    )
    monkeypatch.setitem(S.CONV_CROSSOVER_SMALL_MAPS, "cpu", ((16, 0.3), (64, 0.2)))
    cpu = torch.device("cpu")

    def rate(H, k, stride, layer="conv2d"):
        cp = S._conv_params(
            torch.zeros(1, 2, H, H), torch.zeros(4, 2, k, k), (stride, stride), (k // 2,) * 2, (1, 1), 1
        )
        return S._crossover(cpu, layer, cp)

    assert rate(32, 3, 1) == 0.1 and rate(16, 3, 1) == 0.1  # 256 output pixels: the base crossover
    assert rate(8, 3, 1) == 0.2 and rate(16, 3, 2) == 0.2 and rate(4, 3, 1) == 0.3 and rate(2, 3, 1) == 0.3
    assert rate(4, 3, 1, "conv2d_fwd") == 0.1  # inference: no small-map entry
    assert rate(8, 1, 1) == 0.05 and rate(8, 1, 1, "conv2d_fwd") is None
    assert rate(8, 1, 2) is None  # stride 2 > kernel 1: every other input is never read
    assert S._crossover(cpu, "linear", None) == 0.3
    # end to end: 25% firing on a 4x4 map runs the event kernels with a gradient, not without
    calls = spy_native(S)
    s = torch.zeros(8, 4, 4, 4)
    s.view(-1)[::4] = 1
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    ops.spike_conv2d(s, w, None, 1, 1).sum().backward()
    assert "spike_conv2d_forward" in calls and "spike_conv2d_grad_weight" in calls
    calls.clear()
    with torch.no_grad():
        ops.spike_conv2d(s, w, None, 1, 1)
    assert "spike_conv2d_forward" not in calls


# --------------------------------------------------------------------------------------------
# custom ops: opcheck, torch.compile
# --------------------------------------------------------------------------------------------
def test_opcheck(device):
    s = spikes((6, 70), 0.2, device=device)
    w, b = torch.randn(5, 70, device=device), torch.randn(5, device=device)
    sc = spikes((2, 4, 6, 6), 0.2, device=device)
    wc, bc = torch.randn(6, 2, 3, 3, device=device), torch.randn(6, device=device)
    S._conv_params(sc, wc, (1, 1), (1, 1), (1, 1), 2)  # the conv arguments are valid
    torch.library.opcheck(torch.ops.spikeforge.spike_pack, (s,))
    bits, info = torch.ops.spikeforge.spike_pack(s)
    torch.library.opcheck(torch.ops.spikeforge.spike_unpack, (bits, 70, torch.float32))
    for mode, kind in (("sparse", "binary"), ("dense", "auto")):
        # both paths and both saved formats, without the full product (opcheck is slow). op_inputs gives the
        # op's own inputs for a public call, as a compiled call sees them (the op packs s itself)
        args = S.op_inputs(ops.spike_linear, s, w.requires_grad_(), b, mode=mode, input_kind=kind)
        torch.library.opcheck(torch.ops.spikeforge.spike_fwd, args)
        args = S.op_inputs(ops.spike_conv2d, sc, wc.requires_grad_(), bc, 1, 1, 1, 2, mode=mode, input_kind=kind)
        torch.library.opcheck(torch.ops.spikeforge.spike_fwd, args)
    gy = torch.randn(6, 5, device=device)
    fwd = S.op_inputs(ops.spike_linear, s, w.requires_grad_(), b, mode="sparse", input_kind="binary")
    o = S.SpikeOptions(*fwd[6:])
    torch.library.opcheck(
        torch.ops.spikeforge.spike_bwd,
        (gy, bits, None, info, w.detach(), None, o.conv, o.cp, o.mode, o.kind, True, True, True),
    )
    mask = torch.rand(6, 70, device=device) < 0.2
    torch.library.opcheck(
        torch.ops.spikeforge.spike_bwd,
        (gy, bits, None, info, w.detach(), mask, o.conv, o.cp, S.MODE_DENSE, o.kind, True, False, False),
    )


@pytest.mark.parametrize("input_kind", ["auto", "binary"])
def test_compile_fullgraph(device, input_kind):
    s = spikes((2, 3, 4, 8, 8), 0.2, device=device)
    conv = sf.nn.SpikeConv2d(4, 6, 3, padding=1, input_kind=input_kind).to(device)
    fc = sf.nn.SpikeLinear(6 * 8 * 8, 10, input_kind=input_kind).to(device)

    def f(x):
        y = conv(x)  # the threshold cuts the graph: conv's weights learn from the second term
        return fc((y > 0).float().flatten(2)).sum() + (y * y).mean()

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True)
    y = cf(s)
    y.backward()
    g = [p.grad.clone() for p in (conv.weight, conv.bias, fc.weight, fc.bias)]
    for p in (conv.weight, conv.bias, fc.weight, fc.bias):
        p.grad = None
    y0 = f(s)
    y0.backward()
    torch.testing.assert_close(y, y0)
    for a, p in zip(g, (conv.weight, conv.bias, fc.weight, fc.bias)):
        torch.testing.assert_close(a, p.grad)


# --------------------------------------------------------------------------------------------
# modules, dtypes, bad inputs
# --------------------------------------------------------------------------------------------
def test_modules_match_torch(device):
    fc = sf.nn.SpikeLinear(20, 7).to(device)
    ref = torch.nn.Linear(20, 7).to(device)
    ref.load_state_dict(fc.state_dict())
    s = spikes((4, 3, 20), 0.3, device=device)
    close(fc(s), ref(s))
    conv = sf.nn.SpikeConv2d(4, 8, 3, stride=2, padding=1, groups=2).to(device)
    rc = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2).to(device)
    rc.load_state_dict(conv.state_dict())
    s = spikes((4, 3, 4, 9, 9), 0.3, device=device)
    close(conv(s), rc(s.flatten(0, 1)).unflatten(0, (4, 3)))
    conv.replan()
    assert "groups=2" in repr(conv)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_dense_fallback(device, dtype):
    s = spikes((5, 40), 0.3, dtype=dtype, device=device)
    w = dyadic((6, 40), -16, 16, 16, dtype=dtype, device=device)
    torch.testing.assert_close(ops.spike_linear(s, w), F.linear(s, w))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_grouped_conv_of_one_channels_last_sample(dtype):
    """One channels_last sample, groups 2, 16-bit: reshaping it to [N, C, H, W] can give a batch stride of C,
    for which torch's CPU 16-bit grouped channels_last convolution returned a wrong weight gradient; the op
    passes the canonical stride and equals the exact gradient (dyadic data: no rounding)."""
    g = torch.Generator().manual_seed(1)
    s = ((torch.rand(1, 6, 5, 7, generator=g) < 0.5) * torch.randint(1, 4, (1, 6, 5, 7), generator=g)).to(dtype)
    s = s.contiguous(memory_format=torch.channels_last)
    w = (torch.randint(-8, 9, (4, 3, 5, 5), generator=g) / 4).to(dtype).contiguous(memory_format=torch.channels_last)
    gy = (torch.randint(-4, 5, (1, 4, 5, 3), generator=g) / 4).to(dtype)
    w64 = w.double().requires_grad_()
    exact = torch.autograd.grad(F.conv2d(s.double(), w64, None, (1, 4), (2, 4), 1, 2), w64, gy.double())[0]
    for mode in ("auto", "sparse", "dense"):
        wl = w.clone().requires_grad_()
        (gw,) = torch.autograd.grad(ops.spike_conv2d(s, wl, None, (1, 4), (2, 4), 1, 2, mode=mode), wl, gy)
        assert torch.equal(gw.double(), exact), mode


@pytest.mark.parametrize("shape", [(2, 3, 0), (0,), (0, 5)])
def test_pack_empty(shape):
    for dtype in (torch.float32, torch.bool):
        p = ops.pack_spikes(torch.zeros(shape, dtype=dtype))
        u = ops.unpack_spikes(p)
        assert u.shape == shape and u.dtype == dtype


def test_conv2d_zero_channels_are_refused():
    with pytest.raises(ValueError, match="s has 0 channels"):
        ops.spike_conv2d(torch.zeros(2, 0, 5, 5), torch.zeros(4, 0, 3, 3))
    with pytest.raises(ValueError, match="weight has 0 output channels"):
        ops.spike_conv2d(torch.zeros(2, 3, 5, 5), torch.zeros(0, 3, 3, 3))


def test_bad_inputs():
    s = spikes((4, 10), 0.3)
    w = torch.randn(3, 10)
    with pytest.raises(ValueError, match="does not match weight's in_features"):
        ops.spike_linear(s, torch.randn(3, 11))
    with pytest.raises(TypeError, match="weight must have the dtype of s"):
        ops.spike_linear(s, w.double())
    with pytest.raises(ValueError, match="weight is on"):
        ops.spike_linear(s, w.to("meta"))
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.spike_linear(s, w, torch.randn(4))
    with pytest.raises(TypeError, match="bias must have the dtype"):
        ops.spike_linear(s, w, torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="mode must be one of"):
        ops.spike_linear(s, w, mode="fast")
    with pytest.raises(TypeError, match="input_kind must be a str"):
        ops.spike_linear(s, w, input_kind=1)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        ops.spike_linear(s, w[0])
    with pytest.raises(ValueError, match="grad_mask must have the shape"):
        ops.spike_linear(s, w, grad_mask=torch.ones(4, 9, dtype=torch.bool))
    with pytest.raises(TypeError, match="s must be a torch.Tensor"):
        ops.spike_linear(s.tolist(), w)
    sc = spikes((2, 4, 6, 6), 0.3)
    wc = torch.randn(6, 2, 3, 3)
    with pytest.raises(ValueError, match="groups must be >= 1 and divide"):
        ops.spike_conv2d(sc, wc, groups=3)
    with pytest.raises(ValueError, match="s: empty feature maps"):
        ops.spike_conv2d(sc[..., :0, :], wc, padding=1, groups=2, mode="sparse")
    with pytest.raises(ValueError, match="does not match s's 4 channels"):
        ops.spike_conv2d(sc, wc, groups=1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.spike_conv2d(sc, wc, stride=0, groups=2)
    with pytest.raises(TypeError, match="padding must be an int or a pair"):
        ops.spike_conv2d(sc, wc, padding="same", groups=2)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        ops.spike_conv2d(sc, wc, dilation=4, groups=2)
    with pytest.raises(ValueError, match=r"s must be \[N, C, H, W\] or \[T, B, C, H, W\], got shape"):
        ops.spike_conv2d(sc[0], wc, groups=2)
    with pytest.raises(ValueError, match="in_features must be an int"):
        sf.nn.SpikeLinear(0, 3)


def test_native_checks_raise_not_crash():
    """The native layer validates again: wrong shapes reach it only by a direct call, and raise."""
    from spikeforge._native import native

    s = torch.zeros(4, 10)
    with pytest.raises((ValueError, RuntimeError), match="dimension"):
        native.spike_linear_forward(s, torch.zeros(3, 11), None, torch.zeros(4, 3), None, 1, 0)
    with pytest.raises((ValueError, RuntimeError), match="bits"):
        native.spike_pack(s, torch.zeros(4, 2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), 1, 0)
    with pytest.raises((ValueError, RuntimeError), match="grad_mask bits"):
        native.spike_linear_grad_input_masked(
            torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, 3), torch.zeros(3, 10), torch.zeros(4, 10), None, 1, 0
        )
    with pytest.raises((ValueError, RuntimeError), match="output size"):
        native.spike_conv2d_forward(
            torch.zeros(1, 1, 4, 4),
            torch.zeros(1, 1, 3, 3),
            None,
            torch.zeros(1, 1, 4, 4),
            None,
            None,
            [1, 1, 4, 4, 1, 3, 3, 4, 4, 1, 1, 0, 0, 1, 1, 1],
            1,
            0,
        )
    # the CUDA workspaces are checked on every device (shapes in csrc/core/spike.h)
    cp = [2, 4, 5, 5, 6, 3, 3, 3, 3, 1, 1, 0, 0, 1, 1, 2]  # groups 2: w [6, 2, 3, 3]
    s4, w4, y4 = torch.zeros(2, 4, 5, 5), torch.zeros(6, 2, 3, 3), torch.zeros(2, 6, 3, 3)
    native.spike_conv2d_forward(
        s4, w4, None, y4, torch.zeros(18, 6), torch.zeros(2, 5, 5, 1, dtype=torch.int64), cp, 1, 0
    )
    with pytest.raises((ValueError, RuntimeError), match="wt"):
        native.spike_conv2d_forward(s4, w4, None, y4, torch.zeros(36, 6), None, cp, 1, 0)
    with pytest.raises((ValueError, RuntimeError), match="masks"):
        native.spike_conv2d_forward(s4, w4, None, y4, None, torch.zeros(2, 5, 5, 1), cp, 1, 0)
    gw4 = torch.zeros(6, 2, 3, 3)
    assert [native.spike_conv2d_wgrad_chunks(b) for b in (0, 2, 16, 1000)] == [0, 2, 16, 16]
    native.spike_conv2d_grad_weight(None, s4, y4, gw4, torch.zeros(2, 3, 3, 6), torch.zeros(2, 36, 3), cp, 1, 0)
    with pytest.raises((ValueError, RuntimeError), match="gyt"):
        native.spike_conv2d_grad_weight(None, s4, y4, gw4, torch.zeros(2, 6, 3, 3), None, cp, 1, 0)
    with pytest.raises((ValueError, RuntimeError), match="ws"):
        native.spike_conv2d_grad_weight(None, s4, y4, gw4, None, torch.zeros(36, 3), cp, 1, 0)


def test_auto_dispatch_follows_crossover(monkeypatch, spy_native):
    """mode="auto" runs the event-driven kernel at or below CROSSOVER and the dense op above it."""
    calls = spy_native(S)
    monkeypatch.setitem(S.CROSSOVER, "cpu", {"linear": 0.1, "conv2d": 0.1, "linear_fwd": 0.1, "conv2d_fwd": None})
    w = torch.randn(8, 100)
    for rate, sparse in ((0.05, True), (0.5, False)):
        s = torch.zeros(10, 100)
        s.view(-1)[: int(rate * 1000)] = 1
        calls.clear()
        ops.spike_linear(s, w)
        assert ("spike_linear_forward" in calls) == sparse
        calls.clear()
        ops.spike_linear(s, w.requires_grad_()).sum().backward()
        assert ("spike_linear_grad_weight" in calls) == sparse
        w = w.detach()
        calls.clear()
        ops.spike_conv2d(s.view(10, 1, 10, 10), torch.randn(2, 1, 3, 3))  # conv2d_fwd None: never sparse
        assert "spike_conv2d_forward" not in calls
    calls.clear()
    ops.spike_linear(torch.eye(10, 100) * 0.5, w)  # non-spike floats at a 1% rate: still dense
    assert "spike_linear_forward" not in calls
    for mask_rate, native_masked in ((0.1, True), (0.5, False)):  # MASKED_CROSSOVER["cpu"] = 0.2
        mask = torch.zeros(10, 100, dtype=torch.bool)
        mask.view(-1)[: int(mask_rate * 1000)] = True
        calls.clear()
        sg = torch.eye(10, 100).requires_grad_()
        ops.spike_linear(sg, w, grad_mask=mask).sum().backward()
        assert ("spike_linear_grad_input_masked" in calls) == native_masked
        close(sg.grad, w.sum(0).expand(10, 100) * mask)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_cuda_graph_replay(device, mode):
    """With mode and input_kind fixed the ops make no host synchronisation: forward and backward
    capture in a CUDA graph and replay on new spikes."""
    if device != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    s = spikes((24, 200), 0.05, device=device)
    w = torch.randn(40, 200, device=device, requires_grad=True)
    sc = spikes((3, 4, 9, 9), 0.05, device=device)
    wc = torch.randn(6, 4, 3, 3, device=device, requires_grad=True)
    gy, gyc = torch.randn(24, 40, device=device), torch.randn(3, 6, 9, 9, device=device)

    def step():
        y = ops.spike_linear(s, w, mode=mode, input_kind="binary")
        yc = ops.spike_conv2d(sc, wc, None, 1, 1, mode=mode, input_kind="binary")
        return (y, yc) + torch.autograd.grad((y * gy).sum() + (yc * gyc).sum(), [w, wc])

    graph, static_out = capture_cuda_graph(step)
    for rate in (0.02, 0.3):
        s.copy_(spikes(s.shape, rate, device=device))
        sc.copy_(spikes(sc.shape, rate, device=device))
        graph.replay()
        torch.cuda.synchronize()
        for a, b in zip(static_out, step()):
            torch.testing.assert_close(a, b)


def test_conv2d_large_map_takes_scatter_kernels():
    """groups=1 convs on maps whose tap table would exceed kConvListMaxTaps (H * W * taps > 2^16) take the
    scatter kernels: same answers."""
    s = spikes((2, 2, 90, 90), 0.05, "counts", dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    gy = torch.randn(2, 3, 90, 90, dtype=torch.float64)
    y, gr = grads(lambda s_, w_: ops.spike_conv2d(s_, w_, None, 1, 1, mode="sparse"), [s, w], gy)
    y0, gr0 = grads(lambda s_, w_: R.spike_conv2d(s_, w_, None, 1, 1), [s, w], gy)
    for a, r in zip([y] + gr, [y0] + gr0):
        close(a, r)


@pytest.mark.parametrize("mode", ["auto", "sparse", "dense"])
@pytest.mark.parametrize("rate", [0.02, 0.5])
def test_autocast_gives_the_autocast_dtype_on_every_path(rate, mode):
    """Under torch.autocast the spike layers run as F.linear / F.conv2d do there, in the autocast dtype, in every
    mode: one dtype whatever the firing rate (the event path returned float32, the dense bfloat16), torch's own
    bfloat16 numbers, float32 gradients for float32 parameters, and the 16-bit spikes of an autocast pipeline
    accepted by the modules."""
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(4, 8, 64, generator=g) < rate).float()
    c = (torch.rand(2, 4, 3, 8, 8, generator=g) < rate).float()
    w, b = dyadic((16, 64)).requires_grad_(), dyadic((16,)).requires_grad_()
    wc, bc = dyadic((8, 3, 3, 3)).requires_grad_(), dyadic((8,)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, want = ops.spike_linear(s, w, b, mode=mode), F.linear(s, w, b)
        yc = ops.spike_conv2d(c, wc, bc, padding=1, mode=mode)
        wantc = F.conv2d(c.flatten(0, 1), wc, bc, padding=1).unflatten(0, (2, 4))
    assert y.dtype == yc.dtype == torch.bfloat16
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    torch.testing.assert_close(yc, wantc, rtol=1e-2, atol=1e-2)  # (oneDNN's conv sums in other orders)
    (y.float().sum() + yc.float().sum()).backward()
    assert w.grad.dtype == b.grad.dtype == wc.grad.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net = torch.nn.Sequential(torch.nn.Linear(32, 64), sf.nn.LIF(), sf.nn.SpikeLinear(64, 10, mode=mode))
        assert net(torch.randn(4, 8, 32, generator=g)).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="SpikeLinear: s is torch.bfloat16"):  # outside autocast: still refused
        net[2](s.bfloat16())
