"""``spikeforge tune``: measures this machine's crossover firing rates of spike_linear / spike_conv2d on CPU and
keeps them in a cache file (ops.spike.tuned_cache_path()), which ``mode="auto"`` then uses on this machine.

Why: the event-driven kernels beat the dense torch op below a firing rate that depends on the CPU (its vector
width, caches, and how fast MKL's GEMM and convolution run there). The defaults (ops.spike.CROSSOVER) are the
lower of two machines' crossovers, so that auto takes the slower path on neither; on a machine where the event
path wins further, tuning lets auto take it there. The file holds one entry per machine, keyed by
ops.spike.machine_key(), so a home directory shared by different machines keeps each one's values.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Callable, Optional

from ._common import UsageError, positive_int, thread_count

HELP = "measure this CPU's spike_linear / spike_conv2d crossovers (about 20 s on 2 cores) for mode='auto'"
DESCRIPTION = __doc__.split("\n\n", 1)[0].replace("``", "`")
EPILOG = """The sweep: firing rates 1 2 5 10 15 20 30 40 %, event-driven against dense, forward and forward +
backward, on linear 4096 -> 4096 with 256 rows and conv 3x3 64 -> 64 on 32x32 maps with 32 images (--quick:
smaller layers, fewer repetitions, nothing saved: for trying the command). A layer's crossover is the highest
rate up to which the event path was at least 5% faster at every swept rate; None (the dense op always) when it
lost already at 1%. Conv maps of at most 16x16 pixels take the event path up to the higher of the tuned rate
and their own floor (ops.spike.CONV_CROSSOVER_SMALL_MAPS); a tuned None sends every conv to the dense op.
The entry is used at any thread count: tune again with --threads for another.
SPIKEFORGE_TUNED=0 ignores the file; --reset removes this machine's entry."""

RATES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
MARGIN = 1.05  # a win must be this clear: timing noise should not move the crossover up


def add_arguments(p) -> None:
    p.add_argument(
        "--quick", action="store_true", help="small layers and 2 repetitions: a smoke test in seconds (never saved)"
    )
    p.add_argument("--no-save", action="store_true", help="print the crossovers, leave the cache file as it is")
    p.add_argument("--reset", action="store_true", help="remove this machine's entry from the cache file and stop")
    p.add_argument("--threads", type=thread_count, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--reps", type=positive_int, default=None, help="timed repetitions per point (default 5)")


def _layers(quick: bool):
    """(name, builder(rate) -> (spikes, weight), event fn, dense fn) of the two swept layers (no bias)."""
    import torch
    import torch.nn.functional as F

    from .. import ops

    gen = torch.Generator().manual_seed(0)

    def linear(rate):
        rows, k = (32, 512) if quick else (256, 4096)
        return (torch.rand(rows, k, generator=gen) < rate).float(), torch.randn(k, k, generator=gen) / k**0.5

    def conv(rate):
        n, c, h = (4, 16, 16) if quick else (32, 64, 32)
        s = (torch.rand(n, c, h, h, generator=gen) < rate).float()
        return s, torch.randn(c, c, 3, 3, generator=gen) / (9 * c) ** 0.5

    return (
        ("linear", linear, lambda s, w: ops.spike_linear(s, w, mode="sparse"), F.linear),
        (
            "conv2d",
            conv,
            lambda s, w: ops.spike_conv2d(s, w, None, 1, 1, mode="sparse"),
            lambda s, w: F.conv2d(s, w, None, 1, 1),
        ),
    )


def _medians_ms(fns: list, reps: int) -> list:
    """Median ms of each function, timed alternately (one call of each per round) after one warm-up call each,
    so that a drift of the machine's speed during the sweep moves both sides of a comparison alike."""
    import statistics
    import time

    for fn in fns:
        fn()
    times: list = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(ts) for ts in times]


def _point(event: Callable, dense: Callable, s0, w0, reps: int) -> tuple:
    """(event forward, dense forward, event f+b, dense f+b) median ms at one firing rate."""
    import torch

    s, w = s0.clone().requires_grad_(), w0.clone().requires_grad_()
    gy = torch.randn(dense(s0, w0).shape, generator=torch.Generator().manual_seed(1))

    def no_grad(f):
        def run():
            with torch.no_grad():
                return f(s0, w0)

        return run

    def f_b(f):
        return lambda: torch.autograd.grad(f(s, w), (s, w), gy)

    ef, df = _medians_ms([no_grad(event), no_grad(dense)], reps)
    eb, db = _medians_ms([f_b(event), f_b(dense)], reps)
    return ef, df, eb, db


def _crossover(speedups: list) -> Optional[float]:
    """The highest rate of a run of wins (speedup >= MARGIN) starting at the lowest rate, or None."""
    best = None
    for rate, x in speedups:
        if x < MARGIN:
            break
        best = rate
    return best


