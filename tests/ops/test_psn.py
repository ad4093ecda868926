"""PSN family (docs/ops.md "Parallel spiking neurons"): spikeforge.ops.psn / masked_psn /
sliding_psn / psn_window_step, the custom ops torch.ops.spikeforge.psn_fwd / psn_bwd, and the modules
spikeforge.nn.PSN / MaskedPSN / SlidingPSN.

Ground truth is spikeforge.reference (H = W X + b as a GEMM, S = Heaviside(H), surrogate backward).
Inputs are dyadic (x multiples of 1/8, W and b multiples of 1/16, small magnitudes) so that every H is
exact in float32 whatever the summation order: spikes must then be bitwise equal, including the
H == 0 cases (Heaviside(0) = 1), and gradients differ only by the rounding of the surrogate and of the
sums over time / neurons.

Tolerances (gradients): float32 rtol 1e-5, float64 rtol 1e-10, each with an absolute slack of a small
fraction of the tensor's largest magnitude (1e-6 resp. 1e-13) for entries that are sums with
cancellation. The `device` fixture and the per-test seeding come from tests/conftest.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn as tnn

import spikeforge as sf
from spikeforge import ops
from spikeforge import reference as R
from spikeforge.reference.surrogate import SURROGATES
from spikeforge.testing import dyadic

SURR = sorted(SURROGATES)  # every surrogate name, the alias "piecewise_quadratic" included
PARTITION = 1 << 14  # kPSNPartition in csrc/core/psn.h


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def case(op, T, tail, k=None, dtype=torch.float32, device="cpu"):
    """(x, weight, bias) for op in {"psn", "masked", "sliding"}; all exact dyadic values."""
    x = dyadic((T,) + tuple(tail), -16, 16, 8, dtype, device)
    pdt = torch.float64 if dtype == torch.float64 else torch.float32
    if op == "sliding":
        return x, dyadic((k,), -16, 16, 16, pdt, device), dyadic((), -16, 8, 16, pdt, device)
    return x, dyadic((T, T), -16, 16, 16, pdt, device), dyadic((T,), -16, 8, 16, pdt, device)


def call(impl, op, x, w, b, k=None, lam=1.0, **kw):
    """impl in (spikeforge.ops, spikeforge.reference)."""
    if op == "psn":
        return impl.psn(x, w, b, **kw)
    if op == "masked":
        return impl.masked_psn(x, w, b, k, lam, **kw)
    if op == "sliding":
        return impl.sliding_psn(x, w, b, **kw)
    raise AssertionError(op)


def fwd_bwd(fn, tensors, grad_out=None, seed=1234):
    """Runs fn on fresh leaf copies of tensors, backpropagates grad_out (default: a seeded random
    upstream gradient of the output's shape, in float32 then cast) -> (spikes, [grads])."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    s = fn(*leaves)
    if grad_out is None:
        gen = torch.Generator().manual_seed(seed)
        grad_out = torch.randn(s.shape, generator=gen).to(dtype=s.dtype, device=s.device)
    grads = torch.autograd.grad(s, leaves, grad_out, allow_unused=True)
    return s.detach(), list(grads)


def assert_close_scaled(got, want, rtol, scale_frac, name=""):
    assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape, got.dtype, want.dtype)
    scale = want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=scale_frac * scale + 1e-30, msg=lambda m: f"{name}: {m}")


def h_and_scale(op, x, w, b, k=None, lam=1.0):
    """H and sum_i |W_eff[t, i]| |X[i]| + |b[t]| in float64 (on CPU), from spikeforge.reference's W_eff."""
    T = x.shape[0]
    x2 = x.detach().double().cpu().reshape(T, -1)
    w, b = w.detach().double().cpu(), b.detach().double().cpu()
    if op == "sliding":
        kk = w.shape[0]
        t = torch.arange(T)
        idx = t[None, :] - t[:, None] + kk - 1
        w_eff = torch.where((idx >= 0) & (idx < kk), w[idx.clamp(0, kk - 1)], torch.zeros((), dtype=w.dtype))
        b = b.expand(T)
    elif op == "masked":
        w_eff = w * (lam * R.band_mask(T, k, dtype=w.dtype) + (1 - lam))
    else:
        w_eff = w
    h = w_eff @ x2 + b[:, None]
    scale = w_eff.abs() @ x2.abs() + b.abs()[:, None]
    return h.reshape(x.shape), scale.reshape(x.shape)


