"""Multi-step spiking neurons over the native kernels (csrc/core/neuron.h): one fused op for every model.

SpikingJelly conventions: ``lif``, ``if_neuron``, ``plif``, ``alif`` (adaptive threshold), ``ilif`` (integer
spikes), ``ternary_lif`` (spikes in {-1, 0, 1}). snnTorch 1.0 conventions: ``leaky``, ``synaptic``,
``alpha_neuron`` (its Leaky, Synaptic and Alpha: strict firing, the reset decided by the previous step's
membrane). Norse 1.1 conventions: ``norse_lif`` (its current-based LIF, lif_feed_forward_step).
docs/neurons.md states every model's equations.

All of them are the custom ops ``torch.ops.spikeforge.neuron_fwd`` / ``neuron_bwd`` (one schema, the
model an option), built by ops/_common.FusedOp with the eager fast path, the reference fallback and
the higher-order-autograd rules it gives every op family. Per-neuron coefficients (PLIF's
k = sigmoid(w), snnTorch's clamped beta, threshold, ...) are computed here with torch ops, exactly as
the peers compute them, and enter the kernels as coefficient slots; autograd carries the slots'
gradients back to the parameters.
"""

from __future__ import annotations

import math
import threading
from typing import Literal, NamedTuple, Optional, Union, overload

import torch
from torch import Tensor

from .. import reference
from .._native import native
from ..surrogate import NORSE_SURROGATES, SNNTORCH_SURROGATES
from ._common import (
    _CPU,
    FusedOp,
    _check_bool,
    _check_choice,
    _check_int,
    _check_number,
    _check_surrogate,
    _check_x,
    _compute_dtype,
    _has_native,
    _stream,
    _tracing,
)

__all__ = [
    "lif",
    "if_neuron",
    "plif",
    "alif",
    "ilif",
    "ternary_lif",
    "leaky",
    "synaptic",
    "alpha_neuron",
    "norse_lif",
    "lif_step",
    "if_step",
    "plif_step",
    "counts_to_binary",
    "default_recompute",
    "MODELS",
]

# Model ids of csrc/core/neuron.h (NeuronModel), and per model: state variables, saved values per step.
MODELS = {"lif": 0, "alif": 1, "ilif": 2, "ternary": 3, "leaky": 4, "synaptic": 5, "alpha": 6, "norse_lif": 7}
_STATES = {0: 1, 1: 2, 2: 1, 3: 1, 4: 1, 5: 2, 6: 3, 7: 2}
_SAVED = {0: 1, 1: 2, 2: 1, 3: 1, 4: 2, 5: 3, 6: 3, 7: 3}
_SNN_FAMILY = (4, 5, 6)
_RESETS = {"subtract": 0, "zero": 1, "none": 2}
MAX_STATES, MAX_SLOTS = 3, 4

# Backward either reads the values the forward saved (H for LIF: one [T, N] tensor in the activation
# dtype) or recomputes them from X inside the fused backward kernel. Both keep one [T, N] tensor for the
# LIF; recompute moves fewer bytes (5 instead of 6 per element-step) and keeps H in float32 for the
# surrogate, so it is the CPU default (bench/results/cpu_neurons.json). On CUDA recompute runs the
# forward into a workspace before the backward kernel, which moves more bytes, so CUDA saves by default.
default_recompute = {"cpu": True, "cuda": False}


class NeuronOptions(NamedTuple):
    """The scalar options of a neuron call (NeuronParams of csrc/core/neuron.h, plus the layout runs of
    the coefficient slots and what the forward returns / keeps)."""

    model: int
    tau: float
    v_threshold: float
    v_reset: float
    hard_reset: bool
    decay_input: bool
    detach_reset: bool
    beta_a: float
    rho: float
    levels: int
    two_sided: bool
    reset: int
    reset_delay: bool
    surrogate: int
    alpha: float
    beta_sg: float
    run0: int  # S of each slot's layout (neuron i reads entry (i // S) % C; C = the slot's length)
    run1: int
    run2: int
    run3: int
    v_seq: bool  # state 0 returned for every step, else the last
    save: bool  # the forward writes the saved values (else backward recomputes them from x)
    states_seq: bool = False  # states 1 and 2 returned for every step, else the last (return_states)
    # each state returned for every step also comes as its last step in a tensor of its own, written by the
    # kernel (the snnTorch drop-ins store it: a copy of row T - 1 cost them a read and a write of it)
    states_last: bool = False


class NeuronBackwardOptions(NamedTuple):
    opts_model: int
    tau: float
    v_threshold: float
    v_reset: float
    hard_reset: bool
    decay_input: bool
    detach_reset: bool
    beta_a: float
    rho: float
    levels: int
    two_sided: bool
    reset: int
    reset_delay: bool
    surrogate: int
    alpha: float
    beta_sg: float
    run0: int
    run1: int
    run2: int
    run3: int
    need_init0: bool
    need_init1: bool
    need_init2: bool
    need_slot0: bool
    need_slot1: bool
    need_slot2: bool
    need_slot3: bool


_PARAM_FIELDS = NeuronOptions._fields[:16]
_native_params_cache: dict = {}


# (options object, its NeuronParams) of the latest call: a model calls the same neuron repeatedly. One tuple,
# replaced whole, so a thread never sees one call's options with another's parameters.
_last_params: tuple = (None, None)


def _native_params(opts) -> object:
    """The bound NeuronParams of these options (created once per distinct set and reused)."""
    global _last_params
    last = _last_params
    if last[0] is opts:
        return last[1]
    key = tuple(opts[:16])
    p = _native_params_cache.get(key)
    if p is None:
        p = native.NeuronParams()
        for name, value in zip(_PARAM_FIELDS, key):
            setattr(p, "model" if name == "opts_model" else name, value)
        if len(_native_params_cache) < 4096:
            _native_params_cache[key] = p
    _last_params = (opts, p)
    return p


def _layouts(opts, slots) -> tuple:
    if slots[0] is None and slots[1] is None:
        return _NO_SLOTS
    runs = (opts.run0, opts.run1, opts.run2, opts.run3)
    out = []
    for s, run in zip(slots, runs):
        out += [1, 1] if s is None else [max(s.numel(), 1), max(run, 1)]  # an empty layout: no neuron reads it
    return tuple(out)


