"""Drop-in backend for SpikingJelly 2.0 models: patch(model) runs their neurons on spikeforge's fused kernels.

A swapped node stays the SpikingJelly module it was: patch() changes its class, in place, to a subclass
(``spikeforge.interop.spikingjelly.IFNode`` is a ``spikingjelly...neuron.IFNode``) that overrides only the
multi-step compute. Everything else is SpikingJelly's own code on the same object: its parameters, buffers
and state_dict keys (a checkpoint loads across the swap in both directions), the memory API (``v``,
``_memories``, ``named_memories``, ``materialize_states``, reset to the float ``v_reset``, assignable from a
float, a batch-size change without reset restarting from ``v_reset``), ``surrogate_function``,
``store_v_seq``, ``step_mode``, ``MaskedPSN.lambda_``, and every tool that finds neurons with isinstance
(``monitor.OutputMonitor(net, neuron.IFNode)``, ``functional.reset_net / set_step_mode / detach_net``, the
op counters and energy profilers). The state left by a multi-step call keeps its autograd graph (a loss on
``node.v`` reaches the inputs; chunks fed without a reset backpropagate through each other) until
``detach()`` / ``functional.detach_net``, as SpikingJelly's.

Swapped (exact classes only: a subclass may change the equations):

    neuron.IFNode, LIFNode, ParametricLIFNode   multi-step: spikeforge.ops.if_neuron / lif / plif
    neuron.ILIFNode                             spikeforge.ops.ilif (integer spikes, MultiLevelSpikeCount(D))
    neuron.TernaryIFNode, TernaryLIFNode        spikeforge.ops.ternary_lif (two_sided=True; tau=None for IF)
    neuron.PSN                                  spikeforge.ops.psn (bias [T, 1] read as [T])
    neuron.MaskedPSN                            spikeforge.ops.psn on SpikingJelly's own masked_weight()
    neuron.SlidingPSN                           spikeforge.ops.sliding_psn

The fused path runs when the call is one the kernels compute exactly as SpikingJelly does; otherwise the
node runs SpikingJelly's own code (same numbers, no speedup). SpikingJelly's own code runs for:
single-step mode (one step has nothing to fuse), MaskedPSN / SlidingPSN streaming, inputs other than
float32 / float64 (SpikingJelly computes half-precision states in half precision), a neuron precision set
with SpikingJelly's precision tools, a surrogate without a spikeforge twin assigned after patch(), and
any call made under a TorchDispatchMode (SpikingJelly's op counters and energy profilers, torch's
FlopCounterMode): the native kernels are invisible to such a mode, SpikingJelly's primitive operations
are what it counts, so reports equal the unpatched model's. ``node.fused_blocker`` says why a node would
not fuse a float32 call (None when it does).

Surrogates with a spikeforge twin (same gradient function): Sigmoid, ATan, Rect, PiecewiseQuadratic,
PiecewiseExp, Erf, SoftSign (any alpha) and SuperSpike with alpha = 1 (SpikingJelly's SuperSpike is
alpha / (|x| + 1)^2, spikeforge's alpha / (alpha |x| + 1)^2); the I-LIF's spiking MultiLevelSpikeCount(D)
with its default gradient window [0, D]. The I-LIF charges as SpikingJelly's multi-step ILIFNode,
(1 - 1/tau) V + X with its rounding, so every tau fuses (the default 4/3 included). patch() refuses a node
whose configuration never fuses (another surrogate, spiking=False, a tensor threshold, a subclass) with
ValueError, or with on_unsupported="skip" leaves it in place with a warning and a report line.
unpatch(model) restores the SpikingJelly classes (for exporters that look classes up by exact type).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..ops.neuron import _TERNARY_VTH_ZERO

try:
    from spikingjelly.activation_based import neuron as _sjn
    from spikingjelly.activation_based import surrogate as _sjs
except ImportError as e:  # the module is SpikingJelly's drop-in: without SpikingJelly there is nothing to patch
    raise ImportError(
        "spikeforge.interop.spikingjelly needs SpikingJelly 2.x (pip install spikingjelly, or spikeforge[peers])"
    ) from e

__all__ = [
    "patch",
    "unpatch",
    "PatchReport",
    "surrogate_of",
    "IFNode",
    "LIFNode",
    "ParametricLIFNode",
    "ILIFNode",
    "TernaryIFNode",
    "TernaryLIFNode",
    "PSN",
    "MaskedPSN",
    "SlidingPSN",
]

_SURROGATES = {
    _sjs.Sigmoid: "sigmoid",
    _sjs.ATan: "atan",
    _sjs.Rect: "rect",
    _sjs.PiecewiseQuadratic: "piecewise_quadratic",
    _sjs.PiecewiseExp: "piecewise_exp",
    _sjs.Erf: "erf",
    _sjs.SoftSign: "soft_sign",
    _sjs.SuperSpike: "super_spike",
}
_FUSED_DTYPES = (torch.float32, torch.float64)


def surrogate_of(fn) -> tuple[str, float]:
    """SpikingJelly surrogate module -> (spikeforge surrogate name, alpha); raises ValueError if it has none."""
    name = _SURROGATES.get(type(fn))
    if name is None:
        raise ValueError(
            f"surrogate {type(fn).__name__} has no spikeforge equivalent (supported: "
            f"{', '.join(sorted(c.__name__ for c in _SURROGATES))})"
        )
    if not getattr(fn, "spiking", True):
        raise ValueError(
            f"surrogate {type(fn).__name__} has spiking=False (it outputs the smooth primitive, not "
            "spikes); spikeforge neurons always emit spikes"
        )
    alpha = getattr(fn, "alpha", None)
    if isinstance(alpha, Tensor):
        if alpha.numel() != 1:
            raise ValueError(f"surrogate {type(fn).__name__} has a tensor alpha of {alpha.numel()} values")
        alpha = alpha.item()
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"surrogate {type(fn).__name__} has alpha={alpha!r}; spikeforge takes a finite number")
    alpha = float(alpha)
    if name == "super_spike" and alpha != 1.0:
        raise ValueError(
            f"SuperSpike(alpha={alpha}): SpikingJelly's gradient alpha / (|x| + 1)^2 equals "
            "spikeforge's alpha / (alpha |x| + 1)^2 only for alpha = 1"
        )
    return name, alpha


def _number(v, what: str, allow_none: bool = False) -> Optional[float]:
    """A Python number the kernels take as a constant, else ValueError (a tensor threshold, per-neuron values)."""
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what} is a {type(v).__name__}; the fused kernels take one Python number")
    if not math.isfinite(v):
        raise ValueError(f"{what}={v} is not finite")
    return float(v)


def _dispatch_mode_active() -> bool:
    """True under a TorchDispatchMode (op counters, energy profilers, make_fx): the mode must see the neuron's
    primitive operations, which a native kernel hides. Never while torch.compile traces."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._len_torch_dispatch_stack() > 0


