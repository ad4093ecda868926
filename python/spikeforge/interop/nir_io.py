"""NIR (Neuromorphic Intermediate Representation) export and import: to_nir(model) / from_nir(graph).

NIR states neurons as continuous-time ODEs, e.g. LIF: tau dv/dt = (v_leak - v) + r I, fire when
v > v_threshold, then v = v_reset. A discrete-time simulator steps them with forward Euler at a time
step dt, and spikeforge follows the convention SpikingJelly's and snnTorch's NIR exchange use
(dt = 1e-4 s unless told otherwise; one spikeforge time step is one dt):

    v[t] = v[t-1] + dt / tau_nir * ((v_leak - v[t-1]) + r I[t])

which is spikeforge's LIF charge (docs/ops.md) with
    tau = tau_nir / dt,  v_leak = v_reset,  r = 1 (decay_input=True) or r = tau (decay_input=False);
an IF is NIR's IF with r = 1 / dt (v[t] = v[t-1] + dt r I[t] = v[t-1] + I[t]).

What NIR cannot say, and what happens to it:
- soft reset (v_reset=None): NIR neurons only reset to v_reset, so to_nir raises.
- surrogate, alpha, detach_reset, PLIF's learnable w, SpikeLinear/SpikeConv2d's event-driven kernels: they
  only matter for training or speed, not for the numbers a graph computes. They travel in each node's
  ``metadata`` (keys prefixed ``spikeforge_``) so from_nir rebuilds the same training module; other
  libraries ignore them.
- the firing test: NIR writes v > v_threshold, spikeforge fires at H >= V_th (SpikingJelly's convention).
  The two differ only when a membrane lands exactly on the threshold.
- per-neuron time constants or thresholds (arrays that are not uniform): spikeforge's neurons take
  scalars, so from_nir raises; per-neuron r and v_leak are folded into an input scale and shift.
- an IF (or I) written with r = 1: under NIR's equation it integrates dt r I = 1e-4 I per step and rarely
  spikes, but Sinabs, Norse, Spyx and BindsNET write r = 1 meaning v += I per step. from_nir warns, and
  ``unit_r="per_step"`` reads it their way (``unit_r="euler"``: NIR's way, silently).
- anything else a node cannot be (a bias of the wrong shape, a non-numeric or non-finite parameter, a
  groups that does not divide the channels, ...) is a ValueError naming the node and the field.

to_nir exports Sequential / MultiStep models and any forward() torch.fx can trace with the neurons and
MultiStep wrappers kept whole; ``a + b`` between layers becomes two edges into the consumer.

from_nir builds a module that runs the whole graph on time-first sequences [T, B, ...]: nodes run in
topological order, each over all T steps at once (the fused multi-step kernels), and a node with several
incoming edges receives their sum (the NIR convention). Graphs with cycles (recurrent connections need
a step-by-step loop) are refused.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import nn as snn
from ..nn._state import CopiesDetached, detach_value
from ..nn.layers import seq_apply

__all__ = ["to_nir", "from_nir", "NIRGraphModule", "DEFAULT_DT"]

# The time step snnTorch's, SpikingJelly's and Sinabs's NIR exchange assume unless told otherwise.
DEFAULT_DT = 1e-4

_META = "spikeforge_"


def _import_nir():
    try:
        import nir  # noqa: F401  (an optional extra: pip install spikeforge[nir])
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "spikeforge.interop NIR support needs the 'nir' package: pip install nir (or pip install 'spikeforge[nir]')"
        ) from e
    return nir


def _check_dt(dt) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite number > 0 (seconds per time step), got {dt!r}")
    return float(dt)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def _leaves(module: nn.Module, prefix: str, lead: int = 2):
    """(qualified name, module, lead) of a sequential model, nested Sequentials flattened. lead: the leading
    dims a layer sees before one sample's own: 2 for [T, B, ...], 1 inside MultiStep (T folded into B)."""
    if isinstance(module, snn.MultiStep):
        lead = 1
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}.{name}" if prefix else name, lead)
    else:
        yield prefix or type(module).__name__.lower(), module, lead


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_out(size: Sequence[int], kernel, stride, padding, dilation) -> tuple[int, ...]:
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)
    )


def _neuron_meta(m: nn.Module) -> dict:
    meta = {
        _META + "module": type(m).__name__,
        _META + "detach_reset": bool(m.detach_reset),
        _META + "surrogate": str(m.surrogate),
    }
    if m.alpha is not None:
        meta[_META + "alpha"] = float(m.alpha)
    return meta


