"""Spike-driven attention ops: Spikformer SSA, Spike-driven Transformer SDSA, QKFormer token and
channel Q-K attention (shared/SEMANTICS.md "Attention on spikes").

Layout of q, k, v: [T, *batch, N, D]: time first, any batch dims (models pass [T, B, heads, N, Dh]),
N tokens, D channels of one head. SN is the multi-step LIF of spikeforge.ops.lif with the papers'
attention neuron as default (SpikingJelly LIF tau=2, v_threshold=0.5, detach_reset=True).

Half-precision inputs are computed in float32 and the spikes cast back: the attention sums reach
thousands (Q K^T V on binary inputs sums up to N * D products), which float16 cannot hold exactly.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._common import _FLOAT_DTYPES, _check_number
from .neuron import _neuron_options, lif

__all__ = ["ssa", "sdsa", "qk_token_attention", "qk_channel_attention"]

_HALF = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _check_qkv(named: tuple[tuple[str, object], ...]) -> None:
    """Every tensor is a float tensor of shape [T, *batch, N, D], all of one shape, dtype and device."""
    first_name, first = None, None
    for name, t in named:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
        if t.dim() < 3:
            raise ValueError(f"{name} must have shape [T, *batch, N, D] (at least 3 dimensions); "
                             f"got a tensor of shape {tuple(t.shape)}")
        if t.dtype == torch.float64 and t.device.type == "cuda":
            raise TypeError(f"{name}: float64 is supported on CPU only (for gradcheck)")
        if first is None:
            first_name, first = name, t
            continue
        if tuple(t.shape) != tuple(first.shape):
            raise ValueError(f"{name} must have the shape of {first_name} {tuple(first.shape)} "
                             f"([T, *batch, N, D]), got {tuple(t.shape)}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")


def _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha) -> dict:
    """Validates the neuron options (the same checks and messages as spikeforge.ops.lif) -> lif kwargs."""
    _neuron_options(tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, "last")
    return dict(tau=tau, v_threshold=v_threshold, v_reset=v_reset, decay_input=decay_input,
                detach_reset=detach_reset, surrogate=surrogate, alpha=alpha)


def _work(t: Tensor) -> Tensor:
    return t.float() if t.dtype in _HALF else t


def _sn(x: Tensor, lif_kw: dict) -> Tensor:
    return lif(x, **lif_kw)[0]


# --------------------------------------------------------------------------------------------
# public functional API
# --------------------------------------------------------------------------------------------
def ssa(q: Tensor, k: Tensor, v: Tensor, scale: float = 0.125, *, tau: float = 2.0, v_threshold: float = 0.5,
        v_reset: Optional[float] = 0.0, detach_reset: bool = True, decay_input: bool = True,
        surrogate: str = "sigmoid", alpha: Optional[float] = None) -> Tensor:
    """Spikformer spiking self-attention: SN((Q K^T V) * scale) over q, k, v [T, *batch, N, D] -> [T, *batch, N, D].

    K^T V ([D, D] per head) is formed first, so the N x N score matrix of the paper's order is never
    materialised; on spike inputs both orders give the same integer sums.
    """
    _check_qkv((("q", q), ("k", k), ("v", v)))
    scale = _check_number("scale", scale)
    lif_kw = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    dtype = q.dtype
    q, k, v = _work(q), _work(k), _work(v)
    pre = (q @ (k.transpose(-2, -1) @ v)) * scale
    return _sn(pre, lif_kw).to(dtype)


def sdsa(q: Tensor, k: Tensor, v: Tensor, *, tau: float = 2.0, v_threshold: float = 0.5,
         v_reset: Optional[float] = 0.0, detach_reset: bool = True, decay_input: bool = True,
         surrogate: str = "sigmoid", alpha: Optional[float] = None) -> Tensor:
    """Spike-driven self-attention: Q * SN(sum over tokens of K * V) over [T, *batch, N, D] -> [T, *batch, N, D]."""
    _check_qkv((("q", q), ("k", k), ("v", v)))
    lif_kw = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    dtype = q.dtype
    q, k, v = _work(q), _work(k), _work(v)
    kv = (k * v).sum(dim=-2, keepdim=True)
    return (q * _sn(kv, lif_kw)).to(dtype)


def qk_token_attention(q: Tensor, k: Tensor, *, tau: float = 2.0, v_threshold: float = 0.5,
                       v_reset: Optional[float] = 0.0, detach_reset: bool = True, decay_input: bool = True,
                       surrogate: str = "sigmoid", alpha: Optional[float] = None) -> Tensor:
    """QKFormer token attention: SN(sum over the channels of Q) * K over [T, *batch, N, D] -> [T, *batch, N, D]."""
    _check_qkv((("q", q), ("k", k)))
    lif_kw = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    dtype = q.dtype
    q, k = _work(q), _work(k)
    return (_sn(q.sum(dim=-1, keepdim=True), lif_kw) * k).to(dtype)


def qk_channel_attention(q: Tensor, k: Tensor, *, tau: float = 2.0, v_threshold: float = 0.5,
                         v_reset: Optional[float] = 0.0, detach_reset: bool = True, decay_input: bool = True,
                         surrogate: str = "sigmoid", alpha: Optional[float] = None) -> Tensor:
    """QKFormer channel attention: SN(sum over the tokens of Q) * K over [T, *batch, N, D] -> [T, *batch, N, D].

    v_threshold defaults to 0.5 as SpikingJelly's ChannelQKAttention (the QKFormer attention LIF).
    """
    _check_qkv((("q", q), ("k", k)))
    lif_kw = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    dtype = q.dtype
    q, k = _work(q), _work(k)
    return (_sn(q.sum(dim=-2, keepdim=True), lif_kw) * k).to(dtype)