# ---------------------------------------------------------------------------------------------------------
# the spiking neurons: SpikingJelly's BaseNode with a fused multi_step_forward
# ---------------------------------------------------------------------------------------------------------
class _FusedNode:
    """Mixin placed before a SpikingJelly node class. Only multi_step_forward changes; it reproduces
    SpikingJelly's own (materialize the state, run the sequence, store v and v_seq) with a spikeforge op."""

    def _fused_options(self) -> dict:
        """The op's keyword options from the node's current attributes; ValueError when they do not map."""
        surrogate, alpha = surrogate_of(self.surrogate_function)
        if not isinstance(self.detach_reset, bool):
            raise ValueError(f"detach_reset={self.detach_reset!r} is not a bool")
        return dict(
            v_threshold=_number(self.v_threshold, "v_threshold"),
            v_reset=_number(self.v_reset, "v_reset", allow_none=True),
            detach_reset=self.detach_reset,
            surrogate=surrogate,
            alpha=alpha,
        )

    @property
    def fused_blocker(self) -> Optional[str]:
        """None when a float32 multi-step call runs the fused kernel, else why SpikingJelly's code runs."""
        if self.step_mode != "m":
            return f"step_mode {self.step_mode!r}: single steps run SpikingJelly's own step"
        if self._neuron_precision is not None:
            return "a neuron precision is set (SpikingJelly's mixed-precision kernels)"
        try:
            self._fused_options()
            self._check_own()
        except ValueError as e:
            return str(e)
        return None

    def _check_own(self, x_seq: Optional[Tensor] = None) -> None:
        """Class-specific mapping checks, against the call's input when given (ValueError)."""

    def _run(self, x_seq: Tensor, v: Tensor, return_v: str, opts: dict):
        raise NotImplementedError

    def multi_step_forward(self, x_seq: Tensor, *args, **kwargs):
        if (
            args
            or kwargs
            or not isinstance(x_seq, Tensor)
            or x_seq.dtype not in _FUSED_DTYPES
            or x_seq.dim() < 1
            or x_seq.shape[0] == 0
            or self._neuron_precision is not None
            or _dispatch_mode_active()
        ):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        try:
            opts = self._fused_options()
            self._check_own(x_seq)
        except ValueError:  # configuration changed after patch(): SpikingJelly's own code gives its numbers
            return super().multi_step_forward(x_seq, *args, **kwargs)
        # SpikingJelly's state rules: a float v becomes a full tensor, a v of another shape (batch size
        # changed without reset) restarts from v_reset, another dtype / device is converted.
        (v,) = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")
        if not isinstance(v, Tensor) or v.dtype != x_seq.dtype:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        spike, v_out = self._run(x_seq, v, "seq" if self.store_v_seq else "last", opts)
        if self.store_v_seq:
            v_seq, v_out = v_out, v_out[-1].clone()  # not a view: detach() detaches the state in place
        else:
            v_seq = None
        self._memories["v"] = v_out
        self.v_seq = v_seq
        return spike


