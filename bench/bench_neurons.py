"""Multi-step neuron benchmark: ``python bench/bench_neurons.py [options]``.

The same as ``spikeforge bench neurons [options]`` (spikeforge.tools.bench_neurons); see bench/README.md.
"""
import sys

from spikeforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "neurons", *sys.argv[1:]]))