def _export_neuron(nir, name: str, m: nn.Module, shape, dt: float):
    if shape is None:
        raise ValueError(
            f"to_nir: cannot tell the shape of neuron layer {name!r} ({type(m).__name__}); "
            "pass input_shape (the shape of one sample, without T and B)"
        )
    if m.v_reset is None:
        raise ValueError(
            f"to_nir: {name!r} ({type(m).__name__}) uses soft reset (v_reset=None), which NIR "
            "cannot express (its neurons reset to v_reset); use a hard reset to export"
        )
    full = lambda value: np.full(shape, float(value), dtype=np.float64)  # noqa: E731
    meta = _neuron_meta(m)
    if isinstance(m, snn.IF):
        return nir.IF(r=full(1.0 / dt), v_threshold=full(m.v_threshold), v_reset=full(m.v_reset), metadata=meta)
    if isinstance(m, snn.PLIF):
        tau = (1.0 / torch.sigmoid(m.w.detach().double())).cpu().numpy()
        if tau.ndim == 1:  # per channel: dimension 0 of one sample [C, ...]
            tau = np.broadcast_to(tau.reshape((-1,) + (1,) * (len(shape) - 1)), shape)
        tau = np.array(np.broadcast_to(tau, shape), dtype=np.float64)
        meta[_META + "w"] = _np(m.w).astype(np.float64).reshape(-1)
        meta[_META + "num_channels"] = int(m.w.numel()) if m.w.dim() == 1 else 0  # 0: one shared w
        meta[_META + "decay_input"] = bool(m.decay_input)
        r = np.ones(shape) if m.decay_input else tau.copy()
    else:
        tau = full(m.tau)
        meta[_META + "tau"] = float(m.tau)
        meta[_META + "decay_input"] = bool(m.decay_input)
        r = full(1.0 if m.decay_input else m.tau)
    return nir.LIF(
        tau=tau * dt,
        r=r,
        v_leak=full(m.v_reset),
        v_threshold=full(m.v_threshold),
        v_reset=full(m.v_reset),
        metadata=meta,
    )


def _export_leaf(nir, name: str, m: nn.Module, shape, lead: int, dt: float):
    """-> (NIR node or None to skip, per-sample output shape or None). lead: leading dims m sees before a
    sample's own dims (2 for [T, B, ...], 1 inside MultiStep where T is folded into B)."""
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return None, shape  # the identity at inference, which is what a NIR graph describes
    if isinstance(m, (nn.Linear, snn.SpikeLinear)):
        if shape is not None and shape[-1] != m.in_features:
            raise ValueError(f"to_nir: {name!r} expects {m.in_features} input features, gets shape {shape}")
        meta = {_META + "module": type(m).__name__}
        out = (tuple(shape[:-1]) if shape is not None else ()) + (m.out_features,)
        if m.bias is None:
            return nir.Linear(weight=_np(m.weight), metadata=meta), out
        return nir.Affine(weight=_np(m.weight), bias=_np(m.bias), metadata=meta), out
    if isinstance(m, (nn.Conv2d, snn.SpikeConv2d)):
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise ValueError(f"to_nir: {name!r} uses padding_mode={m.padding_mode!r}; NIR convolutions pad with zeros")
        if isinstance(m.padding, str):
            raise ValueError(f"to_nir: {name!r} uses padding={m.padding!r}; give explicit integer padding")
        if shape is None or len(shape) != 3:
            raise ValueError(
                f"to_nir: {name!r} ({type(m).__name__}) needs the input shape (C, H, W) of one sample; pass input_shape"
            )
        kernel = tuple(m.weight.shape[-2:])
        stride, padding, dilation = _pair(m.stride), _pair(m.padding), _pair(m.dilation)
        bias = _np(m.bias) if m.bias is not None else np.zeros(m.weight.shape[0], dtype=_np(m.weight).dtype)
        node = nir.Conv2d(
            input_shape=tuple(shape[1:]),
            weight=_np(m.weight),
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=int(m.groups),
            bias=bias,
            metadata={_META + "module": type(m).__name__, _META + "has_bias": m.bias is not None},
        )
        return node, (m.weight.shape[0],) + _conv_out(shape[1:], kernel, stride, padding, dilation)
    if isinstance(m, nn.Flatten):
        # The module's dims count the leading [T, B] (or the folded T*B); NIR's count one sample's dims.
        start = m.start_dim - lead if m.start_dim >= 0 else m.start_dim
        end = m.end_dim - lead if m.end_dim >= 0 else m.end_dim
        if start < 0 and m.start_dim >= 0:
            raise ValueError(
                f"to_nir: {name!r} flattens the time or batch dimension (start_dim={m.start_dim} "
                f"with {lead} leading dims); NIR's Flatten works within one sample"
            )
        if shape is None:
            raise ValueError(f"to_nir: {name!r} (Flatten) needs the input shape; pass input_shape")
        node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start, end_dim=end)
        return node, tuple(int(v) for v in node.output_type["output"])
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or m.divisor_override is not None or (any(_pair(m.padding)) and not m.count_include_pad):
            raise ValueError(
                f"to_nir: {name!r}: NIR's AvgPool2d has no ceil_mode, divisor_override or count_include_pad=False"
            )
        kernel, stride, padding = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        node = nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        out = None if shape is None else (shape[0],) + _conv_out(shape[1:], kernel, stride, padding, (1, 1))
        return node, out
    if isinstance(m, (snn.LIF, snn.IF, snn.PLIF)):
        if lead != 2:
            raise ValueError(
                f"to_nir: neuron {name!r} sits inside a MultiStep, where T is folded into the "
                "batch and the neuron would not integrate over time"
            )
        if m.step_mode != "m":
            raise ValueError(f"to_nir: {name!r} is in step_mode 's'; export the multi-step model")
        return _export_neuron(nir, name, m, shape, dt), shape
    raise ValueError(
        f"to_nir: cannot express module {name!r} of type {type(m).__name__} in NIR (supported: "
        "Linear, SpikeLinear, Conv2d, SpikeConv2d, Flatten, AvgPool2d, Identity, Dropout, LIF, IF, "
        "PLIF, inside nn.Sequential / spikeforge.nn.MultiStep)"
    )


