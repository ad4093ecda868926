"""Multi-step modules over spikeforge.ops."""
