"""Surrogate gradients: the one table shared by spikeforge.ops (names -> native ids) and
spikeforge.reference (the formulas in PyTorch). csrc/core/surrogate.h holds the same formulas for the
kernels; docs/neurons.md lists them for users.

g'(x) is the derivative used for dS/dH in backward, x = H - threshold. Two groups:
- SpikingJelly's conventions (ids 0-7): every op family accepts them.
- snnTorch 1.0's ``snntorch.surrogate`` functions (ids 8-13), for the neuron ops (the snnTorch models
  above all): ``fast_sigmoid(slope)``, its ``triangular(threshold)`` (as written there: +threshold
  below 0, -threshold from 0 on), ``straight_through_estimator()``, ``spike_rate_escape(beta, slope)``,
  ``heaviside()`` (the gradient passes where the spike fired) and ``disabled`` (snnTorch's
  surrogate_disable=True: no gradient through the spike at all).

The snnTorch models (ops.leaky / synaptic / alpha_neuron) take SNNTORCH_SURROGATES: those functions plus
atan and sigmoid, with snnTorch's default parameters (its sigmoid's slope is 25, SpikingJelly's alpha 4).

Norse's current-based LIF (ops.norse_lif) takes NORSE_SURROGATES; norse_method() maps a Norse threshold
``method`` and its ``alpha`` onto one of them where the two derivatives are the same function.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

__all__ = [
    "SURROGATES",
    "SPIKINGJELLY_SURROGATES",
    "SNNTORCH_SURROGATES",
    "NORSE_SURROGATES",
    "SECOND_PARAMETER",
    "SurrogateSpec",
    "surrogate_grad",
    "spike_fn",
    "norse_method",
    "NUM_SPIKINGJELLY",
]


class SurrogateSpec(NamedTuple):
    id: int  # spikeforge::Surrogate in csrc/core/surrogate.h
    alpha: float  # default parameter


# name -> (native id, default alpha)
SURROGATES: dict[str, SurrogateSpec] = {
    "sigmoid": SurrogateSpec(0, 4.0),
    "atan": SurrogateSpec(1, 2.0),
    "rect": SurrogateSpec(2, 1.0),
    "triangle": SurrogateSpec(3, 1.0),
    "piecewise_quadratic": SurrogateSpec(3, 1.0),
    "piecewise_exp": SurrogateSpec(4, 1.0),
    "erf": SurrogateSpec(5, 2.0),
    "super_spike": SurrogateSpec(6, 1.0),
    "soft_sign": SurrogateSpec(7, 2.0),
    "fast_sigmoid": SurrogateSpec(8, 25.0),
    "snntorch_triangular": SurrogateSpec(9, 1.0),
    "straight_through": SurrogateSpec(10, 1.0),
    "spike_rate_escape": SurrogateSpec(11, 25.0),
    "heaviside": SurrogateSpec(12, 1.0),
    "disabled": SurrogateSpec(13, 1.0),
}
NUM_SPIKINGJELLY = 8  # ids below this are accepted by every op family
SPIKINGJELLY_SURROGATES = {name: spec for name, spec in SURROGATES.items() if spec.id < NUM_SPIKINGJELLY}
# The snnTorch models' set (csrc/core/neuron.h surrogate_allowed), with snnTorch's defaults.
SNNTORCH_SURROGATES = {
    name: (SurrogateSpec(spec.id, 25.0) if name == "sigmoid" else spec)
    for name, spec in SURROGATES.items()
    if spec.id >= NUM_SPIKINGJELLY or name in ("atan", "sigmoid")
}
# norse_lif's set (csrc/core/neuron.h surrogate_allowed). fast_sigmoid's default slope is 1 here: Norse's
# SuperSpike ("super", its default method) computes 1 / (|x| + 1)^2 whatever its alpha.
NORSE_SURROGATES = {
    name: (SurrogateSpec(spec.id, 1.0) if name == "fast_sigmoid" else spec)
    for name, spec in SURROGATES.items()
    if name in ("fast_sigmoid", "disabled", "triangle", "sigmoid", "erf", "atan")
}

# Norse 1.1's threshold methods (norse/torch/functional/threshold.py), x = v_dec - v_th, k its alpha:
#   super       1 / (|x| + 1)^2 (k unused)            -> fast_sigmoid, slope 1
#   heaviside   no gradient through the spike         -> disabled
#   triangle    k relu(1 - |x|)                       -> triangle(1) = relu(1 - |x|) when k = 1
#   tanh        1 - tanh(k x)^2                       -> sigmoid(4) = 4 s (1 - s), s = sigmoid(4 x), when k = 2
#   heavi_erfc  2 / sqrt(pi) exp(-(k x)^2)            -> erf(2) when k = 2
#   circ        k^3 / (k^2 + x^2)^(3/2)               no spikeforge surrogate
#   adjoint     Norse's adjoint (EventProp-style) solver, not a surrogate
# For other k the spikeforge function differs from Norse's by a factor (its height is not tied to its width).
_NORSE_EXACT = {
    "super": ("fast_sigmoid", 1.0, None),
    "heaviside": ("disabled", 1.0, None),
    "triangle": ("triangle", 1.0, 1.0),
    "tanh": ("sigmoid", 4.0, 2.0),
    "heavi_erfc": ("erf", 2.0, 2.0),
}


def norse_method(method: str, alpha) -> tuple[str, float]:
    """(surrogate name, surrogate alpha) of ops.norse_lif that gives Norse's threshold `method` with its
    parameter `alpha` (LIFParameters.method / .alpha) the same gradient; ValueError where none does."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str (Norse's LIFParameters.method), got {type(method).__name__}")
    if method not in _NORSE_EXACT:
        why = {
            "circ": "its derivative k^3 / (k^2 + x^2)^(3/2) has no spikeforge surrogate",
            "adjoint": "Norse's adjoint solver is not a surrogate gradient",
        }.get(method, "Norse has no such method")
        raise ValueError(
            f"method: {method!r} does not map onto a spikeforge surrogate ({why}); supported: "
            f"{sorted(_NORSE_EXACT)}, or pass surrogate= directly"
        )
    name, sg_alpha, needs = _NORSE_EXACT[method]
    if needs is not None:
        try:
            k = float(alpha)
        except (TypeError, ValueError):
            raise TypeError(
                f"alpha must be a number (Norse's LIFParameters.alpha), got {type(alpha).__name__}"
            ) from None
        if k != needs:
            raise ValueError(
                f"alpha: Norse's {method!r} with alpha={k} has no spikeforge surrogate (it equals "
                f"{name}({sg_alpha}) only at alpha={needs}); pass surrogate= to choose one"
            )
    return name, sg_alpha


