"""Surrogate gradients of shared/SEMANTICS.md in plain PyTorch (mirrors csrc/core/surrogate.h)."""
from __future__ import annotations

import math

import torch

# name -> (native id, default alpha). Ids match spikeforge::Surrogate in csrc/core/surrogate.h.
SURROGATES: dict[str, tuple[int, float]] = {
    "sigmoid": (0, 4.0),
    "atan": (1, 2.0),
    "rect": (2, 1.0),
    "triangle": (3, 1.0),
    "piecewise_quadratic": (3, 1.0),
    "piecewise_exp": (4, 1.0),
    "erf": (5, 2.0),
    "super_spike": (6, 1.0),
    "soft_sign": (7, 2.0),
}


def surrogate_grad(name: str, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """g'(x) for surrogate `name` at x = H - V_th."""
    a = alpha
    if name == "sigmoid":
        s = torch.sigmoid(a * x)
        return a * s * (1 - s)
    if name == "atan":
        return a / (2 * (1 + (math.pi / 2 * a * x) ** 2))
    if name == "rect":
        return torch.where(x.abs() < 0.5 / a, torch.full_like(x, a), torch.zeros_like(x))
    if name in ("triangle", "piecewise_quadratic"):
        return torch.clamp(a - a * a * x.abs(), min=0)
    if name == "piecewise_exp":
        return a / 2 * torch.exp(-a * x.abs())
    if name == "erf":
        return a / math.sqrt(math.pi) * torch.exp(-((a * x) ** 2))
    if name == "super_spike":
        return a / (a * x.abs() + 1) ** 2
    if name == "soft_sign":
        return 1 / (2 * a * (1 / a + x.abs()) ** 2)
    raise ValueError(f"surrogate: unknown surrogate {name!r}; expected one of {sorted(SURROGATES)}")


class _SpikeFn(torch.autograd.Function):
    """Heaviside(x) forward (Heaviside(0) = 1), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x, name, alpha):
        ctx.save_for_backward(x)
        ctx.name, ctx.alpha = name, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * surrogate_grad(ctx.name, x, ctx.alpha), None, None


def spike_fn(x: torch.Tensor, name: str = "sigmoid", alpha: float | None = None) -> torch.Tensor:
    """S = Heaviside(x) with the surrogate `name` in backward."""
    if alpha is None:
        alpha = SURROGATES[name][1]
    return _SpikeFn.apply(x, name, float(alpha))
