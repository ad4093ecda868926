"""Drop-in backend for snnTorch 1.0 models: snnTorch's numbers, one step per call or a whole sequence per call.

patch(model) changes the class of every ``snntorch.Leaky`` / ``Synaptic`` / ``Alpha`` in model, in place, to a
subclass here (``spikeforge.interop.snntorch.Leaky`` is a ``snntorch.Leaky``), so the object, its parameters,
buffers, state_dict keys, ``snntorch.utils.reset`` and everything else of snnTorch stay as they were. Each
drop-in has a ``step_mode``:

- ``"s"`` (patch's default): a call is one step, exactly as snnTorch's tutorials call it (``init_hidden=True``
  or an explicit ``mem``); the call runs snnTorch's own ``forward``, so the numbers, the state kept between
  calls until ``utils.reset``, ``leaky.mem`` and the dtypes are snnTorch's by construction.
- ``"m"``: a call takes a whole sequence ``x_seq [T, B, ...]`` and returns what T single-step calls would
  return, stacked over time (``spk_seq``, and ``mem_seq`` etc. where snnTorch returns the states), with the
  same state rules: the sequence starts from the stored state (or the ``mem`` / ``syn`` passed, of shape
  ``[B, ...]``), a stored state of another shape restarts from zeros, and the last states are stored (with
  their autograd graph: a chunked sequence backpropagates through the chunks until ``utils.reset``) so the
  next call, of either mode, continues the sequence. ``patch(model, step_mode="m")`` also makes an
  ``nn.Sequential`` model run whole sequences: per-sample layers get T folded into the batch, batch norms
  in training mode run step by step (snnTorch normalises each step on its own), and anything whose
  sequence semantics are unknown is refused with ValueError at patch time.

A sequence runs on one of two paths per neuron:

- "fused": ``spikeforge.ops.leaky`` / ``synaptic`` / ``alpha_neuron``, which compute snnTorch's step with its
  arithmetic (the same operations in the same order, each rounded once), so spikes, states and the stored
  reset are bitwise snnTorch's and gradients agree to float rounding. Every reset mechanism, reset_delay,
  graded spikes, per-neuron and learnable beta / threshold / alpha / graded_spikes_factor, surrogate_disable,
  and the snntorch.surrogate functions with a twin (surrogate_of: atan, sigmoid, fast_sigmoid, triangular,
  straight_through_estimator, spike_rate_escape, heaviside, with the parameters read from the closure), for
  float32 / float64 input, and float16 / bfloat16 input of a Leaky with a reset (snnTorch's membrane is
  then float32 from the first step on, the input entering exactly).
- "loop": snnTorch's per-step arithmetic, operation for operation, in a Python time loop (same spikes,
  states and gradients, same dtypes; no speedup) for what the kernels cannot do: custom surrogates (Python
  functions, custom_surrogate, SSO / LSO / SFS), inhibition, state_quant, half-precision Synaptic / Alpha /
  Leaky without reset (snnTorch rounds those states in half precision at every operation), parameters whose
  dtype promotes snnTorch's state (a per-neuron float64 beta for float32 input), and a few corners listed
  by _fused_blocker. Under torch.compile the loop runs (the compiler traces it). A custom_surrogate / SSO /
  SFS spike_grad only matters for gradients: calls that build no graph (torch.no_grad) run fused.

Each model's fused path is one entry of ``FUSED_PATHS`` (a FusedPath: a blocker saying why a call cannot run
it, and the runner). The report of patch() says, per neuron, "fused" or "loop: <why>" for a float32 call
(float64 for a neuron whose parameters are all float64); ``neuron.fused_blocker(x_seq, states)`` answers for
a given call.

Every other snnTorch neuron (RLeaky, RSynaptic, Lapicque, SLSTM, SConv2dLSTM, subclasses of the three
models, ...) is left as it is in step_mode "s" (snnTorch's own numbers; listed in the report) and refused
with ValueError in step_mode "m" (it has no sequence path); the sequence modules (LeakyParallel, StateLeaky,
LinearLeaky) take [T, B, ...] already and are passed the sequence as they are.
"""

from __future__ import annotations

import inspect
import math
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .. import ops

try:
    import snntorch as _snn
except ImportError as e:  # the module is snnTorch's drop-in: without snnTorch there is nothing to patch
    raise ImportError(
        "spikeforge.interop.snntorch needs snnTorch 1.x (pip install snntorch, or spikeforge[peers])"
    ) from e

__all__ = [
    "patch",
    "set_step_mode",
    "unpatch",
    "PatchReport",
    "surrogate_of",
    "Leaky",
    "Synaptic",
    "Alpha",
    "FusedPath",
    "FUSED_PATHS",
]

_SUBTRACT, _ZERO, _NONE = 0, 1, 2  # snnTorch's reset_mechanism_val
_STATE_FUNCTIONS = {"_base_sub": _SUBTRACT, "_base_zero": _ZERO, "_base_int": _NONE}


def _update_mode(nrn) -> int:
    """The state update a step runs: snnTorch binds state_function when the neuron is built (a later change of
    reset_mechanism or a loaded reset_mechanism_val does not change it), so that is what decides."""
    return _STATE_FUNCTIONS[nrn.state_function.__func__.__name__]


def _late_reset(nrn, mem: Tensor, do_reset: Tensor) -> Tensor:
    """reset_delay=False: the reset of this step's spike, decided by reset_mechanism_val as snnTorch does."""
    if nrn.reset_mechanism_val == _SUBTRACT:
        return mem - do_reset * nrn.threshold
    if nrn.reset_mechanism_val == _ZERO:
        return mem - do_reset * mem
    return mem


