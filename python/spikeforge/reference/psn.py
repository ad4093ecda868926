"""Parallel spiking neurons in plain PyTorch (Fang et al. 2023): the ground truth for spikeforge.ops.psn.

H = W X + b computed as a GEMM over the flattened neurons (what SpikingJelly does), S = Heaviside(H).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .surrogate import spike_fn


def band_mask(T: int, k: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """M[t, i] = 1 for i in [t-k+1, t] (causal band of order k), else 0."""
    t = torch.arange(T, device=device)
    d = t[:, None] - t[None, :]
    return ((d >= 0) & (d < k)).to(dtype)


def psn(x_seq, weight, bias, *, surrogate="atan", alpha=None):
    """S[t] = Heaviside(sum_i W[t, i] X[i] + b[t]) for x_seq [T, *], weight [T, T], bias [T]."""
    T = x_seq.shape[0]
    x2 = x_seq.reshape(T, math.prod(x_seq.shape[1:]))
    h = torch.addmm(bias.to(x2.dtype).unsqueeze(1), weight.to(x2.dtype), x2).reshape(x_seq.shape)
    return spike_fn(h, surrogate, alpha)


def masked_weight(weight, k, lam):
    """W masked to the causal band of order k, relaxed by lam, as SpikingJelly's MaskedPSN forms it: W M at
    lam >= 1, else (lam M + (1 - lam)) W with lam a tensor of W's dtype (its lambda_ buffer), so 1 - lam is
    rounded there."""
    M = band_mask(weight.shape[0], k, weight.device, weight.dtype)
    if lam >= 1.0:
        return weight * M
    lam_t = torch.tensor(lam, dtype=weight.dtype, device=weight.device)
    return (lam_t * M + (1.0 - lam_t)) * weight


def masked_psn(x_seq, weight, bias, k, lam=1.0, *, surrogate="atan", alpha=None):
    """PSN with W masked to the causal band of order k, relaxed by lam: (lam M + 1 - lam) W."""
    return psn(x_seq, masked_weight(weight, k, lam), bias, surrogate=surrogate, alpha=alpha)


def sliding_psn(x_seq, weight, bias, *, surrogate="atan", alpha=None):
    """H[t] = sum_i w[i] X[t-k+1+i] + b (X[<0] = 0), shared taps w[0..k-1]; any T."""
    k, T = weight.shape[0], x_seq.shape[0]
    x2 = x_seq.reshape(T, math.prod(x_seq.shape[1:]))
    xp = F.pad(x2, (0, 0, k - 1, 0))  # k-1 zero steps in front
    h = bias.to(x2.dtype).reshape(()) + sum(weight[i].to(x2.dtype) * xp[i : i + T] for i in range(k))
    return spike_fn(h.reshape(x_seq.shape), surrogate, alpha)
