"""Parallel spiking neuron modules (Fang et al. 2023): PSN, MaskedPSN, SlidingPSN.

Input [T, B, ...] in step_mode "m". MaskedPSN (once lam = 1) and SlidingPSN also run in step_mode "s"
(streaming, one step [B, ...] per call) with a queue of the last k inputs; a streamed sequence gives
bitwise the spikes of the multi-step op, and its gradients: the queued inputs keep their autograd graph.
detach() cuts that graph (truncated BPTT), reset() clears the queue. A step is checked as the multi-step op
checks its sequence, on every step, and a step that raises leaves the queue and the step counter as they
were. A multi-step call is one whole sequence: it neither reads nor changes the queue.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ._inputs import check_float_input, check_matches_parameters
from ._state import CopiesDetached, detach_value

__all__ = ["PSN", "MaskedPSN", "SlidingPSN", "set_masked_psn_lambda"]


def _kaiming(shape) -> Tensor:
    w = torch.empty(shape)
    nn.init.kaiming_uniform_(w if w.dim() > 1 else w.unsqueeze(0), a=math.sqrt(5))
    return w


def _check_sequence(module: nn.Module, x_seq, T: Optional[int]) -> Tensor:
    """A multi-step input: a floating [T, *] tensor on the parameters' device with the module's T (if any)."""
    name = type(module).__name__
    check_float_input(name, "x_seq", x_seq, min_dim=1)
    check_matches_parameters(name, "x_seq", x_seq, module, dtype=False)
    if T is not None and x_seq.shape[0] != T:
        raise ValueError(
            f"{name} was built for T={T} steps but x_seq has {x_seq.shape[0]} "
            f"(shape {tuple(x_seq.shape)}); its weight is [T, T]"
        )
    return x_seq


class PSN(nn.Module):
    """PSN(T): H = W X + b over the whole sequence; W [T, T] kaiming-uniform (a = sqrt 5), b [T] = -1."""

    def __init__(self, T: int, surrogate: str = "atan", alpha: Optional[float] = None):
        super().__init__()
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an int >= 1, got {T!r}")
        self.T, self.surrogate, self.alpha = T, surrogate, alpha
        self.weight = nn.Parameter(_kaiming((T, T)))
        self.bias = nn.Parameter(torch.full((T,), -1.0))

    def forward(self, x_seq: Tensor) -> Tensor:
        _check_sequence(self, x_seq, self.T)
        return ops.psn(x_seq, self.weight, self.bias, surrogate=self.surrogate, alpha=self.alpha)

    def reset(self) -> None:  # stateless; present so reset_net treats every neuron alike
        pass

    def extra_repr(self) -> str:
        return f"T={self.T}, surrogate={self.surrogate!r}"


class _Streaming(CopiesDetached, nn.Module):
    def __init__(self, k: int, step_mode: str):
        super().__init__()
        if step_mode not in ("m", "s"):
            raise ValueError(f"step_mode must be 'm' or 's', got {step_mode!r}")
        self.k, self.step_mode = k, step_mode
        self._queue: list[Tensor] = []
        self._t = 0

    def reset(self) -> None:
        """Forget the queued inputs: the next step starts a new sequence at t = 0."""
        self._queue, self._t = [], 0

    def detach(self) -> None:
        """Keep the queued inputs but cut their autograd graph (truncated BPTT in step_mode "s")."""
        self._queue = detach_value(self._queue)

    def _state_snapshot(self):
        return self._queue, self._t

    def _state_restore(self, snapshot) -> None:
        self._queue, self._t = snapshot

    def _check_param(self, name: str, shape: tuple) -> None:
        """A step reads the parameters by index: check the shapes the multi-step op would check."""
        p = getattr(self, name)
        if not isinstance(p, Tensor) or not p.is_floating_point() or tuple(p.shape) != shape:
            got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
            raise ValueError(
                f"{type(self).__name__}: {name} must be a floating-point tensor of shape {shape}, got {got}"
            )

    def _window(self, x) -> tuple[Tensor, list]:
        """(window [k, *] of the latest inputs, zero-padded at the front; the queue after this step), checked
        as the multi-step op checks x_seq. Nothing is stored: the caller commits the queue once the step ran."""
        name = type(self).__name__
        check_float_input(name, "x", x)
        check_matches_parameters(name, "x", x, self, dtype=False)
        if self._queue:
            last = self._queue[-1]
            if last.shape != x.shape:
                raise ValueError(
                    f"{name}: step input shape {tuple(x.shape)} differs from the queued "
                    f"{tuple(last.shape)}; call reset() between sequences"
                )
            if last.dtype != x.dtype or last.device != x.device:
                raise ValueError(
                    f"{name}: step input is {x.dtype} on {x.device} but the queued steps are "
                    f"{last.dtype} on {last.device} (a sequence has one dtype and device); call "
                    "reset() between sequences"
                )
        queue = (self._queue + [x])[-self.k :]
        pad = [torch.zeros_like(x)] * (self.k - len(queue))
        return torch.stack(pad + queue), queue


class MaskedPSN(_Streaming):
    """MaskedPSN(k, T): W [T, T] masked to the causal band of order k, relaxed by lam:
    W_eff = W * (lam M + 1 - lam). Schedule lam from lambda_init to 1 during training with
    set_lambda() / set_masked_psn_lambda(model, lam); step_mode "s" needs lam = 1."""

    def __init__(
        self,
        k: int,
        T: int,
        lambda_init: float = 0.0,
        surrogate: str = "atan",
        alpha: Optional[float] = None,
        step_mode: str = "m",
    ):
        super().__init__(k, step_mode)
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an int >= 1, got {T!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= T:
            raise ValueError(f"k must be an int in [1, T={T}], got {k!r}")
        self.T, self.surrogate, self.alpha = T, surrogate, alpha
        self.weight = nn.Parameter(_kaiming((T, T)))
        self.bias = nn.Parameter(torch.full((T,), -1.0))
        self.lam = _lambda(lambda_init, "lambda_init")

    def set_lambda(self, lam: float) -> None:
        """Mask relaxation factor in [0, 1]: 0 = full PSN, 1 = strictly banded (order k)."""
        self.lam = _lambda(lam, "lam")

    def forward(self, x: Tensor) -> Tensor:
        if self.step_mode == "m":
            _check_sequence(self, x, self.T)
            return ops.masked_psn(
                x, self.weight, self.bias, self.k, self.lam, surrogate=self.surrogate, alpha=self.alpha
            )
        if self.lam != 1.0:
            raise ValueError(f"MaskedPSN single-step mode needs lam = 1 (the mask fully applied), got lam = {self.lam}")
        t = self._t
        if t >= self.T:
            raise ValueError(f"MaskedPSN was built for T={self.T} steps; call reset() to start a new sequence")
        self._check_param("weight", (self.T, self.T))
        self._check_param("bias", (self.T,))
        window, queue = self._window(x)
        row = self.weight[t, max(0, t - self.k + 1) : t + 1]
        row = torch.cat([row.new_zeros(self.k - row.shape[0]), row])
        spike = ops.psn_window_step(window, row, self.bias[t : t + 1], surrogate=self.surrogate, alpha=self.alpha)
        self._queue, self._t = queue, t + 1
        return spike

    def extra_repr(self) -> str:
        return f"k={self.k}, T={self.T}, lam={self.lam}, step_mode={self.step_mode!r}"


class SlidingPSN(_Streaming):
    """SlidingPSN(k): H[t] = sum_i w[i] X[t-k+1+i] + b with k shared taps; any T. exp_init: w[k-1] = 1,
    w[i] = w[i+1] / 2; else kaiming-uniform. b = -1."""

    def __init__(
        self,
        k: int,
        exp_init: bool = True,
        surrogate: str = "atan",
        alpha: Optional[float] = None,
        step_mode: str = "m",
    ):
        super().__init__(k, step_mode)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        self.surrogate, self.alpha = surrogate, alpha
        if exp_init:
            w = torch.tensor([0.5 ** (k - 1 - i) for i in range(k)])
        else:
            w = _kaiming((k,))
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.tensor(-1.0))

    def forward(self, x: Tensor) -> Tensor:
        if self.step_mode == "m":
            _check_sequence(self, x, None)
            return ops.sliding_psn(x, self.weight, self.bias, surrogate=self.surrogate, alpha=self.alpha)
        self._check_param("weight", (self.k,))
        if not isinstance(self.bias, Tensor) or self.bias.numel() != 1:
            raise ValueError("SlidingPSN: bias must be a tensor with one element (shared by every step)")
        window, queue = self._window(x)
        spike = ops.psn_window_step(window, self.weight, self.bias, surrogate=self.surrogate, alpha=self.alpha)
        self._queue, self._t = queue, self._t + 1
        return spike

    def extra_repr(self) -> str:
        return f"k={self.k}, step_mode={self.step_mode!r}"


def _lambda(lam, name: str, clamp: bool = False) -> float:
    """A mask relaxation factor: a real number (or a one-element tensor) in [0, 1] (clamped there)."""
    if isinstance(lam, Tensor) and lam.numel() == 1:
        lam = lam.item()
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(lam).__name__}")
    lam = float(lam)
    if lam != lam:
        raise ValueError(f"{name} must be a number in [0, 1], got nan")
    if clamp:
        return min(1.0, max(0.0, lam))
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {lam}")
    return lam


def set_masked_psn_lambda(model: nn.Module, lam: float) -> None:
    """Set lam on every MaskedPSN in model, e.g. lam = min(1, epoch / warmup_epochs) each epoch (clamped to
    [0, 1])."""
    lam = _lambda(lam, "lam", clamp=True)
    for m in model.modules():
        if isinstance(m, MaskedPSN):
            m.set_lambda(lam)
