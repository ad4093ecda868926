"""PSN-family benchmark: ``python bench/bench_psn.py [options]``.

The same as ``spikeforge bench psn [options]`` (spikeforge.tools.bench_psn); see bench/README.md.
"""
import sys

from spikeforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "psn", *sys.argv[1:]]))
