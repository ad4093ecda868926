"""Stateless layers on sequences [T, B, ...]: batch normalisation over T*B (plain, tdBN, TEBN), a
multi-step wrapper for any stateless torch layer, input encoders and the TET loss.

Every layer here folds time into the batch (a view for contiguous input, no copy) so a torch layer
runs once over all T*B samples instead of T times in a Python loop.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops._common import _check_int
from ._inputs import check_float_input, check_matches_parameters
from ._state import in_model_call

__all__ = [
    "seq_apply",
    "MultiStep",
    "SeqBatchNorm2d",
    "TdBatchNorm2d",
    "TEBN",
    "direct_encode",
    "poisson_encode",
    "DirectEncoder",
    "PoissonEncoder",
    "tet_loss",
    "TETLoss",
]


def seq_apply(module, x_seq: Tensor) -> Tensor:
    """Runs a stateless layer (or a list of them, in order) on x_seq [T, B, ...] with T folded into B."""
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"seq_apply: x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dim() < 2:
        raise ValueError(f"seq_apply expects x_seq of shape [T, B, ...], got {tuple(x_seq.shape)}")
    T, B = x_seq.shape[:2]
    y = x_seq.flatten(0, 1)
    for m in module if isinstance(module, (list, tuple, nn.Sequential, nn.ModuleList)) else (module,):
        y = m(y)
    return y.view((T, B) + tuple(y.shape[1:]))


class MultiStep(nn.Sequential):
    """MultiStep(layer, ...): stateless torch layers applied to [T, B, ...] by folding T into the batch.

    Only for layers without state across time (conv, linear, pooling, flatten, dropout, BN over T*B):
    the layers see T*B independent samples. Submodules keep their own names ("0", "1", ...).
    """

    def forward(self, x_seq: Tensor) -> Tensor:
        return seq_apply(list(self), x_seq)


def _check_5d(name: str, x: Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"{name} expects x_seq of shape [T, B, C, H, W], got {tuple(x.shape)}")


def _check_bn(bn: nn.Module, x, num_features: int, allow_4d: bool = True) -> None:
    """A BN layer's input: a floating tensor [T, B, C, H, W] (or [N, C, H, W]) with C = num_features, on the
    layer's device and of its dtype (outside autocast); torch's batch norm also takes float16 / bfloat16
    input with float32 parameters. Skipped inside a zoo model's forward (checked at the model's input)."""
    if in_model_call():
        return
    name = type(bn).__name__
    check_float_input(name, "x_seq", x)
    if x.dim() != 5 and not (allow_4d and x.dim() == 4):
        raise ValueError(
            f"{name} expects x_seq of shape [T, B, C, H, W]"
            + (" or [N, C, H, W]" if allow_4d else "")
            + f", got {tuple(x.shape)}"
        )
    if x.shape[-3] != num_features:
        raise ValueError(
            f"{name} was built for {num_features} channels but x_seq has {x.shape[-3]} (shape {tuple(x.shape)})"
        )
    p = bn._parameters.get("weight")  # BN's own weight (None when not affine), else the first
    p = p if p is not None else next(bn.parameters(), None)
    half_on_float = p is not None and p.dtype == torch.float32 and x.dtype in (torch.float16, torch.bfloat16)
    if p is not None:
        check_matches_parameters(name, "x_seq", x, bn, dtype=not half_on_float, ref=p)


def _check_features(cls: str, num_features) -> int:
    """The channel count of a BN layer, checked by name (torch's own error named neither)."""
    return _check_int(f"{cls}: num_features", num_features, minimum=1)


class SeqBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose statistics run over T*B*H*W: input [T, B, C, H, W] (or a plain [N, C, H, W]).

    A subclass of nn.BatchNorm2d, so its parameters and buffers have the usual names and shapes.
    """

    def __init__(self, num_features: int, *args, **kw):
        super().__init__(_check_features(type(self).__name__, num_features), *args, **kw)

    def forward(self, x: Tensor) -> Tensor:
        _check_bn(self, x, self.num_features)
        if x.dim() == 4:
            return super().forward(x)
        return super().forward(x.flatten(0, 1)).view(x.shape)


class TdBatchNorm2d(nn.BatchNorm2d):
    """Threshold-dependent BN (tdBN, Zheng et al. 2021): statistics over T*B*H*W, then
    y = lambda * alpha * V_th * (x - mean) / sqrt(var + eps) + beta.

    lambda (``weight``, init 1) and beta (``bias``, init 0) are the learnable per-channel affine of the
    paper; alpha and V_th are constants (alpha = 1 normally, 1/sqrt(2) for the two BNs whose outputs are
    added in a residual block). The scale alpha * V_th is applied in the forward, not folded into the
    initial weight, so the gradient w.r.t. lambda is the paper's.
    """

    def __init__(
        self,
        num_features: int,
        alpha: float = 1.0,
        v_threshold: float = 1.0,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        **kw,
    ):
        if not kw.pop("affine", True):
            raise ValueError("TdBatchNorm2d: affine must be True (lambda and beta are its learnable scale and shift)")
        super().__init__(_check_features("TdBatchNorm2d", num_features), eps=eps, momentum=momentum, affine=True, **kw)
        self.alpha = float(alpha)
        self.v_threshold = float(v_threshold)

    def forward(self, x: Tensor) -> Tensor:
        _check_bn(self, x, self.num_features)
        shape = x.shape
        if x.dim() == 5:
            x = x.flatten(0, 1)
        self._check_input_dim(x)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.momentum is None and self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None  # registered by BatchNorm with track_running_stats
            momentum = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or not self.track_running_stats
        y = F.batch_norm(
            x,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            self.weight * (self.alpha * self.v_threshold),
            self.bias,
            use_batch,
            momentum,
            self.eps,
        )
        return y.view(shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}, v_threshold={self.v_threshold}"


class TEBN(nn.Module):
    """Temporal effective BN (Duan et al. 2022): BN with statistics shared over T*B*H*W, then a learnable
    scale per time step: y[t] = p[t] * BN(x)[t]. ``p`` has shape [T, 1, 1, 1, 1], init 1.

    Input [T, B, C, H, W] with exactly the T given at construction.
    """

    def __init__(self, num_features: int, T: int, eps: float = 1e-5, momentum: Optional[float] = 0.1):
        super().__init__()
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an int >= 1, got {T!r}")
        self.T = T
        self.bn = nn.BatchNorm2d(_check_features("TEBN", num_features), eps=eps, momentum=momentum)
        self.p = nn.Parameter(torch.ones(T, 1, 1, 1, 1))

    def forward(self, x_seq: Tensor) -> Tensor:
        _check_bn(self, x_seq, self.bn.num_features, allow_4d=False)
        if x_seq.shape[0] != self.T:
            raise ValueError(f"TEBN was built for T={self.T} but x_seq has T={x_seq.shape[0]}")
        # p in the input's dtype: a float32 p would promote a 16-bit sequence (BN itself keeps its dtype)
        return self.bn(x_seq.flatten(0, 1)).view(x_seq.shape) * self.p.to(x_seq.dtype)


# ------------------------------------------------------------------------------------------------
# encoders: a static input [B, ...] -> a sequence [T, B, ...]
# ------------------------------------------------------------------------------------------------
def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    return T


def direct_encode(x: Tensor, T: int) -> Tensor:
    """Direct (analog) encoding: the same input at every step, [B, ...] -> [T, B, ...] (a broadcast view)."""
    _check_T(T)
    if not isinstance(x, Tensor):
        raise TypeError(f"direct_encode: x must be a torch.Tensor, got {type(x).__name__}")
    return x.unsqueeze(0).expand((_check_T(T),) + tuple(x.shape))


def poisson_encode(x: Tensor, T: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Poisson (rate) encoding: S[t] = 1 with probability x, independently per step; x must be in [0, 1]."""
    _check_T(T)
    check_float_input("poisson_encode", "x", x)
    # values are unknown on the meta device (shape inference): only real tensors are range-checked
    if x.numel() and x.device.type != "meta" and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError("poisson_encode needs intensities in [0, 1], not NaN (normalise the input first)")
    # the uniform draw in float32 at least: bfloat16 / float16 draws are so coarse that an intensity of 0.001
    # fired at 0.003 / 0.0013
    draw = torch.float64 if x.dtype == torch.float64 else torch.float32
    u = torch.rand((T,) + tuple(x.shape), generator=generator, device=x.device, dtype=draw)
    return (u < x.unsqueeze(0).to(draw)).to(x.dtype)


class DirectEncoder(nn.Module):
    """Repeats an analogue input over T steps (direct_encode): x [B, ...] -> [T, B, ...], the first layer
    then sees the same image at every step."""

    def __init__(self, T: int):
        super().__init__()
        self.T = _check_T(T)

    def forward(self, x: Tensor) -> Tensor:
        return direct_encode(x, self.T)


class PoissonEncoder(nn.Module):
    """Rate-codes intensities in [0, 1] as Poisson spikes over T steps (poisson_encode): x [B, ...] ->
    [T, B, ...] of 0/1 in x's dtype, spike with probability x at each step (torch's global generator)."""

    def __init__(self, T: int):
        super().__init__()
        self.T = _check_T(T)

    def forward(self, x: Tensor) -> Tensor:
        return poisson_encode(x, self.T)


# ------------------------------------------------------------------------------------------------
# TET loss (Deng et al. 2022)
# ------------------------------------------------------------------------------------------------
def tet_loss(
    out_seq: Tensor, target: Tensor, lamb: float = 1e-3, means: float = 1.0, label_smoothing: float = 0.0
) -> Tensor:
    """Temporal efficient training: (1 - lamb) * mean_t CE(O[t], y) + lamb * MSE(O, means).

    out_seq: [T, B, classes] outputs of every step (not averaged); target: [B] class indices.
    The mean over t of per-step cross-entropies equals one cross-entropy over the T*B folded rows.
    """
    if not isinstance(out_seq, Tensor) or not out_seq.is_floating_point():
        got = out_seq.dtype if isinstance(out_seq, Tensor) else type(out_seq).__name__
        raise TypeError(f"tet_loss: out_seq must be a floating-point tensor, got {got}")
    if out_seq.dim() != 3:
        raise ValueError(f"tet_loss expects out_seq of shape [T, B, classes], got {tuple(out_seq.shape)}")
    if (
        not isinstance(target, Tensor)
        or target.is_floating_point()
        or target.is_complex()
        or target.dtype == torch.bool
    ):
        got = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"tet_loss: target must be an integer tensor of class indices, got {got}")
    if tuple(target.shape) != (out_seq.shape[1],):
        raise ValueError(
            f"tet_loss: target must have shape [B] = ({out_seq.shape[1]},) for out_seq of shape "
            f"{tuple(out_seq.shape)}, got {tuple(target.shape)}"
        )
    for name, value in (("lamb", lamb), ("means", means), ("label_smoothing", label_smoothing)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"tet_loss: {name} must be a finite number, got {value!r}")
    if not 0.0 <= lamb <= 1.0:
        raise ValueError(f"tet_loss: lamb must be in [0, 1] (the MSE term's weight), got {lamb}")
    T = out_seq.shape[0]
    if T == 0:
        raise ValueError("tet_loss: out_seq has no time step (T = 0)")
    # cross_entropy takes int64 (or uint8) class indices: other integer dtypes are converted
    ce = F.cross_entropy(out_seq.flatten(0, 1), target.long().repeat(T), label_smoothing=label_smoothing)
    if lamb == 0:
        return ce
    mse = (out_seq - means).pow(2).mean()
    return (1.0 - lamb) * ce + lamb * mse


class TETLoss(nn.Module):
    """tet_loss as a module: (1 - lamb) mean_t CE(O[t], y) + lamb MSE(O, means) on outputs [T, B, classes] and
    class indices [B] (Deng et al. 2022, temporal efficient training)."""

    def __init__(self, lamb: float = 1e-3, means: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        self.lamb, self.means, self.label_smoothing = lamb, means, label_smoothing

    def forward(self, out_seq: Tensor, target: Tensor) -> Tensor:
        return tet_loss(out_seq, target, self.lamb, self.means, self.label_smoothing)