class IFNode(_FusedNode, _sjn.IFNode):
    """SpikingJelly's IFNode; multi-step calls run spikeforge.ops.if_neuron."""

    def _run(self, x_seq, v, return_v, opts):
        return ops.if_neuron(x_seq, v, return_v=return_v, **opts)


class LIFNode(_FusedNode, _sjn.LIFNode):
    """SpikingJelly's LIFNode; multi-step calls run spikeforge.ops.lif."""

    def _check_own(self, x_seq=None):
        if not _number(self.tau, "tau") > 0.0:  # SpikingJelly checks tau when built only
            raise ValueError(f"tau={self.tau}: ops.lif takes a positive tau")
        if not isinstance(self.decay_input, bool):
            raise ValueError(f"decay_input={self.decay_input!r} is not a bool")

    def _run(self, x_seq, v, return_v, opts):
        return ops.lif(x_seq, v, tau=float(self.tau), decay_input=self.decay_input, return_v=return_v, **opts)


class ParametricLIFNode(_FusedNode, _sjn.ParametricLIFNode):
    """SpikingJelly's ParametricLIFNode (one learnable w); multi-step calls run spikeforge.ops.plif."""

    def _check_own(self, x_seq=None):
        if not isinstance(self.w, Tensor) or self.w.numel() != 1:
            raise ValueError("w is not a one-element tensor")
        if x_seq is not None and self.w.device != x_seq.device:  # SpikingJelly's own code reports it
            raise ValueError(f"w is on {self.w.device}, the input on {x_seq.device}")
        if not isinstance(self.decay_input, bool):
            raise ValueError(f"decay_input={self.decay_input!r} is not a bool")

    def _run(self, x_seq, v, return_v, opts):
        return ops.plif(x_seq, self.w, v, decay_input=self.decay_input, return_v=return_v, **opts)


