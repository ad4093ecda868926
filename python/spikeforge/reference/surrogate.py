"""Surrogate gradients for the reference implementations: the table and formulas live in
spikeforge.surrogate (shared with spikeforge.ops). SURROGATES here is the SpikingJelly set that every op
family accepts."""

from __future__ import annotations

from ..surrogate import SPIKINGJELLY_SURROGATES as SURROGATES  # noqa: F401
from ..surrogate import spike_fn, surrogate_grad  # noqa: F401
