"""Input kinds of spike_linear / spike_conv2d beyond binary spikes (docs/spike_propagation.md and docs/ops.md "More
neuron models"): ternary spikes {-1, 0, 1} (Guo et al. 2024) propagate event-driven (an active input adds or subtracts
its weights) and are saved for backward as 2 bits per element (the event bits and their sign bits); integer counts
0..D (I-LIF, SEW-ADD, D up to 255) take the counts path, event-driven with 1 byte per element saved. Forward and both
gradients are exact against the dense reference (dyadic values: every sum is exact in float32 whatever its order).
"""

from __future__ import annotations

import pytest
import torch

import spikeforge as sf
from spikeforge import ops, testing
from spikeforge import reference as R
from spikeforge.ops import spike as S
from spikeforge.testing import dyadic


def ternary(shape, rate, dtype=torch.float32, device="cpu"):
    on = (torch.rand(tuple(shape)) < rate).to(dtype)
    return (on * (torch.randint(0, 2, tuple(shape)) * 2 - 1).to(dtype)).to(device)


def counts(shape, rate, D, dtype=torch.float32, device="cpu"):
    on = (torch.rand(tuple(shape)) < rate).to(dtype)
    c = on * torch.randint(1, D + 1, tuple(shape)).to(dtype)
    c.view(-1)[0] = D  # the largest count occurs
    return c.to(device)


def grads(fn, inputs, gy):
    """[output, gradient of each input] in one list, for exact()."""
    y, g = testing.grads(fn, inputs, gy)
    return [y, *g]


def exact(got, want):
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=0, atol=0)


