"""Parallel spiking neurons (PSN, masked PSN, sliding PSN): custom ops over csrc/core/psn.h.

All three reduce to S = Heaviside(W_eff X + b_eff) with a T x T effective weight built here with torch
ops (masking, Toeplitz taps), so autograd carries grad_W_eff back to the module's parameters. The
native kernel reads X once, mixes over time on chip, fires and writes S; the backward recomputes H
(nothing but X is saved: one [T, N] tensor in the activation dtype). On CUDA, T beyond the fused
kernels' register budget (psn_max_cuda_t) goes through a GEMM path (torch.addmm / matmul).

Paths mirror ops/neuron.py: custom ops torch.ops.spikeforge.psn_fwd / psn_bwd for torch.compile and
opcheck, an autograd.Function fast path for eager plain tensors, reference fallback without native.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .._native import native
from ..reference.surrogate import surrogate_grad
from ..reference.surrogate import SURROGATES
from ._common import _check_number, _check_surrogate, _check_x, _flat, _has_native, _stream, _tracing

__all__ = ["psn", "masked_psn", "sliding_psn", "psn_window_step"]

_SURROGATE_NAMES = {sid: name for name, (sid, _) in SURROGATES.items()}


# --------------------------------------------------------------------------------------------
# implementation shared by the custom ops and the eager fast path
# --------------------------------------------------------------------------------------------
def _use_gemm(x: Tensor, T_out: int, T_in: int) -> bool:
    return x.device.type == "cuda" and max(T_out, T_in) > native.psn_max_cuda_t


def _gemm_h(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return torch.addmm(b.unsqueeze(1), w, x.reshape(x.shape[0], -1).float())


def _forward_impl(x: Tensor, w: Tensor, b: Tensor, band: int, surrogate: int, alpha: float) -> Tensor:
    x = x.contiguous()
    T_out, T_in = w.shape
    N = x.numel() // T_in if T_in > 0 else 0
    out_shape = (T_out,) + tuple(x.shape[1:])
    if _use_gemm(x, T_out, T_in):
        return (_gemm_h(x, w, b) >= 0).to(x.dtype).reshape(out_shape)
    spike = x.new_empty(out_shape)
    args = (x, w.contiguous(), b.contiguous(), spike)
    if x.dim() > 8:
        args = _flat(args)
    native.psn_forward(*args, None, T_out, T_in, N, band, surrogate, alpha, torch.get_num_threads(), _stream(x))
    return spike


def _backward_impl(grad_spike: Tensor, x: Tensor, w: Tensor, b: Tensor, band: int, surrogate: int, alpha: float,
                   need_x: bool, need_w: bool, need_b: bool) -> tuple[Tensor, Tensor, Tensor]:
    grad_spike, x, w, b = grad_spike.contiguous(), x.contiguous(), w.contiguous(), b.contiguous()
    T_out, T_in = w.shape
    N = x.numel() // T_in if T_in > 0 else 0
    if _use_gemm(x, T_out, T_in):
        h = _gemm_h(x, w, b)
        gh = grad_spike.reshape(T_out, -1).float() * surrogate_grad(_SURROGATE_NAMES[surrogate], h, alpha)
        gx = (w.t() @ gh).to(x.dtype).reshape(x.shape) if need_x else x.new_empty(0)
        gw = gh @ x.reshape(T_in, -1).float().t() if need_w else w.new_empty(0)
        gb = gh.sum(1) if need_b else b.new_empty(0)
        return gx, gw, gb
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = torch.empty_like(w) if need_w else None
    grad_b = torch.empty_like(b) if need_b else None
    partials = None
    if need_w or need_b:
        partials = torch.empty(native.psn_num_partitions(N), T_out * (T_in + 1), dtype=torch.float64,
                               device=x.device)
    args = (grad_spike, x, w, b, grad_x)
    if x.dim() > 8:
        args = _flat(args)
    native.psn_backward(*args, partials, grad_w, grad_b, T_out, T_in, N, band, surrogate, alpha,
                        torch.get_num_threads(), _stream(x))
    return (grad_x if need_x else x.new_empty(0), grad_w if need_w else w.new_empty(0),
            grad_b if need_b else b.new_empty(0))


@torch.library.custom_op("spikeforge::psn_fwd", mutates_args=())
def psn_fwd(x: Tensor, w: Tensor, b: Tensor, band: int, surrogate: int, alpha: float) -> Tensor:
    """S = Heaviside(W X + b): x [T_in, *], w [T_out, T_in], b [T_out] -> spikes [T_out, *]."""
    return _forward_impl(x, w, b, band, surrogate, alpha)


@psn_fwd.register_fake
def _(x, w, b, band, surrogate, alpha):
    return x.new_empty((w.shape[0],) + tuple(x.shape[1:]))


@torch.library.custom_op("spikeforge::psn_bwd", mutates_args=())
def psn_bwd(grad_spike: Tensor, x: Tensor, w: Tensor, b: Tensor, band: int, surrogate: int, alpha: float,
            need_x: bool, need_w: bool, need_b: bool) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x or empty, grad_w or empty, grad_b or empty)."""
    return _backward_impl(grad_spike, x, w, b, band, surrogate, alpha, need_x, need_w, need_b)