class ILIFNode(_FusedNode, _sjn.ILIFNode):
    """SpikingJelly's ILIFNode (integer spikes, I-LIF of Spike-driven Transformer v3); multi-step calls run
    spikeforge.ops.ilif: decay_input=False, soft reset, S = round(clamp(H / v_threshold, 0, D)) with D the
    MultiLevelSpikeCount's max_spike_count and its straight-through gradient over [0, D]."""

    def _fused_options(self) -> dict:
        D = _multi_level_count(self.surrogate_function)
        tau = _number(self.tau, "tau")
        if not tau > 0.0:
            raise ValueError(f"tau={tau}: ops.ilif takes a positive tau")
        vth = _number(self.v_threshold, "v_threshold")
        if not vth > 0.0:  # SpikingJelly computes S = round(clamp(H / v_threshold, 0, D)) with any threshold
            raise ValueError(f"v_threshold={vth}: ops.ilif takes a positive threshold")
        if not isinstance(self.detach_reset, bool):
            raise ValueError(f"detach_reset={self.detach_reset!r} is not a bool")
        return dict(D=D, tau=tau, v_threshold=vth, detach_reset=self.detach_reset)

    def _run(self, x_seq, v, return_v, opts):
        return ops.ilif(x_seq, v, decay_input=False, return_v=return_v, **opts)


def _multi_level_count(fn) -> int:
    """D of a spiking MultiLevelSpikeCount(D) with its default gradient window [0, D]; ValueError otherwise."""
    if type(fn) is not _sjs.MultiLevelSpikeCount:
        raise ValueError(f"surrogate {type(fn).__name__}: I-LIF's spike is a MultiLevelSpikeCount")
    if not fn.spiking:
        raise ValueError("MultiLevelSpikeCount with spiking=False (it outputs the clamp, not integer spikes)")
    D = fn.max_spike_count
    if isinstance(D, bool) or not isinstance(D, int) or not 1 <= D <= 1 << 22:
        raise ValueError(f"max_spike_count={D!r}; ops.ilif takes an int in [1, 2^22]")
    if (fn.grad_min, fn.grad_max) != (0.0, float(D)):
        raise ValueError(
            f"grad_window=({fn.grad_min}, {fn.grad_max}): ops.ilif's straight-through gradient passes "
            f"over [0, D] = [0, {D}] only"
        )
    return D


def _check_ternary(node) -> None:
    """SpikingJelly's ternary nodes check their threshold and reset when built; ops.ternary_lif checks them on
    every call. A value changed afterwards runs SpikingJelly's code (ValueError here says why)."""
    vth = _number(node.v_threshold, "v_threshold")
    if not vth > _TERNARY_VTH_ZERO:
        raise ValueError(f"v_threshold={vth}: ops.ternary_lif takes a threshold > 0 in float32 (at least 1e-45)")
    v_reset = _number(node.v_reset, "v_reset", allow_none=True)
    if v_reset is not None and not -vth < v_reset < vth:
        raise ValueError(f"v_reset={v_reset} outside (-v_threshold, v_threshold): ops.ternary_lif refuses it")


class TernaryIFNode(_FusedNode, _sjn.TernaryIFNode):
    """SpikingJelly's TernaryIFNode (spikes in {-1, 0, 1}); multi-step calls run spikeforge.ops.ternary_lif with
    tau=None and two_sided=True (SpikingJelly's gradient g'(H - v_th) + g'(-H - v_th))."""

    def _check_own(self, x_seq=None):
        _check_ternary(self)

    def _run(self, x_seq, v, return_v, opts):
        return ops.ternary_lif(x_seq, v, tau=None, two_sided=True, return_v=return_v, **opts)


class TernaryLIFNode(_FusedNode, _sjn.TernaryLIFNode):
    """SpikingJelly's TernaryLIFNode; multi-step calls run spikeforge.ops.ternary_lif with two_sided=True."""

    def _check_own(self, x_seq=None):
        _check_ternary(self)
        if not _number(self.tau, "tau") > 0.0:
            raise ValueError(f"tau={self.tau}: ops.ternary_lif takes a positive tau")
        if not isinstance(self.decay_input, bool):
            raise ValueError(f"decay_input={self.decay_input!r} is not a bool")

    def _run(self, x_seq, v, return_v, opts):
        return ops.ternary_lif(
            x_seq, v, tau=float(self.tau), decay_input=self.decay_input, two_sided=True, return_v=return_v, **opts
        )


