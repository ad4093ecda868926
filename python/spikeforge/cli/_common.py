"""What every ``spikeforge`` subcommand shares: one-line usage errors and the checks behind them.

A subcommand raises ``UsageError("...")``; ``spikeforge.cli.main`` prints it argparse-style
(``spikeforge train: error: ...`` on stderr) and exits with status 2, so no traceback reaches a user.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import tempfile


class UsageError(Exception):
    """A bad command line or input file: printed as one line, exit status 2."""


def _int_at_least(text: str, minimum: int) -> int:
    """argparse type body: an int >= minimum."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def thread_count(text: str) -> int:
    """argparse type: an int >= 1 and at most 4x the CPUs this process may use (torch.set_num_threads of a
    number far past that crashed torch 2.13, a segmentation fault with no message)."""
    v = positive_int(text)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if v > 4 * cpus:
        raise argparse.ArgumentTypeError(f"at most 4 x the {cpus} CPUs this process may use ({4 * cpus}), got {v}")
    return v


def _finite_float(text: str, bound: str, ok) -> float:
    """argparse type body: a finite float for which ok(v) holds; bound says which ("> 0", ">= 0")."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
    if not (ok(v) and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
    return v


def non_negative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    return _finite_float(text, ">= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    return _finite_float(text, "> 0", lambda v: v > 0)


def seed(text: str) -> int:
    """argparse type: a random seed, an int in [0, 2^32) (larger ones overflowed torch's generators mid-run)."""
    v = _int_at_least(text, 0)
    if v >= 2**32:
        raise argparse.ArgumentTypeError(f"must be < 2^32, got {v}")
    return v


def unknown_name(kind: str, name: str, choices) -> UsageError:
    """'unknown model 'x' (did you mean 'y'?); one of: a, b, c'."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"unknown {kind} {name!r}{hint}; one of: {', '.join(choices)}")


def check_output_path(option: str, path: str, *, others: tuple = ()) -> None:
    """A file the command will write, checked before any work starts: its folder exists and takes a new file
    (a probe file is created and removed: a read-only folder or /proc fails here, not after an hour of
    training), the path is not a folder and, where it exists, a regular file (the writers replace the path:
    `--checkpoint /dev/null` would replace the device node), and it is none of `others` ((option, path) of
    the files the command reads or writes besides: `--json` naming the `--checkpoint` replaced the model)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; give a file path")
    if os.path.exists(path) and not os.path.isfile(path):
        raise UsageError(f"{option} {path}: exists and is not a regular file (a device, pipe or socket)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".spikeforge-probe-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write in {folder} ({e.strerror or e})") from None
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: the file is not writable")
    from ..train import same_file

    for other_option, other in others:
        if other and same_file(path, other):
            raise UsageError(f"{option} {path}: the same file as {other_option}; give another path")


def write_text_atomic(path: str, text: str) -> None:
    """Writes text to path through a temporary file in the same folder and a rename: a failure (a full disk,
    a file size limit) leaves the old file, or none, and no partial one; the temporary file is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # (mkstemp's file is private: the usual mode of a new file instead)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_device(option: str, device: str) -> str:
    """cpu, cuda or cuda:N, and CUDA only where torch sees a GPU."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {device!r}: not a device (cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"{option} {device!r}: spikeforge runs on cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "torch sees no GPU"
            raise UsageError(f"{option} {device}: {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{option} {device}: only {torch.cuda.device_count()} GPU(s) visible")
    return device
