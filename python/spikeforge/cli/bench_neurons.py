"""``spikeforge bench neurons``, the main job: one training step (forward + backward) of a layer of LIF
neurons, spikeforge's fused kernel against a plain PyTorch loop and the peer libraries that are installed,
in about a minute. The full comparison (both backward modes, forward-only times, per-call overhead,
torch.compile at every T, JSON and plots) is ``spikeforge bench neurons --full`` (bench/bench_neurons.py).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Callable, Optional

import torch

from . import benchcore as bc
from ._common import UsageError, check_output_path, positive_float, positive_int

HELP = "the main job: fused LIF neurons against a PyTorch loop and the peer libraries (about a minute)"
DESCRIPTION = """\
Times one training step (forward + backward through time) of N LIF neurons over T time steps: spikeforge's
fused kernel against the same neuron written as a plain PyTorch loop, SpikingJelly and snnTorch (when
installed) and torch.compile of the loop (when its compiled kernels are cached: a cold compile takes from
20 s to minutes on a small CPU; --compile compiles anyway). Medians of repeated runs, all contenders
timed round-robin in one process. How it is measured: docs/benchmarks.md."""

TAU, V_TH, V_RESET, ALPHA = 2.0, 1.0, 0.0, 4.0  # SpikingJelly's LIF defaults, spikeforge's too
OPTIONS = dict(tau=TAU, v_threshold=V_TH, v_reset=V_RESET, decay_input=True, detach_reset=False,
               surrogate="sigmoid", alpha=ALPHA)
BYTES_PER_ELEMENT_STEP = 5  # forward+backward minimum: read x, write s; read grad_s, saved x, write grad_x
# torch.compile rows from the cache take 1-3 s each; once compiling has taken this long in a run (the cache
# missed), the remaining rows are left out instead of compiling for minutes (--compile compiles them all)
COMPILE_BUDGET_S = 15.0


def add_arguments(p) -> None:
    p.add_argument("--T", type=positive_int, nargs="+", default=None, metavar="T",
                   help="time steps, one row each (default: 4 8 32; --quick: 4)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="neurons per time step (default: 2^20 on CPU, 2^22 on a GPU; --quick: 2^14)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when torch sees a GPU, else cpu (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads on CPU (default: torch's own, the number a training job gets)")
    p.add_argument("--time-budget", type=positive_float, default=1.5, metavar="SECONDS",
                   help="timing budget per contender and row: a slow one gets fewer repetitions, at least 2 "
                        "(default: %(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="time torch.compile of the loop even when its kernels are not cached (slow the first time)")
    p.add_argument("--no-peers", action="store_true", help="leave out SpikingJelly and snnTorch")
    p.add_argument("--quick", action="store_true", help="T=4, 2^14 neurons: a smoke test in seconds")
    p.add_argument("--no-thp", action="store_true",
                   help="run in the process's own memory settings (by default the run restarts itself with "
                        "PyTorch's huge pages and glibc malloc keeping freed memory, the settings docs/benchmarks.md "
                        "recommends for CPU training; they speed up every contender, the eager loops most)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")


# ------------------------------------------------------------------------------------------------
# contenders: each builds f(x) -> spikes; forward + backward is autograd.grad(f(x), x, grad)
# ------------------------------------------------------------------------------------------------
def _spikeforge():
    from .. import ops

    return lambda x: ops.lif(x, **OPTIONS)[0]


def _reference():
    from .. import reference

    return lambda x: reference.lif(x, **OPTIONS)[0]


def _compiled():
    torch._dynamo.reset()  # one graph per row: no recompilation limit, no dynamic shapes
    return torch.compile(_reference(), dynamic=False)


def _spikingjelly():
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)  # SJ probes for Triton at import
    from spikingjelly.activation_based import neuron, surrogate

    node = neuron.LIFNode(tau=TAU, decay_input=True, v_threshold=V_TH, v_reset=V_RESET, detach_reset=False,
                          surrogate_function=surrogate.Sigmoid(alpha=ALPHA), step_mode="m")

    def run(x):
        node.reset()
        return node(x)
    return run


def _snntorch():
    import snntorch as snn
    from snntorch import surrogate

    leaky = snn.Leaky(beta=1.0 - 1.0 / TAU, threshold=V_TH, spike_grad=surrogate.sigmoid(slope=ALPHA),
                      reset_mechanism="zero")

    def run(x):
        leaky.to(x.device)
        mem = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            s, mem = leaky(x[t], mem)
            out.append(s)
        return torch.stack(out)
    return run


def contenders(args) -> list:
    """(key, label, builder, why it is absent or None) in table order."""
    rows = [("spikeforge", "spikeforge", _spikeforge, None), ("reference", "PyTorch loop", _reference, None)]
    if not args.no_peers:
        for key, dist, label, build in (("spikingjelly", "spikingjelly", "SpikingJelly", _spikingjelly),
                                        ("snntorch", "snntorch", "snnTorch", _snntorch)):
            version = bc.dist_version(dist)
            why = None if version and bc.installed(dist) else f"not installed (pip install {dist})"
            rows.append((key, f"{label} {version}" if version else label, build, why))
    rows.append(("torch.compile", "torch.compile(loop)", _compiled, None))
    return rows


# ------------------------------------------------------------------------------------------------
# the torch.compile cache record: which rows compiled before with this torch (inductor caches the kernels)
# ------------------------------------------------------------------------------------------------
def _cache_file() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "spikeforge", "bench_neurons_compiled.json")


def _compile_key(T: int, n: int, device: torch.device) -> str:
    # the compiled graph's cache entries depend on torch and on where the traced code lives (another install
    # of spikeforge compiles afresh), so both are part of the key
    from .. import reference

    return f"torch {torch.__version__} {os.path.dirname(reference.__file__)} {device.type} lif T={T} n={n} float32"


def _inductor_cache() -> Optional[str]:
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        return cache_dir()
    except Exception:  # noqa: BLE001 - another torch version: no cache knowledge, so no cached rows
        return None


def _compiled_before() -> dict:
    """{row key: compile seconds} of rows compiled before whose inductor cache is still on disk."""
    try:
        with open(_cache_file(), encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(d, dict):
        return {}
    # a wiped cache (a cleaned /tmp) means a cold compile again: forget those rows
    return {k: v for k, v in d.items() if isinstance(v, dict) and v.get("cache") and os.path.isdir(v["cache"])
            and os.listdir(v["cache"])}


def _remember_compile(key: str, seconds: float) -> None:
    d = _compiled_before()
    d[key] = {"compile_s": round(seconds, 1), "cache": _inductor_cache()}
    try:
        os.makedirs(os.path.dirname(_cache_file()), exist_ok=True)
        with open(_cache_file(), "w", encoding="utf-8") as f:
            json.dump(d, f, indent=1)
    except OSError:
        pass  # a read-only home: the next run simply does not know


# ------------------------------------------------------------------------------------------------
# progress: one bar on a terminal (stderr), nothing otherwise (the table follows on stdout)
# ------------------------------------------------------------------------------------------------
class _Progress:
    def __init__(self, rows: int):
        self.rows, self.row, self.t0 = rows, 0, time.perf_counter()
        self.live = sys.stderr.isatty()

    def update(self, what: str, done: int = 0, total: int = 1) -> None:
        if not self.live:
            return
        frac = (self.row + min(1.0, done / max(1, total))) / max(1, self.rows)
        w = 24
        fill = int(w * frac)
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (w - fill)}] {100 * frac:3.0f}% "
                         f"{time.perf_counter() - self.t0:4.0f} s  {what:<36.36}")
        sys.stderr.flush()

    def next_row(self) -> None:
        self.row += 1

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


# ------------------------------------------------------------------------------------------------
# one row (one T)
# ------------------------------------------------------------------------------------------------
def _fwd_bwd(f: Callable, x: torch.Tensor, g: torch.Tensor):
    return lambda: torch.autograd.grad(f(x), [x], g)


def run_row(T: int, n: int, device: torch.device, rows: list, args, timer: bc.Timer, bw: bc.Bandwidth,
            progress: _Progress) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, n, generator=gen).to(device).requires_grad_(True)
    g = torch.randn(T, n, generator=gen).to(device)
    compiled = _compiled_before()
    out = {"T": T, "n": n, "cells": {}}
    fns = {}
    for key, label, build, why in rows:
        cell = out["cells"][key] = {"label": label}
        if why:
            cell["status"] = why
            continue
        if key == "torch.compile" and not args.compile:
            if _compile_key(T, n, device) not in compiled:
                cell["status"] = "not cached"
                continue
            if args.compile_spent_s > COMPILE_BUDGET_S:  # the cache did not serve the earlier rows
                cell["status"] = "not timed (compiling was slow)"
                continue
        try:
            f = build()
            if key == "torch.compile":  # compile outside the timing; the warm-up of side_by_side follows
                progress.update(f"T={T}: compiling the loop")
                t0 = time.perf_counter()
                _fwd_bwd(f, x, g)()
                cell["compile_s"] = time.perf_counter() - t0
                args.compile_spent_s += cell["compile_s"]
                _remember_compile(_compile_key(T, n, device), cell["compile_s"])
            fns[key] = _fwd_bwd(f, x, g)
        except Exception as e:  # noqa: BLE001 - a contender that fails is reported, not fatal
            cell["status"] = f"failed: {bc.error_text(e, 80)}"
    fns["copy"] = bw.fn
    # a slow contender (an eager loop at T=32 on a busy machine: seconds per step) gets 2 timed steps, so the
    # main job stays near a minute there too
    res = bc.side_by_side(fns, timer, reps=7, warmup=1, time_budget_s=args.time_budget, min_reps=2,
                          progress=lambda done, total: progress.update(f"T={T}: timing", done, total))
    progress.next_row()
    bw.add(res.pop("copy").samples)
    for key, r in res.items():
        cell = out["cells"][key]
        if r.error:
            cell["status"] = f"failed: {r.error}"
        else:
            cell["ms"], cell["samples_ms"] = r.median, r.samples
    sf = out["cells"]["spikeforge"].get("ms")
    for cell in out["cells"].values():
        if cell.get("ms") and sf:
            cell["x_spikeforge"] = cell["ms"] / sf
    out["bytes"] = BYTES_PER_ELEMENT_STEP * 4 * T * n
    return out


def _cell(cell: dict, key: str) -> str:
    if key == "spikeforge":
        return f"{cell['ms']:.2f} ms" if cell.get("ms") else cell.get("status", "n/a")
    if cell.get("x_spikeforge"):
        return f"{cell['x_spikeforge']:.1f}x"
    return cell.get("status", "n/a")


def _versus(xs: list, label: str) -> str:
    """'4.1-5.7x faster than L', '2.0x slower than L', 'about as fast as L' (0.9-1.1x) or 'between 1.7x slower
    and 8.2x faster than L'."""
    lo, hi = min(xs), max(xs)

    def rng(a, b):
        return f"{a:.1f}x" if abs(b - a) < 0.05 * a else f"{a:.1f}-{b:.1f}x"

    if lo >= 1.0:
        return f"{rng(lo, hi)} faster than {label}"
    if hi <= 1.0:
        return f"{rng(1 / hi, 1 / lo)} slower than {label}"
    if lo >= 0.9 and hi <= 1.1:
        return f"about as fast as {label}"
    return f"between {1 / lo:.1f}x slower and {hi:.1f}x faster than {label}"