def _TN(x: Tensor) -> tuple[int, int]:
    T = x.shape[0]
    return T, (x.numel() // T if T > 0 else math.prod(x.shape[1:]))


# --------------------------------------------------------------------------------------------
# native forward / backward (shared by the custom ops and the eager fast path)
# --------------------------------------------------------------------------------------------
def _v(t: Optional[Tensor]) -> Optional[Tensor]:
    """Native views hold at most 8 dims and the kernels only count elements: flatten beyond that."""
    return t if (t is None or t.dim() <= 8) else t.reshape(-1)


_NO_SLOTS = (1,) * 8


def _seq_states(opts) -> tuple[bool, bool, bool]:
    """Which of the three state outputs hold every step (the others the last state, or nothing)."""
    ns = _STATES[opts.model]
    return (opts.v_seq, opts.states_seq and ns > 1, opts.states_seq and ns > 2)


def _forward(x, i0, i1, i2, s0, s1, s2, s3, opts):
    """-> (spike, state0 / state1 / state2 each [T, *] (every step) or [*] (the last), the last step of each
    sequence among them [*] (opts.states_last), saved or empty). (Outputs the call does not have are None;
    the custom op turns them into empty tensors.)"""
    x = x.contiguous()
    T, N = _TN(x)
    ns = _STATES[opts.model]
    spike = torch.empty_like(x)
    # empty_like(x[0]) is ~2 us cheaper per call than empty(shape, dtype=, device=) (eager overhead)
    one = (lambda: torch.empty_like(x[0])) if T > 0 else (lambda: x.new_empty(x.shape[1:]))
    # a [T, *] state output is that state after every step (the kernels tell the two apart by size)
    other = (lambda: torch.empty_like(x)) if opts.states_seq else one
    states = (torch.empty_like(x) if opts.v_seq else one(), other() if ns > 1 else None, other() if ns > 2 else None)
    saved = None
    if opts.save:
        sv_dtype = x.dtype if opts.model == 0 else _compute_dtype(x.dtype)
        saved = x.new_empty((_SAVED[opts.model],) + tuple(x.shape), dtype=sv_dtype)
    lasts = (None, None, None)
    if opts.states_last:
        lasts = tuple(one() if seq else None for seq in _seq_states(opts))
    if N == 0:
        return (spike, *states, *lasts, saved)
    slots = (s0, s1, s2, s3)
    inits = (
        (i0, i1, i2)
        if (i0 is None and i1 is None and i2 is None)
        else tuple(None if i is None else _v(i.contiguous()) for i in (i0, i1, i2))
    )
    outs = states if x.dim() <= 8 else tuple(_v(st) for st in states)
    native.neuron_forward(
        _v(x),
        inits,
        slots,
        _v(spike),
        outs,
        _v(saved),
        _native_params(opts),
        T,
        N,
        _layouts(opts, slots),
        torch.get_num_threads(),
        _stream(x),
        lasts if x.dim() <= 8 else tuple(_v(st) for st in lasts),
    )
    return (spike, *states, *lasts, saved)


def _fake_forward(x, i0, i1, i2, s0, s1, s2, s3, opts):
    ns = _STATES[opts.model]
    one = lambda: x.new_empty(x.shape[1:])  # noqa: E731
    other = (lambda: x.new_empty(x.shape)) if opts.states_seq else one
    states = [x.new_empty(x.shape) if opts.v_seq else one()] + [other() if s < ns else x.new_empty(0) for s in (1, 2)]
    lasts = [one() if (opts.states_last and seq) else x.new_empty(0) for seq in _seq_states(opts)]
    if opts.save:
        sv_dtype = x.dtype if opts.model == 0 else _compute_dtype(x.dtype)
        saved = x.new_empty((_SAVED[opts.model],) + tuple(x.shape), dtype=sv_dtype)
    else:
        saved = x.new_empty(0)
    return (x.new_empty(x.shape), *states, *lasts, saved)


def _backward(gs, g0, g1, g2, x, saved, i0, i1, i2, s0, s1, s2, s3, bo):
    """-> (grad_x, grad_init0..2, grad_slot0..3); absent gradients are empty tensors."""
    gs = gs.contiguous()
    T, N = _TN(gs)
    ns = _STATES[bo.opts_model]
    inits, slots = (i0, i1, i2), (s0, s1, s2, s3)
    needs_init = (bo.need_init0, bo.need_init1, bo.need_init2)
    needs_slot = (bo.need_slot0, bo.need_slot1, bo.need_slot2, bo.need_slot3)
    if saved is not None and saved.numel() == 0:
        saved = None
    if saved is None and gs.is_cuda and T * N > 0:
        # recompute on CUDA: run the forward into a workspace first, then the backward kernel reads it
        saved = _forward(x, i0, i1, i2, s0, s1, s2, s3, NeuronOptions(*bo[:20], False, True, False))[-1]
    e = gs.new_empty
    grad_x = torch.empty_like(gs)
    g_init = [e(gs.shape[1:]) if (needs_init[s] and inits[s] is not None) else None for s in range(3)]
    cdt = _compute_dtype(gs.dtype)
    g_slot = [
        torch.empty(sl.numel(), dtype=cdt, device=gs.device) if (needs_slot[k] and sl is not None) else None
        for k, sl in enumerate(slots)
    ]
    if N == 0:  # nothing to compute; the native checks would find the empty coefficient slots without entries
        return (
            grad_x,
            *[g if g is not None else e(0) for g in g_init],
            *[g.zero_() if g is not None else e(0) for g in g_slot],
        )
    ws = tuple(torch.empty(N, dtype=cdt, device=gs.device) if g is not None else None for g in g_slot)
    gouts = tuple(
        _v(g.contiguous()) if (s < ns and g is not None and g.numel() > 0) else None for s, g in enumerate((g0, g1, g2))
    )
    native.neuron_backward(
        _v(gs),
        gouts,
        None if x is None else _v(x.contiguous()),
        None if saved is None else _v(saved.contiguous()),
        tuple(None if i is None else _v(i.contiguous()) for i in inits),
        slots,
        _v(grad_x),
        tuple(_v(g) for g in g_init),
        ws,
        tuple(g_slot),
        _native_params(bo),
        T,
        N,
        _layouts(bo, slots),
        torch.get_num_threads(),
        _stream(gs),
    )
    return (grad_x, *[g if g is not None else e(0) for g in g_init], *[g if g is not None else e(0) for g in g_slot])


def _fake_backward(gs, g0, g1, g2, x, saved, i0, i1, i2, s0, s1, s2, s3, bo):
    e = gs.new_empty
    cdt = _compute_dtype(gs.dtype)
    inits, slots = (i0, i1, i2), (s0, s1, s2, s3)
    needs_init = (bo.need_init0, bo.need_init1, bo.need_init2)
    needs_slot = (bo.need_slot0, bo.need_slot1, bo.need_slot2, bo.need_slot3)
    g_init = [e(gs.shape[1:]) if (needs_init[s] and inits[s] is not None) else e(0) for s in range(3)]
    g_slot = [
        gs.new_empty(sl.numel(), dtype=cdt) if (needs_slot[k] and sl is not None) else e(0)
        for k, sl in enumerate(slots)
    ]
    return (e(gs.shape), *g_init, *g_slot)


def _reads_x(opts, slots) -> bool:
    """Backward needs x: recompute, the alpha model, norse_lif, or PLIF's dH/dk with decay_input."""
    return (not opts.save) or opts.model in (6, 7) or (opts.model == 0 and slots[0] is not None and opts.decay_input)


def _save(inputs, opts, outputs):
    x, i0, i1, i2, s0, s1, s2, s3 = inputs
    keep_x = _reads_x(opts, (s0, s1, s2, s3))
    saved = outputs[-1] if opts.save else None
    return (x if keep_x else None, saved, i0, i1, i2, s0, s1, s2, s3), (tuple(x.shape), x.dtype)


def _grads(saved_t, info, opts, needs, grad_outputs, call_bwd):
    x, saved, i0, i1, i2, s0, s1, s2, s3 = saved_t
    g_spike, g0, g1, g2 = grad_outputs[:4]
    if opts.states_last:  # a last step returned apart: its gradient joins that of row T - 1 of its sequence
        g0, g1, g2 = (_with_last(g, gl) for g, gl in zip((g0, g1, g2), grad_outputs[4:7]))
    if g_spike is None:  # only a state output reached the loss
        shape, dtype = info
        device = (x if x is not None else saved).device
        g_spike = torch.zeros(shape, dtype=dtype, device=device)
    inits, slots = (i0, i1, i2), (s0, s1, s2, s3)
    need_init = tuple(bool(needs[1 + s] and inits[s] is not None) for s in range(3))
    need_slot = tuple(bool(needs[4 + k] and slots[k] is not None) for k in range(4))
    bo = NeuronBackwardOptions(*opts[:20], *need_init, *need_slot)
    out = call_bwd(g_spike, g0, g1, g2, x, saved, i0, i1, i2, s0, s1, s2, s3, bo)
    gx = out[0] if needs[0] else None
    gi = [out[1 + s] if need_init[s] else None for s in range(3)]
    gsl = [out[4 + k] if need_slot[k] else None for k in range(4)]
    return [gx, *gi, *gsl]


def _with_last(g_seq: Optional[Tensor], g_last: Optional[Tensor]) -> Optional[Tensor]:
    """The gradient of a state sequence whose last step was also returned apart (g_last): alone, g_last is
    the [*] last-state gradient the kernels take; with g_seq it is added to row T - 1 of a copy of g_seq."""
    if g_last is None:
        return g_seq
    if g_seq is None:
        return g_last
    g = g_seq.clone()
    if g.shape[0] > 0:
        g[-1] += g_last
    return g


def _reference_inputs(saved_t, info):
    x, saved, i0, i1, i2, s0, s1, s2, s3 = saved_t
    return None if x is None else (x, i0, i1, i2, s0, s1, s2, s3)


def _reference_lasts(out: tuple, x, inits: tuple, slots: tuple, opts) -> tuple:
    """The reference's (last0, last1, last2) for opts.states_last: row T - 1 of each state sequence in outputs
    `out` (spike, state0..2), as a tensor of its own (a differentiable copy); with no step, the initial states."""
    seqs = _seq_states(opts)
    if x.shape[0] == 0:
        first = reference.neuron_from_options(
            x, inits, slots, opts._replace(v_seq=False, states_seq=False, states_last=False)
        )
        return tuple(f if seq else None for f, seq in zip(first[1:4], seqs))
    return tuple(o[-1].clone() if seq else None for o, seq in zip(out[1:4], seqs))


def _reference_forward(x, i0, i1, i2, s0, s1, s2, s3, opts):
    out = tuple(reference.neuron_from_options(x, (i0, i1, i2), (s0, s1, s2, s3), opts))
    if opts.states_last:  # the fused op's visible outputs, as double backward and torch.func see them
        out = out + _reference_lasts(out, x, (i0, i1, i2), (s0, s1, s2, s3), opts)
    return out


_OP = FusedOp(
    "neuron",
    "spikeforge.ops (neuron)",
    inputs=("x", "init0?", "init1?", "init2?", "slot0?", "slot1?", "slot2?", "slot3?"),
    options=NeuronOptions,
    n_out=8,
    visible=7,
    forward=_forward,
    fake_forward=_fake_forward,
    bwd_inputs=(
        "grad_spike",
        "grad_state0?",
        "grad_state1?",
        "grad_state2?",
        "x?",
        "saved?",
        "init0?",
        "init1?",
        "init2?",
        "slot0?",
        "slot1?",
        "slot2?",
        "slot3?",
    ),
    bwd_options=NeuronBackwardOptions,
    n_grads=8,
    backward=_backward,
    fake_backward=_fake_backward,
    save=_save,
    grads=_grads,
    reference=_reference_forward,
    reference_inputs=_reference_inputs,
    double_backward_hint="on CUDA the forward keeps its charges, not x: set "
    "spikeforge.ops.neuron.default_recompute['cuda'] = True to keep x",
)
neuron_fwd, neuron_bwd = _OP.fwd_op, _OP.bwd_op


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _check_state(v, x_seq: Tensor, name: str) -> Optional[Tensor]:
    if v is None:
        return None
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {v.dtype}")
    if tuple(v.shape) != tuple(x_seq.shape[1:]):
        raise ValueError(f"{name} must have shape {tuple(x_seq.shape[1:])} (x_seq.shape[1:]), got {tuple(v.shape)}")
    if v.device != x_seq.device:
        raise ValueError(f"{name} is on {v.device} but x_seq is on {x_seq.device}")
    return v if v.dtype == x_seq.dtype else v.to(x_seq.dtype)


def _check_return(name: str, value) -> bool:
    if not isinstance(value, str) or value not in ("last", "seq"):
        raise ValueError(f"{name} must be 'last' or 'seq', got {value!r}")
    return value == "seq"


def _slot(value, x_seq: Tensor, name: str) -> tuple[Tensor, int]:
    """A per-neuron coefficient (a number, or a tensor broadcastable to one step x_seq.shape[1:]) as the
    kernels read it: a flat [C] tensor in the compute dtype and the run length S (neuron i reads entry
    (i // S) % C). Autograd reaches `value` through the returned tensor."""
    cdt = _compute_dtype(x_seq.dtype)
    if not isinstance(value, Tensor):
        return torch.full((1,), float(value), dtype=cdt, device=x_seq.device), 1
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if value.device != x_seq.device:
        raise ValueError(f"{name} is on {value.device} but x_seq is on {x_seq.device}")
    state = tuple(x_seq.shape[1:])
    shape = tuple(value.shape)
    if value.numel() == 1:
        return value.reshape(1).to(cdt), 1
    if len(shape) > len(state) or any(p not in (1, s) for p, s in zip(shape[::-1], state[::-1])):
        raise ValueError(f"{name} of shape {shape} does not broadcast to one step of x_seq {state}")
    full = (1,) * (len(state) - len(shape)) + shape
    dims = [i for i, d in enumerate(full) if d != 1]
    lo, hi = dims[0], dims[-1]
    if all(full[i] == state[i] for i in range(lo, hi + 1)):
        return value.reshape(-1).to(cdt), math.prod(state[hi + 1 :])
    return value.expand(state).reshape(-1).to(cdt), 1  # a pattern (C, S) cannot express: one per neuron


def _recompute(device: torch.device) -> bool:
    return default_recompute.get("cpu" if device == _CPU else device.type, False)


def _options(
    model: int,
    *,
    tau=0.0,
    v_threshold=1.0,
    v_reset=0.0,
    hard=True,
    decay_input=True,
    detach_reset=False,
    beta_a=1.8,
    rho=0.9,
    levels=4,
    two_sided=False,
    reset=0,
    reset_delay=True,
    surrogate=0,
    alpha=4.0,
    beta_sg=0.0,
    runs: tuple[int, int, int, int] = (1, 1, 1, 1),
    v_seq=False,
    states_seq=False,
    states_last=False,
    device=_CPU,
    needs_grad=True,
):
    save = not _recompute(device)
    # the no-grad path never runs backward: nothing to save
    return NeuronOptions(
        model,
        float(tau),
        float(v_threshold),
        float(v_reset),
        hard,
        decay_input,
        detach_reset,
        float(beta_a),
        float(rho),
        int(levels),
        two_sided,
        reset,
        reset_delay,
        surrogate,
        float(alpha),
        float(beta_sg),
        *runs,
        v_seq,
        save and needs_grad,
        states_seq,
        states_last,
    )


_PUBLIC = {
    n: f"spikeforge.ops.{n}"
    for n in (
        "lif",
        "if_neuron",
        "plif",
        "alif",
        "ilif",
        "ternary_lif",
        "leaky",
        "synaptic",
        "alpha_neuron",
        "norse_lif",
    )
}


def _run(public: str, x_seq: Tensor, inits, slots, opts, ref) -> tuple:
    """-> (spike, state0, state1, state2) from the fused op, or ref() (the public reference function with the
    caller's arguments) on a device without native kernels; with opts.states_last also (last0, last1, last2),
    the last step of each state sequence in a tensor of its own (None for the other states)."""
    inits = tuple(inits) + (None,) * (MAX_STATES - len(inits))
    slots = tuple(slots) + (None,) * (MAX_SLOTS - len(slots))
    if not _has_native(x_seq.device) and x_seq.device.type != "meta":
        out = tuple(ref())
        out = out + (None,) * (4 - len(out))
        if opts.states_last:
            out = out + _reference_lasts(out, x_seq, inits, slots, opts)
        return out
    out = _OP((x_seq, *inits, *slots), opts, _PUBLIC[public])
    if not opts.states_last:
        return out[:4]
    # a state returned as its last step has nothing apart: None, also where the custom op (torch.compile,
    # vmap) gives an empty placeholder tensor
    return out[:4] + tuple(last if seq else None for last, seq in zip(out[4:7], _seq_states(opts)))


def op_inputs(fn, *args, save: Optional[bool] = None, **kw) -> tuple:
    """The positional inputs torch.ops.spikeforge.neuron_fwd receives for the public call fn(*args, **kw),
    e.g. op_inputs(lif, x, return_v="seq"): for opcheck and tests of the op itself. save=True / False sets
    where the backward gets the saved values (written by the forward / recomputed from x)."""
    global _run
    captured = []
    owner = threading.get_ident()

    def record(public, x_seq, inits, slots, opts, ref):
        if threading.get_ident() != owner:  # another thread's call in the meantime: the real op (not recorded)
            return real(public, x_seq, inits, slots, opts, ref)
        inits = tuple(inits) + (None,) * (MAX_STATES - len(inits))
        slots = tuple(slots) + (None,) * (MAX_SLOTS - len(slots))
        captured.append((x_seq, *inits, *slots, *(opts if save is None else opts._replace(save=save))))
        return (x_seq,) * (7 if opts.states_last else 4)

    real, _run = _run, record
    try:
        fn(*args, **kw)
    finally:
        _run = real
    return captured[0]


def bwd_inputs(
    fwd_inputs: tuple, saved: Tensor, grad_spike: Tensor, grad_states=(None, None, None), needs=(False,) * 7
) -> tuple:
    """The positional inputs of torch.ops.spikeforge.neuron_bwd matching op_inputs(...) and the forward's
    saved output; needs: (init0, init1, init2, slot0, slot1, slot2, slot3) gradients wanted."""
    x, i0, i1, i2, s0, s1, s2, s3 = fwd_inputs[:8]
    opts = NeuronOptions(*fwd_inputs[8:])
    return (
        grad_spike,
        *grad_states,
        x,
        saved if saved.numel() else None,
        i0,
        i1,
        i2,
        s0,
        s1,
        s2,
        s3,
        *NeuronBackwardOptions(*opts[:20], *needs),
    )


def _reorder(out: tuple, order: tuple) -> tuple:
    """The public result order -> (spike, state0, state1, state2) of the fused op."""
    return tuple(out[i] for i in order)


def _needs_grad(*tensors) -> bool:
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if isinstance(t, Tensor) and t.requires_grad:
            return True
    return False


# --------------------------------------------------------------------------------------------
# SpikingJelly family
# --------------------------------------------------------------------------------------------
def lif(
    x_seq: Tensor,
    v_init: Optional[Tensor] = None,
    *,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    return_v: str = "last",
) -> tuple[Tensor, Tensor]:
    """Multi-step leaky integrate-and-fire over x_seq [T, *] -> (spike_seq [T, *], v).

    H = V + (X - (V - v_reset)) / tau (decay_input; else V - (V - v_reset) / tau + X), S = H >= v_threshold,
    V = v_reset where S (hard reset) or H - S v_threshold (v_reset=None: soft reset). v is V[T-1]
    (return_v="last", shape [*]) or every V[t] (return_v="seq", shape [T, *]). docs/neurons.md.
    """
    _check_x(x_seq)
    o = _sj_options(
        0,
        x_seq,
        tau,
        v_threshold,
        v_reset,
        decay_input,
        detach_reset,
        surrogate,
        alpha,
        return_v,
        v_init,
        check_tau=True,
    )
    v_init = _check_state(v_init, x_seq, "v_init")
    s, v, _, _ = _run(
        "lif",
        x_seq,
        (v_init,),
        (),
        o,
        lambda: reference.lif(
            x_seq,
            v_init,
            tau=tau,
            v_threshold=v_threshold,
            v_reset=v_reset,
            decay_input=decay_input,
            detach_reset=detach_reset,
            surrogate=surrogate,
            alpha=o.alpha,
            return_v=return_v,
        ),
    )
    return s, v


def if_neuron(
    x_seq: Tensor,
    v_init: Optional[Tensor] = None,
    *,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    return_v: str = "last",
) -> tuple[Tensor, Tensor]:
    """Multi-step integrate-and-fire (H = V + X) over x_seq [T, *] -> (spike_seq, v)."""
    _check_x(x_seq)
    o = _sj_options(0, x_seq, 0.0, v_threshold, v_reset, False, detach_reset, surrogate, alpha, return_v, v_init)
    v_init = _check_state(v_init, x_seq, "v_init")
    s, v, _, _ = _run(
        "if_neuron",
        x_seq,
        (v_init,),
        (),
        o,
        lambda: reference.if_neuron(
            x_seq,
            v_init,
            v_threshold=v_threshold,
            v_reset=v_reset,
            detach_reset=detach_reset,
            surrogate=surrogate,
            alpha=o.alpha,
            return_v=return_v,
        ),
    )
    return s, v


def plif(
    x_seq: Tensor,
    w: Tensor,
    v_init: Optional[Tensor] = None,
    *,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    return_v: str = "last",
) -> tuple[Tensor, Tensor]:
    """Multi-step parametric LIF, 1/tau = k = sigmoid(w); w a scalar or one value per channel (x_seq dim 2).

    H = V + (X - (V - v_reset)) * k. The gradient of w is reduced in a fixed order (deterministic).
    """
    _check_x(x_seq)
    if not isinstance(w, Tensor):
        raise TypeError(f"w must be a torch.Tensor (1/tau = sigmoid(w)), got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {w.dtype}")
    if w.device != x_seq.device:
        raise ValueError(f"w is on {w.device} but x_seq is on {x_seq.device}")
    if w.numel() != 1 and (w.dim() != 1 or x_seq.dim() < 3 or w.shape[0] != x_seq.shape[2]):
        raise ValueError(
            "w must be a scalar or have shape [C] with C = x_seq.shape[2] (the channel dim); "
            f"got w of shape {tuple(w.shape)} for x_seq of shape {tuple(x_seq.shape)}"
        )
    # sigmoid in w's own dtype, then converted (SpikingJelly's w.sigmoid() meeting float64 input: a float32 w's
    # k is float32's sigmoid, not float64's)
    k = torch.sigmoid(w).to(_compute_dtype(x_seq.dtype)).reshape(-1)
    run = math.prod(x_seq.shape[3:]) if w.numel() != 1 else 1
    o = _sj_options(
        0,
        x_seq,
        0.0,
        v_threshold,
        v_reset,
        decay_input,
        detach_reset,
        surrogate,
        alpha,
        return_v,
        v_init,
        runs=(run, 1, 1, 1),
        extra=(w,),
    )
    v_init = _check_state(v_init, x_seq, "v_init")
    s, v, _, _ = _run(
        "plif",
        x_seq,
        (v_init,),
        (k,),
        o,
        lambda: reference.plif(
            x_seq,
            w,
            v_init,
            decay_input=decay_input,
            v_threshold=v_threshold,
            v_reset=v_reset,
            detach_reset=detach_reset,
            surrogate=surrogate,
            alpha=o.alpha,
            return_v=return_v,
        ),
    )
    return s, v


def alif(
    x_seq: Tensor,
    v_init: Optional[Tensor] = None,
    b_init: Optional[Tensor] = None,
    *,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = None,
    beta_a: float = 1.8,
    rho: float = 0.9,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    return_v: str = "last",
    return_states: str = "last",
) -> tuple[Tensor, Tensor, Tensor]:
    """Adaptive-threshold LIF (Bellec et al. 2018, LSNN) over x_seq [T, *] -> (spike_seq, v, b).

    Charge as lif; theta = v_threshold + beta_a B[t-1] (B[-1] = 0); S = H >= theta; soft reset
    V = H - S theta (v_reset=None, the default) or hard to v_reset; B = rho B[t-1] + (1 - rho) S.
    Gradients flow through B over time. v as lif's return_v; b is the last B ([*], return_states="last")
    or every B[t] ("seq", [T, *]).
    """
    _check_x(x_seq)
    tau = _check_number("tau", tau, positive=True)
    beta_a = _check_number("beta_a", beta_a)
    rho = _check_number("rho", rho)
    if not _tracing() and not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    o = _sj_options(
        1,
        x_seq,
        tau,
        v_threshold,
        v_reset,
        decay_input,
        detach_reset,
        surrogate,
        alpha,
        return_v,
        v_init,
        b_init,
        beta_a=beta_a,
        rho=rho,
        return_states=return_states,
    )
    v_init = _check_state(v_init, x_seq, "v_init")
    b_init = _check_state(b_init, x_seq, "b_init")
    s, v, b, _ = _run(
        "alif",
        x_seq,
        (v_init, b_init),
        (),
        o,
        lambda: reference.alif(
            x_seq,
            v_init,
            b_init,
            tau=tau,
            v_threshold=v_threshold,
            v_reset=v_reset,
            beta_a=beta_a,
            rho=rho,
            decay_input=decay_input,
            detach_reset=detach_reset,
            surrogate=surrogate,
            alpha=o.alpha,
            return_v=return_v,
            return_states=return_states,
        ),
    )
    return s, v, b


def ilif(
    x_seq: Tensor,
    v_init: Optional[Tensor] = None,
    *,
    D: int = 4,
    tau: Optional[float] = 2.0,
    v_threshold: float = 1.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    return_v: str = "last",
) -> tuple[Tensor, Tensor]:
    """Integer-spike LIF (I-LIF of Spike-driven Transformer v3 / E-SpikeFormer) -> (spike_seq, v).

    Charge as lif (tau=None: no leak, H = V + X), except that decay_input=False (SpikingJelly 2.0's ILIFNode,
    whose numbers this matches bit for bit) computes H = (1 - 1/tau) V + X, 1 - 1/tau rounded once from
    double as SpikingJelly does; S = round(clamp(H / v_threshold, 0, D)), an integer
    0..D stored in x_seq's dtype (round half to even); soft reset V = H - S v_threshold. Backward:
    straight-through, dS/dH = 1 / v_threshold where 0 <= H / v_threshold <= D, else 0.
    ``counts_to_binary(s, D)`` expands the counts into D binary steps (how the papers count operations).
    """
    _check_x(x_seq)
    D = _check_int("D", D, minimum=1, maximum=1 << 22)
    tau = 0.0 if tau is None else _check_number("tau", tau, positive=True)
    _check_bool("decay_input", decay_input)  # checked here: without a leak it is dropped before the options
    vth = _check_number("v_threshold", v_threshold)
    if not _tracing() and not vth > 0.0:
        raise ValueError(f"v_threshold must be > 0 for ilif (S = round(H / v_threshold)), got {vth}")
    o = _sj_options(
        2, x_seq, tau, vth, None, decay_input and tau != 0.0, detach_reset, "sigmoid", None, return_v, v_init, levels=D
    )
    v_init = _check_state(v_init, x_seq, "v_init")
    s, v, _, _ = _run(
        "ilif",
        x_seq,
        (v_init,),
        (),
        o,
        lambda: reference.ilif(
            x_seq,
            v_init,
            D=D,
            tau=None if tau == 0.0 else tau,
            v_threshold=vth,
            decay_input=decay_input,
            detach_reset=detach_reset,
            return_v=return_v,
        ),
    )
    return s, v


# v_threshold must stay > 0 in float32 (the kernels' compute type; neuron.cpp checks it too): 2^-150 rounds to 0
_TERNARY_VTH_ZERO = 2.0**-150


def ternary_lif(
    x_seq: Tensor,
    v_init: Optional[Tensor] = None,
    *,
    tau: Optional[float] = 2.0,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    two_sided: bool = False,
    return_v: str = "last",
) -> tuple[Tensor, Tensor]:
    """Ternary-spike LIF (Guo et al. 2024) -> (spike_seq in {-1, 0, 1}, v). tau=None: ternary IF.

    S = 1 where H >= v_threshold, -1 where H <= -v_threshold, else 0; hard reset to v_reset where S != 0
    (v_reset=None: soft, V = H - S v_threshold). dS/dH = g'(|H| - v_threshold); two_sided=True uses
    SpikingJelly 2.0's g'(H - v_threshold) + g'(-H - v_threshold) (its TernaryLIFNode).
    """
    _check_x(x_seq)
    tau = 0.0 if tau is None else _check_number("tau", tau, positive=True)
    _check_bool("decay_input", decay_input)  # checked here: without a leak it is dropped before the options
    _check_bool("two_sided", two_sided)
    vth = _check_number("v_threshold", v_threshold)
    if not _tracing() and not vth > _TERNARY_VTH_ZERO:
        raise ValueError(
            f"v_threshold must be > 0 for ternary spikes (at least 1e-45, the smallest float32), got {vth}"
        )
    if not _tracing() and v_reset is not None and isinstance(v_reset, (int, float)) and not -vth < v_reset < vth:
        # as SpikingJelly's ternary nodes: a reset outside (-v_threshold, v_threshold) would fire again at once
        raise ValueError(
            f"v_reset must lie strictly between -v_threshold and v_threshold ({-vth}, {vth}), got {v_reset}"
        )
    o = _sj_options(
        3,
        x_seq,
        tau,
        vth,
        v_reset,
        decay_input and tau != 0.0,
        detach_reset,
        surrogate,
        alpha,
        return_v,
        v_init,
        two_sided=two_sided,
    )
    v_init = _check_state(v_init, x_seq, "v_init")
    s, v, _, _ = _run(
        "ternary_lif",
        x_seq,
        (v_init,),
        (),
        o,
        lambda: reference.ternary_lif(
            x_seq,
            v_init,
            tau=None if tau == 0.0 else tau,
            v_threshold=vth,
            v_reset=v_reset,
            decay_input=decay_input,
            detach_reset=detach_reset,
            surrogate=surrogate,
            alpha=o.alpha,
            two_sided=two_sided,
            return_v=return_v,
        ),
    )
    return s, v


# Validated options, memoised by value and type. A model calls each neuron with the same options every step,
# and validating them again cost a third of the eager overhead of a call on a small tensor. Types are part
# of the key so that True (== 1) or 2 (== 2.0) never reuse another value's verdict; only valid options are
# stored, so a bad one raises on every call. Not used while tracing (values may be symbolic).
_OPTIONS_CACHE: dict = {}
_OPTIONS_CACHE_MAX = 4096


def _memo(key: tuple, build):
    if _tracing():
        return build()
    try:
        hit = _OPTIONS_CACHE.get(key)
    except TypeError:  # an unhashable argument: build() names it
        return build()
    if hit is None:
        hit = build()
        if len(_OPTIONS_CACHE) < _OPTIONS_CACHE_MAX:
            _OPTIONS_CACHE[key] = hit
    return hit


def _sj_options(
    model,
    x_seq,
    tau,
    v_threshold,
    v_reset,
    decay_input,
    detach_reset,
    surrogate,
    alpha,
    return_v,
    *state_inits,
    runs=(1, 1, 1, 1),
    extra=(),
    **kw,
):
    needs_grad = _needs_grad(x_seq, *state_inits, *extra)
    # default_recompute decides where backward gets its saved values (opts.save): part of the key, so that
    # changing it takes effect for option sets already seen
    key = (
        model,
        x_seq.is_cuda,
        needs_grad,
        _recompute(x_seq.device),
        runs,
        tau,
        type(tau),
        v_threshold,
        type(v_threshold),
        v_reset,
        type(v_reset),
        decay_input,
        type(decay_input),
        detach_reset,
        type(detach_reset),
        surrogate,
        type(surrogate),
        alpha,
        type(alpha),
        return_v,
        type(return_v),
        *kw.items(),
    )
    return _memo(
        key,
        lambda: _sj_options_checked(
            model,
            x_seq,
            tau,
            v_threshold,
            v_reset,
            decay_input,
            detach_reset,
            surrogate,
            alpha,
            return_v,
            needs_grad,
            runs,
            kw,
        ),
    )


def _sj_options_checked(
    model, x_seq, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, return_v, needs_grad, runs, kw
):
    if kw.pop("check_tau", False):
        tau = _check_number("tau", tau, positive=True)
    if "return_states" in kw:
        kw["states_seq"] = _check_return("return_states", kw.pop("return_states"))
    v_threshold = _check_number("v_threshold", v_threshold)
    v_reset = _check_number("v_reset", v_reset, allow_none=True)
    _check_bool("decay_input", decay_input)
    _check_bool("detach_reset", detach_reset)
    sid, alpha_v, beta_sg = _check_surrogate(surrogate, alpha)
    v_seq = _check_return("return_v", return_v)
    hard = v_reset is not None
    return _options(
        model,
        tau=tau,
        v_threshold=v_threshold,
        v_reset=v_reset if hard else 0.0,
        hard=hard,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=sid,
        alpha=alpha_v,
        beta_sg=beta_sg,
        runs=runs,
        v_seq=v_seq,
        device=x_seq.device,
        needs_grad=needs_grad,
        **kw,
    )


# --------------------------------------------------------------------------------------------
# snnTorch family
# --------------------------------------------------------------------------------------------
def _snn_options(
    model,
    x_seq,
    threshold,
    reset_mechanism,
    reset_delay,
    surrogate,
    surrogate_alpha,
    surrogate_beta,
    return_mem,
    runs,
    grads_of,
    return_states="last",
    states_last=False,
):
    needs_grad = _needs_grad(x_seq, threshold, *grads_of)
    key = (
        model,
        x_seq.is_cuda,
        needs_grad,
        _recompute(x_seq.device),
        runs,
        reset_mechanism,
        type(reset_mechanism),
        reset_delay,
        type(reset_delay),
        surrogate,
        type(surrogate),
        surrogate_alpha,
        type(surrogate_alpha),
        surrogate_beta,
        type(surrogate_beta),
        return_mem,
        type(return_mem),
        return_states,
        type(return_states),
        states_last,
    )
    return _memo(
        key,
        lambda: _snn_options_checked(
            model,
            x_seq,
            reset_mechanism,
            reset_delay,
            surrogate,
            surrogate_alpha,
            surrogate_beta,
            return_mem,
            runs,
            needs_grad,
            return_states,
            states_last,
        ),
    )


def _snn_options_checked(
    model,
    x_seq,
    reset_mechanism,
    reset_delay,
    surrogate,
    surrogate_alpha,
    surrogate_beta,
    return_mem,
    runs,
    needs_grad,
    return_states,
    states_last,
):
    reset = _check_choice("reset_mechanism", reset_mechanism, _RESETS)
    _check_bool("reset_delay", reset_delay)
    if not isinstance(surrogate, str):
        raise TypeError(f"surrogate must be a str, got {type(surrogate).__name__}")
    if surrogate not in SNNTORCH_SURROGATES:  # the kernels are built for this set (csrc/core/neuron.h)
        raise ValueError(
            f"surrogate: {surrogate!r} is not a surrogate of the snnTorch models; expected one of "
            f"{sorted(SNNTORCH_SURROGATES)}"
        )
    if surrogate_alpha is None:  # snnTorch's default (its sigmoid's slope is 25, SpikingJelly's alpha 4)
        surrogate_alpha = SNNTORCH_SURROGATES[surrogate].alpha
    # checked under their public names (synaptic and alpha_neuron have an `alpha` of their own)
    surrogate_alpha = _check_number("surrogate_alpha", surrogate_alpha, positive=True)
    if surrogate_beta is not None:
        surrogate_beta = _check_number("surrogate_beta", surrogate_beta)
    sid, alpha_v, beta_sg = _check_surrogate(surrogate, surrogate_alpha, all_surrogates=True, beta=surrogate_beta)
    v_seq = _check_return("return_mem", return_mem)
    states_seq = _check_return("return_states", return_states)
    return _options(
        model,
        v_threshold=0.0,
        hard=False,
        reset=reset,
        reset_delay=reset_delay,
        surrogate=sid,
        alpha=alpha_v,
        beta_sg=beta_sg,
        runs=runs,
        v_seq=v_seq,
        states_seq=states_seq,
        states_last=bool(states_last),
        device=x_seq.device,
        needs_grad=needs_grad,
    )


def _clamped(value, x_seq, name):
    """snnTorch's beta.clamp(0, 1) (alpha likewise), computed on the parameter as snnTorch does."""
    if isinstance(value, Tensor):
        return _slot(value.clamp(0, 1), x_seq, name)
    v = _check_number(name, value)
    return _slot(min(max(v, 0.0), 1.0), x_seq, name)


def _number_or_tensor(value, name):
    if isinstance(value, Tensor):
        return value
    return _check_number(name, value)


def leaky(
    x_seq: Tensor,
    mem_init: Optional[Tensor] = None,
    *,
    beta: Union[float, Tensor],
    threshold: Union[float, Tensor] = 1.0,
    reset_mechanism: str = "subtract",
    reset_delay: bool = True,
    graded_spikes_factor: Union[float, Tensor] = 1.0,
    surrogate: str = "atan",
    surrogate_alpha: Optional[float] = None,
    surrogate_beta: Optional[float] = None,
    return_mem: str = "last",
    _states_last: bool = False,
) -> tuple[Tensor, ...]:
    """snnTorch 1.0's Leaky over x_seq [T, *] -> (spikes [T, *], mem): its numbers, fused.

    R = [U[t-1] - thr > 0] (detached); subtract: U = beta U[t-1] + X - R thr; zero: U = beta ((1 - R) U[t-1])
    + X; none: U = beta U[t-1] + X; S = [U - thr > 0] * graded_spikes_factor; reset_delay=False also resets
    in the same step. beta is clamped to [0, 1]; beta, threshold and graded_spikes_factor may be tensors
    broadcastable to one step (per-neuron) and learnable. mem is the last U ([*], return_mem="last") or
    every U[t] ("seq"); mem_init is U[-1] (default 0). surrogate: a name of
    spikeforge.surrogate.SNNTORCH_SURROGATES, its parameter surrogate_alpha with snnTorch's defaults (atan
    alpha 2; sigmoid, fast_sigmoid and spike_rate_escape slope 25; triangular threshold 1), surrogate_beta
    spike_rate_escape's beta (1); "disabled" is snnTorch's surrogate_disable=True (no gradient through S).
    _states_last (internal, for spikeforge.interop.snntorch): also return, after the usual outputs and in
    their order, the last step of each state returned as a sequence (None for the others), each a tensor of
    its own written by the kernel.
    """
    _check_x(x_seq)
    _number_or_tensor(threshold, "threshold")
    _number_or_tensor(graded_spikes_factor, "graded_spikes_factor")
    b, rb = _clamped(beta, x_seq, "beta")
    t, rt = _slot(threshold, x_seq, "threshold")
    g, rg = _slot(graded_spikes_factor, x_seq, "graded_spikes_factor")
    o = _snn_options(
        4,
        x_seq,
        threshold,
        reset_mechanism,
        reset_delay,
        surrogate,
        surrogate_alpha,
        surrogate_beta,
        return_mem,
        (rb, rt, rg, 1),
        (beta, graded_spikes_factor, mem_init),
        states_last=_states_last,
    )
    mem_init = _check_state(mem_init, x_seq, "mem_init")
    out = _run(
        "leaky",
        x_seq,
        (mem_init,),
        (b, t, g),
        o,
        lambda: reference.leaky(
            x_seq,
            mem_init,
            beta=beta,
            threshold=threshold,
            reset_mechanism=reset_mechanism,
            reset_delay=reset_delay,
            graded_spikes_factor=graded_spikes_factor,
            surrogate=surrogate,
            surrogate_alpha=o.alpha,
            surrogate_beta=o.beta_sg,
            return_mem=return_mem,
        ),
    )
    return (out[0], out[1], out[4]) if _states_last else (out[0], out[1])


def synaptic(
    x_seq: Tensor,
    syn_init: Optional[Tensor] = None,
    mem_init: Optional[Tensor] = None,
    *,
    alpha: Union[float, Tensor],
    beta: Union[float, Tensor],
    threshold: Union[float, Tensor] = 1.0,
    reset_mechanism: str = "subtract",
    reset_delay: bool = True,
    surrogate: str = "atan",
    surrogate_alpha: Optional[float] = None,
    surrogate_beta: Optional[float] = None,
    return_mem: str = "last",
    return_states: str = "last",
    _states_last: bool = False,
) -> tuple[Tensor, ...]:
    """snnTorch 1.0's Synaptic (second-order: a synaptic current) over x_seq -> (spikes, syn, mem).

    I = alpha I[t-1] + X; U = beta U[t-1] + I, then U -= R thr (subtract) or U -= U R (zero), R as in leaky;
    S = [U - thr > 0]. alpha and beta are clamped to [0, 1]. syn is the last I ([*], return_states="last")
    or every I[t] ("seq", [T, *]); mem the last U or every U (return_mem).
    _states_last (internal, for spikeforge.interop.snntorch): also return, after the usual outputs and in
    their order, the last step of each state returned as a sequence (None for the others), each a tensor of
    its own written by the kernel.
    """
    _check_x(x_seq)
    _number_or_tensor(threshold, "threshold")
    b, rb = _clamped(beta, x_seq, "beta")
    t, rt = _slot(threshold, x_seq, "threshold")
    a, ra = _clamped(alpha, x_seq, "alpha")
    o = _snn_options(
        5,
        x_seq,
        threshold,
        reset_mechanism,
        reset_delay,
        surrogate,
        surrogate_alpha,
        surrogate_beta,
        return_mem,
        (rb, rt, ra, 1),
        (alpha, beta, syn_init, mem_init),
        return_states,
        states_last=_states_last,
    )
    mem_init = _check_state(mem_init, x_seq, "mem_init")
    syn_init = _check_state(syn_init, x_seq, "syn_init")
    out = _run(
        "synaptic",
        x_seq,
        (mem_init, syn_init),
        (b, t, a),
        o,
        lambda: _reorder(
            reference.synaptic(
                x_seq,
                syn_init,
                mem_init,
                alpha=alpha,
                beta=beta,
                threshold=threshold,
                reset_mechanism=reset_mechanism,
                reset_delay=reset_delay,
                surrogate=surrogate,
                surrogate_alpha=o.alpha,
                surrogate_beta=o.beta_sg,
                return_mem=return_mem,
                return_states=return_states,
            ),
            (0, 2, 1),
        ),
    )
    if _states_last:
        return out[0], out[2], out[1], out[5], out[4]
    return out[0], out[2], out[1]


def alpha_neuron(
    x_seq: Tensor,
    syn_exc_init: Optional[Tensor] = None,
    syn_inh_init: Optional[Tensor] = None,
    mem_init: Optional[Tensor] = None,
    *,
    alpha: Union[float, Tensor],
    beta: Union[float, Tensor],
    threshold: Union[float, Tensor] = 1.0,
    reset_mechanism: str = "zero",
    surrogate: str = "atan",
    surrogate_alpha: Optional[float] = None,
    surrogate_beta: Optional[float] = None,
    return_mem: str = "last",
    return_states: str = "last",
    _states_last: bool = False,
) -> tuple[Tensor, ...]:
    """snnTorch 1.0's Alpha neuron over x_seq -> (spikes, syn_exc, syn_inh, mem).

    E = a E[t-1] + X; I = b I[t-1] - X; U = tau_a (E + I) with tau_a = ln a / (ln b - ln a) + 1 (a = alpha,
    b = beta, both clamped to [0, 1]; snnTorch requires alpha > beta and beta < 1); subtract: E -= thr R,
    I -= I R, U += I[t-1] R; zero: E, I, U -= (E, I, U) R; R as in leaky. S = [U - thr > 0]. syn_exc and
    syn_inh are the last E and I ([*], return_states="last") or every E[t], I[t] ("seq", [T, *]); mem the
    last U or every U (return_mem).
    _states_last (internal, for spikeforge.interop.snntorch): also return, after the usual outputs and in
    their order, the last step of each state returned as a sequence (None for the others), each a tensor of
    its own written by the kernel.
    """
    _check_x(x_seq)
    _number_or_tensor(threshold, "threshold")
    a_t = alpha if isinstance(alpha, Tensor) else torch.tensor(_check_number("alpha", alpha), dtype=torch.float32)
    b_t = beta if isinstance(beta, Tensor) else torch.tensor(_check_number("beta", beta), dtype=torch.float32)
    a_c, b_c = a_t.clamp(0, 1), b_t.clamp(0, 1)
    # snnTorch's Alpha refuses alpha <= beta and beta == 1 (its time constant would be negative, infinite
    # or NaN). Tensors are checked too (one device sync), except while tracing, under a torch.func
    # transform or on the meta device, where their values are not concrete.
    if not _tracing() and torch._C._functorch.maybe_current_level() is None and not a_c.is_meta and not b_c.is_meta:
        if bool((a_c <= b_c).any()) or bool((b_c == 1.0).any()):
            got = (
                f"alpha={alpha}, beta={beta}"
                if not isinstance(alpha, Tensor) and not isinstance(beta, Tensor)
                else "tensors with alpha <= beta or beta == 1 somewhere"
            )
            raise ValueError(
                f"alpha_neuron: alpha must be greater than beta, and beta < 1 (snnTorch's Alpha); got {got}"
            )
    tau_a = torch.log(a_c) / (torch.log(b_c) - torch.log(a_c)) + 1  # snnTorch's expression, its rounding
    b, rb = _slot(b_c.to(x_seq.device), x_seq, "beta")
    t, rt = _slot(threshold, x_seq, "threshold")
    a, ra = _slot(a_c.to(x_seq.device), x_seq, "alpha")
    ta, rta = _slot(tau_a.to(x_seq.device), x_seq, "tau_alpha")
    o = _snn_options(
        6,
        x_seq,
        threshold,
        reset_mechanism,
        True,
        surrogate,
        surrogate_alpha,
        surrogate_beta,
        return_mem,
        (rb, rt, ra, rta),
        (alpha, beta, syn_exc_init, syn_inh_init, mem_init),
        return_states,
        states_last=_states_last,
    )
    mem_init = _check_state(mem_init, x_seq, "mem_init")
    syn_exc_init = _check_state(syn_exc_init, x_seq, "syn_exc_init")
    syn_inh_init = _check_state(syn_inh_init, x_seq, "syn_inh_init")
    out = _run(
        "alpha_neuron",
        x_seq,
        (mem_init, syn_exc_init, syn_inh_init),
        (b, t, a, ta),
        o,
        lambda: _reorder(
            reference.alpha_neuron(
                x_seq,
                syn_exc_init,
                syn_inh_init,
                mem_init,
                alpha=alpha,
                beta=beta,
                threshold=threshold,
                reset_mechanism=reset_mechanism,
                surrogate=surrogate,
                surrogate_alpha=o.alpha,
                surrogate_beta=o.beta_sg,
                return_mem=return_mem,
                return_states=return_states,
            ),
            (0, 3, 1, 2),
        ),
    )
    if _states_last:
        return out[0], out[2], out[3], out[1], out[5], out[6], out[4]
    return out[0], out[2], out[3], out[1]


# --------------------------------------------------------------------------------------------
# Norse
# --------------------------------------------------------------------------------------------
def _norse_options(
    x_seq, v_reset, detach_reset, surrogate, surrogate_alpha, return_v, runs, grads_of, return_states="last"
):
    needs_grad = _needs_grad(x_seq, *grads_of)
    key = (
        7,
        x_seq.is_cuda,
        needs_grad,
        _recompute(x_seq.device),
        runs,
        v_reset,
        type(v_reset),
        detach_reset,
        type(detach_reset),
        surrogate,
        type(surrogate),
        surrogate_alpha,
        type(surrogate_alpha),
        return_v,
        type(return_v),
        return_states,
        type(return_states),
    )
    return _memo(
        key,
        lambda: _norse_options_checked(
            x_seq, v_reset, detach_reset, surrogate, surrogate_alpha, return_v, runs, needs_grad, return_states
        ),
    )


def _norse_options_checked(
    x_seq, v_reset, detach_reset, surrogate, surrogate_alpha, return_v, runs, needs_grad, return_states
):
    v_reset = _check_number("v_reset", v_reset)
    _check_bool("detach_reset", detach_reset)
    if not isinstance(surrogate, str):
        raise TypeError(f"surrogate must be a str, got {type(surrogate).__name__}")
    if surrogate not in NORSE_SURROGATES:  # the kernels are built for this set (csrc/core/neuron.h)
        raise ValueError(
            f"surrogate: {surrogate!r} is not a surrogate of norse_lif; expected one of "
            f"{sorted(NORSE_SURROGATES)} (spikeforge.surrogate.norse_method maps Norse's methods)"
        )
    if surrogate_alpha is None:
        surrogate_alpha = NORSE_SURROGATES[surrogate].alpha
    surrogate_alpha = _check_number("surrogate_alpha", surrogate_alpha, positive=True)
    sid, alpha_v, beta_sg = _check_surrogate(surrogate, surrogate_alpha, all_surrogates=True)
    v_seq = _check_return("return_v", return_v)
    states_seq = _check_return("return_states", return_states)
    return _options(
        7,
        v_threshold=0.0,
        v_reset=v_reset,
        hard=False,
        detach_reset=detach_reset,
        surrogate=sid,
        alpha=alpha_v,
        beta_sg=beta_sg,
        runs=runs,
        v_seq=v_seq,
        states_seq=states_seq,
        device=x_seq.device,
        needs_grad=needs_grad,
    )


def _norse_param(value, x_seq: Tensor, name: str, rate: bool = False):
    """A LIFParameters field, checked. A rate (rate=True) stays a number (reference.neuron.norse_rate forms dt
    times it as Norse does); v_leak / v_th become tensors of the compute dtype (Norse's Python float meets the
    state there, exactly as such a tensor does)."""
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
        if value.device != x_seq.device:
            raise ValueError(f"{name} is on {value.device} but x_seq is on {x_seq.device}")
        return value
    number = _check_number(name, value)
    if rate:
        return value if type(value) is reference.neuron.NorseDefault else number
    return torch.tensor(number, dtype=_compute_dtype(x_seq.dtype), device=x_seq.device)


def norse_lif(
    x_seq: Tensor,
    v_init: Optional[Tensor] = None,
    i_init: Optional[Tensor] = None,
    *,
    dt: float = 0.001,
    tau_syn_inv: Union[float, Tensor] = reference.neuron.NORSE_TAU_SYN_INV,
    tau_mem_inv: Union[float, Tensor] = reference.neuron.NORSE_TAU_MEM_INV,
    v_leak: Union[float, Tensor] = 0.0,
    v_th: Union[float, Tensor] = 1.0,
    v_reset: float = 0.0,
    detach_reset: bool = False,
    surrogate: str = "fast_sigmoid",
    surrogate_alpha: Optional[float] = None,
    return_v: str = "last",
    return_states: str = "last",
) -> tuple[Tensor, Tensor, Tensor]:
    """Norse 1.1's current-based LIF (lif_feed_forward_step, norse.torch.LIF) over x_seq [T, *] ->
    (spikes [T, *], v, i): its numbers, fused.

    Per step: J = I + X; Vd = V + dt tau_mem_inv ((v_leak - V) + J); I = J - dt tau_syn_inv J;
    S = [Vd - v_th > 0]; V = (1 - S) Vd + S v_reset. The reset keeps its gradient through S, as in
    Norse's feed-forward step (detach_reset=True cuts it). Defaults are LIFParameters()'s (its rates are
    float32 tensors: dt * tau in float32, as Norse's LIF() forms it). tau_syn_inv, tau_mem_inv, v_leak and
    v_th may be numbers (a Python float field of LIFParameters: dt * tau formed in double) or tensors
    broadcastable to one step (per neuron or per channel) and learnable (dt * tau formed with torch, as
    Norse forms it). v_init is V[-1] (default v_leak,
    detached, as norse.torch.LIF starts), i_init I[-1] (default 0). v is the last V ([*],
    return_v="last") or every V[t] ("seq"); i the last I ([*], return_states="last") or every I[t] ("seq",
    [T, *]). surrogate: a name of
    spikeforge.surrogate.NORSE_SURROGATES; the default fast_sigmoid with slope 1 is Norse's "super"
    (SuperSpike, 1 / (|x| + 1)^2); spikeforge.surrogate.norse_method maps Norse's other methods.
    """
    _check_x(x_seq)
    dt = _check_number("dt", dt, positive=True)
    cdt = _compute_dtype(x_seq.dtype)
    rate_m = reference.neuron.norse_rate(dt, _norse_param(tau_mem_inv, x_seq, "tau_mem_inv", True), cdt, x_seq.device)
    rate_s = reference.neuron.norse_rate(dt, _norse_param(tau_syn_inv, x_seq, "tau_syn_inv", True), cdt, x_seq.device)
    vl = _norse_param(v_leak, x_seq, "v_leak")
    vth = _norse_param(v_th, x_seq, "v_th")
    a_m, r_m = _slot(rate_m, x_seq, "tau_mem_inv")
    a_s, r_s = _slot(rate_s, x_seq, "tau_syn_inv")
    l, r_l = _slot(vl, x_seq, "v_leak")
    t, r_t = _slot(vth, x_seq, "v_th")
    o = _norse_options(
        x_seq,
        v_reset,
        detach_reset,
        surrogate,
        surrogate_alpha,
        return_v,
        (r_m, r_s, r_l, r_t),
        (tau_syn_inv, tau_mem_inv, v_leak, v_th, v_init, i_init),
        return_states,
    )
    v_init = _check_state(v_init, x_seq, "v_init")
    i_init = _check_state(i_init, x_seq, "i_init")
    if v_init is None:  # norse.torch.LIF's initial state: v_leak, detached
        v_init = torch.broadcast_to(vl.detach().to(x_seq.dtype), x_seq.shape[1:]).contiguous()
    s, v, i, _ = _run(
        "norse_lif",
        x_seq,
        (v_init, i_init),
        (a_m, a_s, l, t),
        o,
        lambda: reference.norse_lif(
            x_seq,
            v_init,
            i_init,
            dt=1.0,  # the rates dt * tau, formed above (1.0 * rate is the rate)
            tau_syn_inv=rate_s,
            tau_mem_inv=rate_m,
            v_leak=vl,
            v_th=vth,
            v_reset=o.v_reset,
            detach_reset=detach_reset,
            surrogate=surrogate,
            surrogate_alpha=o.alpha,
            return_v=return_v,
            return_states=return_states,
        ),
    )
    return s, v, i


# --------------------------------------------------------------------------------------------
# single steps, integer spikes, and the fused-layer helper
# --------------------------------------------------------------------------------------------
def _step_check(x, v, name="v"):
    _check_x(x, "x", min_dim=0)
    if v is not None and not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(v).__name__}")
    if v is not None and tuple(v.shape) != tuple(x.shape):
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")


