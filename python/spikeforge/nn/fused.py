"""Fused layers of the model zoo: BN + spiking neuron in one autograd node, and a max-pool of spikes that
keeps its input as uint8 for backward.

Both exist to shrink what a training step saves for backward (``spikeforge bench models`` reports it by
layer kind): unfused, BN keeps its input and the neuron keeps BN's output, two float tensors of the same
size; the fused node keeps one and recomputes the other in backward. Values and gradients equal the
unfused layers'. Used by the residual and transformer families (``compact=True``, their default with
spikeforge's neurons) and by the attention blocks' projections.

A neuron that an observer needs to see (``spikeforge.tools.FiringRateMonitor``) is taken out of the fused
path with ``spikeforge.nn.observe.run_through_forward``: it then runs BN, then its own forward (and hooks).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..ops._common import _has_native
from .layers import SeqBatchNorm2d, seq_apply
from .neuron import IF, LIF, PLIF
from .observe import forward_required

__all__ = ["bn_spike", "maxpool_spikes"]


def _max_pool_channels_last(x: Tensor, kernel, stride, padding) -> Tensor:
    """F.max_pool2d of a contiguous NCHW x, run on a channels-last copy (torch's CPU kernel vectorises across
    channels there: 8.5 -> 4.9 ms on [32, 64, 32, 32], conversions included), returned contiguous: the values
    of the NCHW call."""
    xc = x.contiguous(memory_format=torch.channels_last)
    return torch.nn.functional.max_pool2d(xc, kernel, stride, padding).contiguous()


class _MaxPoolSpikesFn(torch.autograd.Function):
    """max_pool2d of spikes that keeps its input for backward as uint8 instead of float input + int64 indices:
    the backward recomputes the indices from the restored input with the same kernel, so the gradient goes
    exactly where nn.MaxPool2d's would (ties included)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        ctx.conf = (kernel, stride, padding, x.dtype)
        ctx.save_for_backward(x.to(torch.uint8))
        return _max_pool_channels_last(x, kernel, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        (x8,) = ctx.saved_tensors
        kernel, stride, padding, dtype = ctx.conf
        x = x8.to(dtype)
        # the indices from the NCHW kernel, not the channels-last one of the forward: here the channels-last
        # copy of the whole input (and the indices' copy back) cost more than that kernel saves ([32, 192, 64,
        # 64], 3x3 stride 2, Intel Xeon, 2 threads: 172 -> 151 ms for the backward, 128 -> 87 ms with
        # THP_MEM_ALLOC_ENABLE=1); the indices are the same (the first maximum in window order)
        _, idx = torch.nn.functional.max_pool2d(x, kernel, stride, padding, return_indices=True)
        gx = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, list(kernel), list(stride), list(padding), [1, 1], False, idx
        )
        return gx, None, None, None


def maxpool_spikes(pool: nn.MaxPool2d, x: Tensor, compact: bool) -> Tensor:
    """pool over a spike sequence [T, B, C, H, W]; compact (while training): the input is kept for backward
    as uint8 instead of a float input and int64 indices (_MaxPoolSpikesFn), exact for spikes and spike counts
    0..255 only (the models' use: the spikes of a neuron). A pool with dilation or ceil_mode runs unfused."""
    if not isinstance(x, Tensor) or x.dim() != 5:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"maxpool_spikes: x must be a spike sequence [T, B, C, H, W], got {got}")
    plain = _pair(pool.dilation) == (1, 1) and not pool.ceil_mode and not pool.return_indices
    if compact and plain and torch.is_grad_enabled() and x.requires_grad:
        T, B = x.shape[:2]
        conf = (_pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size), _pair(pool.padding))
        y = _MaxPoolSpikesFn.apply(x.flatten(0, 1), *conf)
        return y.view((T, B) + tuple(y.shape[1:]))
    return seq_apply(pool, x)