# snntorch.surrogate factory -> (spikeforge surrogate, the closure's parameter read as its alpha, the one read as
# its second parameter). Each is the same gradient function as snnTorch's backward (csrc/core/surrogate.h):
#   atan(alpha)                 alpha / 2 / (1 + (pi/2 alpha x)^2)
#   sigmoid(slope)              slope e^{-slope x} / (e^{-slope x} + 1)^2 = slope s (1 - s)
#   fast_sigmoid(slope)         1 / (slope |x| + 1)^2
#   triangular(threshold)       threshold for x < 0, -threshold for x >= 0 (as snnTorch writes it)
#   straight_through_estimator  1
#   spike_rate_escape(beta, slope)  slope e^{-beta |x - 1|}
#   heaviside                   1 where x > 0 (the spike), else 0
# Every one fires on x > 0. SSO, LSO, SFS and custom_surrogate have no twin (random, or a Python function).
_SURROGATE_TWINS = {
    "atan": ("atan", "alpha", None),
    "sigmoid": ("sigmoid", "slope", None),
    "fast_sigmoid": ("fast_sigmoid", "slope", None),
    "triangular": ("snntorch_triangular", "threshold", None),
    "straight_through_estimator": ("straight_through", None, None),
    "spike_rate_escape": ("spike_rate_escape", "slope", "beta"),
    "heaviside": ("heaviside", None, None),
}


def _factory(spike_grad) -> Optional[str]:
    """The snntorch.surrogate function that made this spike_grad closure, else None."""
    qualname = getattr(spike_grad, "__qualname__", "")
    if getattr(spike_grad, "__module__", "") != "snntorch.surrogate" or not qualname.endswith(".<locals>.inner"):
        return None
    return qualname.split(".")[0]


