"""Tools around the models and behind the ``spikeforge`` command line.

- ``energy(model, inputs)``: per-layer firing rates, MACs, SOPs and energy with the ANN-equivalent
  energy (tools/energy.py; ``EnergyOp`` is the opt-in for operations the hooks cannot see).
- ``FiringRateMonitor(model)``: per-layer firing rates over a run, a table and a PNG (tools/monitor.py).

``EnergyOp``, ``matmul_op``, ``report_op`` and ``estimating`` are defined in spikeforge.nn._accounting (the
modules report into it) and re-exported here. The command line is spikeforge.cli; the benchmarks live in
the source checkout's bench/ folder.

``spikeforge.tools.energy`` is the function (the module's names are imported from
``spikeforge.tools.energy`` by ``from ... import``, which reads the module, or re-exported here).
"""

from .energy import E_AC_PJ, E_MAC_PJ, EnergyOp, EnergyReport, LayerEnergy, energy, matmul_op  # noqa: F401
from .energy import estimating, report_op  # noqa: F401
from .monitor import FiringRateMonitor, LayerRate  # noqa: F401

__all__ = [
    "energy",
    "EnergyOp",
    "matmul_op",
    "report_op",
    "estimating",
    "EnergyReport",
    "LayerEnergy",
    "E_MAC_PJ",
    "E_AC_PJ",
    "FiringRateMonitor",
    "LayerRate",
]
