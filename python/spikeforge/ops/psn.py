"""Parallel spiking neurons (PSN, masked PSN, sliding PSN): custom ops over csrc/core/psn.h.

All three reduce to S = Heaviside(W_eff X + b_eff) with a T x T effective weight built here with torch
ops (masking, Toeplitz taps), so autograd carries grad_W_eff back to the module's parameters. The
native kernel reads X once, mixes over time on chip, fires and writes S; the backward recomputes H
(nothing but X is saved: one [T, N] tensor in the activation dtype). On CUDA, T beyond the fused
kernels' register budget (psn_max_cuda_t) goes through a GEMM path (torch.addmm / matmul).

The op (custom ops torch.ops.spikeforge.psn_fwd / psn_bwd, eager fast path, reference fallback,
higher-order-autograd rules) is built by ops/_common.FusedOp like every family.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import reference
from .._native import native
from ..surrogate import SURROGATES, surrogate_grad
from ._common import FusedOp, _check_int, _check_number, _check_surrogate, _check_x, _flat, _has_native, _stream

__all__ = ["psn", "masked_psn", "sliding_psn", "psn_window_step"]

_SURROGATE_NAMES = {spec.id: name for name, spec in SURROGATES.items()}


class PSNOptions(NamedTuple):
    band: int  # k of a causal band the kernel may restrict the sums to (0: the full T x T weight)
    surrogate: int
    alpha: float


class PSNBackwardOptions(NamedTuple):
    band: int
    surrogate: int
    alpha: float
    need_x: bool
    need_w: bool
    need_b: bool


# --------------------------------------------------------------------------------------------
# native forward / backward (shared by the custom ops and the eager fast path)
# --------------------------------------------------------------------------------------------
def _use_gemm(x: Tensor, T_out: int, T_in: int) -> bool:
    return x.device.type == "cuda" and max(T_out, T_in) > native.psn_max_cuda_t


def _gemm_h(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return torch.addmm(b.unsqueeze(1), w, x.reshape(x.shape[0], -1).float())


def _forward(x: Tensor, w: Tensor, b: Tensor, o: PSNOptions) -> tuple[Tensor]:
    x = x.contiguous()
    T_out, T_in = w.shape
    N = x.numel() // T_in if T_in > 0 else 0
    out_shape = (T_out,) + tuple(x.shape[1:])
    if _use_gemm(x, T_out, T_in):
        return ((_gemm_h(x, w, b) >= 0).to(x.dtype).reshape(out_shape),)
    spike = x.new_empty(out_shape)
    args = (x, w.contiguous(), b.contiguous(), spike)
    if x.dim() > 8:
        args = _flat(args)
    native.psn_forward(*args, None, T_out, T_in, N, o.band, o.surrogate, o.alpha, torch.get_num_threads(), _stream(x))
    return (spike,)


def _backward(
    grad_spike: Tensor, x: Tensor, w: Tensor, b: Tensor, o: PSNBackwardOptions
) -> tuple[Tensor, Tensor, Tensor]:
    grad_spike, x, w, b = grad_spike.contiguous(), x.contiguous(), w.contiguous(), b.contiguous()
    T_out, T_in = w.shape
    N = x.numel() // T_in if T_in > 0 else 0
    if _use_gemm(x, T_out, T_in):
        h = _gemm_h(x, w, b)
        gh = grad_spike.reshape(T_out, -1).float() * surrogate_grad(_SURROGATE_NAMES[o.surrogate], h, o.alpha)
        gx = (w.t() @ gh).to(x.dtype).reshape(x.shape) if o.need_x else x.new_empty(0)
        gw = gh @ x.reshape(T_in, -1).float().t() if o.need_w else w.new_empty(0)
        gb = gh.sum(1) if o.need_b else b.new_empty(0)
        return gx, gw, gb
    grad_x = torch.empty_like(x) if o.need_x else None
    grad_w = torch.empty_like(w) if o.need_w else None
    grad_b = torch.empty_like(b) if o.need_b else None
    partials = None
    if o.need_w or o.need_b:
        partials = torch.empty(native.psn_num_partitions(N), T_out * (T_in + 1), dtype=torch.float64, device=x.device)
    args = (grad_spike, x, w, b, grad_x)
    if x.dim() > 8:
        args = _flat(args)
    native.psn_backward(
        *args,
        partials,
        grad_w,
        grad_b,
        T_out,
        T_in,
        N,
        o.band,
        o.surrogate,
        o.alpha,
        torch.get_num_threads(),
        _stream(x),
    )
    # each gradient was allocated exactly when its need_* flag is set (else None: an empty in its place)
    return (
        grad_x if grad_x is not None else x.new_empty(0),
        grad_w if grad_w is not None else w.new_empty(0),
        grad_b if grad_b is not None else b.new_empty(0),
    )


def _fake_backward(grad_spike, x, w, b, o):
    # contiguous, as the real op allocates them
    return (
        x.new_empty(x.shape) if o.need_x else x.new_empty(0),
        w.new_empty(w.shape) if o.need_w else w.new_empty(0),
        b.new_empty(b.shape) if o.need_b else b.new_empty(0),
    )


def _save(inputs, o, outputs):
    return inputs, None  # H is recomputed: X is the only [T, N] tensor kept


def _grads(saved, info, o, needs, grad_outputs, call_bwd):
    (grad_spike,) = grad_outputs
    x, w, b = saved
    if grad_spike is None:
        return [None, None, None]
    nx, nw, nb = needs
    gx, gw, gb = call_bwd(grad_spike, x, w, b, PSNBackwardOptions(*o, nx, nw, nb))
    return [gx if nx else None, gw if nw else None, gb if nb else None]


def _reference(x, w, b, o: PSNOptions):
    """S = Heaviside(W X + b) in torch ops: the effective weight the op received."""
    T_out, T_in = w.shape
    h = torch.addmm(b.to(x.dtype).unsqueeze(1), w.to(x.dtype), x.reshape(T_in, -1))
    return reference.surrogate.spike_fn(h, _SURROGATE_NAMES[o.surrogate], o.alpha).reshape(
        (T_out,) + tuple(x.shape[1:])
    )


_OP = FusedOp(
    "psn",
    "spikeforge.ops (psn family)",
    inputs=("x", "w", "b"),
    options=PSNOptions,
    n_out=1,
    visible=1,
    forward=_forward,
    fake_forward=lambda x, w, b, o: (x.new_empty((w.shape[0],) + tuple(x.shape[1:])),),
    bwd_inputs=("grad_spike", "x", "w", "b"),
    bwd_options=PSNBackwardOptions,
    n_grads=3,
    backward=_backward,
    fake_backward=_fake_backward,
    save=_save,
    grads=_grads,
    reference=_reference,
    reference_inputs=lambda saved, info: saved,
)
psn_fwd, psn_bwd = _OP.fwd_op, _OP.bwd_op


# --------------------------------------------------------------------------------------------
# validation and public API (docs/ops.md)
# --------------------------------------------------------------------------------------------
def _check_tensor(t, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _param(t, name: str, x_seq: Tensor, shape: tuple, x_name: str = "x_seq") -> Tensor:
    _check_tensor(t, name)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.device != x_seq.device:
        raise ValueError(f"{name} is on {t.device} but {x_name} is on {x_seq.device}")
    if tuple(t.shape) != shape:
        raise ValueError(
            f"{name} must have shape {shape} for {x_name} of shape {tuple(x_seq.shape)}, got {tuple(t.shape)}"
        )
    want = torch.float64 if x_seq.dtype == torch.float64 else torch.float32
    return t if t.dtype == want else t.to(want)


def _check_k(k, T: Optional[int]) -> int:
    k = _check_int("k", k, minimum=1)
    if T is not None and k > T:
        raise ValueError(f"k must be <= T ({T}), got {k}")
    return k


def _dispatch(x_seq, w_eff, b_eff, band, surrogate, alpha, ref, public):
    sid, alpha_v, _ = _check_surrogate(surrogate, alpha)
    if not _has_native(x_seq.device) and x_seq.device.type != "meta":
        return ref(alpha_v)
    return _OP((x_seq, w_eff, b_eff), PSNOptions(band, sid, alpha_v), f"spikeforge.ops.{public}")


def psn(
    x_seq: Tensor, weight: Tensor, bias: Tensor, *, surrogate: str = "atan", alpha: Optional[float] = None
) -> Tensor:
    """PSN: S[t] = Heaviside(sum_i W[t, i] X[i] + b[t]); x_seq [T, *], weight [T, T], bias [T] -> [T, *]."""
    _check_x(x_seq)
    T = x_seq.shape[0]
    w = _param(weight, "weight", x_seq, (T, T))
    b = _param(bias, "bias", x_seq, (T,))
    return _dispatch(
        x_seq, w, b, 0, surrogate, alpha, lambda a: reference.psn(x_seq, w, b, surrogate=surrogate, alpha=a), "psn"
    )


def masked_psn(
    x_seq: Tensor,
    weight: Tensor,
    bias: Tensor,
    k: int,
    lam: float = 1.0,
    *,
    surrogate: str = "atan",
    alpha: Optional[float] = None,
) -> Tensor:
    """Masked PSN of order k: W_eff = W * (lam M + 1 - lam), M the causal band i in [t-k+1, t].

    lam is scheduled from 0 to 1 during training (nn.MaskedPSN.lam); at lam = 1 only the band is read.
    """
    _check_x(x_seq)
    T = x_seq.shape[0]
    k = _check_k(k, T)
    lam = _check_number("lam", lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    w = _param(weight, "weight", x_seq, (T, T))
    b = _param(bias, "bias", x_seq, (T,))
    w_eff = reference.masked_weight(w, k, lam)  # SpikingJelly's order and rounding (1 - lam in w's dtype)
    return _dispatch(
        x_seq,
        w_eff,
        b,
        k if lam == 1.0 else 0,
        surrogate,
        alpha,
        lambda a: reference.masked_psn(x_seq, w, b, k, lam, surrogate=surrogate, alpha=a),
        "masked_psn",
    )


def _toeplitz(w: Tensor, T: int) -> Tensor:
    """W_eff[t, i] = w[i - t + k - 1] inside the causal band, 0 outside."""
    k = w.shape[0]
    t = torch.arange(T, device=w.device)
    idx = t[None, :] - t[:, None] + (k - 1)
    inside = (idx >= 0) & (idx < k)
    return torch.where(inside, w[idx.clamp(0, k - 1)], torch.zeros((), dtype=w.dtype, device=w.device))


def sliding_psn(
    x_seq: Tensor, weight: Tensor, bias: Tensor, *, surrogate: str = "atan", alpha: Optional[float] = None
) -> Tensor:
    """Sliding PSN: H[t] = sum_i w[i] X[t-k+1+i] + b with k shared taps (weight [k], bias scalar); any T."""
    _check_x(x_seq)
    _check_tensor(weight, "weight")
    if weight.dim() != 1 or weight.shape[0] < 1:
        raise ValueError(f"weight must be a 1-D tensor of k >= 1 taps, got shape {tuple(weight.shape)}")
    k, T = weight.shape[0], x_seq.shape[0]
    w = _param(weight, "weight", x_seq, (k,))
    _check_tensor(bias, "bias")
    if bias.numel() != 1:
        raise ValueError(
            f"bias must be a tensor with one element (shared by every step), got shape {tuple(bias.shape)}"
        )
    b = _param(bias.reshape(()), "bias", x_seq, ())
    return _dispatch(
        x_seq,
        _toeplitz(w, T),
        b.expand(T),
        k,
        surrogate,
        alpha,
        lambda a: reference.sliding_psn(x_seq, w, b, surrogate=surrogate, alpha=a),
        "sliding_psn",
    )


def psn_window_step(
    x_window: Tensor, w_row: Tensor, b_t: Tensor, *, surrogate: str = "atan", alpha: Optional[float] = None
) -> Tensor:
    """One streaming step: S = Heaviside(sum_i w_row[i] x_window[i] + b_t) over a window [k, *] of the
    latest inputs (zero-padded at the front). Sums in the multi-step kernels' order, so streaming
    reproduces the multi-step ops bitwise. -> [*]."""
    _check_x(x_window, "x_window")
    k = x_window.shape[0]
    _check_tensor(w_row, "w_row")
    _check_tensor(b_t, "b_t")
    if w_row.numel() != k:
        raise ValueError(
            f"w_row must have k = {k} elements for x_window of shape {tuple(x_window.shape)}, got {w_row.numel()}"
        )
    if b_t.numel() != 1:
        raise ValueError(f"b_t must have one element, got shape {tuple(b_t.shape)}")
    w = _param(w_row.reshape(1, -1), "w_row", x_window, (1, k), "x_window")
    b = _param(b_t.reshape(1), "b_t", x_window, (1,), "x_window")
    return _dispatch(
        x_window,
        w,
        b,
        0,
        surrogate,
        alpha,
        lambda a: reference.surrogate.spike_fn(
            (torch.addmm(b.to(x_window.dtype).unsqueeze(1), w.to(x_window.dtype), x_window.reshape(k, -1))).reshape(
                (1,) + tuple(x_window.shape[1:])
            ),
            surrogate,
            a,
        ),
        "psn_window_step",
    )[0]