def assert_spikes_equal(s, s_r, op, x, w, b, k=None, lam=1.0, exact=True):
    """Bitwise equal; when H is not exact in float32 (exact=False: a non-dyadic lam), spikes may differ
    only where |H| is within summation-order rounding (2e-5 of sum |W_eff| |X| + |b|)."""
    if exact:
        assert torch.equal(s, s_r), f"spikes differ at {(s != s_r).nonzero()[:5].tolist()}"
        return
    h, scale = h_and_scale(op, x, w, b, k, lam)
    differ = (s != s_r).cpu()
    assert not (differ & (h.abs() > 2e-5 * scale)).any(), f"spikes differ at {differ.nonzero()[:5].tolist()}"
    assert differ.sum() <= max(2, differ.numel() // 1000)


def check_against_reference(op, x, w, b, k=None, lam=1.0, rtol=1e-5, frac=1e-6, exact=True, **kw):
    s, g = fwd_bwd(lambda x_, w_, b_: call(ops, op, x_, w_, b_, k, lam, **kw), (x, w, b))
    s_r, g_r = fwd_bwd(lambda x_, w_, b_: call(R, op, x_, w_, b_, k, lam, **kw), (x, w, b))
    assert s.dtype == x.dtype and s.shape == x.shape
    assert_spikes_equal(s, s_r, op, x, w, b, k, lam, exact)
    red_w, red_b = reduction_scales(op, x, w, b, k, lam, s_r, kw.get("surrogate", "atan"), kw.get("alpha"))
    for name, a, c, red in zip(("grad_x", "grad_weight", "grad_bias"), g, g_r, (0.0, red_w, red_b)):
        # grad_weight / grad_bias are sums over every neuron: float32 summation-order rounding scales
        # with the sum of the |terms| (not with the result, which may cancel), so that sets their slack
        slack = max(frac * (c.abs().max().item() if c.numel() else 0.0), 2e-6 * red)
        torch.testing.assert_close(a, c, rtol=rtol, atol=slack + 1e-30, msg=lambda m, n=name: f"{n}: {m}")
    return s, g


def reduction_scales(op, x, w, b, k, lam, s, surrogate, alpha):
    """Largest sum of |terms| behind one entry of grad_weight and of grad_bias, in float64:
    |grad_H| = |grad_S| g'(H) (seeded upstream gradient of fwd_bwd), summed against |X| over neurons."""
    from spikeforge.reference.surrogate import surrogate_grad

    T = x.shape[0]
    h, _ = h_and_scale(op, x, w, b, k, lam)
    gen = torch.Generator().manual_seed(1234)  # fwd_bwd's default upstream gradient
    g_s = torch.randn(s.shape, generator=gen).to(dtype=s.dtype).double()
    a = SURROGATES[surrogate][1] if alpha is None else alpha
    g_h = (g_s * surrogate_grad(surrogate, h, a)).abs().reshape(T, -1)
    x2 = x.detach().double().cpu().abs().reshape(T, -1)
    rw = (g_h @ x2.T).sum().item() if op == "sliding" else (g_h @ x2.T).max().item() if T else 0.0
    rb = g_h.sum().item() if op == "sliding" else g_h.sum(1).max().item() if T else 0.0
    return rw, rb


def needs_fp64(device):
    if device != "cpu":
        pytest.skip("float64 is supported on CPU only")


# --------------------------------------------------------------------------------------------
# 1. ops vs reference (exact spikes, close gradients)
# --------------------------------------------------------------------------------------------
TAILS = [(300,), (2, 3, 4, 5), (2, 3, 7, 13)]  # [T, N] (N > one 256-neuron block), [T, B, C, H, W]
TS = [1, 4, 8, 33, 65]  # 65: beyond the CUDA fused kernels' T (GEMM path there)

PSN_CASES = [(T, tail) for T in TS for tail in TAILS[:2]] + [(8, TAILS[2])]


@pytest.mark.parametrize("i,T,tail", [(i,) + c for i, c in enumerate(PSN_CASES)])
def test_psn_matches_reference(device, i, T, tail):
    surrogate = SURR[i % len(SURR)]
    alpha = None if i % 2 else 1.5
    x, w, b = case("psn", T, tail, device=device)
    check_against_reference("psn", x, w, b, surrogate=surrogate, alpha=alpha)


# lam = 0.3 makes W_eff inexact (spikes then equal except within rounding of H = 0); 0.25 keeps it exact
MASKED_CASES = (
    [(T, k, lam) for T in (4, 8, 33) for k in (1, 2, T) for lam in (0.0, 0.3, 1.0)]
    + [(1, 1, lam) for lam in (0.0, 0.3, 1.0)]
    + [(65, 2, 1.0), (65, 65, 0.3), (65, 3, 0.0)]
    + [(8, 3, 0.25), (33, 5, 0.25)]
)


@pytest.mark.parametrize("i,T,k,lam", [(i,) + c for i, c in enumerate(MASKED_CASES)])
def test_masked_psn_matches_reference(device, i, T, k, lam):
    surrogate = SURR[(i + 3) % len(SURR)]
    if lam == 0.3 and surrogate == "rect":
        # inexact H: rect's derivative jumps at |H| = alpha/2, so a rounding-level change of H there
        # changes grad_H by the full jump; continuous surrogates are compared instead (rect is tested
        # on exact inputs everywhere else)
        surrogate = "triangle"
    x, w, b = case("masked", T, TAILS[i % 2], device=device)
    check_against_reference(
        "masked", x, w, b, k, lam, surrogate=surrogate, alpha=None if i % 3 else 3.0, exact=lam != 0.3
    )


SLIDING_CASES = [(T, k) for T in TS for k in (1, 3, T + 2)]  # sliding allows k > T


@pytest.mark.parametrize("i,T,k", [(i,) + c for i, c in enumerate(SLIDING_CASES)])
def test_sliding_psn_matches_reference(device, i, T, k):
    surrogate = SURR[(i + 5) % len(SURR)]
    x, w, b = case("sliding", T, TAILS[i % 2], k, device=device)
    check_against_reference("sliding", x, w, b, k, surrogate=surrogate, alpha=None if i % 2 else 0.75)


@pytest.mark.parametrize("surrogate", SURR)
@pytest.mark.parametrize("op", ["psn", "masked", "sliding"])
def test_every_surrogate(device, op, surrogate):
    T, k = 8, 3
    x, w, b = case(op, T, (2, 150), k, device=device)
    check_against_reference(op, x, w, b, k, 1.0 if op != "masked" else 0.5, surrogate=surrogate, alpha=1.25)


@pytest.mark.parametrize("op,k", [("psn", None), ("masked", 3), ("sliding", 2)])
def test_default_surrogate_is_atan_alpha_2(device, op, k):
    """docs/ops.md: the PSN family defaults to surrogate atan with alpha 2 (ops and modules)."""
    T = 6
    x, w, b = case(op, T, (2, 40), k, device=device)
    s, g = fwd_bwd(lambda *a: call(ops, op, *a, k, 0.5), (x, w, b))
    s_r, g_r = fwd_bwd(lambda *a: call(R, op, *a, k, 0.5, surrogate="atan", alpha=2.0), (x, w, b))
    assert torch.equal(s, s_r)
    for a, c in zip(g, g_r):
        assert_close_scaled(a, c, 1e-5, 1e-6)
    m = {
        "psn": lambda: sf.nn.PSN(T),
        "masked": lambda: sf.nn.MaskedPSN(k, T, 0.5),
        "sliding": lambda: sf.nn.SlidingPSN(k),
    }[op]().to(device)
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
    xl = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(m(xl), [xl], torch.ones_like(x))
    (gx_r,) = torch.autograd.grad(call(R, op, xl, w, b, k, 0.5, surrogate="atan", alpha=2.0), [xl], torch.ones_like(x))
    assert_close_scaled(gx, gx_r, 1e-5, 1e-6)


def test_masked_lam1_equals_psn_on_band_masked_weight(device):
    """lam = 1 (band path, band = k) and lam = 0 (full W) against plain ops.psn with W_eff by hand."""
    T, k = 9, 3
    x, w, b = case("masked", T, (40,), device=device)
    M = R.band_mask(T, k, device=device)
    for lam in (1.0, 0.0, 0.25):
        w_eff = w * M if lam == 1.0 else (lam * M + (1 - lam)) * w  # lam and 1 - lam exact here
        s_m, g_m = fwd_bwd(lambda x_, b_: ops.masked_psn(x_, w, b_, k, lam), (x, b))
        s_p, g_p = fwd_bwd(lambda x_, b_: ops.psn(x_, w_eff, b_), (x, b))
        assert torch.equal(s_m, s_p)
        for a, c in zip(g_m, g_p):
            assert_close_scaled(a, c, 1e-6, 1e-7)


def test_masked_weight_rounds_as_spikingjelly():
    """SpikingJelly's MaskedPSN relaxes W as (lambda_ M + (1 - lambda_)) W with lambda_ a float32 buffer, so
    1 - lam is rounded in float32; forming 1 - lam in double first put 40% of lam values an ulp off outside
    the band, and spikes flipped where H sat on 0 (here: a bias cancelling one relaxed weight exactly)."""
    T, k = 3, 1
    w = torch.tensor([[0.3, 0.7, 0.1], [0.9, 0.2, 0.4], [0.6, 0.8, 0.5]])
    M = R.band_mask(T, k)
    mask1 = torch.ones(T, T)
    off = 0
    for lam in (i / 199 for i in range(1, 199)):  # doubles, most of them not float32 values
        lam32 = torch.as_tensor(lam)  # SpikingJelly's lambda_ buffer
        w_sj = (lam32 * M + (1.0 - lam32) * mask1) * w
        assert torch.equal(R.masked_weight(w, k, lam), w_sj)
        off += not torch.equal(w * (lam * M + (1.0 - lam)), w_sj)
    assert off > 20  # the double-rounded form differs for these values
    lam = 0.0555
    lam32 = torch.as_tensor(lam)
    w_sj = (lam32 * M + (1.0 - lam32)) * w
    x = torch.zeros(T, 1)
    x[1, 0] = 1.0
    b = torch.zeros(T)
    b[0] = -w_sj[0, 1]  # H[0] = 0 exactly with SpikingJelly's weight: Heaviside(0) = 1
    assert ops.masked_psn(x, w, b, k, lam)[0, 0].item() == 1.0
    m = sf.nn.MaskedPSN(k, T, lambda_init=lam)
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
    assert m(x)[0, 0].item() == 1.0


def test_heaviside_zero_is_one(device):
    """Heaviside(0) = 1: zero input and zero bias fire on every step, for every op."""
    T = 5
    x = torch.zeros(T, 3, 17, device=device)
    w = torch.randn(T, T, device=device)
    b = torch.zeros(T, device=device)
    assert torch.equal(ops.psn(x, w, b), torch.ones_like(x))
    assert torch.equal(ops.masked_psn(x, w, b, 2, 0.5), torch.ones_like(x))
    assert torch.equal(
        ops.sliding_psn(x, torch.randn(3, device=device), torch.zeros((), device=device)), torch.ones_like(x)
    )
    # and a bias just below zero never fires
    assert torch.equal(ops.psn(x, w, b - 2**-20), torch.zeros_like(x))


def test_psn_window_step_matches_hand(device):
    """One streaming step: S = Heaviside(sum_i w_row[i] x_window[i] + b_t), window [k, *] -> [*]."""
    k = 4
    xw = dyadic((k, 3, 50), -16, 16, 8, device=device)
    w_row = dyadic((k,), -16, 16, 16, device=device)
    b_t = dyadic((1,), -16, 8, 16, device=device)
    h = (w_row.view(k, 1, 1) * xw).sum(0) + b_t
    s, (gx, gw, gb) = fwd_bwd(lambda a, c, d: ops.psn_window_step(a, c, d, surrogate="erf"), (xw, w_row, b_t))
    assert s.shape == (3, 50)
    assert torch.equal(s, (h >= 0).float())
    gs = torch.randn(s.shape, generator=torch.Generator().manual_seed(1234)).to(device)
    gh = gs * 2.0 / math.sqrt(math.pi) * torch.exp(-((2.0 * h) ** 2))
    assert_close_scaled(gx, w_row.view(k, 1, 1) * gh, 1e-5, 1e-6, "grad_x_window")
    assert_close_scaled(gw, (xw * gh).sum((1, 2)), 1e-5, 1e-6, "grad_w_row")
    assert_close_scaled(gb, gh.sum().reshape(1), 1e-5, 1e-6, "grad_b_t")


# --------------------------------------------------------------------------------------------
# 2. float64
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op,T,k,lam,surrogate",
    [
        ("psn", 4, None, 1.0, "atan"),
        ("psn", 33, None, 1.0, "sigmoid"),
        ("psn", 65, None, 1.0, "soft_sign"),
        ("masked", 8, 3, 1.0, "erf"),
        ("masked", 8, 3, 0.25, "super_spike"),
        ("masked", 33, 33, 0.0, "triangle"),
        ("sliding", 8, 3, 1.0, "piecewise_exp"),
        ("sliding", 4, 6, 1.0, "rect"),
        ("sliding", 33, 1, 1.0, "atan"),
    ],
)
def test_float64_grads_match_reference_tightly(op, T, k, lam, surrogate):
    """gradcheck is meaningless for spikes (true derivative 0); float64 gradients instead match the
    reference's autograd to 1e-10. alpha 0.3 is not a float32 number: the kernels must use it in double."""
    x, w, b = case(op, T, (2, 3, 11), k, dtype=torch.float64)
    s, g = check_against_reference(op, x, w, b, k, lam, rtol=1e-10, frac=1e-13, surrogate=surrogate, alpha=0.3)
    assert s.dtype == torch.float64 and all(t.dtype == torch.float64 for t in g)


