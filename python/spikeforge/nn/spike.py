"""Synaptic layers fed by spikes: SpikeLinear and SpikeConv2d over spikeforge.ops.spike_linear /
spike_conv2d (event-driven below the firing-rate crossover, 1-bit saved input).

Input [T, B, ...] or [N, ...] (the layers are stateless: time steps are just more rows). On CUDA the
path (event-driven or dense) and the input kind are measured on the first call and cached, so later
calls make no host synchronisation and can be captured in a CUDA graph; replan() measures again. A first
call that raises caches nothing. On CPU the measurement is free and is made on every call. Setting
mode / input_kind fixes them by hand.

SpikeInputConv2d is the plain nn.Conv2d the zoo models (spikeforge.models) build for spike inputs: same
parameters, and with ``compact`` its training forward runs spike_input_conv (event-driven on CPU below the
crossover, input kept for backward as bits / uint8).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import spike as _spike
from ..ops._common import autocast_on

__all__ = ["SpikeLinear", "SpikeConv2d", "SpikeInputConv2d"]


def _check_spikes(layer: "_SpikeLayer", s) -> None:
    """The layer's input against its weight, in the layer's words (the op would name its own arguments)."""
    name, w = type(layer).__name__, layer.weight
    if not isinstance(s, Tensor):
        raise TypeError(f"{name}: s must be a torch.Tensor, got {type(s).__name__}")
    if s.is_complex():
        raise TypeError(f"{name}: s must be a real tensor (float, integer or bool), got {s.dtype}")
    if s.device != w.device:
        raise ValueError(
            f"{name}: s is on {s.device} but the layer's weight is on {w.device}; move the input "
            f"(s.to('{w.device}')) or the layer (layer.to('{s.device}'))"
        )
    if s.is_floating_point() and s.dtype != w.dtype and not autocast_on(s.device):  # autocast: ops cast both
        raise TypeError(
            f"{name}: s is {s.dtype} but the layer's weight is {w.dtype}; convert the input "
            f"(s.to({w.dtype})) or the layer (layer.to({s.dtype})); integer and bool spikes are "
            "converted to the weight's dtype"
        )
    layer._check_shape(s)


class _SpikeLayer(nn.Module):
    _layer = ""
    weight: nn.Parameter  # set by the subclasses
    bias: Optional[nn.Parameter]

    def __init__(self, mode: str, input_kind: str):
        super().__init__()
        _spike._check_choice("mode", mode, _spike._MODES)
        _spike._check_choice("input_kind", input_kind, _spike._KINDS)
        self.mode, self.input_kind = mode, input_kind
        self._plan: Optional[tuple[str, str]] = None

    def _check_shape(self, s: Tensor) -> None:
        """The input's shape against the layer's (subclasses), named in the layer's terms."""

    def replan(self) -> None:
        """Forget the cached (mode, input_kind): the next CUDA call measures its input again."""
        self._plan = None

    def _state_snapshot(self):
        return self._plan

    def _state_restore(self, snapshot) -> None:
        self._plan = snapshot

    def _choose(self, s: Tensor) -> tuple[tuple[str, str], bool]:
        """((mode, input_kind) for this call, whether it was measured now). A plan measured on a first CUDA
        call is returned, not stored: _run stores it once the op has accepted the input, so a call that
        raises leaves no plan behind."""
        if s.device.type != "cuda" or torch.compiler.is_compiling():
            return (self.mode, self.input_kind), False
        if self._plan is not None:
            return self._plan, False
        nnz, kind = ops.spike_stats(s)  # one synchronisation, then cached
        mode = self.mode
        if mode == "auto":
            key = self._layer if torch.is_grad_enabled() else self._layer + "_fwd"
            limit = _spike.CROSSOVER["cuda"].get(key)
            rate = nnz / max(s.numel(), 1)
            mode = "sparse" if kind != "float" and limit is not None and rate <= limit else "dense"
        return (mode, kind if self.input_kind == "auto" else self.input_kind), True

    def _run(self, s: Tensor, call):
        plan, measured = self._choose(s)
        y = call(*plan)
        if measured:
            self._plan = plan
        return y

    def _init(self, fan_in: int) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)


class SpikeLinear(_SpikeLayer):
    """Y = S W^T + b on spikes s [..., in_features] (e.g. [T, B, in_features]); nn.Linear's init."""

    _layer = "linear"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        mode: str = "auto",
        input_kind: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__(mode, input_kind)
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        fk = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **fk))
        self.bias = nn.Parameter(torch.empty(out_features, **fk)) if bias else None
        self._init(in_features)

    def _check_shape(self, s: Tensor) -> None:
        if s.dim() < 1 or s.shape[-1] != self.in_features:
            raise ValueError(
                f"SpikeLinear({self.in_features}, {self.out_features}): s must end in in_features = "
                f"{self.in_features} (e.g. [T, B, {self.in_features}]), got shape {list(s.shape)}"
            )

    def forward(self, s: Tensor, grad_mask: Optional[Tensor] = None) -> Tensor:
        _check_spikes(self, s)
        return self._run(
            s,
            lambda mode, kind: ops.spike_linear(
                s, self.weight, self.bias, mode=mode, input_kind=kind, grad_mask=grad_mask
            ),
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"mode={self.mode!r}"
        )