def _closure_number(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def surrogate_of(spike_grad) -> Optional[tuple[str, Optional[float], Optional[float]]]:
    """snnTorch spike_grad -> (spikeforge surrogate name, its alpha, its second parameter) when the gradient is the
    same function (the fused ops' surrogate, surrogate_alpha, surrogate_beta), else None.

    Recognises the closures that ``snntorch.surrogate.atan / sigmoid / fast_sigmoid / triangular /
    straight_through_estimator / spike_rate_escape / heaviside`` return, with the parameters they closed over
    (e.g. fast_sigmoid(slope=25) -> ("fast_sigmoid", 25.0, None)); a parameter the op refuses (not a finite
    number, or alpha <= 0) gives None, as do custom surrogates and snnTorch's SSO / LSO / SFS."""
    twin = _SURROGATE_TWINS.get(_factory(spike_grad))
    if twin is None:
        return None
    # read once per closure (inspect.getclosurevars is slow next to a small call; snntorch.surrogate's closures
    # never rebind the parameters they closed over), forgotten with the closure
    if spike_grad not in _TWIN_OF:
        _TWIN_OF[spike_grad] = _read_twin(spike_grad, *twin)
    return _TWIN_OF[spike_grad]


_TWIN_OF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # snnTorch closure -> surrogate_of's answer


def _read_twin(spike_grad, name, first, second) -> Optional[tuple[str, Optional[float], Optional[float]]]:
    try:
        params = inspect.getclosurevars(spike_grad).nonlocals
    except (TypeError, ValueError):
        return None
    alpha = _closure_number(params.get(first)) if first else None
    beta = _closure_number(params.get(second)) if second else None
    if (first and (alpha is None or alpha <= 0)) or (second and beta is None):
        return None
    return name, alpha, beta


# ---------------------------------------------------------------------------------------------------------
# exact loop paths: snnTorch 1.0's per-step arithmetic, operation for operation (same order, same in-place
# updates, so the same rounding and the same dtype promotions). Each takes the neuron, x_seq [T, ...] (T >= 1),
# the states before the sequence and whether the per-step states are wanted, and returns
# (spk_seq, last states, state sequences or None, the reset of the last step).
# The stateless helpers mem_reset / fire / fire_inhibition are the module's own.
# ---------------------------------------------------------------------------------------------------------
def _fire(nrn, mem: Tensor) -> Tensor:
    return nrn.fire_inhibition(mem.size(0), mem) if nrn.inhibition else nrn.fire(mem)


def _fit(state: Tensor, x: Tensor) -> Tensor:
    """snnTorch's check at the start of every step: a state whose shape is not the step's restarts from zeros (of
    the step's dtype, on the state's device). A coefficient that broadcasts a step to a larger shape (beta [2, N]
    for steps [1, N]) makes every step's state larger than the step, so such a neuron restarts at every step."""
    return state if state.shape == x.shape else torch.zeros_like(x, device=state.device)


def _leaky_loop(nrn, x_seq: Tensor, states: tuple, keep_seq: bool):
    (mem,) = states
    mode, thr, gsf = _update_mode(nrn), nrn.threshold, nrn.graded_spikes_factor
    beta = nrn.beta.clamp(0, 1)  # snnTorch clamps on every step; the value (and the forward) is the same
    reset, spikes, mems = nrn.__dict__.get("reset"), [], []
    for x in x_seq:
        mem = _fit(mem, x)
        reset = nrn.mem_reset(mem)
        if mode == _SUBTRACT:
            mem = beta * mem + x - reset * thr
        elif mode == _ZERO:
            mem = (1 - reset) * mem
            mem = beta * mem + x
        else:
            mem = beta * mem + x
        if nrn.state_quant:
            mem = nrn.state_quant(mem)
        spk = _fire(nrn, mem)
        if not nrn.reset_delay:
            mem = _late_reset(nrn, mem, spk / gsf - reset)
        spikes.append(spk)
        if keep_seq:
            mems.append(mem)
    return torch.stack(spikes), (mem,), ((torch.stack(mems),) if keep_seq else None), reset


def _synaptic_loop(nrn, x_seq: Tensor, states: tuple, keep_seq: bool):
    syn, mem = states
    mode, thr, gsf = _update_mode(nrn), nrn.threshold, nrn.graded_spikes_factor
    alpha, beta = nrn.alpha.clamp(0, 1), nrn.beta.clamp(0, 1)
    reset, spikes, syns, mems = nrn.__dict__.get("reset"), [], [], []
    for x in x_seq:
        syn, mem = _fit(syn, x), _fit(mem, x)
        reset = nrn.mem_reset(mem)
        syn_new = alpha * syn + x
        mem_new = beta * mem + syn_new
        if mode == _SUBTRACT:
            mem_new = mem_new - reset * thr
        elif mode == _ZERO:  # snnTorch subtracts (0, the recomputed membrane) times the reset, in place
            mem_again = beta * mem + (alpha * syn + x)
            syn_new -= 0 * reset
            mem_new -= mem_again * reset
        syn, mem = syn_new, mem_new
        if nrn.state_quant:
            mem = nrn.state_quant(mem)
            syn = nrn.state_quant(syn)
        spk = _fire(nrn, mem)
        if not nrn.reset_delay:
            mem = _late_reset(nrn, mem, spk / gsf - reset)
        spikes.append(spk)
        if keep_seq:
            syns.append(syn)
            mems.append(mem)
    return torch.stack(spikes), (syn, mem), ((torch.stack(syns), torch.stack(mems)) if keep_seq else None), reset


def _alpha_loop(nrn, x_seq: Tensor, states: tuple, keep_seq: bool):
    exc, inh, mem = states
    mode, thr = _update_mode(nrn), nrn.threshold
    alpha, beta = nrn.alpha.clamp(0, 1), nrn.beta.clamp(0, 1)
    tau_alpha = torch.log(alpha) / (torch.log(beta) - torch.log(alpha)) + 1
    reset, spikes, seqs = nrn.__dict__.get("reset"), [], ([], [], [])
    for x in x_seq:
        exc, inh, mem = _fit(exc, x), _fit(inh, x), _fit(mem, x)
        reset = nrn.mem_reset(mem)
        exc_new = alpha * exc + x
        inh_new = beta * inh - x
        mem_new = tau_alpha * (exc_new + inh_new)
        if mode == _SUBTRACT:
            exc2, inh2, mem2 = thr, beta * inh - x, -inh
        elif mode == _ZERO:
            exc2, inh2 = alpha * exc + x, beta * inh - x
            mem2 = tau_alpha * (exc2 + inh2)
        if mode != _NONE:  # in place, as snnTorch's _base_sub / _base_zero
            exc_new -= exc2 * reset
            inh_new -= inh2 * reset
            mem_new -= mem2 * reset
        exc, inh, mem = exc_new, inh_new, mem_new
        if nrn.state_quant:
            exc, inh, mem = nrn.state_quant(exc), nrn.state_quant(inh), nrn.state_quant(mem)
        spikes.append(_fire(nrn, mem))
        if keep_seq:
            for seq, s in zip(seqs, (exc, inh, mem)):
                seq.append(s)
    return (
        torch.stack(spikes),
        (exc, inh, mem),
        (tuple(torch.stack(seq) for seq in seqs) if keep_seq else None),
        reset,
    )


# ---------------------------------------------------------------------------------------------------------
# fused paths: one FusedPath per model. blocker(neuron, x_seq, states) -> None when run() reproduces
# snnTorch's numbers for this call, else the reason (x_seq / states None: the question asked at patch time,
# for float32 input). run has the loop paths' signature and results.
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FusedPath:
    blocker: Callable
    run: Callable


_RESET_NAMES = ("subtract", "zero", "none")
# the coefficients each model's step reads (snnTorch keeps every one as a tensor: buffer or Parameter)
_PARAMS = {
    "Leaky": ("beta", "threshold", "graded_spikes_factor"),
    "Synaptic": ("alpha", "beta", "threshold", "graded_spikes_factor"),
    "Alpha": ("alpha", "beta", "threshold", "graded_spikes_factor"),
}
_STATE_NAMES = {"Leaky": ("mem",), "Synaptic": ("syn", "mem"), "Alpha": ("syn_exc", "syn_inh", "mem")}
_HALF = (torch.float16, torch.bfloat16)
_BYPASS = _snn.SpikingNeuron._surrogate_bypass  # spike_grad of surrogate_disable=True: a spike without gradient
_PROBES = {}  # dtype -> a 1-element tensor: torch.result_type(probe, p) is the dtype of snnTorch's `p * state`


def _probe(dtype: torch.dtype) -> Tensor:
    p = _PROBES.get(dtype)
    if p is None:
        p = _PROBES[dtype] = torch.empty(1, dtype=dtype)
    return p


def _resets_late(model: str, nrn) -> bool:
    """reset_delay=False (Leaky, Synaptic; Alpha has no such option)."""
    return model != "Alpha" and not nrn.reset_delay


# snntorch.surrogate closures without a gradient twin whose forward is snnTorch's (x > 0).float() all the same:
# exact on the fused path when no gradient is asked for (inference). (LSO is not among them: snnTorch 1.0's
# LSO calls StochasticSpikeOperator with a missing argument and raises; the loop raises as snnTorch does.)
_FORWARD_ONLY = ("custom_surrogate", "SSO", "SFS")


def _spike_surrogate(nrn, grad: bool = True) -> Optional[tuple]:
    """(surrogate, alpha, second parameter) for the fused op: spike_grad's twin, "disabled" for surrogate_disable
    (snnTorch's _surrogate_bypass is a comparison: no gradient through the spike, the graded factor's own
    gradient kept), or without gradients (grad=False) "disabled" for a spike_grad whose forward is known (only
    its gradient has no twin, and no gradient is asked for). None: the loop must run it."""
    if nrn.spike_grad is _BYPASS:
        return "disabled", None, None
    twin = surrogate_of(nrn.spike_grad)
    if twin is not None:
        return twin
    if not grad and _factory(nrn.spike_grad) in _FORWARD_ONLY:
        return "disabled", None, None
    return None


def _grad_wanted(model: str, nrn, x_seq: Optional[Tensor], states: Optional[tuple]) -> bool:
    """Whether this call builds a graph (at patch time, x_seq None: assume a training call)."""
    if x_seq is None:
        return True
    if not torch.is_grad_enabled():
        return False
    tensors = [x_seq, *(states or ()), *(getattr(nrn, n) for n in _PARAMS[model])]
    return any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _plain_factor(gsf: Tensor) -> bool:
    """graded_spikes_factor is the default: one constant 1 (spikes are then the 0/1 steps, in float32)."""
    return gsf.dim() == 0 and not gsf.requires_grad and float(gsf) == 1.0


def _divides_exactly(gsf: Tensor) -> bool:
    """Whether (s gsf) / gsf is s for the 0/1 spike s: gsf finite and nonzero everywhere."""
    g = gsf.detach()
    if g.dim() == 0:
        v = float(g)
        return math.isfinite(v) and v != 0.0
    return bool((torch.isfinite(g) & (g != 0)).all())


def _broadcasts_to(shape, step) -> bool:
    """Whether a tensor of `shape` broadcasts to `step` without growing it (torch.broadcast_shapes(shape, step)
    == step), by the rule itself: torch.broadcast_shapes took a fifth of a small sequence call."""
    if len(shape) > len(step):
        return False
    return all(a == 1 or a == b for a, b in zip(reversed(shape), reversed(step)))


def _call_dtype(params) -> torch.dtype:
    """The input dtype a module whose parameters are `params` is called with, as far as they tell: float64 when
    every floating-point one is (model.double()), else float32."""
    floats = [p.dtype for p in params if isinstance(p, Tensor) and p.is_floating_point()]
    return torch.float64 if floats and all(d == torch.float64 for d in floats) else torch.float32


def _fused_blocker(model: str, nrn, x_seq: Optional[Tensor] = None, states: Optional[tuple] = None) -> Optional[str]:
    if torch.compiler.is_compiling():  # the checks below read values (graph breaks)
        return "under torch.compile the sequence runs the loop, which the compiler traces"
    if nrn.inhibition:
        return "inhibition=True (only the largest membrane of each sample fires: no fused kernel)"
    if nrn.state_quant:
        return "state_quant (a Python quantiser inside each step: no fused kernel)"
    mode, late = _update_mode(nrn), _resets_late(model, nrn)
    if late and int(nrn.reset_mechanism_val) != mode:
        return (
            f"reset_mechanism set to {nrn.reset_mechanism!r} after construction, with reset_delay=False: snnTorch "
            "then updates with the mechanism bound at construction and resets late with the new one"
        )
    sg = _spike_surrogate(nrn, _grad_wanted(model, nrn, x_seq, states))
    if sg is None:
        note = (
            " (without gradients, e.g. under torch.no_grad, the fused kernels run it: its forward is x > 0)"
            if _factory(nrn.spike_grad) in _FORWARD_ONLY
            else ""
        )
        return (
            f"spike_grad {getattr(nrn.spike_grad, '__qualname__', type(nrn.spike_grad).__name__)!r} has no "
            "spikeforge twin (a custom surrogate, or SSO / LSO / SFS, or a parameter the kernels refuse)" + note
        )
    params = {n: getattr(nrn, n) for n in _PARAMS[model]}
    for n, p in params.items():
        if not isinstance(p, Tensor) or not p.is_floating_point():
            return f"{n} is a {type(p).__name__}, not a floating-point tensor"
    gsf = params["graded_spikes_factor"]
    if late and not _divides_exactly(gsf):
        # the kernels reset late by the 0/1 spike; snnTorch's spk / gsf is that only for a finite, nonzero factor
        # (0 / 0 and inf / inf are NaN, and so is its membrane from then on)
        return "graded_spikes_factor 0 or not finite with reset_delay=False (snnTorch's late reset divides by it)"
    if model == "Alpha":
        # snnTorch's Alpha refuses these when built, but computes a later value (a learnt beta overtaking alpha)
        # with a negative, infinite or NaN time constant; ops.alpha_neuron refuses them on every call
        a, b = params["alpha"].detach().clamp(0, 1), params["beta"].detach().clamp(0, 1)
        if bool((a <= b).any()) or bool((b == 1).any()):
            return (
                "alpha <= beta or beta == 1 somewhere (snnTorch's Alpha refuses them when built; ops.alpha_neuron "
                "on every call)"
            )
    # without an input (the patch report, `path`): the dtype the module's parameters say its calls take, float64
    # after model.double() (a float32 assumption reported such a model's float64 calls as loop calls)
    dt = x_seq.dtype if x_seq is not None else _call_dtype(params.values())
    if dt in _HALF:
        # snnTorch keeps a Leaky membrane in float32 after its first reset operation (its R is float32, and the
        # input enters exactly); without a reset, and in Synaptic / Alpha's currents, every operation rounds in dt
        if model != "Leaky" or mode == _NONE:
            what = "membrane" if model == "Leaky" else "synaptic current(s)"
            return (
                f"input dtype {dt}: snnTorch keeps the {what} in {dt}, rounding every operation there (the kernels "
                "compute in float32)"
            )
        compute = torch.float32
    elif dt in (torch.float32, torch.float64):
        compute = dt
    else:
        return f"input dtype {dt}"
    for n, p in params.items():
        promoted = torch.result_type(_probe(compute), p)
        if promoted != compute:
            return (
                f"{n} ({p.dtype}, shape {tuple(p.shape)}) makes snnTorch compute the state in {promoted}, not {compute}"
            )
        if x_seq is not None:
            if p.device != x_seq.device:
                return f"{n} is on {p.device}, the input on {x_seq.device}"
            if not _broadcasts_to(p.shape, x_seq.shape[1:]):
                step = tuple(x_seq.shape[1:])
                return f"{n} of shape {tuple(p.shape)} does not broadcast to one step {step}"
    thr = params["threshold"]
    subtracts = mode == _SUBTRACT or (late and int(nrn.reset_mechanism_val) == _SUBTRACT)
    if (
        compute == torch.float64
        and subtracts
        and thr.dim() == 0
        and thr.dtype == torch.float64
        and float(thr) != float(thr.float())
    ):
        return (
            "a float64 threshold that float32 cannot hold: snnTorch's subtract reset R * threshold rounds it to "
            "float32 (R is float32)"
        )
    if states is None:
        return None
    for n, s in zip(_STATE_NAMES[model], states):
        # None: a restart from zeros of x_seq's dtype, on its device (_DropIn._run_seq)
        if s is not None and s.device != x_seq.device:
            return f"the stored {n} is on {s.device}, the input on {x_seq.device}"
        s_dtype = dt if s is None else s.dtype
        if s_dtype == compute:
            continue
        if s_dtype != dt or dt not in _HALF:
            return f"the stored {n} is {s_dtype}, the input {dt}: snnTorch's first step promotes them"
        # a dt state: snnTorch's first step rounds in dt, which only reaches the result from a zero state,
        # through the reset R = [0 - thr > 0] when thr is so small a negative number that dt rounds it to 0
        if s is not None and bool(s.any()):
            return f"a nonzero {dt} {n} before the sequence: snnTorch's first step rounds in {dt}"
        if subtracts and bool(((thr < 0) & (thr >= -(2.0**-24))).any()):
            return f"a negative threshold that {dt} rounds to zero, with a {dt} state"
    return None


def _fused_run(model: str, nrn, x_seq: Tensor, states: tuple, keep_seq: bool):
    """The sequence through ops.leaky / synaptic / alpha_neuron, with the results the loop path returns."""
    dt = x_seq.dtype
    compute = torch.float32 if dt in _HALF else dt  # half: a Leaky whose membrane snnTorch keeps in float32
    x = x_seq.to(compute)
    inits = tuple(None if s is None else s.to(compute) for s in states)  # None: from zeros (the ops' default)
    surrogate, s_alpha, s_beta = _spike_surrogate(nrn, _grad_wanted(model, nrn, x_seq, states))
    mode, late = _update_mode(nrn), _resets_late(model, nrn)
    gsf = nrn.graded_spikes_factor
    plain = _plain_factor(gsf)
    # surrogate_disable: snnTorch's spike is a comparison with no graph ((U - thr > 0).float(), then times the
    # factor, whose own graph it keeps): the op's 0/1 spikes, detached, times the factor outside the op. (The
    # Leaky op's factor only scales its spikes and divides them again in the late reset, (s gsf) / gsf = s for
    # the finite, nonzero factors that reach this path.)
    disabled = surrogate == "disabled"
    T = x.shape[0]
    # snnTorch leaves the last step's reset R = [U[T-2] - thr > 0] in nrn.reset: the spike of step T-2 when
    # the membrane kept is the one that fired and the spike is the 0/1 step, else read from U[T-2]
    steps_are_spikes = model != "Leaky" or plain or disabled
    want_seq = keep_seq or (T > 1 and (late or not steps_are_spikes))
    threshold = nrn.threshold
    if disabled and mode != _SUBTRACT and isinstance(threshold, Tensor):
        # without a surrogate the spike has no graph, and a zero or no reset does not read the threshold: snnTorch's
        # threshold gets no gradient at all (None), where the op's would be a materialised zero, which weight decay
        # and momentum would still move
        threshold = threshold.detach()
    kw = dict(
        threshold=threshold,
        reset_mechanism=_RESET_NAMES[mode],
        surrogate=surrogate,
        surrogate_alpha=s_alpha,
        surrogate_beta=s_beta,
        return_mem="seq" if want_seq else "last",
        _states_last=True,  # see below
    )
    # keep_seq: the synaptic currents of every step come from the kernel too (their gradients go back
    # through its backward), the same operations as snnTorch's step, so the same values bitwise.
    # _states_last: the kernel also writes the last step of each sequence into a tensor of its own, the
    # module's stored state (snnTorch's detach_hidden detaches it in place, so it cannot be a view of the
    # returned sequence; a copy cost a read and a write of it per state)
    states_kw = dict(return_states="seq" if keep_seq else "last")
    if model == "Leaky":
        step, mem, *lasts = ops.leaky(
            x, inits[0], beta=nrn.beta, graded_spikes_factor=1.0 if disabled else gsf, reset_delay=nrn.reset_delay, **kw
        )
        others = ()
    elif model == "Synaptic":
        step, syn, mem, *lasts = ops.synaptic(
            x, inits[0], inits[1], alpha=nrn.alpha, beta=nrn.beta, reset_delay=nrn.reset_delay, **kw, **states_kw
        )
        others = (syn,)
    else:
        step, exc, inh, mem, *lasts = ops.alpha_neuron(x, *inits, alpha=nrn.alpha, beta=nrn.beta, **kw, **states_kw)
        others = (exc, inh)
    if disabled:  # (a loss on these spikes alone then has nothing to differentiate, as in snnTorch)
        step = step.detach()
    # the states the module keeps: a returned last state itself, or the last step written apart
    stored = tuple(o if last is None else last for o, last in zip((*others, mem), lasts))
    # snnTorch's spikes: (U - thr > 0).float() * graded_spikes_factor (float32 unless the factor promotes)
    if model == "Leaky" and not disabled:
        spk = step.to(torch.result_type(_probe(torch.float32), gsf))
    else:
        spk = step.to(torch.float32)
        if not plain:
            spk = spk * gsf
    if T == 1:
        reset = nrn.mem_reset(states[-1] if states[-1] is not None else torch.zeros_like(x_seq[0]))
    elif late or not steps_are_spikes:
        reset = nrn.mem_reset(mem[-2])
    else:
        # [U[T-2] - thr > 0] is step T-2's spike: a copy of it (snnTorch's reset is a tensor of its own) costs
        # far less than snnTorch's mem_reset (a surrogate's forward on U[T-2], a cast and a clone)
        reset = step[-2].detach().to(torch.float32, copy=True)
    seqs = (*others, mem) if keep_seq else None
    return spk, stored, seqs, reset


# model name -> fused path (see _fused_blocker for what runs the loop instead, and why)
FUSED_PATHS: dict[str, FusedPath] = {
    m: FusedPath(partial(_fused_blocker, m), partial(_fused_run, m)) for m in ("Leaky", "Synaptic", "Alpha")
}


# ---------------------------------------------------------------------------------------------------------
# the drop-in neurons
# ---------------------------------------------------------------------------------------------------------
class _DropIn:
    """Mixin placed before a snnTorch neuron class. step_mode "s" is snnTorch's forward untouched; "m" runs a
    sequence with snnTorch's state rules on the fused path when it applies, else the exact loop."""

    step_mode = "s"  # instance attributes set by patch() / set_step_mode(); class defaults otherwise
    backend = "auto"  # "auto" | "fused" | "loop"
    _MODEL: str
    _STATES: tuple
    _LOOP: Callable

    def fused_blocker(self, x_seq: Optional[Tensor] = None, states: Optional[tuple] = None) -> Optional[str]:
        """None when a sequence call runs fused (for float32 input when x_seq is not given, float64
        when the neuron's parameters all are), else why not."""
        path = FUSED_PATHS.get(self._MODEL)
        if path is None:
            return f"no fused kernel for {self._MODEL} yet"
        return path.blocker(self, x_seq, states)

    @property
    def path(self) -> str:
        """The sequence path of a float32 call (float64 when the parameters all are): "fused" or "loop"."""
        return "loop" if self.backend == "loop" or self.fused_blocker() is not None else "fused"

    def _outputs(self, spk: Tensor, seqs: Optional[tuple]):
        # snnTorch returns the spikes alone only with init_hidden=True and output=False
        if self.init_hidden and not self.output:
            return spk
        return (spk,) + seqs

    def _forward_seq(self, x_seq, given: dict):
        name = type(self).__name__
        if not isinstance(x_seq, Tensor):
            raise TypeError(f"{name} in step_mode 'm': x_seq must be a tensor, got {type(x_seq).__name__}")
        if x_seq.dim() < 3:  # a batch dimension is required: [B, N] is one step far more often than a sequence
            raise ValueError(
                f"{name} in step_mode 'm' takes x_seq [T, B, ...] (at least 3 dims), got shape "
                f"{tuple(x_seq.shape)}; for one step per call use step_mode 's'"
            )
        return self._run_seq(x_seq, given)

    def _run_seq(self, x_seq: Tensor, given: dict):
        """The sequence call after the rank check: snnTorch's state rules, the path, the stored states."""
        name = type(self).__name__
        if self.init_hidden and any(v is not None for v in given.values()):
            raise TypeError(
                f"{name}: {' / '.join(f'`{n}`' for n in self._STATES)} should not be passed as an "
                "argument while `init_hidden=True`"
            )
        step = tuple(x_seq.shape[1:])
        for n, value in given.items():
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"{name}: {n} must be a tensor (the state before the sequence) or None, got {type(value).__name__}"
                )
        states = []
        for n in self._STATES:
            s = given[n] if given[n] is not None else getattr(self, n)
            if tuple(s.shape) == tuple(x_seq.shape):
                raise ValueError(
                    f"{name} in step_mode 'm' got x_seq of the shape of its stored state {n} "
                    f"{tuple(s.shape)}: one step given to a sequence call? Use step_mode 's' for "
                    "one step per call, or pass [T, B, ...]"
                )
            if tuple(s.shape) != step:  # snnTorch's rule (init_leaky()'s empty state too): restart from zeros
                if s.device == x_seq.device:
                    s = None  # zeros of x_seq's dtype until a path needs them: the fused ops start there unread
                else:  # snnTorch's zeros sit on the stored state's device
                    s = (
                        torch.zeros_like(x_seq[0], device=s.device)
                        if x_seq.shape[0]
                        else x_seq.new_zeros(step, device=s.device)
                    )
            states.append(s)
        states = tuple(states)
        keep_seq = self.output or not self.init_hidden
        if x_seq.shape[0] == 0:  # no step: empty outputs, the state is left as it was
            spk = x_seq.new_empty(
                x_seq.shape, dtype=torch.promote_types(torch.float32, self.graded_spikes_factor.dtype)
            )
            return self._outputs(
                spk, tuple((x_seq if s is None else s).new_empty((0,) + step) for s in states) if keep_seq else None
            )
        run = None
        if self.backend != "loop":
            why = self.fused_blocker(x_seq, states)
            if why is None:
                run = FUSED_PATHS[self._MODEL].run
            elif self.backend == "fused":
                raise ValueError(f"{name} has backend='fused' but the fused path cannot reproduce this call: {why}")
        if run is None:  # the loop reads every state
            run = type(self)._LOOP
            states = tuple(torch.zeros_like(x_seq[0]) if s is None else s for s in states)
        spk_seq, last, seqs, reset = run(self, x_seq, states, keep_seq)
        for n, s in zip(self._STATES, last):
            setattr(self, n, s)
        if reset is not None:
            self.reset = reset
        return self._outputs(spk_seq, seqs)