def _atan(h, a=2.0):
    return a / (2 * (1 + (math.pi / 2 * a * h) ** 2))


def test_float64_grads_by_hand():
    """Tiny cases, the backward formulas of csrc/core/psn.h written out: gH = gS g'(H), grad_X = W^T gH,
    grad_W = gH X^T (then through the mask / Toeplitz map), grad_b = sum_n gH."""
    T, k, lam = 3, 2, 0.3
    x = torch.tensor([[0.5, -1.0, 0.25, 2.0], [1.5, 0.0, -0.75, 0.125], [-0.5, 1.0, 0.375, -2.0]], dtype=torch.float64)
    W = torch.tensor([[0.5, -0.25, 1.0], [0.125, 0.75, -0.5], [-1.0, 0.25, 0.5]], dtype=torch.float64)
    b = torch.tensor([-0.25, 0.125, -0.5], dtype=torch.float64)
    gs = torch.tensor([[1.0, -2.0, 0.5, 0.25], [0.75, 1.5, -1.0, 2.0], [-0.5, 1.0, 1.0, -1.5]], dtype=torch.float64)

    def expect(W_eff, bias_vec):
        H = W_eff @ x + bias_vec[:, None]
        gH = gs * _atan(H)
        return (H >= 0).double(), W_eff.t() @ gH, gH @ x.t(), gH.sum(1)

    # PSN
    s, (gx, gw, gb) = fwd_bwd(lambda x_, w_, b_: ops.psn(x_, w_, b_), (x, W, b), gs)
    S, GX, GW, GB = expect(W, b)
    assert torch.equal(s, S)
    for a, c in ((gx, GX), (gw, GW), (gb, GB)):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)
    # masked, lam = 0.3: W_eff = W * (lam M + 1 - lam), grad_W = (gH X^T) * (lam M + 1 - lam)
    M = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.float64)
    relax = lam * M + (1 - lam)
    s, (gx, gw, gb) = fwd_bwd(lambda x_, w_, b_: ops.masked_psn(x_, w_, b_, k, lam), (x, W, b), gs)
    S, GX, GW, GB = expect(W * relax, b)
    assert torch.equal(s, S)
    for a, c in ((gx, GX), (gw, GW * relax), (gb, GB)):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)
    # sliding, taps w = [0.5, -1]: H[t] = w0 X[t-1] + w1 X[t] + b; grad_w[j] = sum_t gH[t] . X[t-1+j]
    taps, bs = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor(0.25, dtype=torch.float64)
    Wt = torch.tensor([[-1.0, 0, 0], [0.5, -1.0, 0], [0, 0.5, -1.0]], dtype=torch.float64)
    s, (gx, gw, gb) = fwd_bwd(lambda x_, w_, b_: ops.sliding_psn(x_, w_, b_), (x, taps, bs), gs)
    S, GX, GWfull, GB = expect(Wt, bs.expand(T))
    assert torch.equal(s, S)
    gw_taps = torch.stack([GWfull[1, 0] + GWfull[2, 1], GWfull[0, 0] + GWfull[1, 1] + GWfull[2, 2]])
    for a, c in ((gx, GX), (gw, gw_taps), (gb, GB.sum())):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# 3. opcheck of the custom ops