def lif_step(x: Tensor, v: Optional[Tensor] = None, **kw) -> tuple[Tensor, Tensor]:
    """One LIF step (streaming inference) -> (spike, v_next); identical to one step of lif()."""
    _step_check(x, v)
    s, v_next = lif(x.unsqueeze(0), v, **kw)
    return s[0], v_next


def if_step(x: Tensor, v: Optional[Tensor] = None, **kw) -> tuple[Tensor, Tensor]:
    """One IF step -> (spike, v_next); identical to one step of if_neuron()."""
    _step_check(x, v)
    s, v_next = if_neuron(x.unsqueeze(0), v, **kw)
    return s[0], v_next


def plif_step(x: Tensor, w: Tensor, v: Optional[Tensor] = None, **kw) -> tuple[Tensor, Tensor]:
    """One PLIF step -> (spike, v_next); identical to one step of plif(). Per-channel w uses x's dim 1."""
    _step_check(x, v)
    s, v_next = plif(x.unsqueeze(0), w, v, **kw)
    return s[0], v_next


def counts_to_binary(s: Tensor, D: int) -> Tensor:
    """Integer spikes s (counts 0..D, e.g. from ilif) -> [D, *s.shape] binary: out[d] = (s > d).

    At inference an integer spike s equals s binary spikes over D virtual steps; energy estimates count
    them that way (the papers' convention)."""
    if not isinstance(s, Tensor):
        raise TypeError(f"s must be a torch.Tensor, got {type(s).__name__}")
    D = _check_int("D", D, minimum=1)
    if s.is_complex():
        raise TypeError(f"s must hold real counts, got {s.dtype}")
    if not _tracing() and s.numel() and not s.is_meta:  # (a meta tensor has no values to check)
        whole = (s == torch.round(s)) if s.is_floating_point() else True  # integer and bool tensors are whole
        if not bool(((s >= 0) & (s <= D) & whole).all()):
            raise ValueError(f"s must hold integer counts in [0, {D}]")
    levels = torch.arange(D, device=s.device, dtype=s.dtype if s.is_floating_point() else torch.int64)
    levels = levels.view((D,) + (1,) * s.dim())
    return (s.unsqueeze(0) > levels).to(s.dtype if s.is_floating_point() else torch.float32)


