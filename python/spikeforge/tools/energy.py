"""Energy and synaptic operations (SOPs) of a spiking model, the convention of the spiking-transformer papers.

    report = spikeforge.tools.energy(model, images)   # runs model(images) once, no_grad, eval mode
    print(report.table())                             # per layer: input rate, MACs, SOPs, energy, ANN energy
    report.total_energy_mj, report.ann_energy_mj      # per inference (one sample, all T steps)

The convention (docs/tools.md; Spikformer, Spike-driven Transformer, QKFormer):
- E_MAC = 4.6 pJ per multiply-accumulate, E_AC = 0.9 pJ per accumulate (45 nm, Horowitz 2014).
- A synaptic layer (Linear, Conv, SpikeLinear, SpikeConv2d, ...) performs ``MACs`` multiply-accumulates per
  time step on one sample (the FLOPs of the ANN twin of the layer). Fed with spikes it only accumulates
  the weights of the inputs that fired: SOPs = firing rate of its input x T x MACs, charged E_AC each.
- A layer whose input is not binary (the stem conv on the image, a layer after a membrane shortcut) is
  charged MACs at E_MAC: T x MACs, or MACs once when its input is the same at every step (a static image
  under direct encoding: the papers' E_MAC x FL_conv^1 term; spikeforge's zoo models compute it once).
- Inputs that are non-negative integers above 1 (the sums of spikes a SEW-ADD shortcut makes, the integer
  spikes of nn.ILIF) are spike counts: an input of k is k accumulates, so the rate is the mean count per
  input element. For I-LIF that is the papers' count: s binary spikes over D virtual steps
  (ops.counts_to_binary) give the same SOPs with T x D steps.
- The ANN-equivalent energy is E_MAC x MACs per layer: the same network run once with real values.
- Bias additions, normalisation, pooling, neuron updates and residual additions are not charged (the
  papers fold BN into the weights and count only the synaptic layers).

The numbers are per inference: the whole run divided by the batch size. A layer's MACs per step come
from what it actually computed: its calls' MACs / batch / steps, where a call's steps are T when its input
starts with T*B rows or with (T, B) (time folded into the batch, spikeforge.nn's layout [T, B, ...]), and
1 when it starts with B rows (computed once before the time expansion).

Layers the hooks cannot see (a matmul on spikes inside an attention block) are reported by the module that owns them
through a method ``energy_ops(inputs, output) -> iterable of EnergyOp`` (``matmul_op`` builds one for ``a @ b``),
called after every forward of that module. Report only the operations its submodules do not (children are hooked on
their own), e.g. for spiking self-attention ``q @ k^T`` and ``attn @ v``::

    def energy_ops(self, inputs, output):
        q, k, v, attn = self._saved                            # kept by forward for this purpose
        return [matmul_op("q@kT", q, k.transpose(-2, -1)),     # rate of the spike queries
                matmul_op("attn@v", attn, v, operand=v)]       # or EnergyOp(name, macs, operand) by hand

Or, keeping no tensors on the module, call ``report_op(self, matmul_op("q@kT", q, kT))`` inside forward (a no-op
unless energy() is running). The operand is the tensor whose non-zero entries trigger the accumulates: its firing rate
and kind (spikes / counts / real) are measured from it, and its leading dimensions give the steps. A module with
``energy_ops`` is never counted by the built-in rules, so a custom synaptic layer can also use it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

# what modules report into lives in nn (a leaf below nn's modules); the estimator here is its listener
from ..ops._common import _check_int
from ..nn._accounting import EnergyOp, estimating, listening, matmul_op, report_op
from ..nn.observe import is_neuron

__all__ = [
    "E_MAC_PJ",
    "E_AC_PJ",
    "EnergyOp",
    "LayerEnergy",
    "EnergyReport",
    "energy",
    "layer_macs",
    "input_kind",
    "matmul_op",
    "report_op",
    "estimating",
]

E_MAC_PJ = 4.6  # pJ per 32-bit float multiply-accumulate, 45 nm (Horowitz 2014), as in the papers
E_AC_PJ = 0.9  # pJ per 32-bit float accumulate

KINDS = ("spikes", "counts", "real")


@dataclass
class LayerEnergy:
    """Per-inference numbers of one layer (or one reported op), summed over its calls.

    rate: mean input firing rate (mean spike count for counts) weighted by MACs, over its spike inputs;
    None when every input was real-valued. macs: MACs per time step (the ANN twin's). steps: time steps
    computed. sops: accumulates. mac_ops: multiply-accumulates charged at E_MAC. energy_pj, ann_energy_pj.
    """

    name: str
    type: str
    kind: str = ""
    calls: int = 0
    rate: Optional[float] = None
    macs: float = 0.0
    steps: float = 0.0
    sops: float = 0.0
    mac_ops: float = 0.0
    energy_pj: float = 0.0
    ann_energy_pj: float = 0.0
    time_invariant: bool = False
    # running sums (per inference) from which the fields above are derived
    _dense: float = field(default=0.0, repr=False)
    _spike_dense: float = field(default=0.0, repr=False)
    _kinds: list = field(default_factory=list, repr=False)


@dataclass
class EnergyReport:
    """The result of energy(): per-layer rows and per-inference totals (energies in mJ).

    mean_rate: the synaptic layers' input firing rate weighted by their MACs (what the SOPs are made of).
    neuron_rate: spikes per neuron per step over every neuron layer of the run, the number
    FiringRateMonitor's table ends with for the same model, input and mode (None without neurons)."""

    layers: list
    T: int
    batch_size: int
    e_mac_pj: float
    e_ac_pj: float
    total_sops: float = 0.0
    total_mac_ops: float = 0.0
    total_macs: float = 0.0
    total_energy_mj: float = 0.0
    ann_energy_mj: float = 0.0
    mean_rate: Optional[float] = None
    neuron_rate: Optional[float] = None

    @property
    def ratio(self) -> Optional[float]:
        """ANN-equivalent energy / SNN energy (> 1: the SNN is estimated to spend less)."""
        return self.ann_energy_mj / self.total_energy_mj if self.total_energy_mj > 0 else None

    def as_dict(self) -> dict:
        layers = [{k: v for k, v in asdict(layer).items() if not k.startswith("_")} for layer in self.layers]
        d = {k: v for k, v in asdict(self).items() if k != "layers"}
        return {
            **d,
            "ratio": self.ratio,
            "layers": layers,
            "units": {
                "macs": "multiply-accumulates per time step per sample (the ANN twin's)",
                "sops": "accumulates per inference (rate x T x MACs)",
                "mac_ops": "MACs charged at E_MAC per inference",
                "energy_pj": "pJ per inference",
                "total_energy_mj": "mJ per inference",
            },
        }

    def table(self) -> str:
        from ._text import format_table

        def big(v: float) -> str:
            for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
                if abs(v) >= scale:
                    return f"{v / scale:.3f}{unit}"
            return f"{v:.0f}"

        rows = [
            [
                r.name,
                r.type,
                r.kind + (" (once)" if r.time_invariant else ""),
                "-" if r.rate is None else f"{r.rate:.4f}",
                f"{r.steps:g}",
                big(r.macs),
                big(r.sops),
                big(r.mac_ops),
                f"{r.energy_pj / 1e6:.4f}",
                f"{r.ann_energy_pj / 1e6:.4f}",
            ]
            for r in self.layers
        ]
        rows.append(
            [
                "total",
                "",
                "",
                "-" if self.mean_rate is None else f"{self.mean_rate:.4f}",
                "",
                big(self.total_macs),
                big(self.total_sops),
                big(self.total_mac_ops),
                f"{self.total_energy_mj * 1e3:.4f}",
                f"{self.ann_energy_mj * 1e3:.4f}",
            ]
        )
        head = ["layer", "type", "input", "rate", "steps", "MACs/step", "SOPs", "MAC ops", "energy uJ", "ANN uJ"]
        ratio = "n/a" if self.ratio is None else f"{self.ratio:.2f}x"
        foot = (
            f"per image (batch totals / {self.batch_size} images, T={self.T}); E_MAC={self.e_mac_pj} pJ, "
            f"E_AC={self.e_ac_pj} pJ; SOPs = rate x steps x MACs/step for spike inputs, real inputs charged "
            f"MACs\nenergy: {self.total_energy_mj:.6f} mJ per image; ANN equivalent (E_MAC x MACs/step): "
            f"{self.ann_energy_mj:.6f} mJ per image; ANN / SNN = {ratio}"
        )
        return format_table(head, rows, left=3) + "\n" + foot


# ------------------------------------------------------------------------------------------------
# measuring one tensor and one layer call
# ------------------------------------------------------------------------------------------------
def input_kind(x: Tensor) -> tuple[str, float]:
    """(kind, rate) of a layer input: "spikes" (values in {0, 1}; rate = fraction of ones), "counts"
    (non-negative integers, some > 1; rate = mean count, each count k being k accumulates) or "real"
    (rate = fraction of non-zeros, informative only: real inputs are charged MACs)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.numel() == 0:
        return "spikes", 0.0
    if x.dtype == torch.bool:
        return "spikes", float(x.double().mean())
    if x.is_complex():
        return "real", float((x != 0).double().mean())
    xf = x.detach()
    integral = not xf.is_floating_point() or bool((xf == xf.trunc()).all())
    if integral and bool((xf >= 0).all()):
        mean = float(xf.double().mean())
        return ("spikes" if bool((xf <= 1).all()) else "counts"), mean
    return "real", float((xf != 0).double().mean())


def _prod(xs: Iterable[int]) -> int:
    p = 1
    for v in xs:
        p *= int(v)
    return p


def layer_macs(module: nn.Module, x: Tensor, y: Tensor) -> Optional[int]:
    """Dense multiply-accumulates of one call of a built-in synaptic layer on input x with output y
    (bias not counted), or None when the module is not one."""
    from ..nn.spike import SpikeConv2d, SpikeLinear

    if isinstance(module, (nn.Linear, SpikeLinear)):
        return y.numel() * module.in_features
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # every input element is multiplied by a [C_out / groups, *kernel] slice of the weight
        return x.numel() * (module.out_channels // module.groups) * _prod(module.kernel_size)
    if isinstance(module, (nn.modules.conv._ConvNd, SpikeConv2d)):
        # every output element is a dot product over [C_in / groups, *kernel]
        return y.numel() * (module.in_channels // module.groups) * _prod(module.kernel_size)
    return None


def _is_synaptic(module: nn.Module) -> bool:
    from ..nn.spike import SpikeConv2d, SpikeLinear

    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, SpikeLinear, SpikeConv2d))


def _check_op_kind(where: str, kind, rate) -> None:
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS} when no operand is given, got {kind!r}")
    if kind != "real" and (rate is None or not math.isfinite(float(rate)) or float(rate) < 0):
        raise ValueError(f"{where}: rate must be a finite number >= 0 for {kind} inputs, got {rate!r}")


class _Estimator:
    """Forward hooks that accumulate one LayerEnergy per named module (or per reported op)."""

    def __init__(self, model: nn.Module, T: int, batch_size: int, e_mac: float, e_ac: float):
        self.model, self.T, self.B, self.e_mac, self.e_ac = model, T, batch_size, e_mac, e_ac
        self.layers: dict[str, LayerEnergy] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.names: dict[int, str] = {}  # id(module) -> qualified name, for report_op
        # the model's own input tensors when they are one image / sample per batch entry (not a sequence): a
        # layer reading one of them runs once per sample, even where its shape also reads as [T, B, ...]
        # (T == B == channels: [3, 3, 16, 16] for T = 3 and a batch of 3)
        self.per_sample_inputs: set[int] = set()

    def steps_of(self, shape: Sequence[int]) -> int:
        """Time steps a call covered per sample, from the leading dimensions of its input."""
        T, B = self.T, self.B
        if T == 1 or len(shape) == 0:
            return 1 if T == 1 else T
        if shape[0] == T * B or (len(shape) >= 2 and shape[0] == T and shape[1] == B):
            return T
        if shape[0] == B:
            return 1
        return T  # rows of every step flattened further (e.g. tokens): per step

    def time_invariant(self, x: Tensor, steps: int) -> bool:
        """Whether a per-step real input holds the same values at every step (direct encoding)."""
        if steps != self.T or self.T == 1 or x.numel() % self.T:
            return False
        xv = x.detach().reshape(self.T, -1)  # time-major layouts: [T*B, ...] and [T, B, ...]
        return bool((xv == xv[:1]).all())

    def add(self, name: str, type_name: str, macs: float, kind: str, rate: float, steps: int, invariant: bool) -> None:
        rec = self.layers.get(name)
        if rec is None:
            rec = self.layers[name] = LayerEnergy(name=name, type=type_name)
        dense = float(macs) / self.B  # per sample, all the steps of the call
        rec.calls += 1
        rec._dense += dense
        rec.macs += dense / max(steps, 1)
        if kind not in rec._kinds:
            rec._kinds.append(kind)
        if kind == "real":
            # a time-invariant input need only be computed once: charge one step (the papers' first layer)
            rec.mac_ops += dense / steps if invariant else dense
            rec.time_invariant = rec.time_invariant or invariant
        else:
            rec.sops += rate * dense
            rec._spike_dense += dense

    def hook(self, name: str):
        def fn(module, inputs, output):
            if hasattr(module, "energy_ops") and callable(module.energy_ops):
                where = f"{type(module).__name__}.energy_ops ({name or 'model'})"
                ops = module.energy_ops(inputs, output)
                if ops is None:
                    raise TypeError(f"{where} must return an iterable of EnergyOp, got None")
                self._reported(name, module, ops, where)
                return
            x = inputs[0] if isinstance(inputs, tuple) and inputs else inputs
            if not isinstance(x, Tensor) or not isinstance(output, Tensor):
                return
            macs = layer_macs(module, x, output)
            if macs is None:
                return
            kind, rate = input_kind(x)
            steps = 1 if id(x) in self.per_sample_inputs else self.steps_of(x.shape)
            self.add(
                name, type(module).__name__, macs, kind, rate, steps, kind == "real" and self.time_invariant(x, steps)
            )

        return fn

    def _reported(self, name: str, module: nn.Module, ops, where: str) -> None:
        for op in ops:
            if not isinstance(op, EnergyOp):
                op = EnergyOp(*op)
            if not isinstance(op.name, str):
                raise TypeError(f"{where}: EnergyOp.name must be a str, got {type(op.name).__name__}")
            if (
                isinstance(op.macs, bool)
                or not isinstance(op.macs, numbers.Real)
                or not math.isfinite(op.macs)
                or op.macs < 0
            ):
                raise ValueError(f"{where}: EnergyOp.macs must be a finite number >= 0, got {op.macs!r}")
            label = ".".join(p for p in (name, op.name) if p) or type(module).__name__
            if op.operand is not None:
                if not isinstance(op.operand, Tensor):
                    raise TypeError(
                        f"{where}: EnergyOp.operand must be a torch.Tensor or None, got {type(op.operand).__name__}"
                    )
                kind, rate = input_kind(op.operand)
                steps = op.steps if op.steps is not None else self.steps_of(op.operand.shape)
                invariant = kind == "real" and self.time_invariant(op.operand, steps)
            else:
                _check_op_kind(where, op.kind, op.rate)
                kind, rate = op.kind, float(op.rate or 0.0)
                steps, invariant = (op.steps if op.steps is not None else self.T), False
            if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
                raise ValueError(f"{where}: EnergyOp.steps must be an int >= 1, got {steps!r}")
            self.add(
                label, type(module).__name__ + (f".{op.name}" if op.name else ""), op.macs, kind, rate, steps, invariant
            )

    def reported(self, module: nn.Module, ops) -> None:
        """report_op's listener (nn._accounting): ops reported from inside a module's forward."""
        name = self.names.get(id(module))
        if name is None:  # a module outside the model being estimated
            return
        self._reported(name, module, ops, f"report_op({type(module).__name__} {name or 'model'})")

    def attach(self) -> None:
        for name, m in self.model.named_modules():
            self.names[id(m)] = name
            if _is_synaptic(m) or (hasattr(m, "energy_ops") and callable(m.energy_ops)):
                self.handles.append(m.register_forward_hook(self.hook(name)))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def report(self) -> EnergyReport:
        rep = EnergyReport(layers=[], T=self.T, batch_size=self.B, e_mac_pj=self.e_mac, e_ac_pj=self.e_ac)
        spike_dense = 0.0
        for rec in self.layers.values():
            rec.kind = rec._kinds[0] if len(rec._kinds) == 1 else "mixed"
            rec.steps = rec._dense / rec.macs if rec.macs else 0.0
            rec.rate = (
                rec.sops / rec._spike_dense
                if rec._spike_dense > 0
                else (0.0 if rec._kinds and "real" not in rec._kinds else None)
            )
            rec.energy_pj = self.e_mac * rec.mac_ops + self.e_ac * rec.sops
            rec.ann_energy_pj = self.e_mac * rec.macs
            rep.layers.append(rec)
            rep.total_sops += rec.sops
            rep.total_mac_ops += rec.mac_ops
            rep.total_macs += rec.macs
            rep.total_energy_mj += rec.energy_pj * 1e-9
            rep.ann_energy_mj += rec.ann_energy_pj * 1e-9
            spike_dense += rec._spike_dense
        rep.mean_rate = rep.total_sops / spike_dense if spike_dense > 0 else None
        return rep


# ------------------------------------------------------------------------------------------------
# the public function
# ------------------------------------------------------------------------------------------------
def _positive(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    return float(v)


def energy(
    model: nn.Module,
    inputs: Union[Tensor, Sequence[Tensor]],
    *,
    T: Optional[int] = None,
    batch_size: Optional[int] = None,
    e_mac: float = E_MAC_PJ,
    e_ac: float = E_AC_PJ,
    eval_mode: bool = True,
) -> EnergyReport:
    """Runs model(inputs) once (no_grad; eval mode unless eval_mode=False) and returns an EnergyReport:
    per layer the input firing rate, MACs per step, SOPs, MACs charged, energy and the ANN-equivalent
    energy, with per-inference totals (mJ). See the module docstring for the convention.

    inputs: a tensor (or a tuple/list of tensors, passed as model(*inputs)). T: time steps (default:
    model.T, else the first dimension of a 5-D input). batch_size: samples in the batch (default: dim 1
    of a 5-D input [T, B, C, H, W] or of a 3-D input [T, B, F] whose first dim is T, else dim 0; pass it
    for other sequence layouts, e.g. a 4-D [T, B, C, L], which would read as an image batch).
    e_mac / e_ac: energy per MAC / AC in pJ. Neuron state is reset before and after (reset_net).
    eval_mode=False runs in the model's current mode (training mode: BN normalises with the batch's
    statistics, which gives an untrained network realistic firing rates); buffers such as BN running
    statistics are restored afterwards, so the estimate leaves the model as it was.
    """
    from ..nn.neuron import reset_net
    from .monitor import FiringRateMonitor

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if not args or not all(isinstance(a, Tensor) for a in args):
        raise TypeError(
            f"inputs must be a torch.Tensor or a non-empty tuple/list of tensors, got {type(inputs).__name__}"
        )
    x = args[0]
    if x.dim() == 0:
        raise ValueError("inputs: the first tensor needs a batch dimension, got a 0-d tensor")
    if T is None:
        mt = getattr(model, "T", None)
        if isinstance(mt, int) and not isinstance(mt, bool):
            T = mt
        elif x.dim() == 5:
            T = x.shape[0]
        else:
            raise ValueError(
                "T: the model has no integer attribute T and the input is not a sequence [T, B, C, H, W]; pass T=..."
            )
    T = _check_int("T", T, minimum=1)
    sequence = x.dim() == 5 or (x.dim() == 3 and x.shape[0] == T)
    if batch_size is None:
        batch_size = x.shape[1] if sequence else x.shape[0]
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    e_mac, e_ac = _positive("e_mac", e_mac), _positive("e_ac", e_ac)

    est = _Estimator(model, T, batch_size, e_mac, e_ac)
    if not sequence and x.shape[0] == batch_size:
        est.per_sample_inputs = {id(a) for a in args}
    # the neurons' own firing rate, counted exactly as FiringRateMonitor counts it
    monitor = FiringRateMonitor(model) if any(is_neuron(m) for m in model.modules()) else None
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}  # BN statistics a training-mode run moves
    est.attach()
    if monitor is not None:
        monitor.attach()
    try:
        if eval_mode:
            model.eval()
        reset_net(model)
        with torch.no_grad(), listening(est):
            model(*args)
    finally:
        est.detach()
        if monitor is not None:
            monitor.detach()
        model.train(was_training)
        reset_net(model)  # leave no state from the estimate behind
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    rep = est.report()
    if monitor is not None:
        layers = monitor.summary()
        elements = sum(r.elements for r in layers)
        rep.neuron_rate = sum(r.spikes for r in layers) / elements if elements else None
    return rep