# --------------------------------------------------------------------------------------------
FWD_OPCHECK = [  # (T_out, T_in, band, dtype, requires_grad of (x, w, b))
    (5, 5, 0, torch.float32, (True, True, True)),
    (5, 5, 2, torch.float32, (True, False, True)),
    (4, 4, 0, torch.float16, (True, True, True)),
    (4, 4, 4, torch.bfloat16, (False, True, False)),
    (6, 6, 0, torch.float64, (True, True, True)),
    (1, 3, 0, torch.float32, (True, True, True)),  # a streaming step: one output row over a window of 3
    (3, 3, 0, torch.float32, (False, False, False)),
]


@pytest.mark.parametrize("T_out,T_in,band,dtype,rg", FWD_OPCHECK)
def test_opcheck_psn_fwd(device, T_out, T_in, band, dtype, rg):
    if dtype == torch.float64:
        needs_fp64(device)
    pdt = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.randn(T_in, 2, 37, device=device).to(dtype).requires_grad_(rg[0])
    w = torch.randn(T_out, T_in, device=device, dtype=pdt).requires_grad_(rg[1])
    b = torch.randn(T_out, device=device, dtype=pdt).requires_grad_(rg[2])
    torch.library.opcheck(torch.ops.spikeforge.psn_fwd.default, (x, w, b, band, SURROGATES["atan"][0], 2.0))


BWD_OPCHECK = [  # (dtype, band, need_x, need_w, need_b)
    (torch.float32, 0, True, True, True),
    (torch.float32, 2, True, False, False),
    (torch.float32, 0, False, True, True),
    (torch.float32, 0, False, False, True),
    (torch.float16, 0, True, True, False),
    (torch.bfloat16, 3, True, True, True),
    (torch.float64, 0, True, True, True),
]


@pytest.mark.parametrize("dtype,band,nx,nw,nb", BWD_OPCHECK)
def test_opcheck_psn_bwd(device, dtype, band, nx, nw, nb):
    if dtype == torch.float64:
        needs_fp64(device)
    T = 5
    pdt = torch.float64 if dtype == torch.float64 else torch.float32
    gs = torch.randn(T, 3, 29, device=device).to(dtype)
    x = torch.randn(T, 3, 29, device=device).to(dtype)
    w = torch.randn(T, T, device=device, dtype=pdt)
    b = torch.randn(T, device=device, dtype=pdt)
    torch.library.opcheck(
        torch.ops.spikeforge.psn_bwd.default, (gs, x, w, b, band, SURROGATES["sigmoid"][0], 4.0, nx, nw, nb)
    )


def test_opcheck_non_contiguous_inputs(device):
    """The fake kernels must describe the real outputs for any input layout: psn_bwd's real grad_x is
    contiguous (it is allocated from x.contiguous()), so its fake must not copy x's strides."""
    T = 4
    x = torch.randn(29, T, device=device).t()  # [T, N], column-major
    gs = torch.randn(29, T, device=device).t()
    w = torch.randn(T, T, device=device)
    b = torch.randn(T, device=device)
    torch.library.opcheck(
        torch.ops.spikeforge.psn_fwd.default, (x.clone().requires_grad_(), w.clone().requires_grad_(), b, 0, 1, 2.0)
    )
    torch.library.opcheck(torch.ops.spikeforge.psn_bwd.default, (gs, x, w, b, 0, 1, 2.0, True, True, True))


# --------------------------------------------------------------------------------------------
# 4. torch.compile(fullgraph=True)
# --------------------------------------------------------------------------------------------
def _compiled_vs_eager(fn, tensors, backend="aot_eager", exact=True, **compile_kw):
    torch._dynamo.reset()
    seen_ops = []

    def recording(gm, example_inputs):
        seen_ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    compiled = torch.compile(fn, backend=recording if backend == "record" else backend, fullgraph=True, **compile_kw)
    s_c, g_c = fwd_bwd(compiled, tensors)
    s_e, g_e = fwd_bwd(fn, tensors)
    assert torch.equal(s_c, s_e)
    for a, c in zip(g_c, g_e):
        if exact:
            assert torch.equal(a, c), (a - c).abs().max()
        else:
            assert_close_scaled(a, c, 1e-5, 1e-6)
    return seen_ops


def test_compile_psn_aot_eager(device):
    x, w, b = case("psn", 6, (2, 50), device=device)

    def f(x, w, b):
        return ops.psn(x * 2, w, b, surrogate="sigmoid", alpha=3.0) + ops.psn(x, w, b)

    _compiled_vs_eager(f, (x, w, b))
    seen = _compiled_vs_eager(f, (x, w, b), backend="record")
    assert any("spikeforge.psn_fwd" in s for s in seen), seen  # the custom op, not a Python fallback


def test_compile_masked_psn_aot_eager(device):
    x, w, b = case("masked", 7, (3, 20), device=device)

    def f(x, w, b):
        return ops.masked_psn(x, w, b, 2, 0.3, surrogate="rect") * 3 + ops.masked_psn(x, w, b, 3, 1.0)

    _compiled_vs_eager(f, (x, w, b))


def test_compile_sliding_psn_aot_eager(device):
    x, w, b = case("sliding", 4, (3, 20), 6, device=device)  # k > T
    _compiled_vs_eager(lambda x, w, b: ops.sliding_psn(x, w, b, surrogate="super_spike"), (x, w, b))


def test_compile_dynamic_shapes(device):
    """dynamic=True: a second T and N reuse the symbolic graph; results still equal eager."""
    torch._dynamo.reset()

    def f(x, taps, tb, w, b, lam):
        return ops.sliding_psn(x, taps, tb) + 2 * ops.masked_psn(x, w, b, 2, lam)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=True)
    taps, tb = dyadic((3,), -16, 16, 16, device=device), dyadic((), -16, 8, 16, device=device)
    for T, N, lam in ((5, 11, 0.3), (7, 23, 0.3)):
        x, w, b = case("masked", T, (2, N), device=device)
        s_c, g_c = fwd_bwd(lambda *a: compiled(*a, lam), (x, taps, tb, w, b))
        s_e, g_e = fwd_bwd(lambda *a: f(*a, lam), (x, taps, tb, w, b))
        assert torch.equal(s_c, s_e)
        for a, c in zip(g_c, g_e):
            assert_close_scaled(a, c, 1e-6, 1e-7)


def test_compile_inductor(device):
    x, w, b = case("psn", 6, (2, 50), device=device)
    taps, tb = dyadic((3,), -16, 16, 16, device=device), dyadic((), -16, 8, 16, device=device)

    def f(x, w, b, taps, tb):
        return (
            ops.psn(x, w, b, surrogate="sigmoid") * 2
            + ops.masked_psn(x, w, b, 2, 0.3)
            + ops.sliding_psn(x, taps, tb, surrogate="erf")
        )

    _compiled_vs_eager(f, (x, w, b, taps, tb), backend="inductor", exact=False)


def test_compile_inductor_non_contiguous_input(device):
    """x permuted inside the compiled graph: inductor trusts psn_bwd's fake strides for grad_x."""
    xb = torch.randn(2, 6, 50, device=device)
    w, b = torch.randn(6, 6, device=device), torch.randn(6, device=device)
    _compiled_vs_eager(lambda xb, w, b: ops.psn(xb.permute(1, 0, 2), w, b), (xb, w, b), backend="inductor", exact=False)


