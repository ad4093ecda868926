"""spikeforge: fused CPU/CUDA kernels for training deep spiking neural networks.

Layers: ``spikeforge.ops`` (functional custom ops with autograd), ``spikeforge.reference``
(plain-PyTorch ground truth), ``spikeforge.nn`` (multi-step modules), ``spikeforge.models`` (the model zoo),
``spikeforge.tools`` (energy, firing-rate monitor), ``spikeforge.data`` (shipped datasets);
``spikeforge.interop`` (NIR, SpikingJelly and snnTorch drop-ins) is imported by name.
"""

from ._native import native, native_error  # noqa: F401

__version__ = "0.1.0"

from . import ops, reference, nn  # noqa: E402,F401
from . import models, data, tools  # noqa: E402,F401  (model zoo; shipped datasets; energy, monitor, benchmarks)

__all__ = ["ops", "reference", "nn", "models", "data", "tools", "__version__"]
