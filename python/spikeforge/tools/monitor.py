"""Firing-rate monitor: forward hooks on the spiking neurons of a model that record each layer's firing
rate over a run (any number of batches, training or evaluation), a summary table and a PNG plot.

    with spikeforge.tools.FiringRateMonitor(model) as mon:
        for x, y in loader:
            model(x) ...
    print(mon.table())
    mon.plot("rates.png")

Recorded per neuron layer: spikes emitted and neuron-steps seen (rate = their ratio: the mean over every
neuron, step and sample), and for multi-step layers (input [T, B, ...]) the rate of every time step t.
Sums stay on the tensors' device until a summary is asked for, so recording adds no host
synchronisation to a training step.

Which modules are neurons: ``spikeforge.nn.observe.is_neuron`` (spikeforge.nn's neurons and PSN family;
any module whose class sets ``spikeforge_neuron = True``, the opt-in for neurons defined elsewhere); or
exactly the classes given in ``types=``.

The zoo models fuse BN + neuron in training mode (spikeforge.nn.fused.bn_spike), calling the neuron's
kernel without its forward, so no hook would fire. While attached, the monitor holds
``spikeforge.nn.observe.run_through_forward`` on every recorded module (released on detach), which sends
those models through BN, then the neuron's forward: the same values, one more saved tensor per layer
while monitoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..nn.observe import is_multi_step, is_neuron, run_through_forward

__all__ = ["FiringRateMonitor", "LayerRate", "is_neuron"]


@dataclass
class LayerRate:
    """Summary of one neuron layer: rate = spikes / (neurons x steps x samples seen)."""

    name: str
    type: str
    rate: float
    spikes: float
    elements: int
    calls: int
    per_step: Optional[list]


class _Record:
    __slots__ = ("type", "spikes", "elements", "calls", "per_step", "per_step_elements")

    def __init__(self, type_name: str):
        self.type = type_name
        self.spikes: Optional[Tensor] = None
        self.elements = 0
        self.calls = 0
        self.per_step: Optional[Tensor] = None  # spikes per time step, summed over calls
        self.per_step_elements: list[int] = []  # neuron-steps per time step


class FiringRateMonitor:
    """Records per-layer firing rates of the neurons of ``model`` while attached.

    Use as a context manager (hooks removed on exit; the records stay) or with attach() / detach().
    types: the neuron classes to record (default: see is_neuron). reset() clears the records.
    """

    def __init__(self, model: nn.Module, types: Optional[Sequence[type]] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if types is not None:
            types = (types,) if isinstance(types, type) else tuple(types)  # one class, or several
            if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
                raise TypeError("types must be a non-empty sequence of nn.Module subclasses")
        self.model, self.types = model, types
        self._records: dict[str, _Record] = {}
        self._handles: list = []
        self._forward_handles: list = []  # run_through_forward on every recorded module while attached

    # -------------------------------------------------------------------------------- hooks
    def _selected(self, module: nn.Module) -> bool:
        return isinstance(module, self.types) if self.types is not None else is_neuron(module)

    def attach(self) -> "FiringRateMonitor":
        if self._handles:
            return self
        for name, m in self.model.named_modules():
            if self._selected(m):
                self._handles.append(m.register_forward_hook(self._hook(name or type(m).__name__)))
                self._forward_handles.append(run_through_forward(m))
        if not self._handles:
            raise ValueError(f"model: no neuron modules found in {type(self.model).__name__} (pass types=...)")
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        for h in self._forward_handles:
            h.remove()
        self._handles, self._forward_handles = [], []

    def __enter__(self) -> "FiringRateMonitor":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def reset(self) -> None:
        """Forget everything recorded so far (the hooks stay attached)."""
        self._records = {}

    def _hook(self, name: str):
        def fn(module, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(out, Tensor) or out.numel() == 0:
                return
            rec = self._records.get(name)
            if rec is None:
                rec = self._records[name] = _Record(type(module).__name__)
            o = out.detach()
            total = o.sum(dtype=torch.float64)
            rec.spikes = total if rec.spikes is None else rec.spikes + total
            rec.elements += o.numel()
            rec.calls += 1
            if is_multi_step(module) and o.dim() >= 1:
                steps = o.shape[0]
                per = o.reshape(steps, -1).sum(1, dtype=torch.float64)
                if rec.per_step is None:
                    rec.per_step = per
                else:  # sequences of different lengths: grow to the longest
                    n = max(rec.per_step.shape[0], steps)
                    rec.per_step = torch.nn.functional.pad(
                        rec.per_step, (0, n - rec.per_step.shape[0])
                    ) + torch.nn.functional.pad(per, (0, n - steps))
                per_el = o.numel() // steps
                rec.per_step_elements += [0] * (steps - len(rec.per_step_elements))
                for t in range(steps):
                    rec.per_step_elements[t] += per_el

        return fn

    # -------------------------------------------------------------------------------- results
    def summary(self) -> list[LayerRate]:
        """One LayerRate per layer that fired at least once, in the order the layers first ran."""
        out = []
        for name, r in self._records.items():
            spikes = float(r.spikes) if r.spikes is not None else 0.0
            per = None
            if r.per_step is not None:
                per = [float(s) / e if e else 0.0 for s, e in zip(r.per_step.tolist(), r.per_step_elements)]
            out.append(
                LayerRate(name, r.type, spikes / r.elements if r.elements else 0.0, spikes, r.elements, r.calls, per)
            )
        return out

    def rates(self) -> dict[str, float]:
        """{layer name: mean firing rate}."""
        return {s.name: s.rate for s in self.summary()}

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return {"layers": [asdict(s) for s in self.summary()]}

    def table(self) -> str:
        from ._text import format_table

        summ = self.summary()
        if not summ:
            return "no neuron layer has run while the monitor was attached"
        steps = max((len(s.per_step) for s in summ if s.per_step), default=0)
        show = min(steps, 8)  # a table stays readable; plot() shows every step
        head = ["layer", "type", "rate", "spikes", "neuron-steps", "calls"] + [f"t={t}" for t in range(show)]
        rows = []
        for s in summ:
            per = [f"{v:.4f}" for v in (s.per_step or [])[:show]]
            rows.append(
                [s.name, s.type, f"{s.rate:.4f}", f"{s.spikes:.0f}", str(s.elements), str(s.calls)]
                + per
                + [""] * (show - len(per))
            )
        total_sp = sum(s.spikes for s in summ)
        total_el = sum(s.elements for s in summ)
        foot = f"all layers: {total_sp:.0f} spikes / {total_el} neuron-steps = {total_sp / max(total_el, 1):.4f}" + (
            f" (per-step columns: first {show} of {steps})" if steps > show else ""
        )
        return format_table(head, rows, left=2) + "\n" + foot

    def plot(self, path: str, title: Optional[str] = None) -> str:
        """Writes a PNG: the mean rate of every layer (bars) and, when recorded, the rate per time step of
        every layer (heat map). Needs matplotlib; returns path."""
        if not isinstance(path, str) or not path:
            raise ValueError(f"path must be a non-empty str, got {path!r}")
        summ = self.summary()
        if not summ:
            raise ValueError("nothing recorded: run the model while the monitor is attached before plot()")
        try:
            import matplotlib
        except ImportError as e:
            raise ImportError("FiringRateMonitor.plot needs matplotlib (pip install matplotlib)") from e
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [s.name for s in summ]
        steps = max((len(s.per_step) for s in summ if s.per_step), default=0)
        panels = 2 if steps else 1
        fig, axes = plt.subplots(
            1, panels, figsize=(6 + 0.25 * len(names) + 4 * (panels - 1), 3 + 0.22 * len(names)), squeeze=False
        )
        ax = axes[0][0]
        ax.barh(range(len(names)), [s.rate for s in summ], color="C0")
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("firing rate (spikes per neuron per step)")
        ax.grid(axis="x", alpha=0.3)
        if steps:
            grid = [
                [(s.per_step[t] if s.per_step and t < len(s.per_step) else float("nan")) for t in range(steps)]
                for s in summ
            ]
            im = axes[0][1].imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
            axes[0][1].set_yticks(range(len(names)))
            axes[0][1].set_yticklabels(names, fontsize=7)
            axes[0][1].set_xlabel("time step t")
            axes[0][1].set_xticks(range(0, steps, max(1, steps // 16)))
            fig.colorbar(im, ax=axes[0][1], label="firing rate")
        fig.suptitle(title or f"firing rates of {type(self.model).__name__}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
