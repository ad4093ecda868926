"""Parallel spiking neuron modules (Fang et al. 2023): PSN, MaskedPSN, SlidingPSN.

Input [T, B, ...] in step_mode "m". MaskedPSN (once lam = 1) and SlidingPSN also run in step_mode "s"
(streaming, one step [B, ...] per call) with a queue of the last k inputs; a streamed sequence gives
bitwise the spikes of the multi-step op. reset() clears the queue.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops

__all__ = ["PSN", "MaskedPSN", "SlidingPSN", "set_masked_psn_lambda"]


def _kaiming(shape) -> Tensor:
    w = torch.empty(shape)
    nn.init.kaiming_uniform_(w if w.dim() > 1 else w.unsqueeze(0), a=math.sqrt(5))
    return w


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
        return ops.psn(x_seq, self.weight, self.bias, surrogate=self.surrogate, alpha=self.alpha)

    def reset(self) -> None:  # stateless; present so reset_net treats every neuron alike
        pass

    def extra_repr(self) -> str:
        return f"T={self.T}, surrogate={self.surrogate!r}"


class _Streaming(nn.Module):
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

    def _window(self, x: Tensor) -> Tensor:
        if self._queue and self._queue[-1].shape != x.shape:
            raise ValueError(f"{type(self).__name__}: step input shape {tuple(x.shape)} differs from the queued "
                             f"{tuple(self._queue[-1].shape)}; call reset() between sequences")
        self._queue = (self._queue + [x])[-self.k:]
        pad = [torch.zeros_like(x)] * (self.k - len(self._queue))
        return torch.stack(pad + self._queue)


class MaskedPSN(_Streaming):
    """MaskedPSN(k, T): W [T, T] masked to the causal band of order k, relaxed by lam:
    W_eff = W * (lam M + 1 - lam). Schedule lam from lambda_init to 1 during training with
    set_lambda() / set_masked_psn_lambda(model, progress); step_mode "s" needs lam = 1."""

    def __init__(self, k: int, T: int, lambda_init: float = 0.0, surrogate: str = "atan",
                 alpha: Optional[float] = None, step_mode: str = "m"):
        super().__init__(k, step_mode)
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an int >= 1, got {T!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= T:
            raise ValueError(f"k must be an int in [1, T={T}], got {k!r}")
        self.T, self.surrogate, self.alpha = T, surrogate, alpha
        self.weight = nn.Parameter(_kaiming((T, T)))
        self.bias = nn.Parameter(torch.full((T,), -1.0))
        self.lam = 0.0
        self.set_lambda(lambda_init)

    def set_lambda(self, lam: float) -> None:
        """Mask relaxation factor in [0, 1]: 0 = full PSN, 1 = strictly banded (order k)."""
        lam = float(lam)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        self.lam = lam

    def forward(self, x: Tensor) -> Tensor:
        if self.step_mode == "m":
            return ops.masked_psn(x, self.weight, self.bias, self.k, self.lam, surrogate=self.surrogate,
                                  alpha=self.alpha)
        if self.lam != 1.0:
            raise ValueError("MaskedPSN single-step mode needs lam = 1 (the mask fully applied)")
        t = self._t
        if t >= self.T:
            raise ValueError(f"MaskedPSN was built for T={self.T} steps; call reset() to start a new sequence")
        window = self._window(x)
        row = self.weight[t, max(0, t - self.k + 1):t + 1]
        row = torch.cat([row.new_zeros(self.k - row.shape[0]), row])
        self._t += 1
        return ops.psn_window_step(window, row, self.bias[t:t + 1], surrogate=self.surrogate, alpha=self.alpha)

    def extra_repr(self) -> str:
        return f"k={self.k}, T={self.T}, lam={self.lam}, step_mode={self.step_mode!r}"


class SlidingPSN(_Streaming):
    """SlidingPSN(k): H[t] = sum_i w[i] X[t-k+1+i] + b with k shared taps; any T. exp_init: w[k-1] = 1,
    w[i] = w[i+1] / 2; else kaiming-uniform. b = -1."""

    def __init__(self, k: int, exp_init: bool = True, surrogate: str = "atan", alpha: Optional[float] = None,
                 step_mode: str = "m"):
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
            return ops.sliding_psn(x, self.weight, self.bias, surrogate=self.surrogate, alpha=self.alpha)
        return ops.psn_window_step(self._window(x), self.weight, self.bias, surrogate=self.surrogate,
                                   alpha=self.alpha)

    def extra_repr(self) -> str:
        return f"k={self.k}, step_mode={self.step_mode!r}"


def set_masked_psn_lambda(model: nn.Module, lam: float) -> None:
    """Set lam on every MaskedPSN in model, e.g. lam = min(1, epoch / warmup_epochs) each epoch."""
    lam = float(lam)
    if lam != lam:
        raise ValueError("lam must be a number in [0, 1], got nan")
    for m in model.modules():
        if isinstance(m, MaskedPSN):
            m.set_lambda(min(1.0, max(0.0, lam)))
