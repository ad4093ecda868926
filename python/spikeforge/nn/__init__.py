"""Multi-step modules over spikeforge.ops (input [T, B, ...]). Stateful modules keep their state, with its
autograd graph, between calls; detach() / detach_net(model) cuts the graph, reset() / reset_net(model) clears
the state."""

from .neuron import ALIF, IF, ILIF, LIF, PLIF, NorseLIF, TernaryLIF, detach_net, reset_net  # noqa: F401
from .psn import PSN, MaskedPSN, SlidingPSN, set_masked_psn_lambda  # noqa: F401
from .spike import SpikeConv2d, SpikeLinear  # noqa: F401
from .layers import (
    TEBN,
    DirectEncoder,
    MultiStep,
    PoissonEncoder,
    SeqBatchNorm2d,
    TdBatchNorm2d,  # noqa: F401
    TETLoss,
    direct_encode,
    poisson_encode,
    seq_apply,
    tet_loss,
)
from .attention import (
    SDSA,
    SPS,
    SSA,
    QKChannelAttention,
    QKTokenAttention,
    RepConv,  # noqa: F401
    SpikeCountConv2d,
    SpikingMLP,
)

__all__ = [
    "LIF",
    "IF",
    "PLIF",
    "ALIF",
    "ILIF",
    "TernaryLIF",
    "NorseLIF",
    "reset_net",
    "detach_net",
    "PSN",
    "MaskedPSN",
    "SlidingPSN",
    "set_masked_psn_lambda",
    "SpikeLinear",
    "SpikeConv2d",
]
__all__ += [
    "SeqBatchNorm2d",
    "TdBatchNorm2d",
    "TEBN",
    "MultiStep",
    "seq_apply",
    "DirectEncoder",
    "PoissonEncoder",
    "direct_encode",
    "poisson_encode",
    "TETLoss",
    "tet_loss",
]
__all__ += ["SSA", "SDSA", "QKTokenAttention", "QKChannelAttention", "SpikingMLP", "SPS", "RepConv", "SpikeCountConv2d"]