# ---------------------------------------------------------------------------------------------------------
# parallel spiking neurons
# ---------------------------------------------------------------------------------------------------------
def _psn_ready(m, x_seq) -> Optional[tuple[str, float]]:
    """(surrogate, alpha) when a multi-step PSN call can run fused, else None (SpikingJelly's code runs)."""
    if (
        not isinstance(x_seq, Tensor)
        or x_seq.dtype not in _FUSED_DTYPES
        or x_seq.dim() < 1
        or m.weight.dtype != x_seq.dtype
        or m.weight.device != x_seq.device
        or _dispatch_mode_active()
    ):
        return None
    try:
        return surrogate_of(m.surrogate_function)
    except ValueError:
        return None


def _psn_blocker(m) -> Optional[str]:
    try:
        surrogate_of(m.surrogate_function)
    except ValueError as e:
        return str(e)
    return None


class PSN(_sjn.PSN):
    """SpikingJelly's PSN; forward runs spikeforge.ops.psn with the [T, 1] bias read as [T]."""

    @property
    def fused_blocker(self) -> Optional[str]:
        return _psn_blocker(self)

    def forward(self, x_seq: Tensor):
        sg = _psn_ready(self, x_seq)
        if sg is None or x_seq.shape[0] != self.T:
            return super().forward(x_seq)
        return ops.psn(x_seq, self.weight, self.bias.reshape(-1), surrogate=sg[0], alpha=sg[1])


class MaskedPSN(_sjn.MaskedPSN):
    """SpikingJelly's MaskedPSN; multi-step calls run spikeforge.ops.psn on its own masked_weight() (the
    lambda_ buffer and the mask buffers as they are now), single steps run SpikingJelly's streaming code."""

    @property
    def fused_blocker(self) -> Optional[str]:
        if self.step_mode != "m":
            return f"step_mode {self.step_mode!r}: streaming steps run SpikingJelly's own code"
        return _psn_blocker(self)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        x_seq = inputs[0]
        sg = _psn_ready(self, x_seq)
        if sg is None or kwargs or len(inputs) != 1 or x_seq.shape[0] != self.T:
            return super().multi_step_functional_forward(inputs, states, **kwargs)
        spike = ops.psn(x_seq, self.masked_weight(), self.bias.reshape(-1), surrogate=sg[0], alpha=sg[1])
        return (spike,), states


class SlidingPSN(_sjn.SlidingPSN):
    """SpikingJelly's SlidingPSN; multi-step calls run spikeforge.ops.sliding_psn, single steps run
    SpikingJelly's streaming code."""

    @property
    def fused_blocker(self) -> Optional[str]:
        if self.step_mode != "m":
            return f"step_mode {self.step_mode!r}: streaming steps run SpikingJelly's own code"
        return _psn_blocker(self)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        x_seq = inputs[0]
        sg = _psn_ready(self, x_seq)
        if sg is None or kwargs or len(inputs) != 1 or x_seq.shape[0] == 0:
            return super().multi_step_functional_forward(inputs, states, **kwargs)
        spike = ops.sliding_psn(x_seq, self.weight, self.bias, surrogate=sg[0], alpha=sg[1])
        return (spike,), states


# SpikingJelly class -> drop-in (a subclass adding no state, so the swap is a class change in place)
_DROP_INS = {
    _sjn.IFNode: IFNode,
    _sjn.LIFNode: LIFNode,
    _sjn.ParametricLIFNode: ParametricLIFNode,
    _sjn.ILIFNode: ILIFNode,
    _sjn.TernaryIFNode: TernaryIFNode,
    _sjn.TernaryLIFNode: TernaryLIFNode,
    _sjn.PSN: PSN,
    _sjn.MaskedPSN: MaskedPSN,
    _sjn.SlidingPSN: SlidingPSN,
}
_ORIGINAL = {v: k for k, v in _DROP_INS.items()}