# Modules torch.fx must not trace into: neurons keep state and branch on it, MultiStep folds shapes; the
# export maps each as a whole (MultiStep: its children in order).
_FX_LEAVES = (snn.MultiStep, snn.LIF, snn.IF, snn.PLIF, snn.SpikeLinear, snn.SpikeConv2d)


def _trace(model: nn.Module):
    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, _FX_LEAVES) or super().is_leaf_module(m, qualname)

    try:
        return _Tracer().trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError on Proxy iteration, ...)
        raise ValueError(
            f"to_nir: cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e}); "
            "export a model built from nn.Sequential / spikeforge.nn.MultiStep and supported layers, "
            "with '+' for skip connections"
        ) from e


def to_nir(model: nn.Module, input_shape: Optional[Sequence[int]] = None, *, dt: float = DEFAULT_DT):
    """Export a spikeforge model to a ``nir.NIRGraph``.

    model: runs on [T, B, ...] and is built from Linear / SpikeLinear / Conv2d / SpikeConv2d / Flatten /
    AvgPool2d / Identity / Dropout and LIF / IF / PLIF neurons, in nn.Sequential / spikeforge.nn.MultiStep
    containers or in a forward() that torch.fx can trace, where ``a + b`` (a skip connection) becomes two
    edges into the next node (NIR sums a node's inputs). input_shape: the shape of one sample (without T
    and B), e.g. (2, 34, 34); it can be left out when the first layer is a Linear.
    dt: seconds per time step, the Euler step that maps spikeforge's discrete neurons to NIR's ODEs.
    Raises ValueError for what NIR cannot express (see the module docstring).
    """
    import operator

    nir = _import_nir()
    dt = _check_dt(dt)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if input_shape is not None:
        if not isinstance(input_shape, (tuple, list, torch.Size)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape
        ):
            raise ValueError(
                f"input_shape must be a sequence of positive ints (one sample's shape), got {input_shape!r}"
            )
        in_shape = tuple(input_shape)
    else:
        in_shape = None
    if isinstance(model, _FX_LEAVES):  # fx always traces the root's forward: give it a container to call it
        model = nn.Sequential(model)
    fx_graph = _trace(model)
    calls = [n for n in fx_graph.nodes if n.op == "call_module"]
    if in_shape is None and calls:  # a leading Linear tells the input's width
        first = next(
            (
                leaf
                for _, leaf, _ in _leaves(model.get_submodule(calls[0].target), calls[0].target)
                if not isinstance(leaf, (nn.Identity, nn.Dropout))
            ),
            None,
        )
        if isinstance(first, (nn.Linear, snn.SpikeLinear)):
            in_shape = (first.in_features,)
    if in_shape is None:
        raise ValueError("to_nir: cannot tell the model's input shape; pass input_shape")
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
    edges: list[tuple[str, str]] = []
    sources: dict = {}  # fx value -> NIR nodes whose outputs sum to it
    shapes: dict = {}
    out_shape = None
    for n in fx_graph.nodes:
        if n.op == "placeholder":
            if any(v == ["input"] for v in sources.values()):
                raise ValueError("to_nir: the model takes several inputs; NIR export supports one")
            sources[n], shapes[n] = ["input"], in_shape
        elif n.op == "call_module":
            if len(n.args) != 1 or n.kwargs or not isinstance(n.args[0], torch.fx.Node):
                raise ValueError(
                    f"to_nir: module {n.target!r} is called with {len(n.args)} arguments; NIR nodes take one input"
                )
            src, shape = sources[n.args[0]], shapes[n.args[0]]
            for name, leaf, lead in _leaves(model.get_submodule(n.target), n.target):
                node, shape = _export_leaf(nir, name, leaf, shape, lead, dt)
                if node is None:
                    continue
                key = name.replace(".", "_")
                while key in nodes:  # the same module called twice becomes two nodes
                    key += "_again"
                nodes[key] = node
                edges += [(s, key) for s in src]
                src = [key]
            sources[n], shapes[n] = src, shape
        elif (
            n.op == "call_function"
            and n.target in (operator.add, torch.add)
            and len(n.args) == 2
            and not n.kwargs
            and all(isinstance(a, torch.fx.Node) for a in n.args)
        ):
            a, b = n.args
            if shapes[a] is not None and shapes[b] is not None and tuple(shapes[a]) != tuple(shapes[b]):
                raise ValueError(f"to_nir: '+' of shapes {shapes[a]} and {shapes[b]}: NIR sums equal shapes only")
            merged = sources[a] + sources[b]
            if len(set(merged)) != len(merged):
                raise ValueError("to_nir: a value is added to itself; NIR edges cannot say x + x (scale it)")
            sources[n], shapes[n] = merged, shapes[a] if shapes[a] is not None else shapes[b]
        elif n.op == "output":
            if not isinstance(n.args[0], torch.fx.Node):
                raise ValueError("to_nir: the model returns several values; NIR export supports one output")
            edges += [(s, "output") for s in sources[n.args[0]]]
            out_shape = shapes[n.args[0]]
        else:
            raise ValueError(
                f"to_nir: cannot express the operation {n.op} {getattr(n.target, '__name__', n.target)!r}"
                " in NIR (supported: calls of the listed modules and '+' between them)"
            )
    if out_shape is None:
        raise ValueError("to_nir: cannot tell the model's output shape; pass input_shape")
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={_META + "dt": dt})


