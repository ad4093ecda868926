"""Energy accounting that modules report into: the leaf that spikeforge.nn uses and spikeforge.tools reads.

A synaptic layer the energy estimator can see (Linear, Conv, SpikeLinear, SpikeConv2d) is counted by its
forward hook. Operations no hook sees (a matmul on spikes inside an attention block) are reported by the
module that owns them, from inside its forward::

    if estimating():                                        # False unless an estimate is running
        report_op(self, matmul_op("q@kT", q, k.transpose(-2, -1)))

``spikeforge.tools.energy`` registers a listener for the duration of one estimate (``listening``); the
innermost listener receives every report. Nothing here imports anything above spikeforge.nn.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional

import torch
from torch import Tensor, nn

__all__ = ["EnergyOp", "matmul_op", "report_op", "estimating", "listening"]


class EnergyOp(NamedTuple):
    """One operation a module reports through ``energy_ops`` or ``report_op``.

    name: label inside the module ("q@kT"; "" for the module itself). macs: dense multiply-accumulates
    this call performed, over all its rows (every step and sample of the call). operand: the tensor whose
    non-zeros drive the accumulates; rate, kind and steps are measured from it. Without an operand give
    kind ("spikes" | "counts" | "real") and, for spikes or counts, rate (mean value per input element).
    steps: time steps this call covered per sample (None: inferred from the operand's leading dimensions,
    or T without an operand).
    """

    name: str
    macs: float
    operand: Optional[Tensor] = None
    kind: Optional[str] = None
    rate: Optional[float] = None
    steps: Optional[int] = None


def _prod(xs) -> int:
    p = 1
    for v in xs:
        p *= int(v)
    return p


def matmul_op(name: str, a: Tensor, b: Tensor, operand: Optional[Tensor] = None) -> EnergyOp:
    """The EnergyOp of ``a @ b`` (batched, broadcasting): output elements x the shared dimension MACs.
    operand: the tensor whose non-zeros drive the accumulates (default a, e.g. the spike queries)."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"a and b must be torch.Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"a @ b needs a [..., n, k] and b [..., k, m], got {tuple(a.shape)} and {tuple(b.shape)}")
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    macs = _prod(batch) * a.shape[-2] * b.shape[-1] * a.shape[-1]
    return EnergyOp(name, float(macs), a if operand is None else operand)


# listeners of the estimates now running (innermost last); each has .reported(module, ops)
_LISTENERS: list = []


def estimating() -> bool:
    """True while an energy estimate runs: lets a module skip building EnergyOps otherwise."""
    return bool(_LISTENERS)


def report_op(module: nn.Module, *ops) -> None:
    """Reports EnergyOps from inside ``module``'s forward while an estimate runs; does nothing otherwise.

    The alternative to an ``energy_ops`` method that needs no tensors kept on the module. Outside an
    estimate the cost is one list check (matmul_op itself only multiplies shapes).
    """
    if _LISTENERS:
        _LISTENERS[-1].reported(module, ops)


@contextmanager
def listening(listener) -> Iterator[None]:
    """Routes report_op calls to ``listener.reported(module, ops)`` inside the block."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)
