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
import copy
import threading

import torch
from torch import Tensor, nn


def detach_value(value):
    """value with every tensor in it detached (tensors, lists / tuples of tensors, anything else as is)."""
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(detach_value(v) for v in value)
    return value


class CopiesDetached:
    """Mixin of a stateful module (before nn.Module in the bases): copy.deepcopy gives a copy whose state holds
    the values, detached. After a forward with autograd the state is in the graph, and a tensor in a graph
    cannot be deep-copied, so a best-model snapshot or an EMA copy taken in a training loop raised; the
    original keeps its state and its graph."""

    def __deepcopy__(self, memo):
        snapshot = self._state_snapshot()
        try:
            self.detach()
            cls = type(self)
            new = cls.__new__(cls)
            memo[id(self)] = new
            new.__setstate__(copy.deepcopy(self.__dict__, memo))
            return new
        finally:
            self._state_restore(snapshot)


def walk(model: nn.Module):
    """model and every submodule, depth first (model.modules() without the qualified names it builds, which
    cost more than the visit itself on a model's every forward); a shared submodule comes once."""
    seen, stack = set(), [model]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        yield m
        stack.extend(c for c in reversed(m._modules.values()) if c is not None)


def first_parameter(model: nn.Module):
    """The first parameter of model in modules() order (None if it has none), without a full walk."""
    for m in walk(model):
        for p in m._parameters.values():
            if p is not None:
                return p
    return None


def _method(m: nn.Module, name: str):
    """m's method `name` if it has one (looked up on the class first: a missing attribute on an instance
    costs nn.Module.__getattr__'s exception, which adds up over every module of a model on every call)."""
    if hasattr(type(m), name) or name in m.__dict__:
        f = getattr(m, name, None)
        return f if callable(f) else None
    return None


def reset_module(m: nn.Module) -> None:
    """reset() m if it has one, unless it is a container whose reset() only resets its children
    (``_reset_delegates = True``): a walk over a model visits those children anyway."""
    if not getattr(type(m), "_reset_delegates", False):
        f = _method(m, "reset")
        if f is not None:
            f()


def detach_module(m: nn.Module) -> None:
    """detach() m if it has one (the same rule as reset_module)."""
    if not getattr(type(m), "_reset_delegates", False):
        f = _method(m, "detach")
        if f is not None:
            f()


# ids of the modules inside the atomic() blocks running now in this thread: a block nested in one that
# already covers it (an attention block inside a model's forward) takes no second snapshot
_COVERED = threading.local()


def in_model_call() -> bool:
    """True inside a zoo model's forward (atomic(reset=True)) in this thread: the model checked its input
    at the boundary and every tensor its layers see was made by the model, so the layers' own input checks
    (BN, attention blocks) are skipped there; they cost a few microseconds per layer and call."""
    return getattr(_COVERED, "models", 0) > 0


@contextlib.contextmanager
def atomic(model: nn.Module, reset: bool = False):
    """Runs the body; if it raises, every stateful module inside ``model`` gets back the state it had
    before (a call that raises changes nothing). Snapshots hold references, not copies: the modules
    replace their state tensors on every call and never write into them. reset=True also resets every
    module (as nn.reset_net) in the same walk over the model: the models do it at the start of a forward."""
    if torch.compiler.is_compiling():  # dynamo applies a traced call's attribute writes after its graph ran
        if reset:
            for m in model.modules():
                reset_module(m)
        yield
        return
    # (model.modules() above: dynamo traces it; walk() below is the cheaper eager walk)
    active = getattr(_COVERED, "stack", None)
    if active is None:
        active = _COVERED.stack = []
    if not reset and any(id(model) in ids for ids in active):
        yield
        return
    ids, saved = set(), []
    for m in walk(model):
        ids.add(id(m))
        if getattr(type(m), "_state_snapshot", None) is not None:
            saved.append((m, m._state_snapshot()))
        if reset:
            reset_module(m)
    active.append(ids)
    if reset:
        _COVERED.models = getattr(_COVERED, "models", 0) + 1
    try:
        yield
    except BaseException:
        for m, snap in saved:
            m._state_restore(snap)
        raise
    finally:
        active.remove(ids)
        if reset:
            _COVERED.models -= 1