# ------------------------------------------------------------------------------------------------
# import
# ------------------------------------------------------------------------------------------------
def _meta(node) -> dict:
    """The node's spikeforge_* metadata with h5py's bytes / numpy scalars turned back into Python values."""
    out = {}
    for k, v in (getattr(node, "metadata", None) or {}).items():
        if not str(k).startswith(_META):
            continue
        if isinstance(v, bytes):
            v = v.decode("utf8")
        elif isinstance(v, np.ndarray) and v.ndim == 0:
            v = v.item()
        elif isinstance(v, np.generic):
            v = v.item()
        out[str(k)[len(_META) :]] = v
    return out


def _uniform(value, what: str) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"from_nir: {what} is empty")
    first = float(arr.reshape(-1)[0])
    if not np.all(arr == first):
        raise ValueError(f"from_nir: {what} differs between neurons; spikeforge neurons take one value per layer")
    return first


def _close(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=1e-6, atol=1e-12))


def _array(
    name: str, field: str, value, *, ndim: Optional[int] = None, shape: Optional[tuple] = None, finite: bool = False
) -> np.ndarray:
    """A node's numeric field as float64, checked: ValueError naming node and field (a graph is user input)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"from_nir: {name}.{field} must be numeric, got {type(value).__name__}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"from_nir: {name}.{field} must have {ndim} dims, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"from_nir: {name}.{field} must have shape {tuple(shape)}, got {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"from_nir: {name}.{field} must be finite")
    return arr


def _int_tuple(name: str, field: str, value, n: int, minimum: int) -> tuple[int, ...]:
    """A stride / padding / kernel field: one int or n ints, each >= minimum."""
    arr = _array(name, field, value).reshape(-1)
    if arr.size not in (1, n) or not np.all(arr == np.round(arr)) or not np.all(arr >= minimum):
        raise ValueError(f"from_nir: {name}.{field} must be 1 or {n} integers >= {minimum}, got {value!r}")
    return tuple(int(a) for a in (np.repeat(arr, n) if arr.size == 1 else arr))


def _neuron_arrays(name: str, node, fields: tuple) -> dict:
    """The neuron's parameter arrays: finite, one common (broadcast) shape."""
    arrays = {f: _array(name, f, getattr(node, f), finite=True) for f in fields if getattr(node, f) is not None}
    try:
        np.broadcast_shapes(*(a.shape for a in arrays.values()))
    except ValueError:
        raise ValueError(
            f"from_nir: {name}: the shapes of "
            + ", ".join(f"{f} {a.shape}" for f, a in arrays.items())
            + " do not match"
        ) from None
    return arrays


class _Seq(nn.Module):
    """A stateless per-sample layer applied to [T, B, ...] with T folded into B."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x_seq: Tensor) -> Tensor:
        return seq_apply(self.layer, x_seq)


class _InputAffine(nn.Module):
    """X = scale * I + shift (per neuron): NIR's r and (v_leak - v_reset) folded in front of a neuron."""

    def __init__(self, scale: np.ndarray, shift: np.ndarray):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))
        self.register_buffer("shift", torch.as_tensor(np.asarray(shift, dtype=np.float32)))

    def forward(self, x_seq: Tensor) -> Tensor:
        return x_seq * self.scale + self.shift