# --------------------------------------------------------------------------------------------
# 5. float16 / bfloat16
# --------------------------------------------------------------------------------------------
HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("op,k", [("psn", None), ("masked", 3), ("sliding", 4)])
def test_half_exact_inputs_match_float32(device, dtype, op, k):
    """x exact in half precision, W/b float32 (the op computes H in float32 for half inputs): spikes
    equal the float32 run exactly; grad_W / grad_b (float32) equal it to rtol 1e-6 with a dyadic upstream
    gradient; grad_x is the float32 value rounded once: rtol 2^-10 (fp16) / 2^-7 (bf16)."""
    T = 8
    x, w, b = case(op, T, (3, 100), k, device=device)
    gs = dyadic((T, 3, 100), -8, 8, 4, device=device)
    fn = lambda x_, w_, b_: call(ops, op, x_, w_, b_, k, 0.5 if op == "masked" else 1.0)
    s32, (gx32, gw32, gb32) = fwd_bwd(fn, (x, w, b), gs)
    sh, (gxh, gwh, gbh) = fwd_bwd(fn, (x.to(dtype), w, b), gs.to(dtype))
    assert sh.dtype == dtype and gxh.dtype == dtype and gwh.dtype == torch.float32
    assert torch.equal(sh.float(), s32)
    rtol = 2**-10 if dtype == torch.float16 else 2**-7
    torch.testing.assert_close(gxh.float(), gx32, rtol=rtol, atol=1e-5)
    torch.testing.assert_close(gwh, gw32, rtol=1e-6, atol=1e-6 * gw32.abs().max().item())
    torch.testing.assert_close(gbh, gb32, rtol=1e-6, atol=1e-6 * gb32.abs().max().item())


@pytest.mark.parametrize("dtype", HALF)
def test_half_random_inputs_spikes_differ_only_near_threshold(device, dtype):
    """Random (inexact) x: converting x to half moves H by at most u * (|W| @ |x|), u = 2^-11 (fp16) or
    2^-8 (bf16); spikes may differ from float32 only where |H32| is within that bound."""
    T, N = 8, 4000
    x = torch.randn(T, N, device=device)
    w = torch.randn(T, T, device=device) / math.sqrt(T)
    b = torch.randn(T, device=device) * 0.1
    s32 = ops.psn(x, w, b)
    sh = ops.psn(x.to(dtype), w, b)
    assert sh.dtype == dtype
    h32 = w.double() @ x.double() + b.double()[:, None]
    u = 2**-11 if dtype == torch.float16 else 2**-8
    bound = (w.abs().double() @ x.abs().double()) * u * 1.01 + 1e-5
    differ = sh.float() != s32
    assert not (differ & (h32.abs() > bound)).any()
    assert differ.float().mean() < 0.01  # the near-threshold set is small


# --------------------------------------------------------------------------------------------
# 6. layouts, empty tensors, NaN, determinism, thread count
# --------------------------------------------------------------------------------------------
def _layout_case(op, k, device):
    T = 6
    x, w, b = case(op, T, (4, 3, 40), k, device=device)
    lam = 0.4 if op == "masked" else 1.0
    gs = torch.randn(T, 4, 3, 40, device=device)
    fn = lambda *a: call(ops, op, *a, k, lam)
    return fn, x, w, b, gs, fwd_bwd(fn, (x, w, b), gs)


@pytest.mark.parametrize("op,k", [("psn", None), ("masked", 2), ("sliding", 3)])
def test_non_contiguous_x_and_grad(device, op, k):
    """Strided / permuted / expanded x and a permuted upstream gradient: bitwise the results of the
    contiguous copies."""
    fn, x, w, b, gs, (want_s, want_g) = _layout_case(op, k, device)
    x_views = [
        x.permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0),  # same values, neuron dim outermost
        torch.stack([x, x], -1)[..., 1],  # strided last dim
        x.transpose(1, 2).contiguous().transpose(1, 2),
    ]
    gs_nc = gs.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    assert not gs_nc.is_contiguous()
    for xv in x_views:
        assert not xv.is_contiguous() and torch.equal(xv, x)
        got_s, got_g = fwd_bwd(fn, (xv, w, b), gs_nc)
        assert torch.equal(got_s, want_s)
        for a, c in zip(got_g, want_g):
            assert torch.equal(a, c)
    # an expanded (stride-0) input behaves like its materialised copy
    xe = x[:, :1].expand(x.shape)
    s1, g1 = fwd_bwd(fn, (xe, w, b), gs)
    s2, g2 = fwd_bwd(fn, (xe.contiguous(), w, b), gs)
    assert torch.equal(s1, s2) and all(torch.equal(a, c) for a, c in zip(g1, g2))


@pytest.mark.parametrize("op,k", [("psn", None), ("masked", 2), ("sliding", 3)])
def test_non_contiguous_weight_and_bias(device, op, k):
    """A transposed weight (e.g. W = P.t() of a stored parameter) and a strided bias."""
    fn, x, w, b, gs, (want_s, want_g) = _layout_case(op, k, device)
    w_nc = w.t().contiguous().t() if w.dim() == 2 else torch.stack([w, w], 1)[:, 0]
    b_nc = torch.stack([b, b], -1)[..., 0]
    assert torch.equal(w_nc, w) and (w.dim() == 1 or not w_nc.is_contiguous())
    got_s, got_g = fwd_bwd(fn, (x, w_nc, b_nc), gs)
    assert torch.equal(got_s, want_s)
    for a, c in zip(got_g, want_g):
        assert torch.equal(a, c)


@pytest.mark.parametrize("op,k", [("psn", None), ("masked", 2), ("sliding", 3)])
@pytest.mark.parametrize("tail", [(0,), (2, 0, 3)])
def test_empty_neurons(device, op, k, tail):
    """N = 0: spikes of shape [T, *], grad_x empty, grad_W and grad_b zero."""
    T = 4
    x, w, b = case(op, T, tail, k, device=device)
    s, (gx, gw, gb) = fwd_bwd(lambda *a: call(ops, op, *a, k, 0.5), (x, w, b))
    assert s.shape == x.shape and gx.shape == x.shape
    assert torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros_like(b))
    with torch.no_grad():
        assert call(ops, op, x, w, b, k, 1.0).shape == x.shape


def test_empty_time(device):
    """T = 0: psn (weight [0, 0], bias [0]) and sliding_psn (any k) return [0, *] with zero parameter
    gradients; masked_psn has no valid k (1 <= k <= T = 0) and says so."""
    x = torch.zeros(0, 5, device=device)
    s, (gx, gw, gb) = fwd_bwd(ops.psn, (x, torch.zeros(0, 0, device=device), torch.zeros(0, device=device)))
    assert s.shape == (0, 5) and gx.shape == (0, 5) and gw.shape == (0, 0) and gb.shape == (0,)
    taps = torch.tensor([0.5, 1.0], device=device)
    s, (gx, gw, gb) = fwd_bwd(ops.sliding_psn, (x, taps, torch.tensor(-1.0, device=device)))
    assert s.shape == (0, 5) and gx.shape == (0, 5)
    assert torch.equal(gw, torch.zeros_like(taps)) and gb.item() == 0.0
    with pytest.raises(ValueError, match="k must be <= T"):
        ops.masked_psn(x, torch.zeros(0, 0, device=device), torch.zeros(0, device=device), 1)


