"""Model zoo: functions returning nn.Modules built from spikeforge.nn (the public model names).

Residual families (models/resnet.py): spiking_resnet18/34/50/101/152, sew_resnet18/34/50/101/152 (cnf
"ADD" | "AND" | "IAND"), ms_resnet18/34/104, each with a CIFAR-sized ``*_cifar`` variant.
Transformer families (models/transformer.py): spikformer_8_384/512/768, spikingformer_8_384/512/768,
sdt_8_384/512/768 (and sdt_6_512, sdt_10_512), meta_spikformer_15m/31m/55m, qkformer_hst_10_384/512/768,
CIFAR-sized spikformer_/spikingformer_{4_256,2_384,4_384}_cifar, sdt_2_512_cifar, qkformer_hst_4_384_cifar,
and the generic spikformer(depth, dim, ...), spikingformer, sdt, qkformer_hst.
Integer-spike transformer (models/sdt_v3.py): e_spikeformer_5m/10m/19m (E-SpikeFormer, Spike-driven
Transformer v3, I-LIF neurons) and the generic e_spikeformer(dims, ...); listed with the transformers.
``MODELS`` maps every name to its constructor (the training CLI's --model choices).
"""

from . import resnet, sdt_v3, transformer  # noqa: F401
from .resnet import MODELS as RESNET_MODELS
from .resnet import SpikingResNet, make_neuron  # noqa: F401
from .resnet import *  # noqa: F401,F403
from .transformer import TRANSFORMER_MODELS, MetaSpikformer, QKFormer, SpikformerNet  # noqa: F401
from .transformer import qkformer_hst, sdt, spikformer, spikingformer  # noqa: F401
from .transformer import *  # noqa: F401,F403
from .sdt_v3 import E_SPIKEFORMER_MODELS, ESpikeFormer, e_spikeformer  # noqa: F401
from .sdt_v3 import *  # noqa: F401,F403

# E-SpikeFormer is a transformer family of its own file: listed with the others (spikeforge train treats the
# entries of TRANSFORMER_MODELS as transformers)
TRANSFORMER_MODELS.update(E_SPIKEFORMER_MODELS)

MODELS = {**RESNET_MODELS, **TRANSFORMER_MODELS}

__all__ = [
    "MODELS",
    "SpikingResNet",
    "make_neuron",
    "SpikformerNet",
    "MetaSpikformer",
    "QKFormer",
    "spikformer",
    "spikingformer",
    "sdt",
    "qkformer_hst",
    "RESNET_MODELS",
    "TRANSFORMER_MODELS",
    "ESpikeFormer",
    "e_spikeformer",
]
__all__ += sorted(MODELS)


def get_model(name: str, **kwargs):
    """Builds a zoo model by name (a key of MODELS)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


__all__.append("get_model")
