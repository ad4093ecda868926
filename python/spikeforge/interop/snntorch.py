"""snnTorch's Leaky neuron run over whole sequences, with snnTorch's numbers.

snnTorch's Leaky is a single-step module with conventions of its own (snnTorch 1.0.0, reset_delay=True):

    R[t] = Heaviside(U[t-1] - thr), detached     (the reset comes from the previous step's membrane)
    subtract: U[t] = beta U[t-1] + X[t] - R[t] thr
    zero:     U[t] = beta (1 - R[t]) U[t-1] + X[t]
    none:     U[t] = beta U[t-1] + X[t]
    S[t] = Heaviside(U[t] - thr) with Heaviside(0) = 0, surrogate spike_grad in backward; U[-1] = 0.

Compared with spikeforge's LIF (shared/SEMANTICS.md) the input is not scaled by 1/tau, and the returned
membrane U is the value before the reset. MultiStepLeaky takes a snntorch.Leaky and runs x_seq [T, B, ...]
on one of two paths:

- "fused" (spikeforge's multi-step kernel) when the equations are the same: reset_mechanism="zero". With
  H = U, that is spikeforge's LIF with decay_input=False, v_reset=0, tau = 1 / (1 - beta) (IF for
  beta = 1) and detach_reset=True: H[t] = (1 - 1/tau) V[t-1] + X[t], V[t] = (1 - S[t]) H[t]. The firing
  test is made strict by passing the next floating-point number above thr as v_threshold (H >= next(thr)
  is exactly H > thr). The surrogate must have a spikeforge twin: snntorch.surrogate.atan(alpha) ->
  atan, sigmoid(slope) -> sigmoid, fast_sigmoid(slope) -> super_spike (slope 1) or soft_sign (slope 2).
  Same equations, so the same spikes, but not bit for bit the same arithmetic: the kernel computes
  V - V/tau + X where snnTorch computes beta V + X, so membranes may differ in the last bit (and a spike
  whose membrane is within that rounding of the threshold may flip); the surrogate is evaluated at
  H - next(thr), one ulp from snnTorch's U - thr.
- "loop" (snnTorch's own arithmetic, op for op, in a Python time loop) for everything else: the default
  reset_mechanism="subtract" with beta < 1 (its reset subtracts thr one step late, after the decay, which
  spikeforge's soft reset - subtract V_th at once - cannot express), "none", reset_delay=False, learnable
  beta or threshold, graded spikes, other surrogates, half precision. Bitwise snnTorch's numbers, no speedup.

backend="auto" takes the fused path when it applies, "fused" raises if it does not, "loop" forces the
exact loop. Inhibition and state quantisation are not supported (ValueError).
"""
from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from .. import nn as sfnn
from . import _swap_modules
from .. import ops

__all__ = ["MultiStepLeaky", "patch", "PatchReport", "surrogate_of"]

_RESETS = {0: "subtract", 1: "zero", 2: "none"}


def _snn():
    try:
        import snntorch
    except ImportError as e:
        raise ImportError("spikeforge.interop.snntorch needs snnTorch (pip install snntorch, or "
                          "spikeforge[peers])") from e
    return snntorch


def surrogate_of(spike_grad) -> Optional[tuple[str, float]]:
    """snnTorch spike_grad -> (spikeforge surrogate name, alpha) when the gradients are the same function,
    else None. Recognises the closures snntorch.surrogate.atan / sigmoid / fast_sigmoid return."""
    qualname = getattr(spike_grad, "__qualname__", "")
    if getattr(spike_grad, "__module__", "") != "snntorch.surrogate" or not qualname.endswith(".<locals>.inner"):
        return None
    factory = qualname.split(".")[0]
    params = inspect.getclosurevars(spike_grad).nonlocals
    if factory == "atan":  # alpha / 2 / (1 + (pi / 2 alpha x)^2): spikeforge's atan
        return "atan", float(params["alpha"])
    if factory == "sigmoid":  # slope e^{-slope x} / (e^{-slope x} + 1)^2 = slope s (1 - s)
        return "sigmoid", float(params["slope"])
    if factory == "fast_sigmoid":  # 1 / (slope |x| + 1)^2
        slope = float(params["slope"])
        if slope == 1.0:
            return "super_spike", 1.0  # alpha / (alpha |x| + 1)^2 at alpha = 1
        if slope == 2.0:
            return "soft_sign", 2.0  # 1 / (2 alpha (1/alpha + |x|)^2) at alpha = 2
    return None


def _scalar(t) -> Optional[float]:
    if isinstance(t, Tensor):
        return float(t.item()) if t.numel() == 1 else None
    return float(t)