class _Scale(nn.Module):
    def __init__(self, scale: np.ndarray):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))

    def forward(self, x_seq: Tensor) -> Tensor:
        return x_seq * self.scale


class _LeakyIntegrator(CopiesDetached, nn.Module):
    """NIR's LI (tau dv/dt = v_leak - v + r I) and I (dv/dt = r I) stepped with Euler, output v[t].

    No spikes, so no fused neuron kernel: a linear recurrence over T in plain torch. Its membrane carries over
    from call to call until reset(), as the neurons' do (a sequence fed in chunks gives the whole call's
    outputs)."""

    def __init__(self, decay: np.ndarray, gain: np.ndarray, drive: np.ndarray):
        super().__init__()
        for n, v in (("decay", decay), ("gain", gain), ("drive", drive)):
            self.register_buffer(n, torch.as_tensor(np.asarray(v, dtype=np.float32)))
        self.v: Optional[Tensor] = None

    def reset(self) -> None:
        self.v = None

    def detach(self) -> None:
        self.v = detach_value(self.v)

    def _state_snapshot(self):
        return self.v

    def _state_restore(self, snapshot) -> None:
        self.v = snapshot

    def forward(self, x_seq: Tensor) -> Tensor:
        v = self.v
        if v is None:
            v = torch.zeros_like(x_seq[0]) if x_seq.shape[0] else None
        elif v.shape != x_seq.shape[1:] or v.device != x_seq.device:
            raise ValueError(
                f"from_nir: an LI / I node's stored membrane has shape {tuple(v.shape)} on {v.device} but the "
                f"input step has shape {tuple(x_seq.shape[1:])} on {x_seq.device}; call reset() between "
                "independent batches"
            )
        out = []
        for t in range(x_seq.shape[0]):
            v = v - self.decay * v + self.gain * x_seq[t] + self.drive
            out.append(v)
        if not out:
            return torch.empty_like(x_seq)
        self.v = v
        return torch.stack(out)


def _warn_tau_below_dt(name: str, kind: str, tau: np.ndarray, dt: float) -> None:
    """A time constant under one step makes the Euler step overshoot (the membrane moves dt / tau > 1 of the
    way to its target: it oscillates, and an LIF fires on any input); it is usually an exporter's unit slip
    (Norse 1.1's to_nir writes dt / tau_mem_inv, e.g. 1e-5 s for a 10 ms membrane at dt = 1 ms)."""
    if np.any(tau < dt):
        warnings.warn(
            f"from_nir: {kind} node {name!r} has tau = {float(np.min(tau)):g} s, less than one step (dt = {dt:g}): "
            "the Euler step overshoots. Check the exporter's tau, or pass from_nir(..., dt=...) to step in "
            "the graph's time unit",
            UserWarning,
            stacklevel=4,
        )


def _integrator_gain(name: str, kind: str, r: np.ndarray, dt: float, unit_r: Optional[str]) -> np.ndarray:
    """dt r, the input an IF / I node integrates per step, with r = 1 read as unit_r says: NIR's Euler step
    ("euler": dt r, i.e. dt of the input per step) or "per_step" (v += I each step: what Sinabs, Norse, Spyx and
    BindsNET mean when they write an IF with r = 1). unit_r None: "euler", with a warning when dt != 1."""
    if unit_r == "per_step" and _close(r, 1.0):
        return np.ones_like(r)
    if unit_r is None and _close(r, 1.0) and not _close(dt, 1.0):
        warnings.warn(
            f"from_nir: {kind} node {name!r} has r = 1, so with NIR's Euler step (v += dt r I, dt = {dt:g}) "
            f"it integrates {dt:g} of its input per step and will rarely spike. Exporters such as Sinabs, "
            "Norse, Spyx and BindsNET write r = 1 for v += I per step: pass from_nir(..., unit_r='per_step') "
            "for that reading, or unit_r='euler' to keep NIR's and silence this warning",
            UserWarning,
            stacklevel=4,
        )
    return r * dt