def sweep(quick: bool, reps: int, log: Callable[[str], None]) -> dict:
    """{key: crossover} for ops.spike.TUNED_KEYS, and the measured points."""
    out, points = {}, []
    for name, build, event, dense in _layers(quick):
        fb, fwd = [], []
        for rate in RATES:
            s0, w0 = build(rate)
            ef, df, eb, db = _point(event, dense, s0, w0, reps)
            fwd.append((rate, df / ef))
            fb.append((rate, db / eb))
            points.append({"layer": name, "rate": rate, "event_ms": [ef, eb], "dense_ms": [df, db]})
            log(f"  {name:7s} {100 * rate:4g}%: forward {df / ef:5.2f}x, forward + backward {db / eb:5.2f}x dense")
        out[name], out[name + "_fwd"] = _crossover(fb), _crossover(fwd)
    return {"crossover": out, "points": points}


def _describe(values: dict) -> str:
    pct = lambda v: "dense always" if v is None else f"up to {100 * v:g}%"  # noqa: E731
    return "; ".join(f"{k} {pct(values[k])}" for k in values)


def _read(path: str) -> dict:
    from ..ops import spike as sp

    try:
        return sp.read_tuned_file(path)
    except ValueError as e:
        raise UsageError(f"{e}; remove it or set SPIKEFORGE_CACHE_DIR to another folder") from None


def _cannot_write(path: str, e: OSError) -> UsageError:
    return UsageError(f"cannot write {path}: {e.strerror or e}; set SPIKEFORGE_CACHE_DIR to a folder you can write")


def _update(path: str, change: Callable[[dict], bool]) -> bool:
    """Reads the file, lets change(machines) edit this machine's entry (True: write the result) and writes it,
    holding an exclusive lock on PATH.lock throughout where the platform has one (fcntl): two machines that share
    a home folder and tune at the same time each keep their entry, since the file is read again after the sweep
    instead of being overwritten with what it held before it. -> what change returned."""
    lock_path = path + ".lock"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # non-blocking: a FIFO in the lock file's place is an error (ENXIO), not a wait for a reader
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as e:
        raise _cannot_write(lock_path, e) from None
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no fcntl (Windows), or a file system without locks: unlocked
            pass
        data = _read(path)
        changed = change(data["machines"])
        if changed:
            _write(path, data)
        return changed
    finally:
        os.close(fd)


def _write(path: str, data: dict) -> None:
    """Writes the file through a temporary one in the same folder (made by _update), so that a reader never
    sees half of it; a folder that cannot be written is a usage error."""
    import tempfile

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".crossover.", suffix=".tmp", dir=os.path.dirname(path) or ".")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _cannot_write(path, e) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def run(args) -> int:
    import torch

    from .. import __version__
    from ..ops import spike as sp

    path, key = sp.tuned_cache_path(), sp.machine_key()
    # a file that cannot be used stops the command before a sweep that it could not save
    present = key in _read(path)["machines"]
    if args.reset:
        given = (
            ("--quick", args.quick),
            ("--no-save", args.no_save),
            ("--reps", args.reps),
            ("--threads", args.threads),
        )
        ignored = [o for o, value in given if value not in (None, False)]
        if ignored:  # (they were accepted and ignored)
            raise UsageError(
                f"--reset removes the entry and stops: {' / '.join(ignored)} "
                f"{'does' if len(ignored) == 1 else 'do'} not apply with it"
            )
        # (no entry: nothing to write, not even the lock file)
        removed = present and _update(path, lambda machines: machines.pop(key, None) is not None)
        if not removed:
            print(f"no tuned crossovers for this machine in {path}")
        else:
            print(f"removed this machine's tuned crossovers from {path}; the defaults apply")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if sp.native is None:
        raise UsageError("the native module is not loaded (see `spikeforge info`): there are no event kernels to tune")
    reps = args.reps or (2 if args.quick else 5)
    print(f"spikeforge tune: {key}, {torch.get_num_threads()} threads{' (--quick)' if args.quick else ''}")
    result = sweep(args.quick, reps, lambda line: print(line, flush=True))
    values = result["crossover"]
    print(f"crossovers here: {_describe(values)}")
    print(f"defaults:        {_describe({k: sp.CROSSOVER_DEFAULTS['cpu'].get(k) for k in sp.TUNED_KEYS})}")
    if args.no_save or args.quick:
        print(
            "not saved (--quick is a smoke test: its small layers say nothing of real ones)"
            if args.quick
            else "not saved (--no-save)"
        )
        return 0
    entry = {
        "crossover": values,
        "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": torch.get_num_threads(),
        "quick": bool(args.quick),
        "spikeforge": __version__,
        "torch": torch.__version__,
        "points": result["points"],
    }

    def store(machines: dict) -> bool:
        machines[key] = entry
        return True

    _update(path, store)
    if sp.tuned_disabled():
        print(f"saved to {path}; SPIKEFORGE_TUNED is set to ignore the file: unset it for mode='auto' to use them")
        return 0
    sp.load_tuned_crossover(path)
    print(f"saved to {path}: mode='auto' uses them on this machine from the next import of spikeforge")
    return 0
