"""Spiking neuron modules: LIF, IF, PLIF, ALIF, ILIF, TernaryLIF, NorseLIF over spikeforge.ops.

step_mode "m" (default): forward takes a whole sequence x_seq [T, B, ...] and runs the fused
multi-step kernel once. step_mode "s": forward takes one step x [B, ...].

State (as SpikingJelly's neurons): the membrane ``v`` left by a call is kept, with its autograd graph, and
the next call continues the sequence from it. So a loss on ``node.v`` (membrane read-out) reaches the
inputs, and a sequence fed in consecutive chunks without a reset gives the gradients of one call over the
whole sequence. Truncation is explicit: ``detach()`` (or ``spikeforge.nn.detach_net(model)``) keeps the
values and cuts the graph (truncated BPTT); ``reset()`` (``reset_net``) forgets the state before an
unrelated sequence. A call that raises leaves the state as it was. docs/bad_inputs.md has the contract.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import neuron as _ops_neuron
from ..reference.neuron import NORSE_TAU_MEM_INV as _NORSE_TAU_MEM_INV
from ..reference.neuron import NORSE_TAU_SYN_INV as _NORSE_TAU_SYN_INV
from ..surrogate import norse_method
from ._inputs import check_float_input
from ._state import CopiesDetached, detach_module, detach_value, reset_module, walk

__all__ = ["LIF", "IF", "PLIF", "ALIF", "ILIF", "TernaryLIF", "NorseLIF", "reset_net", "detach_net"]


class _Neuron(CopiesDetached, nn.Module):
    """Base of the neuron modules: the one place that owns their state (v, reset, detach, the step modes,
    store_v_seq). A neuron subclass only defines its op call:

        _multi(x_seq, v_init, return_v, *more_inits) -> (spike_seq, v, *more)

    where ``_state_names`` lists the state variables, the membrane first (``("v",)``; a neuron with an
    adaptation variable declares e.g. ``("v", "b")`` and gets b's initial value and returns its last
    value after v). ``return_v="seq"`` asks for every V[t] (store_v_seq); the other states are always
    their last values. Each state is None at rest (the op's initial value: v_reset, or 0 for soft reset),
    or a tensor of the input step's shape; a float assigned to it is taken as that value everywhere.
    """

    _state_names: tuple = ("v",)

    def __init__(
        self,
        *,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        detach_reset: bool = False,
        surrogate: str = "sigmoid",
        alpha: Optional[float] = None,
        step_mode: str = "m",
        store_v_seq: bool = False,
    ):
        super().__init__()
        if step_mode not in ("m", "s"):
            raise ValueError(f"step_mode must be 'm' (multi-step) or 's' (single-step), got {step_mode!r}")
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.detach_reset = detach_reset
        self.surrogate = surrogate
        self.alpha = alpha
        self.step_mode = step_mode
        self.store_v_seq = store_v_seq
        for name in self._state_names:
            setattr(self, name, None)
        self.v_seq: Optional[Tensor] = None

    # ---- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the state (and its graph): the next forward starts a new sequence."""
        for name in self._state_names:
            setattr(self, name, None)
        self.v_seq = None

    def detach(self) -> None:
        """Keep the state's values but cut its autograd graph (truncated BPTT); v_seq too."""
        for name in self._state_names:
            setattr(self, name, detach_value(getattr(self, name)))
        self.v_seq = detach_value(self.v_seq)

    def _state_snapshot(self):
        return tuple(getattr(self, name) for name in self._state_names), self.v_seq

    def _state_restore(self, snapshot) -> None:
        states, self.v_seq = snapshot
        for name, value in zip(self._state_names, states):
            setattr(self, name, value)

    def _states_for(self, x: Tensor, shape: tuple, arg: str) -> tuple:
        """The stored states as initial values for a step of the given shape, checked (not changed)."""
        out: list[Optional[Tensor]] = []
        for name in self._state_names:
            s = getattr(self, name)
            if s is None:
                out.append(None)
                continue
            if isinstance(s, (int, float)) and not isinstance(s, bool):
                # SpikingJelly's convention: a float state is that value for every neuron
                out.append(torch.full(shape, float(s), dtype=x.dtype, device=x.device))
                continue
            if not isinstance(s, Tensor):
                raise TypeError(
                    f"{type(self).__name__}: stored state {name} must be a tensor, a float or None, "
                    f"got {type(s).__name__}; call reset()"
                )
            if tuple(s.shape) != tuple(shape):
                raise ValueError(
                    f"{type(self).__name__}: stored state {name} has shape {tuple(s.shape)} but the "
                    f"input step ({arg}) has shape {tuple(shape)}; call reset() (or "
                    "spikeforge.nn.reset_net(model)) between batches"
                )
            if s.device != x.device:
                raise ValueError(
                    f"{type(self).__name__}: stored state {name} is on {s.device} but {arg} is on "
                    f"{x.device}; call reset() before moving to another device"
                )
            if not s.is_floating_point():
                raise TypeError(
                    f"{type(self).__name__}: stored state {name} must be a floating-point tensor, "
                    f"got {s.dtype}; call reset()"
                )
            out.append(s)
        return tuple(out)

    def _commit(self, states: tuple) -> None:
        for name, value in zip(self._state_names, states):
            setattr(self, name, value)

    # ---- the op call (subclasses) ------------------------------------------------------------------
    def _options(self) -> dict:
        return dict(
            v_threshold=self.v_threshold,
            v_reset=self.v_reset,
            detach_reset=self.detach_reset,
            surrogate=self.surrogate,
            alpha=self.alpha,
        )

    def _grad_from_input(self, x_seq: Tensor, grad_spike: Tensor, need_w_grad: bool = False):
        """(grad of x_seq, grad of the neuron's parameter or None) of a multi-step forward from zero state,
        with the native kernels, without running the forward or building a graph (subclasses)."""
        raise NotImplementedError

    def _multi(self, x_seq: Tensor, v_init: Optional[Tensor], return_v: str, *more_inits):
        raise NotImplementedError

    def _check_call(self, x: Tensor, arg: str, channel_dim: int) -> None:
        """Checks of the module's own parameters against the input (subclasses with parameters)."""

    def _run(self, x_seq: Tensor, states: tuple, return_v: str):
        out = self._multi(x_seq, states[0], return_v, *states[1:])
        if len(out) != 1 + len(self._state_names):
            raise RuntimeError(
                f"{type(self).__name__}._multi returned {len(out)} tensors; expected the spikes and "
                f"one per state {self._state_names}"
            )
        return out[0], tuple(out[1:])

    # ---- forward -------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        if self.step_mode == "m":
            x = check_float_input(name, "x_seq", x)
            if x.dim() < 1:
                raise ValueError(
                    f"{name} in step_mode 'm' expects x_seq of shape [T, *], got a 0-dim tensor "
                    "(use step_mode='s' for one step)"
                )
            self._check_call(x, "x_seq", 2)
            states = self._states_for(x, tuple(x.shape[1:]), "x_seq[t]")
            spike, new = self._run(x, states, "seq" if self.store_v_seq else "last")
            v_seq = None
            if self.store_v_seq:
                v_seq = new[0]
                new = (v_seq[-1] if x.shape[0] > 0 else states[0],) + new[1:]
            if x.shape[0] > 0:  # no step, no change of state
                self._commit(new)
            if self.store_v_seq:
                self.v_seq = v_seq
            return spike
        x = check_float_input(name, "x", x)
        self._check_call(x, "x", 1)
        states = self._states_for(x, tuple(x.shape), "x")
        spike, new = self._run(x.unsqueeze(0), states, "last")
        self._commit(new)
        if self.store_v_seq:  # one more V[t] per step, kept until reset() (as SpikingJelly's single-step mode)
            v_step, old = new[0].unsqueeze(0), self.v_seq
            same = (
                isinstance(old, Tensor)
                and old.shape[1:] == v_step.shape[1:]
                and old.device == v_step.device
                and old.dtype == v_step.dtype
            )
            self.v_seq = torch.cat([old, v_step]) if isinstance(old, Tensor) and same else v_step
        return spike[0]

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{opts}, step_mode={self.step_mode!r}"


class LIF(_Neuron):
    """Leaky integrate-and-fire (SpikingJelly's LIFNode conventions); see docs/ops.md."""

    def __init__(self, tau: float = 2.0, decay_input: bool = True, **kw):
        super().__init__(**kw)
        self.tau = tau
        self.decay_input = decay_input

    def _multi(self, x_seq, v_init, return_v):
        return ops.lif(x_seq, v_init, tau=self.tau, decay_input=self.decay_input, return_v=return_v, **self._options())

    def _grad_from_input(self, x_seq, grad_spike, need_w_grad=False):
        return _ops_neuron._grad_from_input(
            x_seq, grad_spike, None, self.tau, self.decay_input, **self._options(), need_w_grad=False
        )

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class IF(_Neuron):
    """Integrate-and-fire: H = V + X."""

    def _multi(self, x_seq, v_init, return_v):
        return ops.if_neuron(x_seq, v_init, return_v=return_v, **self._options())

    def _grad_from_input(self, x_seq, grad_spike, need_w_grad=False):
        return _ops_neuron._grad_from_input(x_seq, grad_spike, None, None, False, **self._options(), need_w_grad=False)


class PLIF(_Neuron):
    """Parametric LIF (Fang et al. 2021): 1/tau = sigmoid(w), w learnable, w0 = -ln(init_tau - 1).

    num_channels=None learns one w shared by all neurons; num_channels=C learns one per channel
    (dimension 2 of x_seq [T, B, C, ...], dimension 1 of a single step [B, C, ...]).
    """

    def __init__(self, init_tau: float = 2.0, decay_input: bool = True, num_channels: Optional[int] = None, **kw):
        super().__init__(**kw)
        if not init_tau > 1.0:
            raise ValueError(f"init_tau must be > 1 (w0 = -ln(init_tau - 1)), got {init_tau}")
        w0 = -math.log(init_tau - 1.0)
        shape = () if num_channels is None else (int(num_channels),)
        self.w = nn.Parameter(torch.full(shape, w0))
        self.decay_input = decay_input

    @property
    def tau(self) -> Tensor:
        return 1.0 / torch.sigmoid(self.w.detach())

    def _check_call(self, x, arg, channel_dim):
        w = self.w
        if x.device != w.device:
            raise ValueError(
                f"PLIF: {arg} is on {x.device} but the parameter w is on {w.device}; move the input "
                f"(x.to('{w.device}')) or the module (module.to('{x.device}'))"
            )
        if w.numel() != 1 and (x.dim() <= channel_dim or x.shape[channel_dim] != w.numel()):
            layout = "[T, B, C, ...]" if arg == "x_seq" else "[B, C, ...]"
            raise ValueError(
                f"PLIF(num_channels={w.numel()}) expects {arg} of shape {layout} with C = {w.numel()} "
                f"(dimension {channel_dim}), got shape {tuple(x.shape)}"
            )

    def _multi(self, x_seq, v_init, return_v):
        return ops.plif(x_seq, self.w, v_init, decay_input=self.decay_input, return_v=return_v, **self._options())

    def _grad_from_input(self, x_seq, grad_spike, need_w_grad=False):
        return _ops_neuron._grad_from_input(
            x_seq, grad_spike, self.w.detach(), None, self.decay_input, **self._options(), need_w_grad=need_w_grad
        )

    def extra_repr(self) -> str:
        return f"w_shape={tuple(self.w.shape)}, decay_input={self.decay_input}, " + super().extra_repr()


class ALIF(_Neuron):
    """Adaptive-threshold LIF (Bellec et al. 2018, LSNN): the threshold v_threshold + beta_a B rises with
    each spike (B = rho B + (1 - rho) S) and decays back. States v and b; soft reset by default
    (v_reset=None). See spikeforge.ops.alif."""

    _state_names = ("v", "b")

    def __init__(
        self,
        tau: float = 2.0,
        beta_a: float = 1.8,
        rho: float = 0.9,
        decay_input: bool = True,
        v_reset: Optional[float] = None,
        **kw,
    ):
        super().__init__(v_reset=v_reset, **kw)
        self.tau = tau
        self.beta_a = beta_a
        self.rho = rho
        self.decay_input = decay_input

    def _multi(self, x_seq, v_init, return_v, b_init=None):
        return ops.alif(
            x_seq,
            v_init,
            b_init,
            tau=self.tau,
            beta_a=self.beta_a,
            rho=self.rho,
            decay_input=self.decay_input,
            return_v=return_v,
            **self._options(),
        )

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, beta_a={self.beta_a}, rho={self.rho}, decay_input={self.decay_input}, "
            + super().extra_repr()
        )


