"""What a tool that observes a model (a firing-rate monitor, a profiler) needs from spikeforge.nn.

- ``is_neuron(module)``: whether a module is a spiking neuron layer: spikeforge's neurons (IF / LIF /
  PLIF and their subclasses), the PSN family, or any class that sets ``spikeforge_neuron = True`` (the
  opt-in for neurons defined elsewhere).
- ``is_multi_step(module)``: whether its output is a whole sequence [T, ...] (dim 0 is time).
- ``run_through_forward(module)``: the zoo's fused BN + neuron (``nn.fused.bn_spike``) calls a neuron's
  kernel without its forward, so forward hooks on the neuron would not fire. While the returned handle
  lives, the module always runs through its forward (and hooks); ``handle.remove()`` ends that. Handles
  nest (two monitors on one model). Values are the same either way; the unfused path saves one more
  tensor per layer for backward.
"""

from __future__ import annotations

import weakref
from typing import Optional

from torch import nn

__all__ = ["is_neuron", "is_multi_step", "run_through_forward", "forward_required"]

# module -> number of live run_through_forward handles (weak: a dropped model leaves nothing behind)
_REQUIRED: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()


def is_neuron(module: nn.Module) -> bool:
    # the base classes: every spikeforge neuron, present and future, derives from one of them
    from .neuron import _Neuron
    from .psn import PSN, _Streaming

    return isinstance(module, (_Neuron, PSN, _Streaming)) or bool(getattr(type(module), "spikeforge_neuron", False))


def is_multi_step(module: nn.Module) -> bool:
    from .psn import PSN

    return isinstance(module, PSN) or getattr(module, "step_mode", None) == "m"


class _ForwardHandle:
    """Returned by run_through_forward; remove() releases it (idempotent)."""

    def __init__(self, module: nn.Module):
        self._module: Optional[weakref.ref[nn.Module]] = weakref.ref(module)
        _REQUIRED[module] = _REQUIRED.get(module, 0) + 1

    def remove(self) -> None:
        m = self._module() if self._module is not None else None
        self._module = None
        if m is None or m not in _REQUIRED:
            return
        left = _REQUIRED[m] - 1
        if left:
            _REQUIRED[m] = left
        else:
            del _REQUIRED[m]


def run_through_forward(module: nn.Module) -> _ForwardHandle:
    """Makes ``module`` run through its own forward (and hooks) until ``handle.remove()``."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return _ForwardHandle(module)


def forward_required(module: nn.Module) -> bool:
    """Whether some observer holds a run_through_forward handle on ``module`` (read by the fused paths)."""
    return module in _REQUIRED