def test_many_dims(device):
    """x_seq [T, *] with more than 8 dimensions (the native views hold 8): must still work."""
    x, w, b = case("psn", 3, (1, 2, 1, 2, 1, 3, 1, 2), device=device)
    assert x.dim() == 9
    check_against_reference("psn", x, w, b)
    xs, ws, bs = case("sliding", 3, (1, 2, 1, 2, 1, 3, 1, 2), 2, device=device)
    check_against_reference("sliding", xs, ws, bs)


@pytest.mark.parametrize("op,k", [("psn", None), ("masked", 2), ("sliding", 3)])
def test_nan_inputs(device, op, k):
    """NaN in x: no crash; H = NaN does not fire (as the reference); NaN gradients stay in the NaN
    neuron's column of grad_x (grad_W / grad_b, sums over neurons, become NaN like the reference's)."""
    T, N = 5, 300
    x, w, b = case(op, T, (N,), k, device=device)
    x[2, 7] = float("nan")
    x[0, 100] = float("inf")
    lam = 0.5 if op == "masked" else 1.0
    s, g = fwd_bwd(lambda *a: call(ops, op, *a, k, lam), (x, w, b))
    s_r, g_r = fwd_bwd(lambda *a: call(R, op, *a, k, lam), (x, w, b))
    assert torch.equal(s, s_r)
    assert not torch.isnan(s).any()
    ok = torch.ones(N, dtype=torch.bool, device=device)
    ok[[7, 100]] = False
    assert torch.isfinite(g[0][:, ok]).all()
    torch.testing.assert_close(g[0][:, ok], g_r[0][:, ok], rtol=1e-5, atol=1e-6 * g_r[0][:, ok].abs().max().item())
    for a, c in zip(g, g_r):  # same NaN pattern as the reference
        assert torch.equal(torch.isnan(a), torch.isnan(c))


LARGE_N = 3 * PARTITION + 77  # several reduction partitions, the last one partial; not a multiple of 256


@pytest.mark.parametrize("op,k", [("psn", None), ("masked", 3), ("sliding", 5)])
def test_determinism_and_large_n_against_float64(device, op, k):
    """Two runs are bitwise identical; with N spanning several partitions, grad_W / grad_b still match a
    float64 reference (rtol 1e-5 after a sum over ~50k neurons)."""
    T = 8
    x, w, b = case(op, T, (LARGE_N,), k, device=device)
    x = x + torch.randn_like(x) * 0.01  # random enough that nothing cancels exactly
    lam = 0.5 if op == "masked" else 1.0
    gs = torch.randn(T, LARGE_N, device=device)
    fn = lambda *a: call(ops, op, *a, k, lam)
    s1, g1 = fwd_bwd(fn, (x, w, b), gs)
    s2, g2 = fwd_bwd(fn, (x, w, b), gs)
    assert torch.equal(s1, s2) and all(torch.equal(a, c) for a, c in zip(g1, g2))
    _, g64 = fwd_bwd(
        lambda *a: call(R, op, *a, k, lam), (x.double().cpu(), w.double().cpu(), b.double().cpu()), gs.double().cpu()
    )
    for name, a, c in zip(("grad_x", "grad_weight", "grad_bias"), g1, g64):
        assert_close_scaled(a.double().cpu(), c, 1e-5, 1e-6, name)


@pytest.mark.parametrize("op,k", [("psn", None), ("masked", 3), ("sliding", 5)])
def test_thread_count_invariance(op, k):
    """torch.set_num_threads(1) vs 2 (the conftest fixture restores the count): bitwise equal spikes,
    grad_x, grad_W and grad_b (fixed reduction partitions, not per-thread sums)."""
    T = 8
    x, w, b = case(op, T, (LARGE_N,), k)
    x = x + torch.randn_like(x) * 0.01
    gs = torch.randn(T, LARGE_N)
    lam = 0.5 if op == "masked" else 1.0
    fn = lambda *a: call(ops, op, *a, k, lam)
    torch.set_num_threads(1)
    s1, g1 = fwd_bwd(fn, (x, w, b), gs)
    torch.set_num_threads(2)
    s2, g2 = fwd_bwd(fn, (x, w, b), gs)
    assert torch.equal(s1, s2)
    for a, c in zip(g1, g2):
        assert torch.equal(a, c)


# --------------------------------------------------------------------------------------------
# 7. nn modules
# --------------------------------------------------------------------------------------------
def test_psn_module_init():
    T = 16
    torch.manual_seed(7)
    m = sf.nn.PSN(T)
    torch.manual_seed(7)
    w = torch.empty(T, T)
    tnn.init.kaiming_uniform_(w, a=math.sqrt(5))
    assert m.weight.shape == (T, T) and m.bias.shape == (T,)
    assert torch.equal(m.weight.detach(), w)
    bound = 1 / math.sqrt(T)  # gain sqrt(2 / (1 + 5)) * sqrt(3 / fan_in)
    assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
    assert torch.equal(m.bias.detach(), torch.full((T,), -1.0))
    assert m.surrogate == "atan" and m.alpha is None


def test_masked_psn_module_init_and_lambda():
    T, k = 12, 3
    m = sf.nn.MaskedPSN(k, T, lambda_init=0.25)
    assert m.weight.shape == (T, T) and m.bias.shape == (T,)
    assert m.weight.abs().max() <= 1 / math.sqrt(T) and m.weight.abs().max() > 0.9 / math.sqrt(T)
    assert torch.equal(m.bias.detach(), torch.full((T,), -1.0))
    assert m.lam == 0.25 and m.k == k and m.T == T
    assert sf.nn.MaskedPSN(k, T).lam == 0.0
    m.set_lambda(0.75)
    assert m.lam == 0.75
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lam"):
            m.set_lambda(bad)
    model = tnn.Sequential(sf.nn.MaskedPSN(2, 4), tnn.Sequential(sf.nn.MaskedPSN(3, 4), sf.nn.PSN(4)))
    sf.nn.set_masked_psn_lambda(model, 0.5)
    assert [mm.lam for mm in model.modules() if isinstance(mm, sf.nn.MaskedPSN)] == [0.5, 0.5]
    sf.nn.set_masked_psn_lambda(model, 3.0)  # clamped to [0, 1]
    assert [mm.lam for mm in model.modules() if isinstance(mm, sf.nn.MaskedPSN)] == [1.0, 1.0]
    sf.nn.set_masked_psn_lambda(model, -1)
    assert [mm.lam for mm in model.modules() if isinstance(mm, sf.nn.MaskedPSN)] == [0.0, 0.0]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_sliding_psn_module_init(k):
    m = sf.nn.SlidingPSN(k)
    assert m.weight.shape == (k,) and m.bias.shape == ()
    assert m.weight[k - 1].item() == 1.0
    for i in range(k - 1):
        assert m.weight[i].item() == m.weight[i + 1].item() / 2
    assert m.bias.item() == -1.0
    m2 = sf.nn.SlidingPSN(k, exp_init=False)
    assert m2.weight.shape == (k,) and m2.weight.abs().max() <= 1 / math.sqrt(k)
    assert m2.bias.item() == -1.0