class ILIF(_Neuron):
    """Integer-spike LIF (I-LIF of Spike-driven Transformer v3 / E-SpikeFormer): spikes are counts 0..D,
    S = round(clamp(H / v_threshold, 0, D)), soft reset V = H - S v_threshold, straight-through gradient.
    tau=None: no leak. See spikeforge.ops.ilif; ops.counts_to_binary expands the counts into D binary steps."""

    def __init__(self, D: int = 4, tau: Optional[float] = 2.0, decay_input: bool = True, **kw):
        for unused in ("v_reset", "surrogate", "alpha"):
            if unused in kw:
                raise TypeError(
                    f"ILIF() got the argument {unused!r}, which integer spikes do not use (soft reset, "
                    "straight-through gradient)"
                )
        super().__init__(v_reset=None, **kw)
        self.D = D
        self.tau = tau
        self.decay_input = decay_input

    def _multi(self, x_seq, v_init, return_v):
        return ops.ilif(
            x_seq,
            v_init,
            D=self.D,
            tau=self.tau,
            v_threshold=self.v_threshold,
            decay_input=self.decay_input,
            detach_reset=self.detach_reset,
            return_v=return_v,
        )

    def extra_repr(self) -> str:
        return (
            f"D={self.D}, tau={self.tau}, decay_input={self.decay_input}, v_threshold={self.v_threshold}, "
            f"detach_reset={self.detach_reset}, step_mode={self.step_mode!r}"
        )