class MultiStepLeaky(nn.Module):
    """Runs a snntorch.Leaky over x_seq [T, B, ...] in one call -> spikes [T, B, ...] (and, with
    return_mem or the Leaky's output=True, the membranes U [T, B, ...] snnTorch returns).

    The Leaky is kept as a submodule, so beta, threshold and spike_grad are shared with it (learnable
    ones keep training). Each call starts a new sequence from U = 0, or from mem0 [B, ...] if given (as
    passing mem to snnTorch's Leaky); the module keeps no state between calls. ``path`` tells which path
    runs ("fused" or "loop") and ``path_reason`` why; see the module docstring.
    """

    def __init__(self, leaky: nn.Module, backend: str = "auto", return_mem: Optional[bool] = None):
        super().__init__()
        snntorch = _snn()
        if not isinstance(leaky, snntorch.Leaky):
            raise TypeError(f"leaky must be a snntorch.Leaky, got {type(leaky).__name__}")
        if type(leaky) is not snntorch.Leaky:
            raise ValueError(f"leaky is a {type(leaky).__name__}, a subclass of snntorch.Leaky whose equations "
                             "may differ; only snntorch.Leaky itself is supported")
        if backend not in ("auto", "fused", "loop"):
            raise ValueError(f"backend must be 'auto', 'fused' or 'loop', got {backend!r}")
        if leaky.inhibition:
            raise ValueError("MultiStepLeaky: inhibition=True (winner-take-all per step) is not supported")
        if leaky.state_quant:
            raise ValueError("MultiStepLeaky: state_quant is not supported")
        self.leaky = leaky
        self.return_mem = bool(leaky.output) if return_mem is None else bool(return_mem)
        self.reset_mechanism = _RESETS[int(leaky.reset_mechanism_val)]
        reason = self._fused_blocker()
        if backend == "fused" and reason is not None:
            raise ValueError(f"MultiStepLeaky: the fused path cannot reproduce this Leaky: {reason}")
        self.backend = backend
        self.path_reason = reason or "reset_mechanism='zero' is spikeforge's LIF with decay_input=False"

    def _fused_blocker(self) -> Optional[str]:
        """None if the fused kernel computes this Leaky's equations, else why not."""
        lk = self.leaky
        if self.reset_mechanism != "zero":
            return (f"reset_mechanism={self.reset_mechanism!r}: snnTorch subtracts the threshold one step late, "
                    "after the decay" if self.reset_mechanism == "subtract" else "reset_mechanism='none'")
        if not lk.reset_delay:
            return "reset_delay=False"
        if isinstance(lk.beta, nn.Parameter) or isinstance(lk.threshold, nn.Parameter):
            return "learnable beta or threshold"
        beta, thr = _scalar(lk.beta), _scalar(lk.threshold)
        if beta is None or thr is None:
            return "per-neuron beta or threshold"
        if _scalar(lk.graded_spikes_factor) != 1.0:
            return "graded_spikes_factor != 1"
        if surrogate_of(lk.spike_grad) is None:
            return f"spike_grad {getattr(lk.spike_grad, '__qualname__', lk.spike_grad)!r} has no spikeforge twin"
        return None

    @property
    def path(self) -> str:
        if self.backend == "loop" or self._fused_blocker() is not None:
            return "loop"
        return "fused"

    def forward(self, x_seq: Tensor, mem0: Optional[Tensor] = None):
        if not isinstance(x_seq, Tensor) or x_seq.dim() < 1:
            raise ValueError("x_seq must be a tensor of shape [T, B, ...]")
        if mem0 is not None and (not isinstance(mem0, Tensor) or mem0.shape != x_seq.shape[1:]):
            raise ValueError(f"mem0 must be a tensor of shape {tuple(x_seq.shape[1:])} (x_seq.shape[1:])")
        use_fused = self.path == "fused" and x_seq.dtype in (torch.float32, torch.float64) and x_seq.shape[0] > 0
        spk, mem = self._fused(x_seq, mem0) if use_fused else self._loop(x_seq, mem0)
        return (spk, mem) if self.return_mem else spk

    def _fused(self, x_seq: Tensor, mem0: Optional[Tensor]):
        lk = self.leaky
        beta = min(max(_scalar(lk.beta), 0.0), 1.0)  # snnTorch clamps beta to [0, 1]
        thr = _scalar(lk.threshold)
        surrogate, alpha = surrogate_of(lk.spike_grad)
        # H >= next(thr) is H > thr exactly in the compute dtype (float32 for float32 input).
        thr_strict = float(torch.nextafter(torch.tensor(thr, dtype=x_seq.dtype),
                                           torch.tensor(math.inf, dtype=x_seq.dtype)))
        v_init = None
        if mem0 is not None:  # V[-1] is U[-1] after its (late) reset: zero where U[-1] > thr
            mem0 = mem0.to(x_seq.dtype)
            v_init = mem0 * (mem0 - thr <= 0).to(mem0.dtype)
        opts = dict(v_threshold=thr_strict, v_reset=0.0, detach_reset=True, surrogate=surrogate, alpha=alpha,
                    return_v="seq" if self.return_mem else "last")
        if beta == 1.0:
            spk, v = ops.if_neuron(x_seq, v_init, **opts)
        else:
            spk, v = ops.lif(x_seq, v_init, tau=1.0 / (1.0 - beta), decay_input=False, **opts)
        if not self.return_mem:
            return spk, None
        # snnTorch returns U[t] = H[t] (before the reset): H[t] = beta V[t-1] + X[t].
        v_prev = torch.cat([(v_init if v_init is not None else torch.zeros_like(x_seq[0])).unsqueeze(0), v[:-1]])
        return spk, beta * v_prev + x_seq

    def _loop(self, x_seq: Tensor, mem0: Optional[Tensor]):
        """snnTorch 1.0.0's Leaky.forward, step for step (same operations in the same order)."""
        lk = self.leaky
        mem = torch.zeros_like(x_seq[0]) if mem0 is None else mem0
        spikes, mems = [], []
        gsf = lk.graded_spikes_factor
        for t in range(x_seq.shape[0]):
            reset = lk.spike_grad(mem - lk.threshold).clone().detach()
            if self.reset_mechanism == "subtract":
                mem = lk.beta.clamp(0, 1) * mem + x_seq[t] - reset * lk.threshold
            elif self.reset_mechanism == "zero":
                mem = (1 - reset) * mem
                mem = lk.beta.clamp(0, 1) * mem + x_seq[t]
            else:
                mem = lk.beta.clamp(0, 1) * mem + x_seq[t]
            spk = lk.spike_grad(mem - lk.threshold) * gsf
            if not lk.reset_delay:
                do_reset = spk / gsf - reset
                if self.reset_mechanism == "subtract":
                    mem = mem - do_reset * lk.threshold
                elif self.reset_mechanism == "zero":
                    mem = mem - do_reset * mem
            spikes.append(spk)
            mems.append(mem)
        if not spikes:
            return torch.empty_like(x_seq), torch.empty_like(x_seq)
        return torch.stack(spikes), (torch.stack(mems) if self.return_mem else None)

    def extra_repr(self) -> str:
        return f"path={self.path!r}, reset_mechanism={self.reset_mechanism!r}, return_mem={self.return_mem}"


