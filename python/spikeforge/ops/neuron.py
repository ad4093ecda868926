"""Multi-step IF / LIF / PLIF neurons: custom ops over the native kernels (csrc/core/neuron.h).

Two entry paths share one implementation (_forward_impl / _backward_impl):
- the custom ops ``torch.ops.spikeforge.neuron_fwd`` / ``neuron_bwd`` (register_fake +
  register_autograd): what torch.compile, export and opcheck see;
- an eager fast path (a torch.autograd.Function, or no autograd node at all when no gradient is
  needed) taken for plain tensors outside compilation. The custom-op dispatcher costs 40-90 us
  per call in eager PyTorch; the fast path keeps per-call overhead near the allocation cost.
When the native module is missing or lacks the tensor's device, the ops fall back to
``spikeforge.reference``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .._native import native
from ._common import (_CPU, _check_bool, _check_number, _check_surrogate, _check_x, _flat, _has_native, _stream,
                      _tracing)

__all__ = ["lif", "if_neuron", "plif", "lif_step", "if_step", "plif_step", "default_recompute"]


# Backward either reads H saved by the forward (one [T, N] tensor in the activation dtype) or
# recomputes it from X inside the fused backward kernel. Both save one [T, N] tensor; recompute
# moves fewer bytes (5 instead of 6 per element-step) and keeps H in float32 for the surrogate, so
# it is the CPU default (bench/results/cpu_neurons.json has the measurement). On CUDA recompute
# runs the forward into a workspace before the backward kernel, which moves more bytes, so CUDA
# saves H by default.
default_recompute = {"cpu": True, "cuda": False}


# --------------------------------------------------------------------------------------------
# validation of this family's arguments (shared checks in ops/_common.py)
# --------------------------------------------------------------------------------------------
def _check_state(v, x_seq: Tensor, name: str, state_shape) -> Optional[Tensor]:
    if v is None:
        return None
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {v.dtype}")
    if tuple(v.shape) != tuple(state_shape):
        raise ValueError(f"{name} must have shape {tuple(state_shape)} (x_seq.shape[1:]), got {tuple(v.shape)}")
    if v.device != x_seq.device:
        raise ValueError(f"{name} is on {v.device} but x_seq is on {x_seq.device}")
    return v if v.dtype == x_seq.dtype else v.to(x_seq.dtype)


def _check_w(w, x_seq: Tensor) -> Tensor:
    if not isinstance(w, Tensor):
        raise TypeError(f"w must be a torch.Tensor (1/tau = sigmoid(w)), got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {w.dtype}")
    if w.device != x_seq.device:
        raise ValueError(f"w is on {w.device} but x_seq is on {x_seq.device}")
    if w.numel() != 1:
        if w.dim() != 1 or x_seq.dim() < 3 or w.shape[0] != x_seq.shape[2]:
            raise ValueError("w must be a scalar or have shape [C] with C = x_seq.shape[2] (the channel dim); "
                             f"got w of shape {tuple(w.shape)} for x_seq of shape {tuple(x_seq.shape)}")
    want = torch.float64 if x_seq.dtype == torch.float64 else torch.float32
    return w if w.dtype == want else w.to(want)


def _check_return_v(return_v) -> bool:
    if return_v not in ("last", "seq"):
        raise ValueError(f"return_v must be 'last' or 'seq', got {return_v!r}")
    return return_v == "seq"


# Validated scalar options, memoised by value and type. A model calls each neuron with the same options
# every step, and re-validating them cost ~5-8 us per call, a third of the eager overhead of the op
# on a small tensor (`spikeforge bench neurons`, per-call overhead). Types are part of the key so
# that True (== 1) or 2 (== 2.0) never reuse another value's verdict; only valid options are stored,
# so a bad one raises on every call. Not used while tracing (values may be symbolic).
_OPTIONS_CACHE: dict = {}
_OPTIONS_CACHE_MAX = 1024


def _neuron_options(tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, return_v):
    """-> (k, v_threshold, v_reset, decay_input, detach_reset, surrogate id, alpha, v_seq), validated.

    tau=None: no leak (IF) or a learnable one (PLIF), k = 0."""
    tracing = _tracing()
    if not tracing:
        key = (tau, type(tau), v_threshold, type(v_threshold), v_reset, type(v_reset), decay_input,
               type(decay_input), detach_reset, type(detach_reset), surrogate, type(surrogate), alpha, type(alpha),
               return_v, type(return_v))
        try:
            hit = _OPTIONS_CACHE.get(key)
        except TypeError:  # an unhashable argument: validation below names it
            key, hit = None, None
        if hit is not None:
            return hit
    k = 0.0 if tau is None else 1.0 / _check_number("tau", tau, positive=True)
    v_threshold = _check_number("v_threshold", v_threshold)
    v_reset = _check_number("v_reset", v_reset, allow_none=True)
    _check_bool("decay_input", decay_input)
    _check_bool("detach_reset", detach_reset)
    sid, alpha_v = _check_surrogate(surrogate, alpha)
    options = (k, v_threshold, v_reset, decay_input, detach_reset, sid, alpha_v, _check_return_v(return_v))
    if not tracing and key is not None and len(_OPTIONS_CACHE) < _OPTIONS_CACHE_MAX:
        _OPTIONS_CACHE[key] = options
    return options


# --------------------------------------------------------------------------------------------
# implementation shared by the custom ops and the eager fast path
# --------------------------------------------------------------------------------------------
def _layout(x: Tensor, w: Optional[Tensor]) -> tuple[int, int, int, int]:
    """T, N, and PLIF's channel layout C, S (neuron i uses w[(i // S) % C])."""
    T = x.shape[0]
    N = x.numel() // T if T > 0 else math.prod(x.shape[1:])
    if w is not None and w.numel() > 1:
        return T, N, w.numel(), math.prod(x.shape[3:])
    return T, N, 1, 1