class TernaryLIF(_Neuron):
    """Ternary-spike LIF (Guo et al. 2024): spikes in {-1, 0, 1}, hard reset to v_reset where S != 0 (soft
    with v_reset=None), dS/dH = g'(|H| - v_threshold) (two_sided=True: SpikingJelly's sum of both
    thresholds' surrogates). tau=None: ternary IF. See spikeforge.ops.ternary_lif."""

    def __init__(self, tau: Optional[float] = 2.0, decay_input: bool = True, two_sided: bool = False, **kw):
        super().__init__(**kw)
        self.tau = tau
        self.decay_input = decay_input
        self.two_sided = two_sided

    def _multi(self, x_seq, v_init, return_v):
        return ops.ternary_lif(
            x_seq,
            v_init,
            tau=self.tau,
            decay_input=self.decay_input,
            two_sided=self.two_sided,
            return_v=return_v,
            **self._options(),
        )

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, two_sided={self.two_sided}, " + super().extra_repr()


class NorseLIF(_Neuron):
    """Norse 1.1's current-based LIF (norse.torch.LIF, feed-forward), fused: states v and i. See
    spikeforge.ops.norse_lif and docs/neurons.md.

    Parameters as Norse's LIFParameters (defaults too, as its float32 tensors): tau_syn_inv, tau_mem_inv, v_leak,
    v_th (numbers, as LIFParameters' Python float fields, or tensors broadcastable to one step, learnable when
    they are Parameters), v_reset (a number), and dt.
    ``p`` may be a Norse LIFParameters (any object with those fields); its values then replace the keyword
    defaults. ``method`` / ``alpha`` are Norse's threshold method and its parameter, mapped onto a
    spikeforge surrogate by spikeforge.surrogate.norse_method ("super", the default, is fast_sigmoid with
    slope 1); a method without an exact counterpart is refused. ``surrogate`` (with ``surrogate_alpha``)
    picks a surrogate of spikeforge.surrogate.NORSE_SURROGATES directly instead. At rest v starts at
    v_leak and i at 0, as norse.torch.LIF starts them.
    """

    _state_names = ("v", "i")

    def __init__(
        self,
        p=None,
        *,
        dt: float = 0.001,
        tau_syn_inv=_NORSE_TAU_SYN_INV,
        tau_mem_inv=_NORSE_TAU_MEM_INV,
        v_leak=0.0,
        v_th=1.0,
        v_reset: float = 0.0,
        method: str = "super",
        alpha=100.0,
        surrogate: Optional[str] = None,
        surrogate_alpha: Optional[float] = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        store_v_seq: bool = False,
    ):
        if p is not None:
            fields = ("tau_syn_inv", "tau_mem_inv", "v_leak", "v_th", "v_reset", "method", "alpha")
            missing = [f for f in fields if not hasattr(p, f)]
            if missing:
                raise TypeError(
                    f"p must be a Norse LIFParameters (fields {fields}); {type(p).__name__} lacks {missing}"
                )
            tau_syn_inv, tau_mem_inv, v_leak, v_th = p.tau_syn_inv, p.tau_mem_inv, p.v_leak, p.v_th
            v_reset, method, alpha = p.v_reset, p.method, p.alpha
        if isinstance(v_reset, Tensor):  # a kernel constant: Norse's default is a 0-dim tensor
            if v_reset.numel() != 1 or v_reset.requires_grad:
                grad = " that requires grad" if v_reset.requires_grad else ""
                raise ValueError(
                    "v_reset must be one number (it is a constant of the kernel), got a tensor of "
                    f"shape {tuple(v_reset.shape)}{grad}"
                )
            v_reset = float(v_reset)
        if surrogate is None:
            surrogate, surrogate_alpha = norse_method(method, alpha)
        super().__init__(
            v_threshold=v_th,
            v_reset=v_reset,
            detach_reset=detach_reset,
            surrogate=surrogate,
            alpha=surrogate_alpha,
            step_mode=step_mode,
            store_v_seq=store_v_seq,
        )
        self.dt = dt
        self.tau_syn_inv = tau_syn_inv
        self.tau_mem_inv = tau_mem_inv
        self.v_leak = v_leak

    def _multi(self, x_seq, v_init, return_v, i_init=None):
        return ops.norse_lif(
            x_seq,
            v_init,
            i_init,
            dt=self.dt,
            tau_syn_inv=self.tau_syn_inv,
            tau_mem_inv=self.tau_mem_inv,
            v_leak=self.v_leak,
            v_th=self.v_threshold,
            v_reset=self.v_reset,
            detach_reset=self.detach_reset,
            surrogate=self.surrogate,
            surrogate_alpha=self.alpha,
            return_v=return_v,
        )

    def extra_repr(self) -> str:
        return (
            f"dt={self.dt}, tau_syn_inv={self.tau_syn_inv}, tau_mem_inv={self.tau_mem_inv}, "
            f"v_leak={self.v_leak}, v_th={self.v_threshold}, v_reset={self.v_reset}, "
            f"detach_reset={self.detach_reset}, surrogate={self.surrogate!r}, surrogate_alpha={self.alpha}, "
            f"step_mode={self.step_mode!r}"
        )


def reset_net(model: nn.Module) -> None:
    """reset() every module in model that has one (call between independent batches): spikeforge's neurons
    and any other stateful module that follows the convention (SpikingJelly's neurons, a custom neuron
    passed to a zoo model), as SpikingJelly's functional.reset_net does. Containers whose reset() only
    resets their children (``_reset_delegates = True``) are skipped: their children are visited anyway."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for m in walk(model):
        reset_module(m)


def detach_net(model: nn.Module) -> None:
    """detach() every stateful module in model (truncated BPTT: the states keep their values, their graphs
    into the earlier chunks are cut), as SpikingJelly's functional.detach_net does; other modules with a
    detach() (SpikingJelly's neurons) are detached too. Containers that delegate (``_reset_delegates``)
    are skipped: their children are visited anyway."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for m in walk(model):
        detach_module(m)
