"""Spike-driven attention in plain PyTorch: the ground truth for spikeforge.ops.attention.

Written the way the papers' code computes them (docs/attention.md), with the
reference LIF loop as SN. Layout of q, k, v: [T, *batch, N, D] (time first, N tokens, D channels of
one head). Half-precision inputs are computed in float32 and the spikes cast back: the attention
sums reach thousands, which float16 cannot hold exactly, and spikes are exact in any dtype.
"""

from __future__ import annotations

import torch

from .neuron import lif

_HALF = (torch.float16, torch.bfloat16)


def _work(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in _HALF else t


def _sn(x, tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha):
    """The multi-step LIF over dim 0 -> spikes."""
    return lif(
        x,
        tau=tau,
        v_threshold=v_threshold,
        v_reset=v_reset,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=alpha,
    )[0]


def ssa(
    q,
    k,
    v,
    scale=0.125,
    *,
    tau=2.0,
    v_threshold=0.5,
    v_reset=0.0,
    detach_reset=True,
    decay_input=True,
    surrogate="sigmoid",
    alpha=None,
):
    """Spikformer SSA: SN((Q K^T) V * scale), the N x N scores first as in the paper's code."""
    dtype = q.dtype
    q, k, v = _work(q), _work(k), _work(v)
    pre = (q @ k.transpose(-2, -1)) @ v * scale
    return _sn(pre, tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha).to(dtype)


def sdsa(
    q,
    k,
    v,
    *,
    tau=2.0,
    v_threshold=0.5,
    v_reset=0.0,
    detach_reset=True,
    decay_input=True,
    surrogate="sigmoid",
    alpha=None,
):
    """Spike-driven Transformer SDSA: Q * SN(sum over tokens of K * V), per head."""
    dtype = q.dtype
    q, k, v = _work(q), _work(k), _work(v)
    kv = (k * v).sum(dim=-2, keepdim=True)  # [T, *, 1, D]
    return (q * _sn(kv, tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)).to(dtype)


def qk_token_attention(
    q, k, *, tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True, decay_input=True, surrogate="sigmoid", alpha=None
):
    """QKFormer token attention: A_t = SN(sum over the channels of Q), out = A_t * K."""
    dtype = q.dtype
    q, k = _work(q), _work(k)
    a = _sn(q.sum(dim=-1, keepdim=True), tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    return (a * k).to(dtype)  # a: [T, *, N, 1]


def qk_channel_attention(
    q, k, *, tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True, decay_input=True, surrogate="sigmoid", alpha=None
):
    """QKFormer channel attention: A_c = SN(sum over the tokens of Q), out = A_c * K."""
    dtype = q.dtype
    q, k = _work(q), _work(k)
    a = _sn(q.sum(dim=-2, keepdim=True), tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    return (a * k).to(dtype)  # a: [T, *, 1, D]
