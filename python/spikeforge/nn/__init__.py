"""Multi-step modules over spikeforge.ops (input [T, B, ...]; reset() clears state)."""
from .neuron import IF, LIF, PLIF, reset_net  # noqa: F401
from .psn import PSN, MaskedPSN, SlidingPSN, set_masked_psn_lambda  # noqa: F401
from .spike import SpikeConv2d, SpikeLinear  # noqa: F401

__all__ = ["LIF", "IF", "PLIF", "reset_net", "PSN", "MaskedPSN", "SlidingPSN", "set_masked_psn_lambda",
           "SpikeLinear", "SpikeConv2d"]
