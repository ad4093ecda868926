"""Functional, autograd-aware, torch.compile-safe ops. Custom ops live under torch.ops.spikeforge.

One module per op family; this is the only package that runs the native module's kernels (spikeforge._C;
cli/info.py and testing.py only ask it what was built).
"""

from .attention import qk_channel_attention, qk_token_attention, sdsa, ssa  # noqa: F401
from .neuron import (
    alif,
    alpha_neuron,
    counts_to_binary,
    if_neuron,
    if_step,
    ilif,
    leaky,
    lif,  # noqa: F401
    lif_step,
    norse_lif,
    plif,
    plif_step,
    synaptic,
    ternary_lif,
)
from .psn import masked_psn, psn, psn_window_step, sliding_psn  # noqa: F401
from .spike import PackedSpikes, pack_spikes, spike_conv2d, spike_linear, spike_stats, unpack_spikes  # noqa: F401

__all__ = [
    "lif",
    "if_neuron",
    "plif",
    "lif_step",
    "if_step",
    "plif_step",
    "alif",
    "ilif",
    "ternary_lif",
    "counts_to_binary",
    "leaky",
    "synaptic",
    "alpha_neuron",
    "norse_lif",
    "psn",
    "masked_psn",
    "sliding_psn",
    "psn_window_step",
    "spike_linear",
    "spike_conv2d",
    "pack_spikes",
    "unpack_spikes",
    "PackedSpikes",
    "spike_stats",
    "ssa",
    "sdsa",
    "qk_token_attention",
    "qk_channel_attention",
]
