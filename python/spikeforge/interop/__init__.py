"""Interoperability with other SNN libraries (all optional: nothing here imports a peer at import time).

- ``to_nir(model, input_shape)`` / ``from_nir(graph)``: the Neuromorphic Intermediate Representation
  (needs ``pip install nir``); see ``spikeforge.interop.nir_io`` for the time-step convention.
- ``spikeforge.interop.spikingjelly.patch(model)``: run a SpikingJelly model's neurons on spikeforge's fused
  kernels (they stay SpikingJelly modules).
- ``spikeforge.interop.snntorch.patch(model)``: the same for snnTorch's Leaky / Synaptic / Alpha, one step
  per call (snnTorch's code) or whole sequences per call (step_mode="m"), with snnTorch's numbers.

The submodules load on first attribute access, so ``import spikeforge`` never imports nir, SpikingJelly
or snnTorch. ``from spikeforge.interop import *`` gives to_nir / from_nir / nir_io only: the two drop-in
modules need their peer library and are imported by name.
"""

from __future__ import annotations

import importlib

__all__ = ["to_nir", "from_nir", "nir_io"]  # (not the drop-ins: a star import would import their peers)

_SUBMODULES = ("nir_io", "spikingjelly", "snntorch")


def to_nir(model, input_shape=None, *, dt=None):
    """Export a sequential spikeforge model to a nir.NIRGraph (see spikeforge.interop.nir_io.to_nir)."""
    from . import nir_io

    return nir_io.to_nir(model, input_shape, dt=nir_io.DEFAULT_DT if dt is None else dt)


def from_nir(graph, *, dt=None, unit_r=None):
    """A runnable multi-step module from a nir.NIRGraph or a NIR file (see spikeforge.interop.nir_io.from_nir)."""
    from . import nir_io

    return nir_io.from_nir(graph, dt=dt, unit_r=unit_r)  # dt None: the graph's own (nir_io.from_nir)


def _swap_modules(model, swaps):
    """Replaces each (qualified name, new module) of swaps inside model (the patchers' last step); the name
    "" replaces the model itself. Returns the model, which is new when it was replaced."""
    for name, new in swaps:
        if not name:
            model = new
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