def _import_neuron(nir, name: str, node, dt: float, unit_r: Optional[str] = None) -> nn.Module:
    meta = _meta(node)
    fields = (
        ("r", "v_threshold", "v_reset")
        if isinstance(node, nir.IF)
        else ("tau", "r", "v_leak", "v_threshold", "v_reset")
    )
    arrays = _neuron_arrays(name, node, fields)
    opts = dict(
        v_threshold=_uniform(arrays["v_threshold"], f"{name}.v_threshold"),
        v_reset=_uniform(arrays["v_reset"], f"{name}.v_reset") if "v_reset" in arrays else 0.0,
        detach_reset=bool(meta.get("detach_reset", False)),
        surrogate=str(meta.get("surrogate", "sigmoid")),
        alpha=meta.get("alpha"),
    )
    if isinstance(node, nir.IF):
        neuron = snn.IF(**opts)
        r_dt = _integrator_gain(name, "IF", arrays["r"], dt, unit_r)
        return neuron if _close(r_dt, 1.0) else nn.Sequential(_Scale(r_dt), neuron)
    if np.any(arrays["tau"] <= 0):
        raise ValueError(f"from_nir: {name}.tau must be > 0")
    _warn_tau_below_dt(name, "LIF", arrays["tau"], dt)
    if meta.get("module") == "PLIF" and "w" in meta:
        w = np.asarray(meta["w"], dtype=np.float64).reshape(-1)
        k_graph = dt / arrays["tau"]
        k_w = 1.0 / (1.0 + np.exp(-w))
        if w.size > 1:  # per channel: dimension 0 of one sample
            k_w = k_w.reshape((-1,) + (1,) * (k_graph.ndim - 1))
        # Rebuild the learnable PLIF only if its w still gives the graph's tau (the graph is the truth).
        decay_input = bool(meta.get("decay_input", True))
        r_expect = np.ones_like(k_graph) if decay_input else 1.0 / k_graph
        if (
            k_graph.ndim >= 1
            and k_w.shape[0] in (1, k_graph.shape[0])
            and _close(np.broadcast_to(k_w, k_graph.shape), k_graph)
            and _close(arrays["r"], r_expect)
            and _close(arrays["v_leak"], opts["v_reset"])
        ):
            channels = int(meta.get("num_channels", 0))
            neuron = snn.PLIF(decay_input=decay_input, num_channels=channels or None, **opts)
            with torch.no_grad():
                neuron.w.copy_(torch.as_tensor(w, dtype=neuron.w.dtype).reshape(neuron.w.shape))
            return neuron
    tau = _uniform(arrays["tau"], f"{name}.tau") / dt
    if "tau" in meta and _close(meta["tau"], tau):
        tau = float(meta["tau"])  # the exact value exported (tau_nir / dt may be off by a rounding)
    r = arrays["r"]
    shift = arrays["v_leak"] - opts["v_reset"]
    if _close(shift, 0.0) and _close(r, 1.0) and meta.get("decay_input", True):
        return snn.LIF(tau=tau, decay_input=True, **opts)
    if _close(shift, 0.0) and _close(r, tau):
        return snn.LIF(tau=tau, decay_input=False, **opts)
    if _close(shift, 0.0) and _close(r, 1.0):
        return snn.LIF(tau=tau, decay_input=True, **opts)
    # General r and v_leak: tau dv/dt = (v_leak - v) + r I = (v_reset - v) + (r I + v_leak - v_reset),
    # i.e. the decay_input LIF fed X = r I + (v_leak - v_reset).
    return nn.Sequential(_InputAffine(r, shift), snn.LIF(tau=tau, decay_input=True, **opts))


def _bias(name: str, node, out: int) -> Optional[np.ndarray]:
    if getattr(node, "bias", None) is None:
        return None
    return _array(name, "bias", node.bias, shape=(out,))


def _padding(name: str, value, n: int):
    if isinstance(value, bytes):  # h5 strings
        value = value.decode("utf8")
    if isinstance(value, str):
        if value not in ("same", "valid"):
            raise ValueError(f"from_nir: {name}.padding must be 'same', 'valid' or integers, got {value!r}")
        return value
    return _int_tuple(name, "padding", value, n, 0)


def _groups(name: str, value, c_out: int) -> int:
    g = _int_tuple(name, "groups", value, 1, 1)[0]
    if c_out % g:
        raise ValueError(f"from_nir: {name}.groups = {g} does not divide the {c_out} output channels")
    return g


