"""Model training-step benchmark: ``python bench/bench_models.py [options]``.

The same as ``spikeforge bench models [options]`` (spikeforge.tools.bench_models); see bench/README.md.
"""
import sys

from spikeforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "models", *sys.argv[1:]]))