class Leaky(_DropIn, _snn.Leaky):
    """snnTorch's Leaky with step_mode "s" (its own forward) or "m" (x_seq [T, B, ...] per call)."""

    _MODEL, _STATES, _LOOP = "Leaky", ("mem",), _leaky_loop

    def forward(self, input_, mem=None):
        if self.step_mode == "s":
            return super().forward(input_, mem)
        return self._forward_seq(input_, {"mem": mem})


class Synaptic(_DropIn, _snn.Synaptic):
    """snnTorch's Synaptic with step_mode "s" (its own forward) or "m" (x_seq [T, B, ...] per call)."""

    _MODEL, _STATES, _LOOP = "Synaptic", ("syn", "mem"), _synaptic_loop

    def forward(self, input_, syn=None, mem=None):
        if self.step_mode == "s":
            return super().forward(input_, syn, mem)
        return self._forward_seq(input_, {"syn": syn, "mem": mem})


class Alpha(_DropIn, _snn.Alpha):
    """snnTorch's Alpha with step_mode "s" (its own forward) or "m" (x_seq [T, B, ...] per call)."""

    _MODEL, _STATES, _LOOP = "Alpha", ("syn_exc", "syn_inh", "mem"), _alpha_loop

    def forward(self, input_, syn_exc=None, syn_inh=None, mem=None):
        if self.step_mode == "s":
            return super().forward(input_, syn_exc, syn_inh, mem)
        return self._forward_seq(input_, {"syn_exc": syn_exc, "syn_inh": syn_inh, "mem": mem})