def _import_node(nir, name: str, node, dt: float, unit_r: Optional[str] = None) -> Optional[nn.Module]:
    """NIR node -> a module on [T, B, ...] (None: the identity). ValueError naming the node and field for
    anything that cannot be imported."""
    meta = _meta(node)
    if isinstance(node, (nir.Input, nir.Output)):
        return None
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = _array(name, "weight", node.weight, ndim=2)
        has_bias = isinstance(node, nir.Affine)
        bias = _bias(name, node, weight.shape[0]) if has_bias else None
        has_bias = bias is not None
        cls = snn.SpikeLinear if meta.get("module") == "SpikeLinear" else nn.Linear
        layer = cls(weight.shape[1], weight.shape[0], bias=has_bias)
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(weight))
            if has_bias:
                layer.bias.copy_(torch.as_tensor(bias))
        return layer  # both act on the last dim of [T, B, ..., in]
    if isinstance(node, nir.Conv2d):
        weight = _array(name, "weight", node.weight, ndim=4)
        padding = _padding(name, node.padding, 2)
        kw = dict(
            stride=_int_tuple(name, "stride", node.stride, 2, 1),
            dilation=_int_tuple(name, "dilation", node.dilation, 2, 1),
            groups=_groups(name, node.groups, weight.shape[0]),
        )
        bias = _bias(name, node, weight.shape[0])
        # NIR's Conv2d always has a bias; drop it only if it was exported from a bias-free layer and is zero
        has_bias = bias is not None and (bool(meta.get("has_bias", True)) or bool(np.any(bias != 0)))
        if meta.get("module") == "SpikeConv2d" and not isinstance(padding, str):
            layer = snn.SpikeConv2d(
                weight.shape[1] * kw["groups"],
                weight.shape[0],
                tuple(weight.shape[-2:]),
                padding=padding,
                bias=has_bias,
                **kw,
            )
        else:
            layer = nn.Conv2d(
                weight.shape[1] * kw["groups"],
                weight.shape[0],
                tuple(weight.shape[-2:]),
                padding=padding,
                bias=has_bias,
                **kw,
            )
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(weight))
            if has_bias:
                layer.bias.copy_(torch.as_tensor(bias))
        return layer if isinstance(layer, snn.SpikeConv2d) else _Seq(layer)
    if isinstance(node, nir.Conv1d):
        weight = _array(name, "weight", node.weight, ndim=3)
        padding = _padding(name, node.padding, 1)
        groups = _groups(name, node.groups, weight.shape[0])
        bias = _bias(name, node, weight.shape[0])
        layer = nn.Conv1d(
            weight.shape[1] * groups,
            weight.shape[0],
            weight.shape[-1],
            stride=_int_tuple(name, "stride", node.stride, 1, 1)[0],
            padding=padding if isinstance(padding, str) else padding[0],
            dilation=_int_tuple(name, "dilation", node.dilation, 1, 1)[0],
            groups=groups,
            bias=bias is not None,
        )
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(weight))
            if bias is not None:
                layer.bias.copy_(torch.as_tensor(bias))
        return _Seq(layer)
    if isinstance(node, nir.Flatten):
        # One sample's dims -> the folded [T*B, ...] layout: non-negative dims shift by one.
        start, end = (_int_tuple(name, f, getattr(node, f), 1, -(2**31))[0] for f in ("start_dim", "end_dim"))
        return _Seq(nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end))
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        kernel = _int_tuple(name, "kernel_size", node.kernel_size, 2, 1)
        stride = _int_tuple(name, "stride", node.stride, 2, 1)
        padding = _int_tuple(name, "padding", node.padding, 2, 0)
        if any(2 * p > k for p, k in zip(padding, kernel)):
            raise ValueError(f"from_nir: {name}.padding {padding} must be at most half of kernel_size {kernel}")
        if isinstance(node, nir.SumPool2d):  # a sum is an average whose divisor is 1
            return _Seq(nn.AvgPool2d(kernel, stride, padding, divisor_override=1))
        return _Seq(nn.AvgPool2d(kernel, stride, padding))
    if isinstance(node, nir.Scale):
        return _Scale(_array(name, "scale", node.scale))
    if isinstance(node, (nir.LIF, nir.IF)):
        return _import_neuron(nir, name, node, dt, unit_r)
    if isinstance(node, nir.LI):
        arrays = _neuron_arrays(name, node, ("tau", "r", "v_leak"))
        if np.any(arrays["tau"] <= 0):
            raise ValueError(f"from_nir: {name}.tau must be > 0")
        _warn_tau_below_dt(name, "LI", arrays["tau"], dt)
        k = dt / arrays["tau"]
        return _LeakyIntegrator(k, k * arrays["r"], k * arrays["v_leak"])
    if isinstance(node, nir.I):
        r = _neuron_arrays(name, node, ("r",))["r"]
        return _LeakyIntegrator(np.zeros_like(r), _integrator_gain(name, "I", r, dt, unit_r), np.zeros_like(r))
    if isinstance(node, nir.NIRGraph):
        return NIRGraphModule(node, dt=dt, unit_r=unit_r)
    raise ValueError(
        f"from_nir: node {name!r} of type {type(node).__name__} has no spikeforge equivalent "
        "(supported: Input, Output, Affine, Linear, Conv1d, Conv2d, Flatten, AvgPool2d, SumPool2d, "
        "Scale, LIF, IF, LI, I and acyclic subgraphs)"
    )