def summary_line(results: list, labels: dict) -> str:
    parts = []
    for key in ("reference", "spikingjelly", "snntorch", "torch.compile"):
        xs = [r["cells"][key]["x_spikeforge"] for r in results if r["cells"].get(key, {}).get("x_spikeforge")]
        if xs:
            name = "the same neuron written as a PyTorch loop" if key == "reference" else labels[key]
            parts.append(_versus(xs, name))
    if not parts:
        return "In short: no baseline ran; see the table."
    return ("In short: for one training step of a layer of spiking neurons, spikeforge is "
            + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] + ".")


def check_args(args) -> None:
    """The checks that need no measurement (before the run restarts itself with other memory settings)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no GPU; use --device cpu")
    if args.json:
        check_output_path("--json", args.json)


def run(args) -> int:
    check_args(args)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    Ts = args.T or ([4] if args.quick else [4, 8, 32])
    n = args.n or ((1 << 14) if args.quick else ((1 << 22) if device.type == "cuda" else (1 << 20)))
    rows = contenders(args)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{bc.cpu_model()}, {torch.get_num_threads()} threads"
    print(f"spikeforge bench neurons: LIF neurons, one training step (forward + backward) of {n:,} neurons "
          f"x T steps, float32, on {machine}", flush=True)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # before this run adds to it
    timer = bc.Timer(device)
    bw = bc.Bandwidth(device)
    bw.measure(timer, reps=5)
    progress = _Progress(len(Ts))
    args.compile_spent_s = 0.0
    results = []
    try:
        for T in Ts:
            results.append(run_row(T, n, device, rows, args, timer, bw, progress))
    finally:
        progress.close()
    labels = {key: label for key, label, _, _ in rows}
    from ..tools._text import format_table

    # peers that are not installed get a note instead of a column
    absent = [k for k, _, _, why in rows if why]
    shown = [k for k, _, _, why in rows[1:] if not why]
    head = ["T", "spikeforge", "% of memory bw"] + [labels[k] for k in shown]
    table = []
    for r in results:
        sf = r["cells"]["spikeforge"]
        frac = bc.gbps(r["bytes"], sf.get("ms")) / bw.gbps if sf.get("ms") and bw.gbps else None
        table.append([str(r["T"]), _cell(sf, "spikeforge"), "n/a" if frac is None else f"{100 * frac:.0f}%"]
                     + [_cell(r["cells"][k], k) for k in shown])
    print()
    print(format_table(head, table))
    print()
    print(summary_line(results, labels))
    notes = ["columns after the first two: how many times longer the contender takes than spikeforge "
             "(> 1: spikeforge is faster); ratios depend on the CPU / GPU and on what else runs on it",
             f"% of memory bw: spikeforge's minimum traffic ({BYTES_PER_ELEMENT_STEP} x 4 bytes per neuron and "
             f"step) over the {bw.gbps or 0:.1f} GB/s of a memory copy measured in this run"]
    if absent:
        notes.append(f"{' and '.join(labels[k] for k in absent)}: not installed, so not compared (pip install "
                     f"{' '.join(k for k in absent)} adds {'them' if len(absent) > 1 else 'it'})")
    if "snntorch" in labels and any(r["cells"]["snntorch"].get("ms") for r in results):
        notes.append("snnTorch's Leaky differs slightly (unscaled input, reset one step late): same cost, "
                     "not the same spikes")
    if any(r["cells"]["torch.compile"].get("status", "").startswith("not timed") for r in results):
        notes.append(f"torch.compile: its cached kernels did not serve this run (compiling took "
                     f"{args.compile_spent_s:.0f} s), so the larger T were not compiled; --compile compiles them")
    if any(r["cells"]["torch.compile"].get("status") == "not cached" for r in results):
        notes.append("torch.compile: not timed, its kernels are not cached yet (a cold compile takes from 20 s "
                     "to minutes here); --compile compiles them, and later runs include it")
    compile_s = [f"T={r['T']} {r['cells']['torch.compile']['compile_s']:.0f} s" for r in results
                 if r["cells"]["torch.compile"].get("compile_s")]
    if compile_s:
        notes.append("torch.compile's compile time (not in the ratios): " + ", ".join(compile_s))
    if os.environ.get(bc.THP_ENV) is not None:
        notes.append(f"memory settings: {bc.THP_ENV}={os.environ[bc.THP_ENV]} "
                     + " ".join(f"{k}={os.environ.get(k)}" for k in bc.MALLOC_ENV)
                     + " (huge pages; freed memory kept for reuse); --no-thp runs without them")
    else:
        notes.append("memory settings: the process's defaults (--no-thp); on some machines the eager loops run "
                     "many times slower like this, every fresh tensor faulting in new pages")
    notes.append("the full comparison (forward-only times, both backward modes, overhead, JSON, plots): "
                 "spikeforge bench neurons --full, from a source checkout")
    cores = os.cpu_count() or 1
    if device.type == "cpu" and load_start is not None and load_start > 0.5 * cores + 0.5:
        notes.append(f"the machine was busy before the run (load average {load_start:.1f} on {cores} cores): other "
                     "programs competed for the cores and the memory, so these numbers are noisy; run again when "
                     "it is idle")
    wall = time.perf_counter() - t_start
    for line in notes:
        print(f"  - {line}")
    print(f"  ({wall:.0f} s)")
    if args.json:
        data = {"benchmark": "neurons (main job)", "device": str(device), "machine": machine,
                "memory_settings": {k: os.environ.get(k) for k in (bc.THP_ENV, *bc.MALLOC_ENV)},
                "torch": torch.__version__, "threads": torch.get_num_threads(), "options": OPTIONS,
                "n": n, "copy_gbps": bw.gbps, "rows": results, "summary": summary_line(results, labels),
                "load_average_start": load_start,
                "run_time_s": wall}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0