_DROP_INS = {_snn.Leaky: Leaky, _snn.Synaptic: Synaptic, _snn.Alpha: Alpha}
_ORIGINAL = {v: k for k, v in _DROP_INS.items()}
# snnTorch modules that take [T, B, ...] themselves: a sequence call passes x_seq to them as it is
_SEQUENCE_MODULES = tuple(getattr(_snn, n) for n in ("LeakyParallel", "StateLeaky", "LinearLeaky") if hasattr(_snn, n))


# ---------------------------------------------------------------------------------------------------------
# whole sequences through an nn.Sequential
# ---------------------------------------------------------------------------------------------------------
# Layers that compute each sample on its own: folding T into the batch gives a per-step call's numbers
# (dropout draws its masks in one call, so they differ from a per-step run's, with the same distribution).
# A layer with a fixed per-step rank is given a tensor of that rank + 1 ([T, B, ...]), checked.
_RANKED = {}
for _rank, _types in (
    (
        3,
        (
            "Conv1d",
            "ConvTranspose1d",
            "MaxPool1d",
            "AvgPool1d",
            "AdaptiveAvgPool1d",
            "AdaptiveMaxPool1d",
            "LPPool1d",
            "Dropout1d",
            "InstanceNorm1d",
        ),
    ),
    (
        4,
        (
            "Conv2d",
            "ConvTranspose2d",
            "MaxPool2d",
            "AvgPool2d",
            "AdaptiveAvgPool2d",
            "AdaptiveMaxPool2d",
            "LPPool2d",
            "Dropout2d",
            "InstanceNorm2d",
            "PixelShuffle",
            "PixelUnshuffle",
            "BatchNorm2d",
        ),
    ),
    (
        5,
        (
            "Conv3d",
            "ConvTranspose3d",
            "MaxPool3d",
            "AvgPool3d",
            "AdaptiveAvgPool3d",
            "AdaptiveMaxPool3d",
            "Dropout3d",
            "InstanceNorm3d",
            "BatchNorm3d",
        ),
    ),
):
    for _t in _types:
        if hasattr(nn, _t):
            _RANKED[getattr(nn, _t)] = _rank