def test_modules_forward_and_grads_reach_parameters(device):
    T, k = 6, 3
    x = dyadic((T, 2, 30), -16, 16, 8, device=device)
    mods = [
        (sf.nn.PSN(T), lambda m, x: R.psn(x, m.weight, m.bias)),
        (sf.nn.MaskedPSN(k, T, lambda_init=0.3), lambda m, x: R.masked_psn(x, m.weight, m.bias, k, 0.3)),
        (
            sf.nn.SlidingPSN(k, surrogate="sigmoid", alpha=3.0),
            lambda m, x: R.sliding_psn(x, m.weight, m.bias, surrogate="sigmoid", alpha=3.0),
        ),
    ]
    for m, ref in mods:
        m.to(device)
        with torch.no_grad():  # dyadic parameters: exact H
            m.weight.copy_(dyadic(m.weight.shape, -16, 16, 16, device=device))
        s = m(x)
        assert torch.equal(s, ref(m, x).detach())
        (s * torch.arange(s.numel(), device=device).view(s.shape).float().cos()).sum().backward()
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
        assert m.bias.grad is not None and m.bias.grad.shape == m.bias.shape


def test_masked_psn_streaming_equals_multi_step():
    """lam = 1, step_mode "s": bitwise the spikes of the multi-step op (kaiming weights and Gaussian
    inputs, i.e. not exact sums), gradients close; stepping past T raises; reset() starts over."""
    T, k = 8, 3
    multi = sf.nn.MaskedPSN(k, T, lambda_init=1.0)
    step = sf.nn.MaskedPSN(k, T, lambda_init=1.0, step_mode="s")
    step.load_state_dict(multi.state_dict())
    x = torch.randn(T, 4, 50)
    s_m, g_m = fwd_bwd(lambda x_: multi(x_), (x,))
    xs = x.clone().requires_grad_()
    s_s = torch.stack([step(xs[t]) for t in range(T)])
    assert torch.equal(s_s.detach(), s_m)
    gs = torch.randn(s_m.shape, generator=torch.Generator().manual_seed(1234))
    (s_s * gs).sum().backward()
    assert_close_scaled(xs.grad, g_m[0], 1e-5, 1e-6, "grad_x")
    multi.zero_grad()
    (multi(x) * gs).sum().backward()
    assert_close_scaled(step.weight.grad, multi.weight.grad, 1e-5, 1e-6, "grad_weight")
    assert_close_scaled(step.bias.grad, multi.bias.grad, 1e-5, 1e-6, "grad_bias")
    with pytest.raises(ValueError, match="T=8"):
        step(x[0])
    step.reset()
    with torch.no_grad():
        assert torch.equal(torch.stack([step(x[t]) for t in range(T)]), s_m)


def test_masked_psn_step_mode_needs_lam_1():
    m = sf.nn.MaskedPSN(2, 4, lambda_init=0.5, step_mode="s")
    with pytest.raises(ValueError, match="lam = 1"):
        m(torch.randn(3, 5))
    m.set_lambda(1.0)
    assert m(torch.randn(3, 5)).shape == (3, 5)


def test_sliding_psn_streaming_variable_lengths():
    """step_mode "s" over sequences of T = 3 (< k), 7, 20: bitwise the multi-step spikes, reset() between
    sequences; a new step shape without reset() is an error."""
    k = 4
    multi = sf.nn.SlidingPSN(k, exp_init=False)
    step = sf.nn.SlidingPSN(k, exp_init=False, step_mode="s")
    step.load_state_dict(multi.state_dict())
    with torch.no_grad():
        for T in (3, 7, 20):
            x = torch.randn(T, 2, 33) * 2
            want = multi(x)
            got = torch.stack([step(x[t]) for t in range(T)])
            assert torch.equal(got, want), T
            step.reset()
        step(torch.randn(2, 33))
        with pytest.raises(ValueError, match="reset"):
            step(torch.randn(3, 33))
    # gradients of a streamed sequence match the multi-step op's
    x = torch.randn(7, 2, 33)
    s_m, (gx_m,) = fwd_bwd(lambda x_: multi(x_), (x,))
    gw_m = torch.autograd.grad(
        (multi(x) * torch.randn(s_m.shape, generator=torch.Generator().manual_seed(1234))).sum(),
        [multi.weight, multi.bias],
    )
    step.reset()
    xs = x.clone().requires_grad_()
    s_s = torch.stack([step(xs[t]) for t in range(7)])
    gs = torch.randn(s_m.shape, generator=torch.Generator().manual_seed(1234))
    gx_s, gw_s, gb_s = torch.autograd.grad((s_s * gs).sum(), [xs, step.weight, step.bias])
    assert_close_scaled(gx_s, gx_m, 1e-5, 1e-6, "grad_x")
    assert_close_scaled(gw_s, gw_m[0], 1e-5, 1e-6, "grad_weight")
    assert_close_scaled(gb_s, gw_m[1], 1e-5, 1e-6, "grad_bias")


def test_module_constructor_errors():
    with pytest.raises(ValueError, match="T"):
        sf.nn.PSN(0)
    with pytest.raises(ValueError, match="T"):
        sf.nn.PSN(4.0)
    with pytest.raises(ValueError, match="k"):
        sf.nn.MaskedPSN(5, 4)
    with pytest.raises(ValueError, match="k"):
        sf.nn.MaskedPSN(0, 4)
    with pytest.raises(ValueError, match="lam"):
        sf.nn.MaskedPSN(2, 4, lambda_init=1.5)
    with pytest.raises(ValueError, match="k"):
        sf.nn.SlidingPSN(0)
    with pytest.raises(ValueError, match="k"):
        sf.nn.SlidingPSN(2.0)
    with pytest.raises(ValueError, match="step_mode"):
        sf.nn.SlidingPSN(2, step_mode="x")