@overload
def lif_input_grad(
    grad_spike: Tensor, x: Tensor, opts: NeuronOptions, k: Optional[Tensor] = None, need_k: Literal[False] = False
) -> Tensor: ...
@overload
def lif_input_grad(
    grad_spike: Tensor, x: Tensor, opts: NeuronOptions, k: Optional[Tensor] = None, *, need_k: Literal[True]
) -> tuple[Tensor, Tensor]: ...
def lif_input_grad(
    grad_spike: Tensor, x: Tensor, opts: NeuronOptions, k: Optional[Tensor] = None, need_k: bool = False
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """dL/dx (and dL/dk with need_k) of the LIF-family neuron `opts` run from its default initial state on
    x, given only dL/dspike: no forward output and no autograd graph (the CPU kernel recomputes the
    membrane trajectory from x as the default backward does; CUDA reruns the forward into a workspace).
    For callers that recompute x in their own backward (the attention ops, nn.fused's BN + neuron).
    -> grad_x, or (grad_x, grad_k) with need_k."""
    bo = NeuronBackwardOptions(*opts[:20], False, False, False, need_k and k is not None, False, False, False)
    out = _backward(grad_spike.to(x.dtype), None, None, None, x, None, None, None, None, k, None, None, None, bo)
    return (out[0], out[4]) if need_k else out[0]


def _grad_from_input(
    x_seq: Tensor,
    grad_spike: Tensor,
    w: Optional[Tensor],
    tau,
    decay_input: bool,
    v_threshold,
    v_reset,
    detach_reset,
    surrogate,
    alpha,
    need_w_grad: bool,
):
    """lif_input_grad for lif / if_neuron (tau None) / plif (w given) with the public options ->
    (grad_x, grad_w or None)."""
    k: Optional[Tensor] = None
    k_w: Optional[Tensor] = None  # sigmoid(w) in w's dtype (as plif)
    runs = (1, 1, 1, 1)
    if w is not None:
        k_w = torch.sigmoid(w.detach()).reshape(-1)
        k = k_w.to(_compute_dtype(x_seq.dtype))
        runs = (math.prod(x_seq.shape[3:]) if w.numel() != 1 else 1, 1, 1, 1)
    tau_v = 0.0 if (tau is None or w is not None) else _check_number("tau", tau, positive=True)
    o = _sj_options(
        0,
        x_seq,
        tau_v,
        v_threshold,
        v_reset,
        bool(decay_input) and (tau is not None or w is not None),
        detach_reset,
        surrogate,
        alpha,
        "last",
        runs=runs,
    )
    if not need_w_grad or w is None or k is None or k_w is None:  # (k and k_w are set exactly when w is given)
        return lif_input_grad(grad_spike, x_seq, o, k), None
    gx, gk = lif_input_grad(grad_spike, x_seq, o, k, need_k=True)
    return gx, (gk.to(w.dtype) * (1 - k_w) * k_w).view_as(w)  # torch.sigmoid's backward, in its order