_FOLD = tuple(_RANKED) + (
    nn.Linear,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Upsample,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.Dropout,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.ZeroPad2d,
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
    nn.Threshold,
    nn.LogSigmoid,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _fold_blocker(m: nn.Module) -> Optional[str]:
    """Why folding T into the batch would not give a per-step call's numbers for this layer, or None."""
    if isinstance(m, nn.Flatten) and m.start_dim == 0:
        return "Flatten(start_dim=0) flattens the batch dimension"
    if isinstance(m, nn.Unflatten) and m.dim == 0:
        return "Unflatten(dim=0) splits the batch dimension"
    if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)) and (m.dim is None or m.dim == 0):
        return f"{type(m).__name__}(dim={m.dim}) normalises over the batch dimension"
    if isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats and m.training:
        return "instance norm with track_running_stats updates its statistics once per call"
    return None


def _layer_plan(name: str, m: nn.Module) -> str:
    """How a child of a sequence-mode nn.Sequential runs: "neuron", "sequence", "container", "fold", "per step"
    (batch norm); ValueError for a layer without known sequence semantics."""
    label = name or "<model>"
    if type(m) in _ORIGINAL or type(m) in _DROP_INS:  # a drop-in, or a neuron patch() is about to swap
        return "neuron"
    if isinstance(m, _SEQUENCE_MODULES):
        return "sequence"
    if type(m) in (nn.Sequential, _SequenceSequential):
        return "container"
    if isinstance(m, _snn.SpikingNeuron) or isinstance(m, tuple(_DROP_INS)):
        raise ValueError(
            f"{label} ({type(m).__name__}): this snnTorch neuron has no sequence path, so it cannot run "
            "in step_mode 'm' (patch with step_mode='s': it then runs snnTorch's own per-step code)"
        )
    if isinstance(m, _BATCH_NORMS) and type(m) in _BATCH_NORMS:
        return "per step"
    if isinstance(m, _FOLD) and not isinstance(m, _BATCH_NORMS):
        why = _fold_blocker(m)
        if why is None:
            return "fold"
        raise ValueError(
            f"{label} ({type(m).__name__}) cannot run on [T, B, ...] with a per-step call's numbers: {why}"
        )
    raise ValueError(
        f"{label} ({type(m).__name__}): its numbers on a sequence [T, B, ...] are unknown (it is not a "
        "per-sample torch.nn layer, an nn.Sequential or a supported snnTorch neuron); patch with "
        "step_mode='s', or give this part of the model its own per-step loop"
    )


