"""The state protocol of spikeforge.nn's stateful modules (a leaf: imports nothing from spikeforge).

A stateful module (the neurons, the PSN streaming windows, the attention blocks' attention state, the
spike layers' cached plans) implements

- ``reset()``: forget the state (the next call starts a new sequence);
- ``detach()``: keep the state's values but cut its autograd graph (truncated BPTT);
- ``_state_snapshot()`` / ``_state_restore(snapshot)``: an O(1) copy of the references that make up the
  state, so that a composite module can undo a call that raised half-way (``atomic``).

The state itself keeps its autograd graph after a call (as SpikingJelly's memories do): a loss on it, or
on a later chunk of the sequence that starts from it, backpropagates into the calls that produced it.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn


def detach_value(value):
    """value with every tensor in it detached (tensors, lists / tuples of tensors, anything else as is)."""
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(detach_value(v) for v in value)
    return value


def _stateful(model: nn.Module):
    return [m for m in model.modules() if callable(getattr(m, "_state_snapshot", None))]


@contextlib.contextmanager
def atomic(model: nn.Module):
    """Runs the body; if it raises, every stateful module inside ``model`` gets back the state it had
    before (a call that raises changes nothing). Snapshots hold references, not copies: the modules
    replace their state tensors on every call and never write into them."""
    if torch.compiler.is_compiling():  # dynamo applies a traced call's attribute writes after its graph ran
        yield
        return
    saved = [(m, m._state_snapshot()) for m in _stateful(model)]
    try:
        yield
    except BaseException:
        for m, snap in saved:
            m._state_restore(snap)
        raise
