"""The ``spikeforge`` command line (also ``python -m spikeforge``).

    spikeforge info                      what was built, devices, peer libraries
    spikeforge bench neurons             the main job: fused neurons against the baselines, about a minute
    spikeforge bench TARGET --help       neurons --full, psn, spikes, models, attention (bench/ of a checkout)
    spikeforge train [options]           train a zoo model (default: sew_resnet18_cifar on the shipped digits)
    spikeforge energy [options]          per-layer firing rates, SOPs, MACs and energy (mJ) of a zoo model
    spikeforge tune                      measure this CPU's spike_linear / spike_conv2d crossovers for mode="auto"

One module per subcommand (info, bench, train, energy, tune), each with HELP, ``add_arguments(parser)`` and
``run(args) -> int``. A subcommand reports a bad command line or input file by raising
``UsageError``: printed as one argparse-style line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from ._common import UsageError

__all__ = ["main", "build_parser", "UsageError"]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _subcommand(sub, name: str, mod, formatter=argparse.RawDescriptionHelpFormatter):
    p = sub.add_parser(
        name,
        help=mod.HELP,
        description=getattr(mod, "DESCRIPTION", mod.HELP),
        epilog=getattr(mod, "EPILOG", None),
        formatter_class=formatter,
    )
    mod.add_arguments(p)
    p.set_defaults(func=mod.run)
    return p


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import bench, energy, info, train, tune

    p = _Parser(
        prog="spikeforge",
        description="spikeforge: fused CPU/CUDA kernels for training spiking neural "
        "networks, as PyTorch ops. Start with `spikeforge bench neurons`.",
    )
    p.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _subcommand(sub, "info", info)
    bench.add_parser(sub)
    _subcommand(sub, "train", train)
    _subcommand(sub, "energy", energy)
    _subcommand(sub, "tune", tune)
    return p


def _command_name(argv: list) -> str:
    """'spikeforge train', 'spikeforge bench neurons': the words before the first option."""
    words = []
    for a in argv:
        if a.startswith("-") or len(words) == (2 if words[:1] == ["bench"] else 1):
            break
        words.append(a)
    return " ".join(["spikeforge", *words])


def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # argparse's own errors: one line, exit status 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    prog = _command_name(argv)
    if unknown and getattr(args, "full", None) is None:  # (bench neurons --full takes the rest itself)
        # the subcommand's own words: `spikeforge energy --bogus` was blamed on `spikeforge`
        print(f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)", file=sys.stderr)
        return 2
    args.argv = argv  # for a benchmark that re-runs itself with other process settings
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (spikeforge info | head): nothing left to say
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except Exception as e:  # noqa: BLE001 - no traceback for a user; SPIKEFORGE_DEBUG=1 shows it
        if os.environ.get("SPIKEFORGE_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"{prog}: error: {type(e).__name__}: {first} (SPIKEFORGE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