def _check_rank(name: str, m: nn.Module, x: Tensor, rank: int) -> None:
    if x.dim() != rank + 1:
        raise ValueError(
            f"{name} ({type(m).__name__}) in a sequence-mode model takes [T, B, ...] of {rank + 1} "
            f"dims, got shape {tuple(x.shape)} (one step given to a sequence call? use step_mode 's')"
        )


class _SequenceSequential(nn.Sequential):
    """An nn.Sequential running x_seq [T, B, ...] through its children (patch(..., step_mode="m")): snnTorch
    neurons take the sequence, per-sample layers see T folded into the batch, batch norms in training mode run
    once per step (snnTorch normalises every step separately). Same children and state_dict as before."""

    def forward(self, x):
        for name, m in self._modules.items():
            plan = _layer_plan(name, m)
            if plan == "neuron" and getattr(m, "step_mode", "s") != "m":
                raise ValueError(
                    f"{name} ({type(m).__name__}) is in step_mode {getattr(m, 'step_mode', 's')!r} "
                    "inside a sequence-mode model: use set_step_mode(model, ...) to switch both"
                )
            if plan in ("neuron", "sequence", "container"):
                x = m(x)
                continue
            if not isinstance(x, Tensor) or x.dim() < 2:
                raise ValueError(
                    f"{name} ({type(m).__name__}) in a sequence-mode model takes [T, B, ...], got "
                    f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
                )
            rank = _RANKED.get(type(m))
            if isinstance(m, nn.BatchNorm1d):
                if x.dim() not in (3, 4):
                    raise ValueError(
                        f"{name} (BatchNorm1d) in a sequence-mode model takes [T, B, C] or [T, B, C, L], "
                        f"got shape {tuple(x.shape)}"
                    )
            elif rank is not None:
                _check_rank(name, m, x, rank)
            if plan == "per step" and (m.training or not m.track_running_stats):
                x = torch.stack([m(x_t) for x_t in x])
            else:  # per-sample layers and batch norms on running statistics (an affine map per element)
                x = m(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return x


def _sequentials(model: nn.Module):
    """The nn.Sequential containers a sequence call runs through: model and its nested Sequential children."""
    yield model
    for m in model.children():
        if type(m) in (nn.Sequential, _SequenceSequential):
            yield from _sequentials(m)


@dataclass
class PatchReport:
    """What patch() did. neurons [(name, class, path)]: the drop-ins, path "fused" or "loop: <why>" for a
    float32 sequence call (float64 for a neuron whose parameters all are; a step_mode "s" call always runs
    snnTorch's own step); kept [(name, class, why)]: snnTorch neurons left as they are; layers [(name, class,
    how)] in step_mode "m": "fold", "per step", "sequence"."""

    step_mode: str = "s"
    neurons: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    layers: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"step_mode {self.step_mode!r}: {len(self.neurons)} drop-in neuron(s), {len(self.kept)} kept"]
        lines += [f"  {n}: {c} -> spikeforge.interop.snntorch.{c} [{p}]" for n, c, p in self.neurons]
        lines += [f"  {n}: {c} kept ({why})" for n, c, why in self.kept]
        lines += [f"  {n}: {c} [{how}]" for n, c, how in self.layers]
        return "\n".join(lines)


