"""Spiking neuron modules: LIF, IF, PLIF over spikeforge.ops.

step_mode "m" (default): forward takes a whole sequence x_seq [T, B, ...] and runs the fused
multi-step kernel once. The state left at the end is kept, detached, so the next call continues the
sequence without backpropagating into the previous one; call reset() before an unrelated sequence.
step_mode "s": forward takes one step x [B, ...]; the state keeps its graph across steps (BPTT
through a Python time loop) until reset().
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import neuron as _ops_neuron

__all__ = ["LIF", "IF", "PLIF", "reset_net"]


class _Neuron(nn.Module):
    def __init__(self, *, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0, detach_reset: bool = False,
                 surrogate: str = "sigmoid", alpha: Optional[float] = None, step_mode: str = "m",
                 store_v_seq: bool = False):
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
        self.v: Optional[Tensor] = None
        self.v_seq: Optional[Tensor] = None

    def reset(self) -> None:
        """Forget the membrane state (and its graph): the next forward starts a new sequence."""
        self.v = None
        self.v_seq = None

    def detach(self) -> None:
        """Keep the state but cut its graph (truncated BPTT in single-step mode)."""
        if self.v is not None:
            self.v = self.v.detach()

    def _options(self) -> dict:
        return dict(v_threshold=self.v_threshold, v_reset=self.v_reset, detach_reset=self.detach_reset,
                    surrogate=self.surrogate, alpha=self.alpha)

    def _grad_from_input(self, x_seq: Tensor, grad_spike: Tensor, need_w_grad: bool = False):
        """(grad of x_seq, grad of the neuron's parameter or None) of a multi-step forward from zero state,
        with the native kernels, without running the forward or building a graph (subclasses)."""
        raise NotImplementedError

    def _multi(self, x_seq: Tensor, v_init: Optional[Tensor], return_v: str):
        raise NotImplementedError

    def _state_for(self, shape) -> Optional[Tensor]:
        if self.v is not None and tuple(self.v.shape) != tuple(shape):
            raise ValueError(f"{type(self).__name__}: stored state has shape {tuple(self.v.shape)} but the input "
                             f"step has shape {tuple(shape)}; call reset() (or spikeforge.nn.reset_net(model)) "
                             "between batches")
        return self.v

    def forward(self, x: Tensor) -> Tensor:
        if self.step_mode == "m":
            if x.dim() < 1:
                raise ValueError(f"{type(self).__name__} in step_mode 'm' expects x_seq of shape [T, *]")
            v_init = self._state_for(x.shape[1:])
            spike, v = self._multi(x, v_init, "seq" if self.store_v_seq else "last")
            if self.store_v_seq:
                self.v_seq = v
                v = v[-1] if v.shape[0] > 0 else (v_init if v_init is not None else None)
            self.v = None if v is None else v.detach()
            return spike
        v_init = self._state_for(x.shape)
        spike, v = self._multi(x.unsqueeze(0), v_init, "last")
        self.v = v
        return spike[0]

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{opts}, step_mode={self.step_mode!r}"


class LIF(_Neuron):
    """Leaky integrate-and-fire (SpikingJelly's LIFNode conventions); see shared/SEMANTICS.md."""

    def __init__(self, tau: float = 2.0, decay_input: bool = True, **kw):
        super().__init__(**kw)
        self.tau = tau
        self.decay_input = decay_input

    def _multi(self, x_seq, v_init, return_v):
        return ops.lif(x_seq, v_init, tau=self.tau, decay_input=self.decay_input, return_v=return_v,
                       **self._options())

    def _grad_from_input(self, x_seq, grad_spike, need_w_grad=False):
        return _ops_neuron._grad_from_input(x_seq, grad_spike, None, self.tau, self.decay_input, **self._options(),
                                            need_w_grad=False)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class IF(_Neuron):
    """Integrate-and-fire: H = V + X."""

    def _multi(self, x_seq, v_init, return_v):
        return ops.if_neuron(x_seq, v_init, return_v=return_v, **self._options())

    def _grad_from_input(self, x_seq, grad_spike, need_w_grad=False):
        return _ops_neuron._grad_from_input(x_seq, grad_spike, None, None, False, **self._options(),
                                            need_w_grad=False)


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

    def _multi(self, x_seq, v_init, return_v):
        return ops.plif(x_seq, self.w, v_init, decay_input=self.decay_input, return_v=return_v, **self._options())

    def _grad_from_input(self, x_seq, grad_spike, need_w_grad=False):
        return _ops_neuron._grad_from_input(x_seq, grad_spike, self.w.detach(), None, self.decay_input,
                                            **self._options(), need_w_grad=need_w_grad)

    def extra_repr(self) -> str:
        return f"w_shape={tuple(self.w.shape)}, decay_input={self.decay_input}, " + super().extra_repr()


def reset_net(model: nn.Module) -> None:
    """reset() every module in model that has one (call between independent batches): spikeforge's neurons
    and any other stateful module that follows the convention (SpikingJelly's neurons, a custom neuron
    passed to a zoo model), as SpikingJelly's functional.reset_net does. Containers whose reset() only
    resets their children (``_reset_delegates = True``) are skipped: their children are visited anyway."""
    for m in model.modules():
        reset = getattr(m, "reset", None)
        if callable(reset) and not getattr(m, "_reset_delegates", False):
            reset()