class _BNSpikeFn(torch.autograd.Function):
    """SN(BN(y)) in training mode, saving only y (and per-channel statistics) for backward.

    Unfused, BN keeps y and the neuron keeps BN(y): two float tensors of the same size. Here the backward
    recomputes BN(y) with the same op and statistics (bitwise the forward's values), runs the fused neuron's
    backward on it and then BN's backward, so one of the two tensors is never stored. Costs one elementwise
    BN pass and one neuron forward more in backward (both small next to the convolutions).
    """

    @staticmethod
    def forward(ctx, y, weight, bias, neuron_w, bn, sn, momentum):
        yf = y.flatten(0, 1)
        xn, mean, invstd = torch.ops.aten.native_batch_norm(
            yf, weight, bias, bn.running_mean, bn.running_var, True, momentum, bn.eps
        )
        spikes, v = sn._multi(xn.view(y.shape), None, "last")
        ctx.bn, ctx.sn, ctx.shape = bn, sn, y.shape
        ctx.save_for_backward(y, weight, bias, mean, invstd)
        ctx.set_materialize_grads(False)  # grad_v is None unless the neuron's state v is used
        return spikes, v  # v: the neuron's state, with its graph (bn_spike stores it in sn.v)

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        y, weight, bias, mean, invstd = ctx.saved_tensors
        bn, sn = ctx.bn, ctx.sn
        yf = y.flatten(0, 1)
        # recompute BN(y) exactly as the forward did (same op, same input -> same statistics and values)
        xn, _, _ = torch.ops.aten.native_batch_norm(yf, weight, bias, None, None, True, 0.0, bn.eps)
        need_w = isinstance(getattr(sn, "w", None), torch.Tensor) and ctx.needs_input_grad[3]
        if grad_spikes is None:
            grad_spikes = torch.zeros(ctx.shape, dtype=y.dtype, device=y.device)
        if _has_native(y.device) and grad_v is None:
            # the neuron's backward straight from its input: no neuron forward, no autograd graph
            g_xn, g_w_neuron = sn._grad_from_input(xn.view(ctx.shape), grad_spikes, need_w)
        else:  # no native kernels, or a loss on the state v: the neuron's own backward through autograd
            with torch.enable_grad():
                xr = xn.view(ctx.shape).detach().requires_grad_(True)
                spikes, v = sn._multi(xr, None, "last")
                outs, grads = ([spikes], [grad_spikes]) if grad_v is None else ([spikes, v], [grad_spikes, grad_v])
                grads = torch.autograd.grad(outs, [xr] + ([sn.w] if need_w else []), grads, allow_unused=True)
            g_xn, g_w_neuron = grads[0], (grads[1] if need_w else None)
            if g_xn is None:
                g_xn = torch.zeros_like(xr)
        g_xn = g_xn.flatten(0, 1)
        gy, gw, gb = torch.ops.aten.native_batch_norm_backward(
            g_xn,
            yf,
            weight,
            bn.running_mean,
            bn.running_var,
            mean,
            invstd,
            True,
            bn.eps,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]],
        )
        return (None if gy is None else gy.view(ctx.shape)), gw, gb, g_w_neuron, None, None, None


def _fusable(bn: nn.Module, sn: nn.Module, y: Tensor) -> bool:
    return (
        type(bn) is SeqBatchNorm2d
        and bn.training
        and bn.affine
        and bn.track_running_stats
        and torch.is_grad_enabled()
        and y.dim() == 5
        and y.numel() > 0
        and isinstance(sn, (IF, LIF, PLIF))
        and type(sn) in (IF, LIF, PLIF)
        and sn.step_mode == "m"
        and not sn.store_v_seq
        and sn.v is None
        # a neuron an observer needs (spikeforge.tools.FiringRateMonitor) runs through its forward and hooks
        and not forward_required(sn)
        # under torch.compile the unfused layers: the fused node's backward differentiates BN with
        # torch.autograd.grad, which dynamo does not trace (fullgraph=True failed on every compact model); the
        # compiler decides itself what the step saves
        and not torch.compiler.is_compiling()
    )


def bn_spike(bn: nn.Module, sn: nn.Module, y: Tensor, fuse: bool) -> Tensor:
    """sn(bn(y)); with fuse (the models' compact mode) BN + spikeforge neuron save one tensor instead of two."""
    if not (fuse and _fusable(bn, sn, y)):
        return sn(bn(y))
    # _fusable checked: a SeqBatchNorm2d that tracks running statistics
    assert isinstance(bn, SeqBatchNorm2d) and bn.num_batches_tracked is not None
    # momentum exactly as nn.BatchNorm2d computes it (None: cumulative average)
    bn.num_batches_tracked.add_(1)
    momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    w = sn.w if isinstance(sn, PLIF) else None
    spikes, sn.v = _BNSpikeFn.apply(y, bn.weight, bn.bias, w, bn, sn, momentum)
    return spikes