def _plan_sequence_mode(model: nn.Module) -> list:
    """[(qualified name, module, plan)] for every child a sequence call runs through; ValueError naming what
    cannot run on [T, B, ...] (nothing is changed before this passes)."""
    if type(model) in _DROP_INS or type(model) in _ORIGINAL:  # one neuron: it takes the sequence itself
        return [("", model, "neuron")]
    if type(model) not in (nn.Sequential, _SequenceSequential):
        raise ValueError(
            f"step_mode='m' needs an nn.Sequential model (each layer called once per call, on the whole "
            f"sequence); model is a {type(model).__name__}, whose forward may loop over time. Patch "
            "with step_mode='s' (snnTorch's per-step numbers), or set step_mode='m' on the drop-in "
            "neurons your forward calls with whole sequences, or patch the nn.Sequential inside"
        )
    prefix = {id(m): n for n, m in model.named_modules()}
    plan = []
    for seq in _sequentials(model):  # model and the nn.Sequential containers nested in it
        for child_name, m in seq.named_children():
            name = f"{prefix[id(seq)]}.{child_name}" if prefix[id(seq)] else child_name
            plan.append((name, m, _layer_plan(name, m)))
    return plan


def set_step_mode(model: nn.Module, step_mode: str) -> nn.Module:
    """Switch a patched model between one step per call ("s", snnTorch's convention) and whole sequences per
    call ("m": model must be an nn.Sequential; see the module docstring) -> model. Checks everything before
    changing anything."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if step_mode not in ("s", "m"):
        raise ValueError(
            f"step_mode must be 's' (one step per call) or 'm' (x_seq [T, B, ...] per call), got {step_mode!r}"
        )
    if step_mode == "m":
        plan = _plan_sequence_mode(model)
        for name, m, how in plan:
            if how == "neuron" and type(m) in _DROP_INS:
                raise ValueError(
                    f"{name or '<model>'} ({type(m).__name__}) is snnTorch's own class: call patch(model, "
                    "step_mode='m') first"
                )
        for seq in list(_sequentials(model)):
            if type(seq) is nn.Sequential:
                seq.__class__ = _SequenceSequential
        for _, m, how in plan:
            if how == "neuron":
                m.step_mode = "m"
        return model
    for m in model.modules():
        if type(m) is _SequenceSequential:
            m.__class__ = nn.Sequential
        elif type(m) in _ORIGINAL:
            m.step_mode = "s"
    return model


def patch(model: nn.Module, *, step_mode: str = "s", backend: str = "auto"):
    """Swap snnTorch's Leaky / Synaptic / Alpha in model for the drop-ins, in place -> (model, PatchReport).

    step_mode "s" (default): calls stay one step each, with snnTorch's own numbers; "m": model (an
    nn.Sequential) takes x_seq [T, B, ...] per call (set_step_mode switches later). backend: "auto" (fused
    where a kernel reproduces snnTorch's numbers, else the exact loop), "loop" (always the loop), "fused"
    (ValueError naming any neuron that cannot run fused). Nothing changes when a check fails.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if backend not in ("auto", "fused", "loop"):
        raise ValueError(f"backend must be 'auto', 'fused' or 'loop', got {backend!r}")
    if step_mode not in ("s", "m"):
        raise ValueError(
            f"step_mode must be 's' (one step per call) or 'm' (x_seq [T, B, ...] per call), got {step_mode!r}"
        )
    report = PatchReport(step_mode=step_mode)
    swaps = []
    for name, m in model.named_modules():
        label = name or "<model>"
        if type(m) in _DROP_INS or type(m) in _ORIGINAL:
            swaps.append((label, m))
        elif isinstance(m, _SEQUENCE_MODULES):
            report.kept.append((label, type(m).__name__, "takes [T, B, ...] itself"))
        elif isinstance(m, _snn.SpikingNeuron):
            why = (
                "a subclass of a snnTorch neuron (its equations may differ)"
                if isinstance(m, tuple(_DROP_INS))
                else "no drop-in for this snnTorch neuron"
            )
            report.kept.append((label, type(m).__name__, f"{why}: runs snnTorch's own per-step code"))
    if backend == "fused":
        for label, m in swaps:
            why = (
                FUSED_PATHS[type(m).__name__].blocker(m)
                if type(m).__name__ in FUSED_PATHS
                else f"no fused kernel for {type(m).__name__} yet"
            )
            if why is not None:
                raise ValueError(f"patch(backend='fused'): {label} ({type(m).__name__}) cannot run fused: {why}")
    plan = _plan_sequence_mode(model) if step_mode == "m" else []
    for label, m in swaps:
        if type(m) in _DROP_INS:
            m.__class__ = _DROP_INS[type(m)]
        m.backend = backend
        why = m.fused_blocker() if backend != "loop" else "backend='loop'"
        report.neurons.append((label, _ORIGINAL[type(m)].__name__, "fused" if why is None else f"loop: {why}"))
    set_step_mode(model, step_mode)
    report.layers = [(n, type(m).__name__, how) for n, m, how in plan if how in ("fold", "per step", "sequence")]
    return model, report


def unpatch(model: nn.Module) -> nn.Module:
    """Give every drop-in (and sequence-mode container) in model its snnTorch / torch class back, in place
    (state and parameters kept) -> model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for m in model.modules():
        if type(m) is _SequenceSequential:
            m.__class__ = nn.Sequential
        elif type(m) in _ORIGINAL:
            m.__class__ = _ORIGINAL[type(m)]
            m.__dict__.pop("step_mode", None)
            m.__dict__.pop("backend", None)
    return model