def _never_fuses(m) -> Optional[str]:
    """Why a node of a swappable class would never run the fused path (checked at patch time)."""
    try:
        if isinstance(m, _sjn.ILIFNode):
            _multi_level_count(m.surrogate_function)
        else:
            surrogate_of(m.surrogate_function)
    except ValueError as e:
        return str(e)
    if isinstance(m, _sjn.BaseNode):
        for what in ("v_threshold", "v_reset"):
            try:
                _number(getattr(m, what), what, allow_none=what == "v_reset")
            except ValueError as e:
                return str(e)
        if isinstance(m, _sjn.ParametricLIFNode) and m.w.numel() != 1:
            return f"w of shape {tuple(m.w.shape)}; SpikingJelly's PLIF learns one scalar"
    return None


@dataclass
class PatchReport:
    """What patch() did: replaced [(qualified name, SpikingJelly class, drop-in class, path)] where path is
    "fused" or why SpikingJelly's own code runs for float32 calls, and skipped [(qualified name, class,
    reason)] (on_unsupported="skip")."""

    replaced: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"replaced {len(self.replaced)} module(s), skipped {len(self.skipped)}"]
        lines += [f"  {n}: {a} -> spikeforge.interop.spikingjelly.{b} [{p}]" for n, a, b, p in self.replaced]
        lines += [f"  {n}: {a} left in place ({why})" for n, a, why in self.skipped]
        return "\n".join(lines)


def patch(model: nn.Module, *, on_unsupported: str = "raise"):
    """Run the SpikingJelly neurons of model on spikeforge's kernels, in place -> (model, PatchReport).

    Each IFNode / LIFNode / ParametricLIFNode / ILIFNode / TernaryIFNode / TernaryLIFNode / PSN / MaskedPSN /
    SlidingPSN becomes its drop-in subclass (the same object, so parameters, optimizer references, hooks and
    state are kept; model is returned as given). on_unsupported: "raise" (default) raises ValueError naming a
    node that would never run fused (another surrogate, spiking=False, a tensor threshold, an I-LIF gradient
    window other than [0, D], or a subclass of a neuron class, whose equations may differ); "skip" leaves such
    nodes as they are, with a warning and a report line.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if on_unsupported not in ("raise", "skip"):
        raise ValueError(f"on_unsupported must be 'raise' or 'skip', got {on_unsupported!r}")
    report = PatchReport()
    swaps = []
    for name, m in model.named_modules():
        if not isinstance(m, tuple(_DROP_INS)) or type(m) in _ORIGINAL:  # not a neuron, or already patched
            continue
        label = name or "<model>"
        why = (
            f"{type(m).__name__} subclasses a SpikingJelly neuron and may change its equations"
            if type(m) not in _DROP_INS
            else _never_fuses(m)
        )
        if why is not None:
            if on_unsupported == "raise":
                raise ValueError(f"patch: cannot swap {label} ({type(m).__name__}) without changing its numbers: {why}")
            warnings.warn(f"spikeforge patch: left {label} ({type(m).__name__}) in place: {why}", stacklevel=2)
            report.skipped.append((label, type(m).__name__, why))
            continue
        swaps.append((label, m))
    for label, m in swaps:  # nothing changes before every node was checked
        original = type(m)
        m.__class__ = _DROP_INS[original]
        report.replaced.append((label, original.__name__, type(m).__name__, m.fused_blocker or "fused"))
    return model, report


def unpatch(model: nn.Module) -> nn.Module:
    """Give every drop-in in model its SpikingJelly class back (in place; state and parameters kept) -> model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for m in model.modules():
        original = _ORIGINAL.get(type(m))
        if original is not None:
            m.__class__ = original
    return model