@dataclass
class PatchReport:
    """What patch() did: replaced [(name, from, to + path)], wrapped [(name, class)] stateless layers put
    in spikeforge.nn.MultiStep, skipped [(name, class, reason)]."""
    replaced: list = field(default_factory=list)
    wrapped: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"replaced {len(self.replaced)}, wrapped {len(self.wrapped)}, skipped {len(self.skipped)}"]
        lines += [f"  {n}: {a} -> {b}" for n, a, b in self.replaced]
        lines += [f"  {n}: {a} wrapped in MultiStep" for n, a in self.wrapped]
        lines += [f"  {n}: {a} left as is ({why})" for n, a, why in self.skipped]
        return "\n".join(lines)


# Layers that treat each sample on its own: folding T into the batch leaves their numbers unchanged.
_PER_SAMPLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
               nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Unflatten)


def patch(model: nn.Module, *, backend: str = "auto"):
    """Make a sequential snnTorch model run whole sequences, in place -> (model, PatchReport).

    Every snntorch.Leaky with init_hidden=True (the nn.Sequential style) becomes a MultiStepLeaky around
    it; per-sample layers (convolutions, pooling, Flatten) that are children of an nn.Sequential are
    wrapped in spikeforge.nn.MultiStep so they accept [T, B, ...]; nn.Linear needs nothing. Afterwards
    call model(x_seq) once instead of looping over time. Left as is, and reported: Leaky modules with
    init_hidden=False (your forward passes mem step by step: use MultiStepLeaky there yourself) and
    batch norms (snnTorch normalises each step on its own; folded statistics would change numbers).
    """
    snntorch = _snn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if backend not in ("auto", "fused", "loop"):
        raise ValueError(f"backend must be 'auto', 'fused' or 'loop', got {backend!r}")
    report = PatchReport()
    swaps = []
    for name, m in model.named_modules():
        label = name or "<model>"
        if isinstance(m, MultiStepLeaky) or any(name.startswith(s + ".") for s, _ in swaps if s):
            continue
        if type(m) is snntorch.Leaky:
            if not m.init_hidden:
                report.skipped.append((label, "Leaky", "init_hidden=False: called step by step with mem"))
                continue
            new = MultiStepLeaky(m, backend=backend)
            swaps.append((name, new))
            report.replaced.append((label, "Leaky", f"MultiStepLeaky[{new.path}]"))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            report.skipped.append((label, type(m).__name__, "per-step statistics in snnTorch; wrap it yourself "
                                   "if statistics over T*B are acceptable"))
        elif isinstance(m, _PER_SAMPLE) and name:
            parent_name, _, _ = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if isinstance(parent, nn.Sequential) and not isinstance(parent, sfnn.MultiStep):
                swaps.append((name, sfnn.MultiStep(m)))
                report.wrapped.append((label, type(m).__name__))
    model = _swap_modules(model, swaps)
    for label, cls, why in report.skipped:
        warnings.warn(f"spikeforge snntorch.patch: left {label} ({cls}) as is: {why}", stacklevel=2)
    return model, report
