"""Drop-in backend for SpikingJelly models: patch(model) swaps neuron nodes for spikeforge's fused ones.

spikeforge's neurons follow SpikingJelly's equations (shared/SEMANTICS.md), so a swapped node computes
the same spikes; only the kernels change. Swapped, option for option:

    neuron.IFNode             -> spikeforge.nn.IF
    neuron.LIFNode            -> spikeforge.nn.LIF   (tau, decay_input)
    neuron.ParametricLIFNode  -> spikeforge.nn.PLIF  (the same learnable w Parameter object)
    neuron.PSN                -> spikeforge.nn.PSN   (weight shared; bias [T, 1] copied to [T])
    neuron.MaskedPSN          -> spikeforge.nn.MaskedPSN (weight shared, bias copied, lambda_ carried)
    neuron.SlidingPSN         -> spikeforge.nn.SlidingPSN (weight and bias shared)

with v_threshold, v_reset (None = soft reset), detach_reset, store_v_seq, step_mode ('m' stays multi-step,
's' becomes spikeforge's single-step mode) and the surrogate: surrogate.Sigmoid, ATan, Rect,
PiecewiseQuadratic, PiecewiseExp, Erf, SoftSign with their alpha, and SuperSpike with alpha = 1 (for
other alphas SpikingJelly's SuperSpike, alpha / (|x| + 1)^2, is not spikeforge's alpha / (alpha |x| + 1)^2).

Only these exact classes are swapped (a subclass may change the equations). A node that cannot be
swapped without changing numbers (another surrogate, spiking=False, a subclass) raises ValueError, or
with on_unsupported="skip" is left in place with a warning and listed in the report.

Membrane state is not carried over: patch between sequences (after functional.reset_net). After
patch(): build the optimizer (PSN/MaskedPSN biases are new Parameters), and keep calling SpikingJelly's
functional.reset_net(model) between batches: it calls reset() on the spikeforge modules
too (patch() clears its module cache).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from .. import nn as sfnn
from . import _swap_modules

__all__ = ["patch", "PatchReport", "surrogate_of"]


@dataclass
class PatchReport:
    """What patch() did: replaced [(qualified name, SpikingJelly class, spikeforge class)] and
    skipped [(qualified name, class, reason)]."""
    replaced: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"replaced {len(self.replaced)} module(s), skipped {len(self.skipped)}"]
        lines += [f"  {n}: {a} -> {b}" for n, a, b in self.replaced]
        lines += [f"  {n}: {a} left in place ({why})" for n, a, why in self.skipped]
        return "\n".join(lines)


class _Unsupported(Exception):
    pass


def _sj():
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError as e:
        raise ImportError("spikeforge.interop.spikingjelly needs SpikingJelly "
                          "(pip install spikingjelly, or spikeforge[peers])") from e
    return neuron, surrogate


def surrogate_of(fn) -> tuple[str, float]:
    """SpikingJelly surrogate module -> (spikeforge surrogate name, alpha); raises ValueError if it has none."""
    _, sg = _sj()
    names = {sg.Sigmoid: "sigmoid", sg.ATan: "atan", sg.Rect: "rect", sg.PiecewiseQuadratic: "piecewise_quadratic",
             sg.PiecewiseExp: "piecewise_exp", sg.Erf: "erf", sg.SoftSign: "soft_sign", sg.SuperSpike: "super_spike"}
    name = names.get(type(fn))
    if name is None:
        raise ValueError(f"surrogate {type(fn).__name__} has no spikeforge equivalent (supported: "
                         f"{', '.join(sorted(c.__name__ for c in names))})")
    if not getattr(fn, "spiking", True):
        raise ValueError(f"surrogate {type(fn).__name__} has spiking=False (it outputs the smooth primitive, not "
                         "spikes); spikeforge neurons always emit spikes")
    alpha = float(getattr(fn, "alpha"))
    if name == "super_spike" and alpha != 1.0:
        raise ValueError(f"SuperSpike(alpha={alpha}): SpikingJelly's gradient alpha / (|x| + 1)^2 equals "
                         "spikeforge's alpha / (alpha |x| + 1)^2 only for alpha = 1")
    return name, alpha


def _float(v, what: str) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise _Unsupported(f"{what} is a tensor of {v.numel()} values; spikeforge takes one number")
        v = v.item()
    return float(v)


def _neuron_options(m) -> dict:
    try:
        surrogate, alpha = surrogate_of(m.surrogate_function)
    except ValueError as e:
        raise _Unsupported(str(e)) from None
    if m.step_mode not in ("s", "m"):
        raise _Unsupported(f"step_mode {m.step_mode!r}")
    return dict(v_threshold=_float(m.v_threshold, "v_threshold"), v_reset=_float(m.v_reset, "v_reset"),
                detach_reset=bool(m.detach_reset), surrogate=surrogate, alpha=alpha, step_mode=m.step_mode,
                store_v_seq=bool(getattr(m, "store_v_seq", False)))


def _psn_surrogate(m) -> dict:
    try:
        surrogate, alpha = surrogate_of(m.surrogate_function)
    except ValueError as e:
        raise _Unsupported(str(e)) from None
    return dict(surrogate=surrogate, alpha=alpha)


def _convert(m, neuron) -> nn.Module:
    """One SpikingJelly module -> its spikeforge equivalent (raises _Unsupported)."""
    kind = type(m)
    if kind is neuron.IFNode:
        return sfnn.IF(**_neuron_options(m))
    if kind is neuron.LIFNode:
        return sfnn.LIF(tau=_float(m.tau, "tau"), decay_input=bool(m.decay_input), **_neuron_options(m))
    if kind is neuron.ParametricLIFNode:
        new = sfnn.PLIF(decay_input=bool(m.decay_input), **_neuron_options(m))
        if m.w.dim() != 0:
            raise _Unsupported(f"w of shape {tuple(m.w.shape)}; SpikingJelly's PLIF learns one scalar")
        new.w = m.w  # the same Parameter: an optimizer built before patch() keeps training it
        return new
    if kind is neuron.PSN:
        new = sfnn.PSN(int(m.T), **_psn_surrogate(m))
        new.weight = m.weight
        new.bias = nn.Parameter(m.bias.detach().reshape(-1).clone(), requires_grad=m.bias.requires_grad)
        return new
    if kind is neuron.MaskedPSN:
        if m.step_mode not in ("s", "m"):
            raise _Unsupported(f"step_mode {m.step_mode!r}")
        new = sfnn.MaskedPSN(int(m.k), int(m.T), lambda_init=float(m.lambda_), step_mode=m.step_mode,
                             **_psn_surrogate(m))
        new.weight = m.weight
        new.bias = nn.Parameter(m.bias.detach().reshape(-1).clone(), requires_grad=m.bias.requires_grad)
        return new
    if kind is neuron.SlidingPSN:
        if m.step_mode not in ("s", "m"):
            raise _Unsupported(f"step_mode {m.step_mode!r}")
        new = sfnn.SlidingPSN(int(m.k), step_mode=m.step_mode, **_psn_surrogate(m))
        new.weight = m.weight
        new.bias = m.bias
        return new
    raise _Unsupported("not a swappable class")


def _targets(neuron) -> tuple:
    return (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode, neuron.PSN, neuron.MaskedPSN,
            neuron.SlidingPSN)


def patch(model: nn.Module, *, on_unsupported: str = "raise"):
    """Swap the SpikingJelly neurons of model for spikeforge modules, in place -> (model, PatchReport).

    on_unsupported: "raise" (default) raises ValueError naming the module that cannot be swapped
    without changing its numbers; "skip" leaves such modules in place with a warning. Nodes whose class
    is a subclass of a swappable one count as unsupported (their equations may differ). If model itself
    is a neuron node the returned model is its replacement.
    """
    neuron, _ = _sj()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if on_unsupported not in ("raise", "skip"):
        raise ValueError(f"on_unsupported must be 'raise' or 'skip', got {on_unsupported!r}")
    targets = _targets(neuron)
    report = PatchReport()
    swaps = []
    for name, m in model.named_modules():
        if not isinstance(m, targets) or any(name.startswith(s + ".") for s, _ in swaps if s):
            continue
        try:
            if type(m) not in targets:
                raise _Unsupported(f"{type(m).__name__} subclasses a SpikingJelly neuron and may change its "
                                   "equations")
            new = _convert(m, neuron)
        except _Unsupported as e:
            label = name or "<model>"
            if on_unsupported == "raise":
                raise ValueError(f"patch: cannot swap {label} ({type(m).__name__}) without changing its numbers: "
                                 f"{e}") from None
            warnings.warn(f"spikeforge patch: left {label} ({type(m).__name__}) in place: {e}", stacklevel=2)
            report.skipped.append((label, type(m).__name__, str(e)))
            continue
        ref = next(m.parameters(), None)
        ref = next(m.buffers(), None) if ref is None else ref
        if ref is not None:  # parameters copied into new tensors follow the old module's device / dtype
            new = new.to(device=ref.device)
        new.train(m.training)
        swaps.append((name, new))
        report.replaced.append((name or "<model>", type(m).__name__, type(new).__name__))
    model = _swap_modules(model, swaps)
    try:  # SpikingJelly caches which modules reset_net() resets: the swapped ones must be found anew
        from spikingjelly.activation_based import functional
        functional.invalidate_reset_cache(model)
    except (ImportError, AttributeError):
        pass
    return model, report
