"""``spikeforge bench``: the main job (``bench neurons``) from the installed package; every other benchmark
from the bench/ folder of a source checkout.

Where the code lives, and why: ``spikeforge bench neurons`` is the first command a new user runs after
``pip install``, so its runner (spikeforge.cli.bench_neurons: the headline table in about a minute) and the
timing core it needs (spikeforge.cli.benchcore) are installed. The full harness (``bench neurons --full``,
``bench psn | spikes | models | attention``: every column, JSON, plots) is benchmark code, not library
code: it lives in bench/ (bench/benchlib.py plus one bench_<family>.py per family) and is found at run time:
$SPIKEFORGE_BENCH_DIR, else the checkout the package was imported from, else ./bench.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Optional

from ._common import UsageError

HELP = "benchmarks: `bench neurons` is the main job (about a minute); more targets from a checkout's bench/"
FULL_TARGETS = ("neurons", "psn", "spikes", "models", "attention")
_BENCH_DIR_ENV = "SPIKEFORGE_BENCH_DIR"


def find_bench_dir() -> Optional[str]:
    """The folder holding benchlib.py and the bench_<family>.py scripts, or None (a plain pip install)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../spikeforge
    candidates = [
        os.environ.get(_BENCH_DIR_ENV),
        os.path.join(here, os.pardir, os.pardir, "bench"),  # <checkout>/python/spikeforge
        os.path.join(os.getcwd(), "bench"),
    ]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "benchlib.py")):
            return os.path.abspath(c)
    return None


def load_target(name: str):
    """The module bench/bench_<name>.py of the checkout (UsageError when there is no bench/ folder)."""
    d = find_bench_dir()
    if d is None:
        raise UsageError(
            f"`spikeforge bench {name}{' --full' if name == 'neurons' else ''}` runs the scripts in the "
            "bench/ folder of a spikeforge source checkout: run it from the checkout, or set "
            f"{_BENCH_DIR_ENV}=/path/to/spikeforge/bench"
        )
    if d not in sys.path:
        sys.path.insert(0, d)
    return importlib.import_module(f"bench_{name}")


def _target_help(name: str) -> str:
    return {
        "psn": "parallel spiking neurons (PSN, masked, sliding) against the reference, GEMM, peers",
        "spikes": "event-driven spike_linear / spike_conv2d against dense torch: the crossover firing rate",
        "models": "one training step of a zoo model: time and memory saved for backward, by layer kind",
        "attention": "spiking attention ops (SSA, SDSA, QK attention) against the torch-op composition",
    }[name]


def add_parser(sub) -> None:
    from . import bench_neurons

    pb = sub.add_parser(
        "bench",
        help=HELP,
        description=(
            "Benchmarks. `spikeforge bench neurons` is the main job (about a minute, from any install). The other "
            "targets and `bench neurons --full` run the scripts in the bench/ folder of a source checkout "
            "(found from the checkout, the current folder or $SPIKEFORGE_BENCH_DIR). How spikeforge is measured: "
            "docs/benchmarks.md."
        ),
    )
    targets = pb.add_subparsers(dest="target", metavar="TARGET", parser_class=type(pb))
    pn = targets.add_parser(
        "neurons",
        help=bench_neurons.HELP,
        description=bench_neurons.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_neurons.add_arguments(pn)
    pn.add_argument(
        "--full",
        nargs=argparse.REMAINDER,
        default=None,
        metavar="OPTIONS",
        help="the full comparison instead (every column, both backward modes, per-call overhead, "
        "torch.compile at every T, --json/--plot): bench/bench_neurons.py of a checkout; the "
        "options after --full are its own (spikeforge bench neurons --full --help)",
    )
    pn.set_defaults(func=_run_neurons)
    lib = _benchlib()
    for name in FULL_TARGETS[1:]:
        mod = _module(f"bench_{name}") if lib is not None else None
        if mod is None:  # no checkout: the target still shows in --help and says where it lives when run
            pt = targets.add_parser(name, help=_target_help(name) + " (needs a checkout's bench/)")
            pt.add_argument("options", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            pt.set_defaults(func=lambda args, n=name: load_target(n) and 0)
            continue
        pt = targets.add_parser(
            name, help=mod.HELP, description=(mod.__doc__ or "").strip().split("\n\n")[0], parents=[lib.common_parser()]
        )
        mod.add_arguments(pt)
        pt.set_defaults(func=_full_runner(mod))
    pb.set_defaults(func=lambda args: (pb.print_help(), 2)[1])


def _module(name: str):
    d = find_bench_dir()
    if d is None:
        return None
    if d not in sys.path:
        sys.path.insert(0, d)
    return importlib.import_module(name)


def _benchlib():
    return _module("benchlib")


def _check_outputs(args) -> None:
    """--json / --plot of a bench/ target, before it runs (they failed, or a chart was skipped, after the run)."""
    from ._common import check_output_path

    if getattr(args, "json", None):
        check_output_path("--json", args.json)
    if getattr(args, "plot", None):
        check_output_path("--plot", args.plot, others=(("--json", getattr(args, "json", None)),))
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError(f"--plot {args.plot}: needs matplotlib (pip install matplotlib)")


def _full_runner(mod):
    def run(args) -> int:
        _check_outputs(args)
        if not args.no_thp:
            from .benchcore import reexec_with_thp

            reexec_with_thp(args.argv)  # returns only when the huge-page settings are already in place
        return mod.run(args)

    return run


def _run_neurons(args) -> int:
    from . import bench_neurons

    if args.full is None:
        bench_neurons.check_args(args)
        if not args.no_thp:
            from .benchcore import reexec_with_thp

            reexec_with_thp(args.argv, quiet=True)  # the table's notes say so
        return bench_neurons.run(args)
    argv = list(args.argv)
    first = argv.index("neurons") + 1 if "neurons" in argv else 0
    before = argv[first : argv.index("--full")] if "--full" in argv else []
    if before:
        raise UsageError(
            f"{' '.join(before)}: options before --full are not used; give them after it "
            f"(spikeforge bench neurons --full {' '.join(before)})"
        )
    mod = load_target("neurons")
    from . import _Parser

    parser = _Parser(
        prog="spikeforge bench neurons --full",
        parents=[_benchlib().common_parser()],
        description=(mod.__doc__ or "").strip().split("\n\n")[0],
    )
    mod.add_arguments(parser)
    full_args = parser.parse_args(args.full)
    full_args.argv = args.argv
    return _full_runner(mod)(full_args)