class SpikeConv2d(_SpikeLayer):
    """2-D convolution on spikes s [N, C, H, W] or [T, B, C, H, W]; nn.Conv2d's init (zero padding)."""

    _layer = "conv2d"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        *,
        mode: str = "auto",
        input_kind: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__(mode, input_kind)
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups ({groups}) must divide in_channels ({in_channels}) and out_channels ({out_channels})"
            )
        kh, kw = _spike._pair("kernel_size", kernel_size, 1)
        self.stride = _spike._pair("stride", stride, 1)
        self.padding = _spike._pair("padding", padding, 0)
        self.dilation = _spike._pair("dilation", dilation, 1)
        self.in_channels, self.out_channels, self.kernel_size, self.groups = in_channels, out_channels, (kh, kw), groups
        fk = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw, **fk))
        self.bias = nn.Parameter(torch.empty(out_channels, **fk)) if bias else None
        self._init(in_channels // groups * kh * kw)

    def _check_shape(self, s: Tensor) -> None:
        if s.dim() not in (4, 5) or s.shape[-3] != self.in_channels:
            raise ValueError(
                f"SpikeConv2d({self.in_channels}, {self.out_channels}): s must be [N, {self.in_channels}, H, W] or "
                f"[T, B, {self.in_channels}, H, W] (in_channels = {self.in_channels}), got shape {list(s.shape)}"
            )

    def forward(self, s: Tensor, grad_mask: Optional[Tensor] = None) -> Tensor:
        _check_spikes(self, s)
        return self._run(
            s,
            lambda mode, kind: ops.spike_conv2d(
                s,
                self.weight,
                self.bias,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
                mode=mode,
                input_kind=kind,
                grad_mask=grad_mask,
            ),
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, mode={self.mode!r}"
        )


# --------------------------------------------------------------------------------------------
# convolutions of the models (spikeforge.models): spike-input convs that keep their input compactly
# --------------------------------------------------------------------------------------------
class _ConvSavingUint8(torch.autograd.Function):
    """conv2d whose input is known to hold small non-negative integers (spikes, or SEW-ADD sums of spikes):
    the input is saved for the weight gradient as uint8 (1 byte instead of 4) and cast back in backward,
    which is exact for integers in 0..255. Forward and gradients are bitwise those of F.conv2d."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation, groups):
        y = torch.nn.functional.conv2d(x, weight, None, stride, padding, dilation, groups)
        # y.dtype is the dtype the convolution ran in: under autocast lower than x's and weight's
        ctx.conf = (stride, padding, dilation, groups, y.dtype)
        ctx.save_for_backward(x.to(torch.uint8), weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        x8, weight = ctx.saved_tensors
        stride, padding, dilation, groups, dtype = ctx.conf
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # the backward runs in the forward's compute dtype; autograd casts gx / gw to x's / weight's dtype
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad.to(dtype),
            x8.to(dtype),
            weight.to(dtype),
            None,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0, 0],
            groups,
            [need_x, need_w, False],
        )
        return gx, gw, None, None, None, None


def spike_input_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """conv(x) without its bias, for x that holds spikes or small integer spike counts (0..255), training.

    On CPU (float32 / float64, no autocast) through ops.spike_conv2d in mode "auto": event-driven forward and
    weight gradient where the firing rate is below the measured crossover (ops.spike.CROSSOVER), the dense
    convolution above it, and the input kept for backward as 1 bit per spike (uint8 for counts). Elsewhere
    (CUDA, where the event path does not pay and the rate check would synchronise; autocast) the dense
    convolution keeping a uint8 copy of the input (_ConvSavingUint8). Either way the values are those of
    F.conv2d up to the order of the float additions."""
    # SpikeInputConv2d, the caller, runs nn.Conv2d's own forward for string padding ("same" / "valid")
    assert not isinstance(conv.padding, str)
    if (
        x.device.type == "cpu"
        and _spike._native_ok(x)
        and x.dtype == conv.weight.dtype
        and not torch.is_autocast_enabled("cpu")
    ):
        # compiled, the kind is only known inside the op: promise counts (uint8 saved, checked) instead of
        # letting "auto" save the float input
        kind = "counts" if torch.compiler.is_compiling() else "auto"
        return _spike.spike_conv2d(
            x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups, mode="auto", input_kind=kind
        )
    return _ConvSavingUint8.apply(x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups)


class SpikeInputConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters; the same results up to the order of float additions) for inputs that are
    spikes or small integer spike counts (0..255): with ``compact`` (the default here) it runs
    spike_input_conv while training (event-driven below the firing-rate crossover on CPU, input kept for
    backward as bits / uint8; spikeforge backend of the models, the reference backend uses plain nn.Conv2d).
    A bias is added after the convolution, which saves nothing for backward. Not for real-valued inputs,
    which the compact copy would truncate."""

    def __init__(self, *args, compact: bool = True, **kw):
        super().__init__(*args, **kw)
        self.compact = bool(compact)

    def forward(self, x):
        if (
            not (self.compact and torch.is_grad_enabled() and self.weight.requires_grad)
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
        ):
            return super().forward(x)
        y = spike_input_conv(self, x)
        # the bias in y's dtype: under autocast y is bf16/fp16 like nn.Conv2d's output, and stays so
        return y if self.bias is None else y + self.bias.to(y.dtype).view(1, -1, 1, 1)
