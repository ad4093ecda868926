"""Tools behind the ``spikeforge`` command line: benchmarks (``bench_*``) and their shared helpers.

A benchmark target is one module ``spikeforge.tools.bench_<name>`` with ``add_arguments(parser)``
and ``run(args) -> int``, registered by one line in ``spikeforge.cli.BENCH_TARGETS``.
"""
