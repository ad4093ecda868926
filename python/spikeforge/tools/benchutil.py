"""Shared benchmark helpers: side-by-side timing, memory bandwidth, environment, tables, JSON, plots.

How spikeforge is measured (shared/BENCHMARKS.md): a claim is a ratio measured side by side in one
process, with medians of several repetitions after warm-up. ``side_by_side`` runs every contender
of a case round-robin (the starting contender rotates each round), so machine noise hits all of
them alike; CUDA timings use CUDA events after a synchronise.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

THP_ENV = "THP_MEM_ALLOC_ENABLE"
# glibc malloc settings for the benchmark process (see reexec_with_thp): keep freed large blocks in the
# heap instead of returning them to the kernel, so a repeated allocation of the same size reuses
# already-faulted pages. 2^32 is far above every benchmark tensor; glibc reads both once at start.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


# --------------------------------------------------------------------------------------------
# command-line options shared by every `spikeforge bench <target>`
# --------------------------------------------------------------------------------------------
def common_parser() -> argparse.ArgumentParser:
    """Parent parser with the options every bench target takes (argparse ``parents=[...]``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common benchmark options")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run (auto: cuda when torch sees a GPU, else cpu)")
    g.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per contender after warm-up; the median is reported (default 5, --quick 3)")
    g.add_argument("--warmup", type=int, default=1, help="untimed calls per contender before timing (default 1)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads on CPU (default 2; spikeforge's kernels use the same count)")
    g.add_argument("--time-budget", type=float, default=30.0, metavar="SECONDS",
                   help="per contender and case: a slow contender (e.g. an eager baseline at T=32) gets "
                        "fewer repetitions, at least 3, to stay near this budget (default 30)")
    g.add_argument("--json", metavar="PATH", help="write the whole table, with the environment, as JSON")
    g.add_argument("--plot", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    g.add_argument("--no-baselines", action="store_true",
                   help="time spikeforge only (no reference, torch.compile or peer libraries)")
    g.add_argument("--quick", action="store_true", help="small sizes and few repetitions (CI smoke test)")
    g.add_argument("--no-thp", action="store_true",
                   help=f"do not re-run with {THP_ENV}=1 and the glibc malloc settings "
                        f"{' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())} (huge pages and no "
                        "page-fault storm for the fresh output tensors of every contender)")
    return p


def reexec_with_thp(argv: list[str]) -> None:
    """Re-runs ``python -m spikeforge <argv>`` with THP_MEM_ALLOC_ENABLE=1 and MALLOC_ENV unless
    THP_MEM_ALLOC_ENABLE is already set (the re-run's marker; MALLOC_ENV values the caller set win).

    Both are read once at process start, so they cannot be switched on in a running process. Every
    contender allocates fresh output tensors of tens of MiB per call. Without THP each first touch
    pays a 4 KiB page fault per page; and glibc serves blocks that large with mmap and returns them
    with munmap on free, so every call faults (and the kernel zeroes) all its output pages again.
    Measured on 2 EPYC cores, LIF T=8 N=2^20 float32: forward 15 ms -> 3.5 ms, forward+backward
    31 -> 18-22 ms, minor page faults 114k -> 58k per run with MALLOC_ENV. The same settings help a
    CPU training job (README "Benchmarks"); they change no result.
    """
    if os.environ.get(THP_ENV) is not None:
        return
    os.environ[THP_ENV] = "1"
    for key, value in MALLOC_ENV.items():
        os.environ.setdefault(key, value)
    print(f"[spikeforge bench] re-running with {THP_ENV}=1 and "
          f"{' '.join(f'{k}={os.environ[k]}' for k in MALLOC_ENV)} (huge pages, freed blocks kept in the "
          "heap; --no-thp to skip)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "spikeforge", *argv])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("spikeforge bench: --device cuda but torch sees no GPU")
    return torch.device(name)


def setup_threads(args, device: torch.device) -> None:
    threads = args.threads if args.threads is not None else (2 if device.type == "cpu" else None)
    if threads is not None:
        if threads < 1:
            raise SystemExit("spikeforge bench: --threads must be >= 1")
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
class Timer:
    """Times one call of a function in milliseconds: wall clock on CPU, CUDA events on GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def error_text(e: BaseException, limit: int = 160) -> str:
    """One line naming an exception, for a table cell or a JSON field."""
    msg = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Result:
    """Samples (ms) of one contender of one case, or why it has none."""
    samples: list = field(default_factory=list)
    warmup_ms: list = field(default_factory=list)
    error: Optional[str] = None

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.samples) if self.samples and self.error is None else None


def side_by_side(contenders: dict[str, Callable[[], object]], timer: Timer, *, reps: int, warmup: int = 1,
                 time_budget_s: float = 30.0, min_reps: int = 3) -> dict[str, Result]:
    """Warm-up, then round-robin timing of all contenders; a failing contender records its error.

    A contender whose warm-up call says ``reps`` calls would exceed ``time_budget_s`` gets fewer
    repetitions (at least ``min_reps``); the count used is ``len(result.samples)``.
    """
    results = {name: Result() for name in contenders}
    planned = {}
    for name, fn in contenders.items():
        res = results[name]
        try:
            for _ in range(max(1, warmup)):
                res.warmup_ms.append(timer.once(fn))
        except Exception as e:  # noqa: BLE001 - a baseline that fails is reported, not fatal
            res.error = error_text(e)
            continue
        last = res.warmup_ms[-1]
        n = reps
        if last * reps > time_budget_s * 1e3:
            n = max(min_reps, int(time_budget_s * 1e3 // max(last, 1e-9)))
        planned[name] = min(reps, n)
    names = [n for n in contenders if n in planned]
    rounds = max(planned.values(), default=0)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            res = results[name]
            if res.error is not None or len(res.samples) >= planned[name]:
                continue
            try:
                res.samples.append(timer.once(contenders[name]))
            except Exception as e:  # noqa: BLE001
                res.error = error_text(e)
    return results


def per_call_us(contenders: dict[str, Callable[[], object]], timer: Timer, *, iters: int, reps: int,
                grad: dict[str, bool]) -> dict[str, Result]:
    """Per-call overhead in microseconds: `iters` calls in a loop, round-robin, median over `reps`."""
    def looped(fn, with_grad):
        def run():
            with torch.set_grad_enabled(with_grad):
                for _ in range(iters):
                    fn()
        return run

    loops = {name: looped(fn, grad.get(name, True)) for name, fn in contenders.items()}
    res = side_by_side(loops, timer, reps=reps, warmup=2, time_budget_s=1e9)
    for r in res.values():
        r.samples = [ms * 1e3 / iters for ms in r.samples]
        r.warmup_ms = [ms * 1e3 / iters for ms in r.warmup_ms]
    return res


# --------------------------------------------------------------------------------------------
# memory bandwidth: a large tensor copy, bytes read + written / time
# --------------------------------------------------------------------------------------------
class Bandwidth:
    """Memory bandwidth from a large tensor copy (bytes read + written / time).

    The same copy (between two preallocated float32 tensors, 128 MiB each on CPU, 1 GiB on CUDA) is
    timed once at the start and then as one more contender inside every case, so it sees the same
    machine conditions as the kernels; ``gbps`` is the median over all its samples.
    """

    def __init__(self, device: torch.device, nbytes: Optional[int] = None):
        if nbytes is None:
            nbytes = (1 << 30) if device.type == "cuda" else (128 << 20)
        n = max(1, nbytes // 4)
        self._src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
        self._dst = torch.empty_like(self._src)
        self._dst.copy_(self._src)  # touch every page once
        self.bytes_per_copy = 2 * n * 4
        self.samples_ms: list = []

    def fn(self) -> None:
        self._dst.copy_(self._src)

    def measure(self, timer: Timer, reps: int = 10) -> None:
        res = side_by_side({"copy": self.fn}, timer, reps=reps, warmup=2, time_budget_s=1e9)["copy"]
        self.samples_ms += res.samples

    def add(self, samples_ms: list) -> None:
        self.samples_ms += list(samples_ms)

    @property
    def gbps(self) -> Optional[float]:
        return gbps(self.bytes_per_copy, statistics.median(self.samples_ms)) if self.samples_ms else None

    def as_dict(self) -> dict:
        return {"method": "copy between two preallocated float32 tensors, timed at the start and inside every "
                          "case; bytes read + written / median time over all samples",
                "bytes_per_copy": self.bytes_per_copy, "samples_ms": self.samples_ms,
                "median_ms": statistics.median(self.samples_ms) if self.samples_ms else None, "gbps": self.gbps}


def gbps(nbytes: float, ms: Optional[float]) -> Optional[float]:
    return None if not ms else nbytes / (ms * 1e6)


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------
def dist_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def environment(device: torch.device) -> dict:
    from .. import __version__
    from .._native import native, native_error

    env = {
        "spikeforge": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        THP_ENV: os.environ.get(THP_ENV),
        **{key: os.environ.get(key) for key in MALLOC_ENV},
        "kernel_thp": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "native": None if native is None else {
            "compiler": native.compiler(), "has_cuda": native.has_cuda(), "cuda_version": native.cuda_version(),
            "cuda_arch_list": list(native.cuda_arch_list()), "has_openmp": native.has_openmp()},
        "native_error": native_error,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        env["torch_cuda"] = torch.version.cuda
    return env


def environment_lines(env: dict) -> list[str]:
    thp = env.get(THP_ENV)
    return [
        f"device: {env['device']} ({env['device_name']}); cpu: {env['cpu_model']} x{env['cpu_count']}",
        f"torch {env['torch']}, spikeforge {env['spikeforge']}, python {env['python']}; "
        f"torch threads: {env['torch_threads']}",
        f"{THP_ENV}={thp if thp is not None else '(unset)'}; kernel THP: {env['kernel_thp']}; "
        f"load average at start: {', '.join(f'{x:.1f}' for x in env['load_average'] or [])}",
        "glibc malloc: " + ", ".join(f"{key}={env.get(key) or '(unset)'}" for key in MALLOC_ENV),
    ]


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def fmt(x, spec: str = ".2f", none: str = "n/a") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return format(x, spec)


def format_table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Plain-text table; the first `left` columns are left-aligned, the others right-aligned.

    A row shorter than the headers (e.g. [label, "n/a: reason"]) prints its last cell unpadded after
    the aligned ones, so a long reason does not widen the table.
    """
    full = [headers] + [r for r in rows if len(r) == len(headers)]
    widths = [max(len(str(r[i])) for r in full) for i in range(len(headers))]
    for r in rows:
        for i in range(min(left, len(r) - 1)):
            widths[i] = max(widths[i], len(str(r[i])))

    def line(cells):
        out = []
        short = len(cells) < len(headers)
        for i, c in enumerate(cells):
            if short and i == len(cells) - 1:
                out.append(str(c))
            else:
                out.append(str(c).ljust(widths[i]) if i < left else str(c).rjust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def write_json(path: str, data: dict) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str, allow_nan=False)
        f.write("\n")
    print(f"wrote {path}")


def pyplot():
    """matplotlib.pyplot with the Agg backend, or None (with a message) when matplotlib is missing."""
    if not installed("matplotlib"):
        print("--plot: matplotlib is not installed; skipping the chart (pip install matplotlib)")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def add_ratios(rows: list, sf: dict) -> None:
    """row["<phase>_ratio_vs_spikeforge"] = row's time / spikeforge's (sf's) for the fwd and fwd_bwd phases:
    how many times faster spikeforge is (None where either time is missing)."""
    for row in rows:
        for phase in ("fwd", "fwd_bwd"):
            theirs, mine = row.get(f"{phase}_ms"), sf.get(f"{phase}_ms")
            row[f"{phase}_ratio_vs_spikeforge"] = theirs / mine if theirs and mine else None


def save_figure(fig, path: str) -> None:
    """Lays out, writes (dpi 110) and closes a figure of a --plot chart, and says where it went."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def saved_bytes(f: Callable[..., object], *inputs) -> int:
    """Bytes of the unique storages f(*inputs) saves for its backward (saved_tensors_hooks); a storage
    saved by several ops (or views of one tensor) counts once."""
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[(s.data_ptr(), str(t.device))] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = f(*inputs)
    del out
    return sum(seen.values())
