"""Input checks shared by spikeforge.nn's modules and the models (imports only nn._state and ops._common).

A module checks its input before it runs anything, so that the error names the module and the argument
the user passed (``x_seq`` of a multi-step call, ``x`` of a single step) rather than an op's internal
argument, and so that no torch message from deep inside (a dtype mismatch in a convolution, a reshape)
reaches the user.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor, nn

from ..ops._common import autocast_on
from ._state import first_parameter

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_float_input(owner: str, name: str, x, min_dim: int = 0) -> Tensor:
    """x is a floating tensor of a dtype the kernels take (float64 on CPU only), with >= min_dim dims."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: {name} must be float32, float16, bfloat16 or float64, got {x.dtype}")
    if x.dtype == torch.float64 and x.device.type == "cuda":
        raise TypeError(f"{owner}: {name} is float64, which the kernels support on CPU only (for gradcheck)")
    if x.dim() < min_dim:
        raise ValueError(f"{owner}: {name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    return x


def check_matches_parameters(
    owner: str,
    name: str,
    x: Tensor,
    module: nn.Module,
    dtype: bool = True,
    kind: str = "module",
    ref: Optional[Tensor] = None,
) -> None:
    """x is on the device of module's parameters (ref: the one to compare with, default the first) and
    (dtype=True, outside autocast) of their dtype: a float64 or float16 input to a float32 model is an error
    that says so, not a torch message from the first convolution."""
    p = first_parameter(module) if ref is None else ref
    if p is None:
        return
    if x.device != p.device:
        raise ValueError(
            f"{owner}: {name} is on {x.device} but the {kind}'s parameters are on {p.device}; move "
            f"the input (x.to('{p.device}')) or the {kind} ({kind}.to('{x.device}'))"
        )
    if dtype and not x.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point tensor, got {x.dtype}; convert it (x.to({p.dtype}))")
    if dtype and x.dtype != p.dtype and not autocast_on(x.device):
        raise TypeError(
            f"{owner}: {name} is {x.dtype} but the {kind}'s parameters are {p.dtype}; convert the "
            f"input (x.to({p.dtype})) or the {kind} ({kind}.to({x.dtype})), or run under "
            "torch.autocast"
        )


def check_model_input(owner: str, x, T: int, in_channels: int, model: nn.Module) -> Tensor:
    """A zoo model's input: an image batch [B, C, H, W] (the same image at each of the T steps) or a sequence
    [T, B, C, H, W] of the model's T steps, with the model's channels, device and dtype. An empty batch
    (B = 0) or an empty sequence (no steps) gives an empty output."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(
            f"{owner}: x must be an image batch [B, C, H, W] or a sequence [T, B, C, H, W], got shape {tuple(x.shape)}"
        )
    if x.shape[-3] != in_channels:
        raise ValueError(
            f"{owner}: the model was built for {in_channels} input channels but x has "
            f"{x.shape[-3]} (shape {tuple(x.shape)})"
        )
    if x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"{owner}: x has empty images ({x.shape[-2]} x {x.shape[-1]} pixels, shape {tuple(x.shape)})")
    check_matches_parameters(owner, "x", x, model, kind="model")
    if x.dim() == 5 and x.shape[0] not in (T, 0):
        raise ValueError(
            f"{owner}: the model was built for T={T} steps but the sequence x has {x.shape[0]} "
            f"(shape {tuple(x.shape)}); build it with T={x.shape[0]}, or pass an image batch "
            "[B, C, H, W] to repeat it over T steps"
        )
    return x


_BN_SINGLE_VALUE = "Expected more than 1 value per channel when training"


@contextlib.contextmanager
def model_errors(owner: str, x: Tensor):
    """Says in the model's words what a too-small training input does to its batch norms (torch's message
    names an inner layer's shape): each needs more than one value per channel (T * B * H * W at its depth)."""
    try:
        yield
    except ValueError as e:
        if not str(e).startswith(_BN_SINGLE_VALUE):
            raise
        raise ValueError(
            f"{owner}: x of shape {tuple(x.shape)} is too small to train on: a batch norm deep in "
            "the model sees a single value per channel (T * B * H * W there); use a larger batch "
            "or image, or eval() mode"
        ) from e
