"""Model zoo: functions returning nn.Modules built from spikeforge.nn (shared/API.md names).

Residual families (models/resnet.py): spiking_resnet18/34/50/101/152, sew_resnet18/34/50/101/152 (cnf
"ADD" | "AND" | "IAND"), ms_resnet18/34/104, each with a CIFAR-sized ``*_cifar`` variant. ``MODELS`` maps
every name to its constructor (the training CLI's --model choices).
"""
from . import resnet  # noqa: F401
from .resnet import MODELS, SpikingResNet, make_neuron  # noqa: F401
from .resnet import *  # noqa: F401,F403

__all__ = ["MODELS", "SpikingResNet", "make_neuron"] + sorted(resnet.MODELS)


def get_model(name: str, **kwargs):
    """Builds a zoo model by name (a key of MODELS)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


__all__.append("get_model")