def saved_input_tensors(fn, *args, weight):
    """The tensors autograd keeps for the op, except the weight and the 2-element info."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = fn(*args)
    return y, [t for t in saved if t is not None and t.data_ptr() != weight.data_ptr() and t.numel() > 2]


# --------------------------------------------------------------------------------------------
# ternary spikes
# --------------------------------------------------------------------------------------------
def test_pack_signs_roundtrip(device):
    """The pack kernel classifies -1 / 0 / 1 as ternary and, when asked, writes the sign words; unpacking
    bits and signs gives the input back."""
    for K in (1, 63, 64, 65, 200):
        s = ternary((7, K), 0.4, device=device)
        bits, info = S._pack_impl(s, signs=True)
        assert bits.shape == (14, S._words(K))
        assert int(info[0]) == int((s != 0).sum())
        assert S._kind_of(int(info[1])) == (S.KIND_TERNARY if (s == -1).any() else S.KIND_BINARY)
        ev, sg = S._ternary_planes(bits)
        assert torch.equal(S._unpack_impl(ev, K, torch.float32, sg), s)
        assert torch.equal(S._unpack_impl(ev, K, torch.float32), s.abs())
        assert torch.equal(sg, R.pack_bits((s < 0).float()))


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.5])
@pytest.mark.parametrize("mode", ["sparse", "auto", "dense"])
@pytest.mark.parametrize("input_kind", ["auto", "ternary"])
def test_ternary_linear_matches_reference(device, rate, mode, input_kind):
    s = ternary((3, 4, 150), rate, device=device)
    w = dyadic((37, 150), -16, 16, 16, device=device)
    b = dyadic((37,), -16, 16, 16, device=device)
    gy = dyadic((3, 4, 37), -8, 8, 16, device=device)
    got = grads(lambda s_, w_, b_: ops.spike_linear(s_, w_, b_, mode=mode, input_kind=input_kind), [s, w, b], gy)
    exact(got, grads(R.spike_linear, [s, w, b], gy))


CONV_CASES = [  # (Cin, Cout, kernel, stride, padding, dilation, groups, H, W)
    (3, 8, 3, 1, 1, 1, 1, 9, 9),  # list kernels
    (4, 6, (1, 3), (2, 1), (0, 2), 1, 2, 8, 7),  # scatter kernels (grouped)
    (6, 6, 3, 2, 2, 2, 3, 11, 10),
    (2, 3, 3, 1, 1, 1, 1, 120, 90),  # a large map: scatter kernels with groups 1
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("mode", ["sparse", "dense"])
@pytest.mark.parametrize("input_kind", ["auto", "ternary"])
def test_ternary_conv2d_matches_reference(device, case, mode, input_kind):
    Cin, Cout, k, st, pd, dl, g, H, W = case
    kh, kw = (k, k) if isinstance(k, int) else k
    s = ternary((2, 2, Cin, H, W), 0.1, device=device)
    w = dyadic((Cout, Cin // g, kh, kw), -16, 16, 16, device=device)
    b = dyadic((Cout,), -16, 16, 16, device=device)
    gy = dyadic(R.spike_conv2d(s, w, b, st, pd, dl, g).shape, -8, 8, 16, device=device)
    got = grads(
        lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, st, pd, dl, g, mode=mode, input_kind=input_kind), [s, w, b], gy
    )
    exact(got, grads(lambda s_, w_, b_: R.spike_conv2d(s_, w_, b_, st, pd, dl, g), [s, w, b], gy))


@pytest.mark.parametrize("input_kind", ["auto", "ternary"])
def test_ternary_saved_at_two_bits(device, input_kind):
    """What autograd keeps of a ternary input: the event bits and the sign bits, 2 bits per element
    (1/16 of float32), for linear and conv2d; measured and promised kinds alike."""
    s = ternary((64, 512), 0.05, device=device)
    w = torch.randn(256, 512, device=device, requires_grad=True)
    y, big = saved_input_tensors(lambda: ops.spike_linear(s, w, mode="sparse", input_kind=input_kind), weight=w)
    nbytes = sum(t.numel() * t.element_size() for t in big)
    assert nbytes == 64 * 512 * 2 // 8 == S.saved_bytes(s) == S.saved_bytes(s, "ternary", "linear")
    assert all(t.dtype == torch.int64 for t in big)
    y.sum().backward()
    torch.testing.assert_close(w.grad, torch.ones(256, 64, device=device) @ s)
    sc = ternary((2, 4, 16, 8, 8), 0.05, device=device)
    wc = torch.randn(16, 16, 3, 3, device=device, requires_grad=True)
    _, big = saved_input_tensors(
        lambda: ops.spike_conv2d(sc, wc, None, 1, 1, mode="sparse", input_kind=input_kind), weight=wc
    )
    assert sum(t.numel() * t.element_size() for t in big) == S.saved_bytes(sc) == 8 * 1024 * 2 // 8


def test_ternary_auto_takes_the_event_path(spy_native):
    """Ternary input was "float" (the dense op) before; now auto dispatches it by firing rate like spikes, and
    the backward accumulates grad_weight from the packed bits and signs."""
    calls = spy_native(S)
    s = ternary((32, 512), 0.02)
    w = torch.randn(64, 512, requires_grad=True)
    ops.spike_linear(s, w).sum().backward()
    assert "spike_linear_forward" in calls and "spike_linear_grad_weight" in calls
    assert ops.spike_stats(s)[1] == "ternary"
    calls.clear()
    sc = ternary((4, 8, 16, 16), 0.02)
    wc = torch.randn(8, 8, 3, 3, requires_grad=True)
    ops.spike_conv2d(sc, wc, None, 1, 1).sum().backward()
    assert "spike_conv2d_forward" in calls and "spike_conv2d_grad_weight" in calls


def test_ternary_promise_is_checked():
    w = dyadic((3, 4), -8, 8, 8)  # exact sums in any order: the sparse and dense paths agree bit for bit
    with pytest.raises(ValueError, match="input_kind=ternary was promised but s holds counts > 1"):
        ops.spike_linear(torch.tensor([[0.0, 2.0, -1.0, 1.0]]).requires_grad_(), w, input_kind="ternary")
    with pytest.raises(ValueError, match="input_kind=binary was promised but s holds -1 values"):
        ops.spike_linear(torch.tensor([[0.0, -1.0, 1.0, 0.0]]).requires_grad_(), w, input_kind="binary")
    with pytest.raises(ValueError, match="input_kind=counts was promised but s holds -1 values"):
        ops.spike_linear(torch.tensor([[0.0, -1.0, 2.0, 0.0]]).requires_grad_(), w, input_kind="counts")
    with pytest.raises(ValueError, match="input_kind must be one of"):
        ops.spike_linear(torch.zeros(1, 4), w, input_kind="signed")
    # binary spikes are ternary spikes too: the promise holds, the signs are all zero
    s = (torch.rand(5, 4) < 0.5).float()
    exact(
        grads(lambda s_, w_: ops.spike_linear(s_, w_, input_kind="ternary", mode="sparse"), [s, w], torch.ones(5, 3)),
        grads(R.spike_linear, [s, w], torch.ones(5, 3)),
    )


@pytest.mark.parametrize("groups", [1, 2])
def test_ternary_deterministic_over_threads(groups):
    s = ternary((40, 4, 6, 6), 0.3)
    w = torch.randn(66, 4 // groups, 3, 3)
    gy = torch.randn(40, 66, 6, 6)
    out = []
    for nt in (1, 2, 3):
        torch.set_num_threads(nt)
        out.append(grads(lambda s_, w_: ops.spike_conv2d(s_, w_, None, 1, 1, groups=groups, mode="sparse"), [s, w], gy))
    for o in out[1:]:
        for a, c in zip(out[0], o):
            assert torch.equal(a, c)


def test_ternary_opcheck_and_compile(device):
    s = ternary((6, 70), 0.2, device=device)
    w, b = torch.randn(5, 70, device=device), torch.randn(5, device=device)
    args = S.op_inputs(ops.spike_linear, s, w.requires_grad_(), b, mode="sparse", input_kind="ternary")
    torch.library.opcheck(torch.ops.spikeforge.spike_fwd, args)
    sc = ternary((2, 4, 6, 6), 0.2, device=device)
    wc = torch.randn(6, 2, 3, 3, device=device)
    args = S.op_inputs(ops.spike_conv2d, sc, wc.requires_grad_(), None, 1, 1, 1, 2, mode="sparse", input_kind="ternary")
    torch.library.opcheck(torch.ops.spikeforge.spike_fwd, args)
    fc = sf.nn.SpikeLinear(70, 5, input_kind="ternary").to(device)
    torch._dynamo.reset()
    y = torch.compile(lambda x: fc(x).square().sum(), fullgraph=True)(s)
    y.backward()
    g = fc.weight.grad.clone()
    fc.weight.grad = None
    fc(s).square().sum().backward()
    torch.testing.assert_close(g, fc.weight.grad)


# --------------------------------------------------------------------------------------------
# integer counts (I-LIF / SEW-ADD): 0..D
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("D", [2, 8, 255])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
def test_counts_event_driven_one_byte_exact(device, D, dtype, spy_native):
    """Integer spikes 0..D (float or integer tensors) take the counts path: the event kernels in auto mode at
    a low firing rate, uint8 saved for backward (1 byte per element), and forward / grad_input / grad_weight
    / grad_bias exact against the dense reference."""
    calls = spy_native(S)
    s = counts((32, 256), 0.02, D, device=device)
    w = dyadic((40, 256), -16, 16, 16, device=device)
    b = dyadic((40,), -16, 16, 16, device=device)
    gy = dyadic((32, 40), -8, 8, 16, device=device)
    x = s.to(dtype)
    wr = w.clone().requires_grad_(True)
    y, big = saved_input_tensors(lambda: ops.spike_linear(x, wr, b), weight=wr)
    assert [(t.dtype, t.numel()) for t in big] == [(torch.uint8, s.numel())]
    assert S.saved_bytes(s) == s.numel() and ops.spike_stats(x)[1] == ("binary" if D == 1 else "counts")
    if device == "cpu":
        assert "spike_linear_forward" in calls  # CROSSOVER["cpu"]["linear"] = 0.3
    (gw,) = torch.autograd.grad(y, wr, gy)
    if device == "cpu":
        assert "spike_linear_grad_weight" in calls
    y0, _, gw0, _ = grads(R.spike_linear, [s, w, b], gy)
    exact([y, gw], [y0, gw0])
    # grad_input (float input) and grad_bias through the sparse path
    exact(
        grads(lambda s_, w_, b_: ops.spike_linear(s_, w_, b_, mode="sparse"), [s, w, b], gy),
        grads(R.spike_linear, [s, w, b], gy),
    )


@pytest.mark.parametrize("D", [4, 255])
def test_counts_conv2d_exact(device, D):
    s = counts((3, 4, 10, 10), 0.05, D, device=device)
    w = dyadic((6, 4, 3, 3), -16, 16, 16, device=device)
    b = dyadic((6,), -16, 16, 16, device=device)
    gy = dyadic((3, 6, 10, 10), -8, 8, 16, device=device)
    for mode in ("sparse", "auto", "dense"):
        got = grads(
            lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, 1, 1, mode=mode, input_kind="counts"), [s, w, b], gy
        )
        exact(got, grads(lambda s_, w_, b_: R.spike_conv2d(s_, w_, b_, 1, 1), [s, w, b], gy))
    _, big = saved_input_tensors(lambda: ops.spike_conv2d(s, w.requires_grad_(), None, 1, 1), weight=w)
    assert [(t.dtype, t.numel()) for t in big] == [(torch.uint8, s.numel())]


def test_counts_above_255_are_floats():
    s = torch.zeros(2, 64)
    s[0, 3] = 256.0
    assert ops.spike_stats(s)[1] == "float"
    s[0, 3] = 255.0
    assert ops.spike_stats(s)[1] == "counts"