def _forward_impl(x: Tensor, v_init: Optional[Tensor], w: Optional[Tensor], k: float, v_threshold: float,
                  v_reset: float, hard_reset: bool, decay_input: bool, surrogate: int, alpha: float,
                  v_seq: bool, save_h: bool) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """-> (spike_seq, v_seq or v_last, h_seq or None)."""
    x = x.contiguous()
    T, N, C, S = _layout(x, w)
    spike = torch.empty_like(x)
    # empty_like(x[0]) is ~2 us cheaper per call than empty(shape, dtype=, device=) (eager overhead)
    v_out = torch.empty_like(x) if v_seq else (torch.empty_like(x[0]) if T > 0 else x.new_empty(x.shape[1:]))
    h = torch.empty_like(x) if save_h else None
    if T == 0 or N == 0:  # nothing to compute; with no step the returned state is the initial state
        if not v_seq:
            v_out.copy_(v_init) if v_init is not None else v_out.fill_(v_reset if hard_reset else 0.0)
        return spike, v_out, h
    args = (x, None if v_init is None else v_init.contiguous(), w, spike, h, v_out)
    if x.dim() > 8:
        args = _flat(args)
    native.neuron_forward(*args, T, N, C, S, k, v_threshold, v_reset, hard_reset, decay_input, surrogate, alpha,
                          torch.get_num_threads(), _stream(x))
    return spike, v_out, h