# The default second parameter of the surrogates that have one (beta of spike_rate_escape).
SECOND_PARAMETER: dict[str, float] = {"spike_rate_escape": 1.0}


def surrogate_grad(name: str, x: torch.Tensor, alpha: float, beta: Optional[float] = None) -> torch.Tensor:
    """g'(x) for surrogate `name` at x = H - threshold."""
    a = alpha
    if name == "sigmoid":
        # a s (1 - s) with s = sigmoid(a x), written as a e / (1 + e)^2 with e = exp(-a |x|): the same function
        # without the cancellation of 1 - s (in float32, a s (1 - s) is 0 for |a x| > 17 and off by up to 100%
        # before that). The kernels use this form too (csrc/core/surrogate.h).
        e = torch.exp(-a * x.abs())
        return a * e / (1 + e) ** 2
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
    if name == "fast_sigmoid":
        return 1 / (a * x.abs() + 1) ** 2
    if name == "snntorch_triangular":
        return torch.where(x >= 0, torch.full_like(x, -a), torch.full_like(x, a))
    if name == "straight_through":
        return torch.ones_like(x)
    if name == "spike_rate_escape":
        b = SECOND_PARAMETER[name] if beta is None else beta
        return a * torch.exp(-b * (x - 1).abs())
    if name == "heaviside":
        return (x > 0).to(x.dtype)
    if name == "disabled":
        return torch.zeros_like(x)
    raise ValueError(f"surrogate: unknown surrogate {name!r}; expected one of {sorted(SURROGATES)}")


class _SpikeFn(torch.autograd.Function):
    """Heaviside(x) forward (x >= 0, or x > 0 when strict), surrogate derivative backward. The backward is
    written in torch ops, so it is itself differentiable (second-order gradients of the reference); the
    setup_context form and the generated vmap rule let torch.func's transforms run it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, name, alpha, beta, strict):
        return ((x > 0) if strict else (x >= 0)).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, name, alpha, beta, _ = inputs
        ctx.save_for_backward(x)
        ctx.params = (name, alpha, beta)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        name, alpha, beta = ctx.params
        return grad * surrogate_grad(name, x, alpha, beta), None, None, None, None


def spike_fn(
    x: torch.Tensor,
    name: str = "sigmoid",
    alpha: Optional[float] = None,
    beta: Optional[float] = None,
    strict: bool = False,
) -> torch.Tensor:
    """S = Heaviside(x) (x >= 0; x > 0 with strict=True, snnTorch's convention) with the surrogate `name`
    in backward."""
    spec = SURROGATES[name]
    return _SpikeFn.apply(
        x,
        name,
        float(spec.alpha if alpha is None else alpha),
        float(SECOND_PARAMETER.get(name, 0.0) if beta is None else beta),
        strict,
    )