@psn_bwd.register_fake
def _(grad_spike, x, w, b, band, surrogate, alpha, need_x, need_w, need_b):
    # contiguous, as the real op allocates them
    return (x.new_empty(x.shape) if need_x else x.new_empty(0), w.new_empty(w.shape) if need_w else w.new_empty(0),
            b.new_empty(b.shape) if need_b else b.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, w, b, band, surrogate, alpha = inputs
    ctx.save_for_backward(x, w, b)  # H is recomputed: X is the only [T, N] tensor kept
    ctx.params = (band, surrogate, alpha)


def _grads(ctx, grad_spike, call):
    x, w, b = ctx.saved_tensors
    nx, nw, nb = ctx.needs_input_grad[:3]
    gx, gw, gb = call(grad_spike, x, w, b, *ctx.params, nx, nw, nb)
    return (gx if nx else None, gw if nw else None, gb if nb else None, None, None, None)


psn_fwd.register_autograd(lambda ctx, g: _grads(ctx, g, torch.ops.spikeforge.psn_bwd),
                          setup_context=_setup_context)


class _PSNFunction(torch.autograd.Function):
    """Eager fast path: the custom op's forward/backward without the dispatcher's per-call cost."""

    @staticmethod
    def forward(ctx, x, w, b, band, surrogate, alpha):
        out = _forward_impl(x, w, b, band, surrogate, alpha)
        _setup_context(ctx, (x, w, b, band, surrogate, alpha), out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spike):
        return _grads(ctx, grad_spike, _backward_impl)


def _run(x_seq: Tensor, w_eff: Tensor, b_eff: Tensor, band: int, sid: int, alpha: float) -> Tensor:
    if _tracing() or type(x_seq) is not torch.Tensor:
        return torch.ops.spikeforge.psn_fwd(x_seq, w_eff, b_eff, band, sid, alpha)
    if torch.is_grad_enabled() and (x_seq.requires_grad or w_eff.requires_grad or b_eff.requires_grad):
        return _PSNFunction.apply(x_seq, w_eff, b_eff, band, sid, alpha)
    return _forward_impl(x_seq, w_eff, b_eff, band, sid, alpha)


# --------------------------------------------------------------------------------------------
# validation and public API (shared/API.md)
# --------------------------------------------------------------------------------------------
def _param(t, name: str, x_seq: Tensor, shape: tuple) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.device != x_seq.device:
        raise ValueError(f"{name} is on {t.device} but x_seq is on {x_seq.device}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} for x_seq of shape {tuple(x_seq.shape)}, "
                         f"got {tuple(t.shape)}")
    want = torch.float64 if x_seq.dtype == torch.float64 else torch.float32
    return t if t.dtype == want else t.to(want)


def _check_k(k, T: Optional[int]) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if T is not None and k > T:
        raise ValueError(f"k must be <= T ({T}), got {k}")
    return k


def _dispatch(x_seq, w_eff, b_eff, band, surrogate, alpha, ref):
    sid, alpha_v = _check_surrogate(surrogate, alpha)
    if not _has_native(x_seq.device):
        return ref(alpha_v)
    return _run(x_seq, w_eff, b_eff, band, sid, alpha_v)


def psn(x_seq: Tensor, weight: Tensor, bias: Tensor, *, surrogate: str = "atan",
        alpha: Optional[float] = None) -> Tensor:
    """PSN: S[t] = Heaviside(sum_i W[t, i] X[i] + b[t]); x_seq [T, *], weight [T, T], bias [T] -> [T, *]."""
    _check_x(x_seq)
    T = x_seq.shape[0]
    w = _param(weight, "weight", x_seq, (T, T))
    b = _param(bias, "bias", x_seq, (T,))
    return _dispatch(x_seq, w, b, 0, surrogate, alpha,
                     lambda a: reference.psn(x_seq, w, b, surrogate=surrogate, alpha=a))


def masked_psn(x_seq: Tensor, weight: Tensor, bias: Tensor, k: int, lam: float = 1.0, *, surrogate: str = "atan",
               alpha: Optional[float] = None) -> Tensor:
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
    M = reference.band_mask(T, k, w.device, w.dtype)
    w_eff = w * M if lam == 1.0 else w * (lam * M + (1.0 - lam))
    return _dispatch(x_seq, w_eff, b, k if lam == 1.0 else 0, surrogate, alpha,
                     lambda a: reference.masked_psn(x_seq, w, b, k, lam, surrogate=surrogate, alpha=a))


def _toeplitz(w: Tensor, T: int) -> Tensor:
    """W_eff[t, i] = w[i - t + k - 1] inside the causal band, 0 outside."""
    k = w.shape[0]
    t = torch.arange(T, device=w.device)
    idx = t[None, :] - t[:, None] + (k - 1)
    inside = (idx >= 0) & (idx < k)
    return torch.where(inside, w[idx.clamp(0, k - 1)], torch.zeros((), dtype=w.dtype, device=w.device))


def sliding_psn(x_seq: Tensor, weight: Tensor, bias: Tensor, *, surrogate: str = "atan",
                alpha: Optional[float] = None) -> Tensor:
    """Sliding PSN: H[t] = sum_i w[i] X[t-k+1+i] + b with k shared taps (weight [k], bias scalar); any T."""
    _check_x(x_seq)
    if not isinstance(weight, Tensor) or weight.dim() != 1 or weight.shape[0] < 1:
        raise ValueError("weight must be a 1-D tensor of k >= 1 taps" +
                         (f", got shape {tuple(weight.shape)}" if isinstance(weight, Tensor) else ""))
    k, T = weight.shape[0], x_seq.shape[0]
    w = _param(weight, "weight", x_seq, (k,))
    if not isinstance(bias, Tensor) or bias.numel() != 1:
        raise ValueError("bias must be a tensor with one element (shared by every step)")
    b = _param(bias.reshape(()), "bias", x_seq, ())
    return _dispatch(x_seq, _toeplitz(w, T), b.expand(T), k, surrogate, alpha,
                     lambda a: reference.sliding_psn(x_seq, w, b, surrogate=surrogate, alpha=a))


def psn_window_step(x_window: Tensor, w_row: Tensor, b_t: Tensor, *, surrogate: str = "atan",
                    alpha: Optional[float] = None) -> Tensor:
    """One streaming step: S = Heaviside(sum_i w_row[i] x_window[i] + b_t) over a window [k, *] of the
    latest inputs (zero-padded at the front). Sums in the multi-step kernels' order, so streaming
    reproduces the multi-step ops bitwise. -> [*]."""
    _check_x(x_window, "x_window")
    k = x_window.shape[0]
    w = _param(w_row.reshape(1, -1), "w_row", x_window, (1, k))
    b = _param(b_t.reshape(1), "b_t", x_window, (1,))
    return _dispatch(x_window, w, b, 0, surrogate, alpha,
                     lambda a: reference.surrogate.spike_fn(
                         (torch.addmm(b.to(x_window.dtype).unsqueeze(1), w.to(x_window.dtype),
                                      x_window.reshape(k, -1))).reshape((1,) + tuple(x_window.shape[1:])),
                         surrogate, a))[0]