def _backward_impl(grad_spike: Tensor, grad_v: Optional[Tensor], x: Optional[Tensor], h: Optional[Tensor],
                   v_init: Optional[Tensor], w: Optional[Tensor], k: float, v_threshold: float, v_reset: float,
                   hard_reset: bool, decay_input: bool, detach_reset: bool, surrogate: int, alpha: float,
                   need_v_init_grad: bool, need_w_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    grad_spike = grad_spike.contiguous()
    ref = x if x is not None else h
    T, N, C, S = _layout(ref, w)
    if h is not None and h.numel() == 0 and T * N > 0:
        h = None
    if x is not None:
        x = x.contiguous()
    if v_init is not None:
        v_init = v_init.contiguous()
    if grad_v is not None:
        grad_v = grad_v.contiguous()
    if h is None and grad_spike.device.type == "cuda":
        # Recompute on CUDA: run the forward into a workspace, then the backward kernel reads it.
        _, _, h = _forward_impl(x, v_init, w, k, v_threshold, v_reset, hard_reset, decay_input, surrogate, alpha,
                                False, True)
    grad_x = torch.empty_like(grad_spike)
    grad_v_init = grad_spike.new_empty(grad_spike.shape[1:]) if need_v_init_grad else grad_spike.new_empty(0)
    grad_w = torch.empty_like(w) if need_w_grad else grad_spike.new_empty(0)
    if N == 0 or T == 0:  # no neuron or no step: only v_init's gradient can be non-zero (T == 0: it is grad_v)
        grad_x.zero_()
        grad_w.zero_()
        if need_v_init_grad:
            grad_v_init.copy_(grad_v) if (grad_v is not None and T == 0 and grad_v.dim() == grad_v_init.dim()) \
                else grad_v_init.zero_()
        return grad_x, grad_v_init, grad_w
    grad_k_ws = torch.empty(N, dtype=w.dtype, device=w.device) if need_w_grad else None
    args = (grad_spike, grad_v, x, h, v_init, w, grad_x, grad_v_init if need_v_init_grad else None, grad_k_ws,
            grad_w if need_w_grad else None)
    if grad_spike.dim() > 8:
        args = _flat(args)
    native.neuron_backward(*args, T, N, C, S, k, v_threshold, v_reset,
                           hard_reset, decay_input, detach_reset, surrogate, alpha, torch.get_num_threads(),
                           _stream(grad_spike))
    return grad_x, grad_v_init, grad_w


# --------------------------------------------------------------------------------------------
# custom ops (torch.compile / export / opcheck path)
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("spikeforge::neuron_fwd", mutates_args=())
def neuron_fwd(x: Tensor, v_init: Optional[Tensor], w: Optional[Tensor], k: float, v_threshold: float,
               v_reset: float, hard_reset: bool, decay_input: bool, detach_reset: bool, surrogate: int,
               alpha: float, v_seq: bool, save_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Multi-step IF/LIF/PLIF forward -> (spike_seq, v_seq or v_last, h_seq or empty)."""
    s, v, h = _forward_impl(x, v_init, w, k, v_threshold, v_reset, hard_reset, decay_input, surrogate, alpha, v_seq,
                            save_h)
    return s, v, (h if h is not None else x.new_empty(0))


@neuron_fwd.register_fake
def _(x, v_init, w, k, v_threshold, v_reset, hard_reset, decay_input, detach_reset, surrogate, alpha, v_seq,
      save_h):
    # contiguous, as the real op allocates them from x.contiguous()
    v = x.new_empty(x.shape) if v_seq else x.new_empty(x.shape[1:])
    return x.new_empty(x.shape), v, (x.new_empty(x.shape) if save_h else x.new_empty(0))


@torch.library.custom_op("spikeforge::neuron_bwd", mutates_args=())
def neuron_bwd(grad_spike: Tensor, grad_v: Optional[Tensor], x: Optional[Tensor], h: Optional[Tensor],
               v_init: Optional[Tensor], w: Optional[Tensor], k: float, v_threshold: float, v_reset: float,
               hard_reset: bool, decay_input: bool, detach_reset: bool, surrogate: int, alpha: float,
               need_v_init_grad: bool, need_w_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Multi-step IF/LIF/PLIF backward -> (grad_x, grad_v_init or empty, grad_w or empty)."""
    return _backward_impl(grad_spike, grad_v, x, h, v_init, w, k, v_threshold, v_reset, hard_reset, decay_input,
                          detach_reset, surrogate, alpha, need_v_init_grad, need_w_grad)


@neuron_bwd.register_fake
def _(grad_spike, grad_v, x, h, v_init, w, k, v_threshold, v_reset, hard_reset, decay_input, detach_reset,
      surrogate, alpha, need_v_init_grad, need_w_grad):
    gvi = grad_spike.new_empty(grad_spike.shape[1:]) if need_v_init_grad else grad_spike.new_empty(0)
    gw = w.new_empty(w.shape) if need_w_grad else grad_spike.new_empty(0)
    return grad_spike.new_empty(grad_spike.shape), gvi, gw


# Positions of the non-tensor arguments of neuron_fwd after (x, v_init, w).
_PARAM_NAMES = ("k", "v_threshold", "v_reset", "hard_reset", "decay_input", "detach_reset", "surrogate", "alpha")


def _setup_context(ctx, inputs, output):
    x, v_init, w = inputs[:3]
    ctx.params = inputs[3:11]
    save_h = inputs[12]
    h = output[2]
    decay_input = ctx.params[4]
    keep_x = (not save_h) or (w is not None and decay_input)
    ctx.save_for_backward(x if keep_x else None, h if save_h else None, v_init, w)
    ctx.v_init_given, ctx.w_given = v_init is not None, w is not None


def _grads(ctx, grad_spike, grad_v, call):
    x, h, v_init, w = ctx.saved_tensors
    need_x, need_vi, need_w = ctx.needs_input_grad[:3]
    ref = x if x is not None else h
    if grad_spike is None:
        grad_spike = torch.zeros_like(ref)
    k, vth, vr, hard, decay, detach, sid, alpha = ctx.params
    gx, gvi, gw = call(grad_spike, grad_v, x, h, v_init, w, k, vth, vr, hard, decay, detach, sid, alpha,
                       bool(ctx.v_init_given and need_vi), bool(ctx.w_given and need_w))
    return (gx if need_x else None, gvi if (ctx.v_init_given and need_vi) else None,
            gw if (ctx.w_given and need_w) else None)


def _backward(ctx, grad_spike, grad_v, grad_h):
    return _grads(ctx, grad_spike, grad_v, torch.ops.spikeforge.neuron_bwd) + (None,) * 10


neuron_fwd.register_autograd(_backward, setup_context=_setup_context)


class _NeuronFunction(torch.autograd.Function):
    """Eager fast path: the same forward/backward as the custom ops without the dispatcher's cost."""

    @staticmethod
    def forward(ctx, x, v_init, w, *args):
        k, vth, vr, hard, decay, _detach, sid, alpha, v_seq, save_h = args
        out = _forward_impl(x, v_init, w, k, vth, vr, hard, decay, sid, alpha, v_seq, save_h)
        _setup_context(ctx, (x, v_init, w) + args, out)
        return out[0], out[1]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_spike, grad_v):
        return _grads(ctx, grad_spike, grad_v, _backward_impl) + (None,) * 10


def _run(x_seq, v_init, w, k, v_threshold, v_reset, decay_input, detach_reset, sid, alpha, v_seq):
    """Picks the path: eager fast path, custom op, or reference fallback."""
    hard = v_reset is not None
    vr = v_reset if hard else 0.0
    device = x_seq.device
    recompute = default_recompute.get("cpu" if device == _CPU else device.type, False)
    save_h = not recompute
    args = (k, v_threshold, vr, hard, decay_input, detach_reset, sid, alpha, v_seq, save_h)
    if _tracing() or type(x_seq) is not torch.Tensor:
        s, v, _ = torch.ops.spikeforge.neuron_fwd(x_seq, v_init, w, *args)
        return s, v
    needs_grad = torch.is_grad_enabled() and (
        x_seq.requires_grad or (v_init is not None and v_init.requires_grad) or (w is not None and w.requires_grad))
    if needs_grad:
        s, v = _NeuronFunction.apply(x_seq, v_init, w, *args)
    else:
        s, v, _ = _forward_impl(x_seq, v_init, w, k, v_threshold, vr, hard, decay_input, sid, alpha, v_seq, False)
    return s, v


def _grad_from_input(x_seq: Tensor, grad_spike: Tensor, w: Optional[Tensor], tau, decay_input: bool,
                     v_threshold, v_reset, detach_reset, surrogate, alpha, need_w_grad: bool):
    """The backward of lif / if_neuron (tau None) / plif (w given) from a zero initial state, given only
    x_seq: no forward and no autograd graph (the CPU kernel recomputes the membrane trajectory from x_seq
    as the default backward does; CUDA reruns the forward into a workspace). -> (grad_x, grad_w or None).
    For callers that recompute x_seq in their own backward (models.resnet's fused BN + neuron)."""
    k, vth, vr, decay, detach, sid, alpha_v, _ = _neuron_options(tau, v_threshold, v_reset, decay_input,
                                                                 detach_reset, surrogate, alpha, "last")
    hard = vr is not None
    wk = None if w is None else _check_w(w, x_seq).reshape(-1)  # in the kernel's dtype, as plif() does
    gx, _, gw = _backward_impl(grad_spike, None, x_seq, None, None, wk, k, vth, vr if hard else 0.0, hard, decay,
                               detach, sid, alpha_v, False, need_w_grad)
    return gx, (gw.to(w.dtype).view_as(w) if need_w_grad else None)


# --------------------------------------------------------------------------------------------
# public functional API (shared/API.md)
# --------------------------------------------------------------------------------------------
def lif(x_seq: Tensor, v_init: Optional[Tensor] = None, *, tau: float = 2.0, v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0, decay_input: bool = True, detach_reset: bool = False,
        surrogate: str = "sigmoid", alpha: Optional[float] = None, return_v: str = "last") -> tuple[Tensor, Tensor]:
    """Multi-step leaky integrate-and-fire over x_seq [T, *] -> (spike_seq [T, *], v).

    v is V[T-1] (return_v="last", shape [*]) or every V[t] (return_v="seq", shape [T, *]).
    v_reset=None selects soft reset (subtract v_threshold). Semantics: shared/SEMANTICS.md.
    """
    _check_x(x_seq)
    k, v_threshold, v_reset, decay_input, detach_reset, sid, alpha_v, v_seq = _neuron_options(
        tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, return_v)
    if v_init is not None:
        v_init = _check_state(v_init, x_seq, "v_init", x_seq.shape[1:])
    if not _has_native(x_seq.device):
        return reference.lif(x_seq, v_init, tau=tau, v_threshold=v_threshold, v_reset=v_reset,
                             decay_input=decay_input, detach_reset=detach_reset, surrogate=surrogate,
                             alpha=alpha_v, return_v=return_v)
    return _run(x_seq, v_init, None, k, v_threshold, v_reset, decay_input, detach_reset, sid, alpha_v, v_seq)


def if_neuron(x_seq: Tensor, v_init: Optional[Tensor] = None, *, v_threshold: float = 1.0,
              v_reset: Optional[float] = 0.0, detach_reset: bool = False, surrogate: str = "sigmoid",
              alpha: Optional[float] = None, return_v: str = "last") -> tuple[Tensor, Tensor]:
    """Multi-step integrate-and-fire (H = V + X) over x_seq [T, *] -> (spike_seq, v)."""
    _check_x(x_seq)
    _, v_threshold, v_reset, _, detach_reset, sid, alpha_v, v_seq = _neuron_options(
        None, v_threshold, v_reset, False, detach_reset, surrogate, alpha, return_v)
    if v_init is not None:
        v_init = _check_state(v_init, x_seq, "v_init", x_seq.shape[1:])
    if not _has_native(x_seq.device):
        return reference.if_neuron(x_seq, v_init, v_threshold=v_threshold, v_reset=v_reset,
                                   detach_reset=detach_reset, surrogate=surrogate, alpha=alpha_v, return_v=return_v)
    return _run(x_seq, v_init, None, 0.0, v_threshold, v_reset, False, detach_reset, sid, alpha_v, v_seq)


def plif(x_seq: Tensor, w: Tensor, v_init: Optional[Tensor] = None, *, decay_input: bool = True,
         v_threshold: float = 1.0, v_reset: Optional[float] = 0.0, detach_reset: bool = False,
         surrogate: str = "sigmoid", alpha: Optional[float] = None, return_v: str = "last") -> tuple[Tensor, Tensor]:
    """Multi-step parametric LIF, 1/tau = sigmoid(w); w a scalar or one value per channel (x_seq dim 2).

    The gradient of w is reduced inside the kernel in a fixed order (deterministic).
    """
    _check_x(x_seq)
    w = _check_w(w, x_seq)
    _, v_threshold, v_reset, decay_input, detach_reset, sid, alpha_v, v_seq = _neuron_options(
        None, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, return_v)
    if v_init is not None:
        v_init = _check_state(v_init, x_seq, "v_init", x_seq.shape[1:])
    if not _has_native(x_seq.device):
        return reference.plif(x_seq, w, v_init, decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                              detach_reset=detach_reset, surrogate=surrogate, alpha=alpha_v, return_v=return_v)
    w_flat = w.reshape(-1)
    return _run(x_seq, v_init, w_flat, 0.0, v_threshold, v_reset, decay_input, detach_reset, sid, alpha_v, v_seq)


def _step(multi, x, v, **kw):
    _check_x(x, "x", min_dim=0)
    if v is not None and not isinstance(v, Tensor):
        raise TypeError(f"v must be a torch.Tensor or None, got {type(v).__name__}")
    if v is not None and tuple(v.shape) != tuple(x.shape):
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    s, v_next = multi(x.unsqueeze(0), v, **kw)
    return s[0], v_next


def lif_step(x: Tensor, v: Optional[Tensor] = None, **kw) -> tuple[Tensor, Tensor]:
    """One LIF step (streaming inference) -> (spike, v_next); identical to one step of lif()."""
    return _step(lif, x, v, **kw)


def if_step(x: Tensor, v: Optional[Tensor] = None, **kw) -> tuple[Tensor, Tensor]:
    """One IF step -> (spike, v_next); identical to one step of if_neuron()."""
    return _step(if_neuron, x, v, **kw)


def plif_step(x: Tensor, w: Tensor, v: Optional[Tensor] = None, **kw) -> tuple[Tensor, Tensor]:
    """One PLIF step -> (spike, v_next); identical to one step of plif(). Per-channel w uses x's dim 1."""
    _check_x(x, "x", min_dim=0)
    if v is not None and not isinstance(v, Tensor):
        raise TypeError(f"v must be a torch.Tensor or None, got {type(v).__name__}")
    if v is not None and tuple(v.shape) != tuple(x.shape):
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    s, v_next = plif(x.unsqueeze(0), w, v, **kw)
    return s[0], v_next
