"""What every op family shares: argument validation (clear ValueError / TypeError naming the argument,
before any native call) and the one op wrapper, ``FusedOp``.

A family (ops/neuron.py, ops/psn.py, ...) describes a fused op once: its tensor inputs, its scalar
options as a NamedTuple, a native forward and backward, their fakes, what the forward saves and how
the backward turns gradients into input gradients, and its plain-PyTorch reference. FusedOp turns that
into everything PyTorch needs:

- the custom ops ``torch.ops.spikeforge.<name>_fwd`` / ``<name>_bwd`` (schema from the inputs and the
  options' fields), with fake kernels, autograd (forward's backward calls the backward op) and a vmap
  rule (a loop over the mapped dimension): what torch.compile, export, opcheck and torch.func see;
- an eager fast path (a torch.autograd.Function over the same functions, saving the same tensors), taken
  for plain tensors outside compilation: the dispatcher costs 40-90 us per call in eager PyTorch;
- the router: tracing, tensor subclasses, functorch transforms and meta tensors take the custom op;
  plain tensors the fast path (or the bare forward when no gradient is needed); a device without
  native kernels the reference;
- higher-order autograd: a backward run under create_graph=True (double backward, gradient penalties)
  differentiates the reference forward again from the saved inputs, which gives the reference's
  second-order gradients; where the inputs were not saved, or under forward-mode AD (forward_ad,
  torch.func.jvp), it raises an error that names the op instead of dropping a gradient.
"""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any, Callable, Literal, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from .._native import native
from ..surrogate import SECOND_PARAMETER, SPIKINGJELLY_SURROGATES, SURROGATES

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# --------------------------------------------------------------------------------------------
# validation shared by the families
# --------------------------------------------------------------------------------------------
@typing.overload
def _check_number(name: str, value, *, positive: bool = False, allow_none: Literal[False] = False) -> float: ...
@typing.overload
def _check_number(name: str, value, *, positive: bool = False, allow_none: bool) -> Optional[float]: ...
def _check_number(name: str, value, *, positive: bool = False, allow_none: bool = False) -> Optional[float]:
    """-> value as a float; None only where allow_none and value is None (the overloads say so to callers)."""
    if value is None and allow_none:
        return None
    if _tracing():
        # Under torch.compile(dynamic=True) numbers may be symbolic and cannot be inspected here;
        # the custom op's schema and the native checks still reject bad values at run time.
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def autocast_on(device: torch.device) -> bool:
    """Whether torch.autocast is on for device's type (False for a type autocast does not know, e.g. meta)."""
    try:
        return torch.is_autocast_enabled(device.type)
    except (RuntimeError, ValueError):
        return False


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_int(name: str, value, *, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def _check_choice(name: str, value, choices) -> Any:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return choices[value] if isinstance(choices, dict) else value


def _check_x(x_seq, name: str = "x_seq", min_dim: int = 1) -> None:
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {x_seq.dtype}")
    if x_seq.dim() < min_dim:
        shape = "[T, *]" if min_dim == 1 else "[*]"
        raise ValueError(
            f"{name} must have shape {shape} with at least {min_dim} dimension(s); "
            f"got a tensor of shape {tuple(x_seq.shape)}"
        )
    if x_seq.dtype == torch.float64 and x_seq.is_cuda:
        raise TypeError(f"{name}: float64 is supported on CPU only (for gradcheck)")


def _check_surrogate(surrogate, alpha, *, all_surrogates: bool = False, beta=None) -> tuple[int, float, float]:
    """-> (native id, alpha, second parameter). Every family takes SpikingJelly's surrogates; the
    neuron family also snnTorch's (all_surrogates)."""
    if not isinstance(surrogate, str):
        raise TypeError(f"surrogate must be a str, got {type(surrogate).__name__}")
    names = SURROGATES if all_surrogates else SPIKINGJELLY_SURROGATES
    if surrogate not in names:
        raise ValueError(f"surrogate: unknown surrogate {surrogate!r}; expected one of {sorted(names)}")
    spec = names[surrogate]
    alpha = spec.alpha if alpha is None else _check_number("alpha", alpha, positive=True)
    second = SECOND_PARAMETER.get(surrogate, 0.0) if beta is None else _check_number("surrogate beta", beta)
    return spec.id, alpha, second


def _tracing() -> bool:
    return torch.compiler.is_compiling()


# Read once at import: a plain bool is a constant to torch.compile, while calling the nanobind
# function inside a traced op would be a graph break (dynamo cannot trace nb_func).
_NATIVE_CUDA = native is not None and bool(native.has_cuda())

_CPU = torch.device("cpu")


def _has_native(device: torch.device) -> bool:
    if native is None:
        return False
    if device == _CPU:  # compared first: reading device.type costs ~0.5 us per call (eager overhead)
        return True
    return device.type == "cuda" and _NATIVE_CUDA


def _stream(t: Tensor) -> int:
    """The current CUDA stream of t's device (kernels launch on it), 0 on CPU."""
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _flat(tensors):
    """Native tensor views hold at most 8 dims and the kernels only need element counts: flatten."""
    return tuple(t if t is None else t.view(-1) for t in tensors)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """State and arithmetic type of an activation dtype: float32, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# options: a NamedTuple of scalars, expanded into the custom ops' schemas and memoised
# --------------------------------------------------------------------------------------------
_SCALAR_TYPES = (float, int, bool, list[int])


def _option_params(options: type[NamedTuple]) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(options)  # resolves the string annotations of `from __future__ import annotations`
    params = []
    for name in options._fields:
        t = hints[name]
        if t not in _SCALAR_TYPES:
            raise TypeError(
                f"option {name}: only float, int, bool and list[int] options can cross the custom-op boundary"
            )
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=t))
    return params


def _tensor_params(names: Sequence[str]) -> list[inspect.Parameter]:
    """'x' -> Tensor, 'v_init?' -> Optional[Tensor]."""
    out = []
    for n in names:
        ann = Optional[Tensor] if n.endswith("?") else Tensor
        out.append(inspect.Parameter(n.rstrip("?"), inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ann))
    return out


def _no_none(out: tuple, like: Tensor) -> tuple:
    """Custom ops return tensors only: an output a family leaves out (None in eager calls) is an empty one."""
    return tuple(like.new_empty(0) if o is None else o for o in out)


def _one_or_tuple(out, n_out: int):
    """A custom op with one output returns the tensor itself (the family functions return tuples)."""
    return out[0] if n_out == 1 and isinstance(out, tuple) else out


def _custom_op(qualname: str, params: list[inspect.Parameter], n_out: int, impl: Callable):
    """torch.library.custom_op over impl(*args) with the given signature and n_out tensor outputs."""

    def fn(*args):
        return _one_or_tuple(impl(*args), n_out)

    # a return annotation built at run time (n_out tensors) for infer_schema, which mypy cannot read as a type
    ret = Tensor if n_out == 1 else tuple[(Tensor,) * n_out]  # type: ignore[misc]
    # what infer_schema reads; inspect honours __signature__ on any callable, typeshed does not declare it
    fn.__signature__ = inspect.Signature(params, return_annotation=ret)  # type: ignore[attr-defined]
    fn.__name__ = qualname.split("::")[1]
    return torch.library.custom_op(qualname, mutates_args=())(fn)


def _vmap_loop(op, n_out: int):
    """A vmap rule: run the op once per index of the mapped dimension and stack the results. Correct for
    any op (the kernels see plain tensors); the work is one call per mapped index."""

    def rule(info, in_dims, *args):
        size = info.batch_size
        outs = []
        for i in range(size):
            call = [a.select(d, i) if (d is not None and isinstance(a, Tensor)) else a for a, d in zip(args, in_dims)]
            r = op(*call)
            outs.append(r if isinstance(r, tuple) else (r,))
        stacked = tuple(torch.stack([o[k] for o in outs]) for k in range(n_out))
        return (stacked if n_out > 1 else stacked[0]), ((0,) * n_out if n_out > 1 else 0)

    return rule


_forward_ad = torch.autograd.forward_ad


def _has_tangent(tensors) -> bool:
    if _forward_ad._current_level < 0:  # no dual level open: no tangent can exist
        return False
    return any(t is not None and _forward_ad.unpack_dual(t).tangent is not None for t in tensors)


_functorch = torch._C._functorch
_TransformType = torch._C._functorch.TransformType


def _functorch_wrapped(tensors) -> bool:
    """Whether a functorch transform (vmap, grad, jvp) wrapped any input: those take the custom op, whose
    vmap rule and autograd functorch understands. One C call when no transform is active."""
    if _functorch.maybe_current_level() is None:
        return False
    return any(t is not None and _functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _no_forward_ad(public: str):
    return NotImplementedError(
        f"{public}: forward-mode AD (torch.autograd.forward_ad, torch.func.jvp) is not supported by this op; "
        "use reverse mode (backward / torch.autograd.grad / torch.func.vjp)"
    )


class FusedOp:
    """One fused native op as PyTorch sees it (see the module docstring).

    name        custom ops spikeforge::<name>_fwd / <name>_bwd
    public      the public function's name for messages (e.g. "spikeforge.ops.lif")
    inputs      forward tensor inputs; "name?" marks an optional one (None allowed)
    options     NamedTuple type of the forward's scalar options
    n_out       number of tensor outputs of the forward (the custom op returns them all; `visible`
                of them reach the caller, the rest are saved for backward)
    forward(*tensors, opts) -> tuple of n_out tensors (native)
    fake_forward(*tensors, opts) -> tuple of n_out tensors (shapes only)
    bwd_inputs  backward op's tensor inputs ("?" as above); bwd_options: NamedTuple type of its scalars;
                n_grads: its number of outputs
    backward(*bwd_tensors, bopts) -> tuple of n_grads tensors (native); fake_backward likewise
    save(inputs, opts, outputs) -> (tensors to save, context info)
    grads(saved, info, opts, needs_input_grad, grad_outputs, call_bwd) -> input gradients; call_bwd
                is the backward op (traced path) or the native backward (eager), same arguments
    reference(*tensors, opts) -> the visible outputs in plain PyTorch (differentiable)
    reference_inputs(saved, info) -> the forward's tensor inputs recovered from the saved tensors, or
                None when they were not kept (double backward then raises, with double_backward_hint)
    """

    def __init__(
        self,
        name: str,
        public: str,
        *,
        inputs: Sequence[str],
        options: type[NamedTuple],
        n_out: int,
        visible: int,
        forward: Callable,
        fake_forward: Callable,
        bwd_inputs: Sequence[str],
        bwd_options: type[NamedTuple],
        n_grads: int,
        backward: Callable,
        fake_backward: Callable,
        save: Callable,
        grads: Callable,
        reference: Callable,
        reference_inputs: Callable,
        double_backward_hint: str = "",
    ):
        self.name, self.public = name, public
        self.n_in, self.n_out, self.visible = len(inputs), n_out, visible
        self.options, self.bwd_options = options, bwd_options
        self._forward, self._backward = forward, backward
        self._save, self._grads = save, grads
        self._reference, self._reference_inputs = reference, reference_inputs
        self._hint = double_backward_hint
        n_in = self.n_in

        self.fwd_op = _custom_op(
            f"spikeforge::{name}_fwd",
            _tensor_params(inputs) + _option_params(options),
            n_out,
            lambda *a: _no_none(self._forward(*a[:n_in], options(*a[n_in:])), a[0]),
        )
        self.fwd_op.register_fake(lambda *a: _one_or_tuple(fake_forward(*a[:n_in], options(*a[n_in:])), n_out))
        nb_in = len(bwd_inputs)
        self.bwd_op = _custom_op(
            f"spikeforge::{name}_bwd",
            _tensor_params(bwd_inputs) + _option_params(bwd_options),
            n_grads,
            lambda *a: self._backward(*a[:nb_in], bwd_options(*a[nb_in:])),
        )
        self.bwd_op.register_fake(lambda *a: _one_or_tuple(fake_backward(*a[:nb_in], bwd_options(*a[nb_in:])), n_grads))
        self.fwd_op.register_vmap(_vmap_loop(self.fwd_op, n_out))
        self.bwd_op.register_vmap(_vmap_loop(self.bwd_op, n_grads))

        def setup_context(ctx, inputs, output):  # torch.library passes these by keyword
            # an output that no loss reached gets None, not a tensor of zeros that backward would read (a
            # returned [T, N] membrane sequence nobody uses cost a zero-fill and a read per call)
            ctx.set_materialize_grads(False)
            opts = options(*inputs[n_in:])
            tensors, info = self._save(tuple(inputs[:n_in]), opts, tuple(output) if n_out > 1 else (output,))
            ctx.save_for_backward(*tensors)
            ctx.info, ctx.opts = info, opts

        def backward_op(ctx, *grad_outputs):
            grads = self._backward_ctx(ctx, grad_outputs, self._call_bwd_op)
            return tuple(grads) + (None,) * len(options._fields)

        self.fwd_op.register_autograd(backward_op, setup_context=setup_context)

        op = self

        class Function(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *args):
                tensors, opts, public = args[:n_in], args[n_in], args[n_in + 1]
                ctx.set_materialize_grads(False)  # as in setup_context
                out = op._forward(*tensors, opts)
                saved, info = op._save(tuple(tensors), opts, out)
                ctx.save_for_backward(*saved)
                ctx.info, ctx.opts, ctx.public = info, opts, public
                return out[: op.visible] if op.visible > 1 else out[0]

            @staticmethod
            def backward(ctx, *grad_outputs):
                grads = op._backward_ctx(
                    ctx, grad_outputs + (None,) * (op.n_out - op.visible), lambda *a: op._backward(*a[:-1], a[-1])
                )
                return tuple(grads) + (None, None)

            @staticmethod
            def jvp(ctx, *grad_inputs):
                raise _no_forward_ad(ctx.public)

        self.Function = Function

    # ---- the backward shared by both paths
    def _call_bwd_op(self, *args):
        return self.bwd_op(*args[:-1], *args[-1])

    def _backward_ctx(self, ctx, grad_outputs, call_bwd):
        needs = ctx.needs_input_grad[: self.n_in]
        saved = ctx.saved_tensors
        if torch.is_grad_enabled() and any(needs):
            return self._double_backward(
                saved, ctx.info, ctx.opts, needs, grad_outputs, getattr(ctx, "public", self.public)
            )
        return self._grads(saved, ctx.info, ctx.opts, needs, grad_outputs, call_bwd)

    def _double_backward(self, saved, info, opts, needs, grad_outputs, public):
        """First-order gradients as a differentiable function of the inputs (create_graph=True): the
        reference forward again, differentiated by autograd, gives the reference's higher derivatives."""
        inputs = self._reference_inputs(saved, info)
        if inputs is None:
            raise RuntimeError(
                f"{public}: double backward (create_graph=True) needs the op's inputs, which this call does not "
                f"keep (it saves a compact form instead){'; ' + self._hint if self._hint else ''}; or compute the "
                "first-order gradient without create_graph"
            )
        # Each argument slot is differentiated on a view of its own: one tensor passed as two arguments
        # (ssa(x, x, x), alif(x, v0, v0)) would otherwise get, in every slot, its gradient through all of
        # them, which autograd then adds once per slot (3x the gradient of ssa(x, x, x)).
        inputs = tuple(t.view_as(t) if t is not None and t.requires_grad else t for t in inputs)
        outs = self._reference(*inputs, opts)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grad_outputs[: self.visible]) if g is not None and o.requires_grad]
        wrt = [t for t, n in zip(inputs, needs) if n and t is not None]
        if not pairs:
            return [None] * self.n_in
        got = iter(
            torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True, allow_unused=True)
        )
        res = []
        for t, n in zip(inputs, needs):
            if n and t is not None:
                g = next(got)
                res.append(g if g is not None else torch.zeros_like(t))
            else:
                res.append(None)
        return res

    # ---- the router
    def __call__(self, tensors: tuple, opts, public: Optional[str] = None) -> Any:
        """Runs the op on its tensor inputs -> the visible outputs (one tensor, or a tuple). public: the
        public function's name for error messages (default: the family's)."""
        public = public or self.public
        ref = tensors[0]
        if _functorch.maybe_current_level() is not None:
            stack = _functorch.get_interpreter_stack() or ()
            kinds = {i.key() for i in stack}
            if _TransformType.Jvp in kinds or _has_tangent(tensors):
                raise _no_forward_ad(public)
            if _TransformType.Grad in kinds:
                # torch.func.grad / vjp / jacrev: the custom op's autograd does not run under functorch's
                # grad transform, the reference (plain torch ops) does, with the same numbers
                out = self._reference(*tensors, opts)
                return out
            # vmap alone: the custom op and its vmap rule
        if type(ref) is not torch.Tensor or _tracing() or ref.is_meta or _functorch_wrapped(tensors):
            if _has_tangent(tensors):
                raise _no_forward_ad(public)
            out = self.fwd_op(*tensors, *opts)
            out = out if isinstance(out, tuple) else (out,)
            return out[: self.visible] if self.visible > 1 else out[0]
        if _has_tangent(tensors):
            raise _no_forward_ad(public)
        if torch.is_grad_enabled():
            for t in tensors:
                if t is not None and t.requires_grad:
                    return self.Function.apply(*tensors, opts, public)
        out = self._forward(*tensors, opts)
        return out[: self.visible] if self.visible > 1 else out[0]

    def no_grad_forward(self, tensors: tuple, opts):
        """The native forward alone, for callers that checked that no gradient and no transform is involved
        (the eager no-grad fast path of a family)."""
        return self._forward(*tensors, opts)
