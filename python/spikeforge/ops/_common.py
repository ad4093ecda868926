"""Argument validation and device plumbing shared by every op family (clear ValueError / TypeError
naming the argument, before any native call)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._native import native
from ..reference.surrogate import SURROGATES

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

def _check_number(name: str, value, *, positive: bool = False, allow_none: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    if _tracing():
        # Under torch.compile(dynamic=True) numbers may be symbolic and cannot be inspected here;
        # the custom op's schema and the native checks still reject bad values at run time.
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value

def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value

def _check_x(x_seq, name: str = "x_seq", min_dim: int = 1) -> None:
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {x_seq.dtype}")
    if x_seq.dim() < min_dim:
        shape = "[T, *]" if min_dim == 1 else "[*]"
        raise ValueError(f"{name} must have shape {shape} with at least {min_dim} dimension(s); "
                         f"got a tensor of shape {tuple(x_seq.shape)}")
    if x_seq.dtype == torch.float64 and x_seq.device.type == "cuda":
        raise TypeError(f"{name}: float64 is supported on CPU only (for gradcheck)")

def _check_surrogate(surrogate, alpha) -> tuple[int, float]:
    if not isinstance(surrogate, str):
        raise TypeError(f"surrogate must be a str, got {type(surrogate).__name__}")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate: unknown surrogate {surrogate!r}; expected one of {sorted(SURROGATES)}")
    sid, default_alpha = SURROGATES[surrogate]
    alpha = default_alpha if alpha is None else _check_number("alpha", alpha, positive=True)
    return sid, alpha

def _tracing() -> bool:
    return torch.compiler.is_compiling()

# Read once at import: a plain bool is a constant to torch.compile, while calling the nanobind
# function inside a traced op would be a graph break (dynamo cannot trace nb_func).
_NATIVE_CUDA = native is not None and bool(native.has_cuda())


_CPU = torch.device("cpu")


def _has_native(device: torch.device) -> bool:
    if native is None:
        return False
    if device == _CPU:  # compared first: reading device.type costs ~0.5 us per call (eager overhead)
        return True
    return device.type == "cuda" and _NATIVE_CUDA

def _stream(t: Tensor) -> int:
    """The current CUDA stream of t's device (kernels launch on it), 0 on CPU."""
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _flat(tensors):
    """Native tensor views hold at most 8 dims and the kernels only need element counts: flatten."""
    return tuple(t if t is None else t.view(-1) for t in tensors)