# --------------------------------------------------------------------------------------------
# 8. argument errors name the argument
# --------------------------------------------------------------------------------------------
def _bad_calls(device):
    x = torch.randn(4, 3, device=device)
    w, b = torch.randn(4, 4, device=device), torch.randn(4, device=device)
    taps, tb = torch.randn(3, device=device), torch.tensor(0.0, device=device)
    return [
        ("psn weight shape", lambda: ops.psn(x, torch.randn(3, 3, device=device), b), ValueError, r"weight.*\(4, 4\)"),
        ("psn weight 1-D", lambda: ops.psn(x, torch.randn(4, device=device), b), ValueError, "weight"),
        ("psn bias shape", lambda: ops.psn(x, w, torch.randn(3, device=device)), ValueError, r"bias.*\(4,\)"),
        ("psn bias 2-D", lambda: ops.psn(x, w, torch.randn(4, 1, device=device)), ValueError, "bias"),
        ("psn weight int", lambda: ops.psn(x, w.long(), b), TypeError, "weight"),
        ("psn weight not tensor", lambda: ops.psn(x, [[1.0]], b), TypeError, "weight"),
        (
            "masked weight shape",
            lambda: ops.masked_psn(x, torch.randn(4, 3, device=device), b, 2),
            ValueError,
            "weight",
        ),
        ("masked bias shape", lambda: ops.masked_psn(x, w, torch.randn(5, device=device), 2), ValueError, "bias"),
        ("masked k > T", lambda: ops.masked_psn(x, w, b, 5), ValueError, r"k must be <= T"),
        ("masked k < 1", lambda: ops.masked_psn(x, w, b, 0), ValueError, "k must be >= 1"),
        ("masked k float", lambda: ops.masked_psn(x, w, b, 2.0), TypeError, "k must be an int"),
        ("masked k bool", lambda: ops.masked_psn(x, w, b, True), TypeError, "k must be an int"),
        ("masked lam > 1", lambda: ops.masked_psn(x, w, b, 2, 1.5), ValueError, "lam"),
        ("masked lam < 0", lambda: ops.masked_psn(x, w, b, 2, -0.1), ValueError, "lam"),
        ("masked lam nan", lambda: ops.masked_psn(x, w, b, 2, float("nan")), ValueError, "lam"),
        ("masked lam str", lambda: ops.masked_psn(x, w, b, 2, "1"), TypeError, "lam"),
        ("sliding weight 2-D", lambda: ops.sliding_psn(x, w, tb), ValueError, "weight"),
        ("sliding weight empty", lambda: ops.sliding_psn(x, taps[:0], tb), ValueError, "weight"),
        ("sliding bias 2 elems", lambda: ops.sliding_psn(x, taps, torch.zeros(2, device=device)), ValueError, "bias"),
        ("sliding bias not tensor", lambda: ops.sliding_psn(x, taps, 0.0), TypeError, "bias must be a torch.Tensor"),
        ("sliding weight not tensor", lambda: ops.sliding_psn(x, [1.0, 2.0], tb), TypeError, "weight must be a torch"),
        ("x int", lambda: ops.psn(x.long(), w, b), TypeError, "x_seq"),
        ("x bool", lambda: ops.sliding_psn(x > 0, taps, tb), TypeError, "x_seq"),
        ("x scalar", lambda: ops.psn(torch.tensor(1.0, device=device), w[:0, :0], b[:0]), ValueError, "x_seq"),
        ("x scalar masked", lambda: ops.masked_psn(torch.tensor(1.0, device=device), w, b, 1), ValueError, "x_seq"),
        ("x scalar sliding", lambda: ops.sliding_psn(torch.tensor(1.0, device=device), taps, tb), ValueError, "x_seq"),
        ("x not tensor", lambda: ops.psn([[1.0]], w, b), TypeError, "x_seq"),
        ("surrogate unknown", lambda: ops.psn(x, w, b, surrogate="relu"), ValueError, "surrogate"),
        ("surrogate unknown masked", lambda: ops.masked_psn(x, w, b, 2, surrogate="nope"), ValueError, "surrogate"),
        ("surrogate unknown sliding", lambda: ops.sliding_psn(x, taps, tb, surrogate="Atan"), ValueError, "surrogate"),
        ("surrogate not str", lambda: ops.psn(x, w, b, surrogate=1), TypeError, "surrogate"),
        ("alpha 0", lambda: ops.psn(x, w, b, alpha=0.0), ValueError, "alpha"),
        ("alpha < 0", lambda: ops.masked_psn(x, w, b, 2, alpha=-1.0), ValueError, "alpha"),
        ("alpha inf", lambda: ops.sliding_psn(x, taps, tb, alpha=float("inf")), ValueError, "alpha"),
        ("alpha str", lambda: ops.psn(x, w, b, alpha="2"), TypeError, "alpha"),
        ("window step w_row", lambda: ops.psn_window_step(x, torch.randn(3, device=device), tb), ValueError, "w_row"),
        ("window step w_row list", lambda: ops.psn_window_step(x, [1.0] * 4, tb), TypeError, "w_row must be a torch"),
        ("window step b_t float", lambda: ops.psn_window_step(x, w[0], -1.0), TypeError, "b_t must be a torch"),
        ("window step b_t 2", lambda: ops.psn_window_step(x, w[0], b[:2]), ValueError, "b_t must have one element"),
        ("window step w_row count", lambda: ops.psn_window_step(x, w[0, :2], tb), ValueError, "w_row.*x_window"),
        ("masked module lambda_init", lambda: sf.nn.MaskedPSN(2, 4, lambda_init="x"), TypeError, "lambda_init"),
        ("masked module lam", lambda: sf.nn.MaskedPSN(2, 4).set_lambda(1.5), ValueError, "lam must be in"),
        ("set lambda str", lambda: sf.nn.set_masked_psn_lambda(tnn.Sequential(), "a"), TypeError, "lam must be"),
    ]


@pytest.mark.parametrize("i", range(43))
def test_bad_arguments(device, i):
    name, fn, exc, pattern = _bad_calls(device)[i]
    with pytest.raises(exc, match=pattern):
        fn()


def test_bad_arguments_table_size():
    assert len(_bad_calls("cpu")) == 43  # keep the parametrisation above in sync


def test_weight_on_other_device_or_float64_on_cuda(device):
    if device != "cuda":
        pytest.skip("needs two devices")
    x = torch.randn(4, 3, device=device)
    with pytest.raises(ValueError, match="weight"):
        ops.psn(x, torch.randn(4, 4), torch.randn(4, device=device))
    with pytest.raises(TypeError, match="float64"):
        ops.psn(x.double(), torch.randn(4, 4, device=device), torch.randn(4, device=device))


# --------------------------------------------------------------------------------------------
# 9. eager fast path == custom-op path
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("surrogate", ["atan", "piecewise_exp"])
def test_fast_path_equals_custom_op(device, surrogate):
    T = 8
    sid, alpha = SURROGATES[surrogate][0], 1.5
    x, w, b = case("psn", T, (3, 90), device=device)
    s_f, g_f = fwd_bwd(lambda *a: ops.psn(*a, surrogate=surrogate, alpha=alpha), (x, w, b))
    s_c, g_c = fwd_bwd(lambda *a: torch.ops.spikeforge.psn_fwd(*a, 0, sid, alpha), (x, w, b))
    assert torch.equal(s_f, s_c)
    for a, c in zip(g_f, g_c):
        assert torch.equal(a, c)
    # the band path: masked at lam = 1 is psn_fwd on W * M with band = k
    k = 3
    M = R.band_mask(T, k, device=device)
    s_f, g_f = fwd_bwd(lambda x_, b_: ops.masked_psn(x_, w, b_, k, surrogate=surrogate, alpha=alpha), (x, b))
    s_c, g_c = fwd_bwd(lambda x_, b_: torch.ops.spikeforge.psn_fwd(x_, w * M, b_, k, sid, alpha), (x, b))
    assert torch.equal(s_f, s_c)
    for a, c in zip(g_f, g_c):
        assert torch.equal(a, c)
    # only x requires grad: no weight/bias gradient is produced on either path
    xl = x.clone().requires_grad_()
    s = torch.ops.spikeforge.psn_fwd(xl, w, b, 0, sid, alpha)
    (gx,) = torch.autograd.grad(s.sum(), [xl])
    assert torch.equal(gx, torch.autograd.grad(ops.psn(xl, w, b, surrogate=surrogate, alpha=alpha).sum(), [xl])[0])
