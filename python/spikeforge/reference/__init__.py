"""Plain-PyTorch implementations of the ops' arithmetic (neurons, PSN, spike layers, attention; the packing
ops have bit-level twins, pack_bits / unpack_bits): the ground truth for tests, the fallback when the native
module lacks a device, and the backend of modules and models built with backend="reference"."""

from .neuron import (
    alif,
    alpha_neuron,
    if_neuron,
    if_step,
    ilif,
    leaky,
    lif,
    lif_step,
    neuron_from_options,  # noqa: F401
    norse_lif,
    plif,
    plif_step,
    synaptic,
    ternary_lif,
)
from .surrogate import SURROGATES, spike_fn, surrogate_grad  # noqa: F401
from .psn import band_mask, masked_psn, masked_weight, psn, sliding_psn  # noqa: F401,E402
from .spike import pack_bits, spike_conv2d, spike_linear, unpack_bits  # noqa: F401,E402
from .attention import qk_channel_attention, qk_token_attention, sdsa, ssa  # noqa: F401,E402
