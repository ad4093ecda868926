"""Spike propagation in plain PyTorch (docs/spike_propagation.md): the ground truth for
spikeforge.ops.spike_linear / spike_conv2d / pack_spikes.

The synaptic layers are the dense ops themselves (Y = S W^T + b, conv2d); autograd gives dW = dY^T S,
dS = dY W, db = sum dY. The packed form is 1 bit per element, little-endian within int64 words: bit j of
word w of a row is element 64 w + j, padding bits zero (csrc/core/spike.h).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _weights(device) -> Tensor:
    # 2^j for j < 64 as int64 (2^63 wraps to the sign bit, which is what a packed word holds)
    j = torch.arange(64, device=device, dtype=torch.int64)
    return torch.bitwise_left_shift(torch.ones_like(j), j)


def pack_bits(s: Tensor) -> Tensor:
    """[R, K] -> [R, ceil(K / 64)] int64: bit set where s != 0."""
    R, K = s.shape
    words = (K + 63) // 64
    nz = torch.zeros(R, words * 64, dtype=torch.int64, device=s.device)
    nz[:, :K] = (s != 0).to(torch.int64)
    return (nz.view(R, words, 64) * _weights(s.device)).sum(-1)


def unpack_bits(bits: Tensor, K: int, dtype=torch.float32) -> Tensor:
    """[R, words] int64 -> [R, K] of 0 / 1 in dtype."""
    R, words = bits.shape
    j = torch.arange(64, device=bits.device, dtype=torch.int64)
    b = torch.bitwise_and(torch.bitwise_right_shift(bits.unsqueeze(-1), j), 1)
    return b.reshape(R, words * 64)[:, :K].to(dtype)


def spike_linear(
    s: Tensor, weight: Tensor, bias: Optional[Tensor] = None, grad_mask: Optional[Tensor] = None
) -> Tensor:
    """Y = S W^T + b for s [..., K]; with grad_mask, dS is zero where grad_mask is False."""
    if grad_mask is not None:
        s = _MaskGrad.apply(s, grad_mask)
    return F.linear(s, weight.to(s.dtype), None if bias is None else bias.to(s.dtype))


def spike_conv2d(
    s: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    grad_mask: Optional[Tensor] = None,
) -> Tensor:
    """conv2d over s [N, C, H, W] or [T, B, C, H, W] (T and B flattened, then restored)."""
    if grad_mask is not None:
        s = _MaskGrad.apply(s, grad_mask)
    lead = s.shape[:-3]
    x = s.reshape((-1,) + tuple(s.shape[-3:]))
    if x.shape[0] == 1 and x.stride(0) != x[0].numel():
        # a batch of one can come out of the reshape with any batch stride (a channels_last sample: C); torch's CPU
        # 16-bit grouped channels_last convolution gave a wrong weight gradient for such a stride (torch 2.13).
        # The canonical stride, no copy (with one sample it addresses nothing).
        x = x.as_strided(x.shape, (x[0].numel(),) + x.stride()[1:])
    y = F.conv2d(x, weight.to(s.dtype), None if bias is None else bias.to(s.dtype), stride, padding, dilation, groups)
    return y.reshape(tuple(lead) + tuple(y.shape[1:]))


class _MaskGrad(torch.autograd.Function):
    """Identity forward; the gradient passes only where mask is True (the sparse-gradient idea of
    Perez-Nieves & Goodman 2021: outside the upstream surrogate's window the gradient is zero anyway)."""

    @staticmethod
    def forward(ctx, s, mask):
        ctx.save_for_backward(mask)
        return s.view_as(s)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask.to(g.dtype), None