def _topological(nodes, edges) -> list[str]:
    preds = {n: [] for n in nodes}
    succs = {n: [] for n in nodes}
    for a, b in edges:
        if a not in preds or b not in preds:
            raise ValueError(f"from_nir: edge ({a!r}, {b!r}) names a node that is not in the graph")
        preds[b].append(a)
        succs[a].append(b)
    indeg = {n: len(p) for n, p in preds.items()}
    ready = [n for n in nodes if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s in succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    if len(order) != len(nodes):
        raise ValueError(
            "from_nir: the graph has a cycle (a recurrent connection); spikeforge runs whole "
            "sequences layer by layer and cannot execute recurrent NIR graphs"
        )
    return order


class NIRGraphModule(nn.Module):
    """A NIR graph as a runnable multi-step module: forward(x_seq [T, B, ...]) -> [T, B, ...].

    Nodes run in topological order over whole sequences; a node's input is the sum of its predecessors'
    outputs. With several Input nodes forward takes a dict name -> tensor; with several Output nodes it
    returns one. ``reset()`` clears every neuron's state (call it between independent batches).
    """

    def __init__(self, graph, *, dt: Optional[float] = None, unit_r: Optional[str] = None):
        super().__init__()
        nir = _import_nir()
        if not isinstance(graph, nir.NIRGraph):
            raise TypeError(f"graph must be a nir.NIRGraph, got {type(graph).__name__}")
        if dt is None:  # the step a spikeforge export was made with (to_nir stores it), else NIR's usual one
            dt = _meta(graph).get("dt", DEFAULT_DT)
        self.dt = _check_dt(dt)
        if unit_r not in (None, "euler", "per_step"):
            raise ValueError(f"unit_r must be None, 'euler' or 'per_step', got {unit_r!r}")
        self.order = _topological(list(graph.nodes), [tuple(e) for e in graph.edges])
        self.inputs = [n for n in self.order if isinstance(graph.nodes[n], nir.Input)]
        self.outputs = [n for n in self.order if isinstance(graph.nodes[n], nir.Output)]
        if not self.inputs or not self.outputs:
            raise ValueError("from_nir: the graph needs at least one Input and one Output node")
        self.preds = {n: [a for a, b in graph.edges if b == n] for n in self.order}
        for n in self.order:
            if not self.preds[n] and n not in self.inputs:
                raise ValueError(f"from_nir: node {n!r} has no incoming edge and is not an Input")
        # NIR names may contain '.', which nn.Module names may not.
        self.key = {
            n: "n_" + "".join(c if c.isalnum() or c == "_" else "_" for c in n) + f"_{i}"
            for i, n in enumerate(self.order)
        }
        self.layers = nn.ModuleDict()
        for n in self.order:
            node = graph.nodes[n]
            try:
                module = _import_node(nir, n, node, self.dt, unit_r)
            except (ValueError, TypeError, ImportError):
                raise
            except Exception as e:  # a field the checks above did not foresee: still the graph's fault, say which
                raise ValueError(
                    f"from_nir: node {n!r} ({type(node).__name__}) cannot be imported: {type(e).__name__}: {e}"
                ) from e
            if module is not None:
                self.layers[self.key[n]] = module

    def forward(self, x):
        if len(self.inputs) == 1:
            if isinstance(x, dict):
                x = x[self.inputs[0]]
            feeds = {self.inputs[0]: x}
        else:
            if not isinstance(x, dict) or set(x) != set(self.inputs):
                raise ValueError(f"this graph has inputs {self.inputs}; pass a dict name -> [T, B, ...] tensor")
            feeds = dict(x)
        for name, t in feeds.items():
            if not isinstance(t, Tensor) or t.dim() < 2:
                raise ValueError(f"input {name!r} must be a tensor of shape [T, B, ...]")
        values: dict[str, Tensor] = {}
        for n in self.order:
            if n in feeds:
                y = feeds[n]
            else:
                incoming = [values[p] for p in self.preds[n]]
                y = incoming[0]
                for other in incoming[1:]:
                    y = y + other
            layer = self.layers[self.key[n]] if self.key[n] in self.layers else None
            values[n] = y if layer is None else layer(y)
        if len(self.outputs) == 1:
            return values[self.outputs[0]]
        return {n: values[n] for n in self.outputs}

    _reset_delegates = True  # spikeforge.nn.reset_net visits the children itself

    def reset(self) -> None:
        """Forget every neuron's state (nested graphs included); call between independent batches."""
        snn.reset_net(self)


def from_nir(graph, *, dt: Optional[float] = None, unit_r: Optional[str] = None) -> NIRGraphModule:
    """Build a runnable multi-step spikeforge module from a ``nir.NIRGraph`` (or a path to a NIR file).

    dt: seconds per time step (the Euler step). None (default): the dt a spikeforge export stored in the graph
    (its ``spikeforge_dt`` metadata), else 1e-4 (what snnTorch, SpikingJelly and Sinabs write).
    unit_r: how an IF / I node with r = 1 is read. "euler": NIR's equation, v += dt r I (SpikingJelly and
    spikeforge write r = 1/dt for v += I); "per_step": v += I each step (what Sinabs, Norse, Spyx and BindsNET
    mean by r = 1); None (default): "euler", with a warning when dt != 1, because such a layer then integrates
    dt of its input per step and rarely spikes. The module takes [T, B, ...] and returns [T, B, ...]; see
    NIRGraphModule. A node that cannot be imported is a ValueError naming it.
    """
    nir = _import_nir()
    if isinstance(graph, (str, bytes)) or hasattr(graph, "__fspath__"):
        graph = nir.read(graph)
    return NIRGraphModule(graph, dt=dt, unit_r=unit_r)
