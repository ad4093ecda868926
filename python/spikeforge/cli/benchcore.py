"""The timing core of ``spikeforge bench``: round-robin medians, a measured memory bandwidth, the machine.

Installed with the package because ``spikeforge bench neurons`` (the main job) runs from a pip install; the
full benchmark harness (tables for every family, JSON, plots) lives in the source checkout's bench/ folder
(bench/benchlib.py) and builds on this module.

How spikeforge is measured (docs/benchmarks.md): a claim is a ratio measured side by side in one process,
with medians of several repetitions after warm-up. ``side_by_side`` runs every contender of a case
round-robin (the starting contender rotates each round), so machine noise hits all of them alike; CUDA
timings use CUDA events after a synchronise.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

try:
    import resource  # Unix: the page-fault counts of Timer
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

THP_ENV = "THP_MEM_ALLOC_ENABLE"
# glibc malloc settings for the benchmark process (see reexec_with_thp): keep freed large blocks in the
# heap instead of returning them to the kernel, so a repeated allocation of the same size reuses
# already-faulted pages. 2^32 is far above every benchmark tensor; glibc reads both once at start.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def reexec_with_thp(argv: list[str], quiet: bool = False) -> None:
    """Re-runs ``python -m spikeforge <argv>`` with THP_MEM_ALLOC_ENABLE=1 and MALLOC_ENV unless
    THP_MEM_ALLOC_ENABLE is already set (the re-run's marker; MALLOC_ENV values the caller set win).

    Both are read once at process start, so they cannot be switched on in a running process. Every
    contender allocates fresh output tensors of tens of MiB per call. Without THP each first touch
    pays a 4 KiB page fault per page; and glibc serves blocks that large with mmap and returns them
    with munmap on free, so every call faults (and the kernel zeroes) all its output pages again.
    Measured on 2 EPYC cores, LIF T=8 N=2^20 float32: forward 15 ms -> 3.5 ms, forward+backward
    31 -> 18-22 ms, minor page faults 114k -> 58k per run with MALLOC_ENV. The same settings help a
    CPU training job (docs/benchmarks.md); they change no result.
    """
    if os.environ.get(THP_ENV) is not None:
        return
    os.environ[THP_ENV] = "1"
    for key, value in MALLOC_ENV.items():
        os.environ.setdefault(key, value)
    if not quiet:
        print(
            f"[spikeforge bench] re-running with {THP_ENV}=1 and "
            f"{' '.join(f'{k}={os.environ[k]}' for k in MALLOC_ENV)} (huge pages, freed blocks kept in the "
            "heap; --no-thp to skip)",
            file=sys.stderr,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "spikeforge", *argv])


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
def minor_faults() -> Optional[int]:
    """The process's minor page faults so far (None where the platform does not count them)."""
    if resource is None:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


class Timer:
    """Times one call of a function in milliseconds: wall clock on CPU, CUDA events on GPU.

    ``faults`` is the number of minor page faults of the last call (None where not counted): a call that
    writes into memory the process got fresh from the kernel faults on each page, and the kernel zeroes the
    page inside the call's time. The settings the benchmarks run with (reexec_with_thp) make glibc reuse freed
    blocks, but not from the first call on in every allocation pattern; the JSON records the faults of each
    contender's calls, so a timing that includes them shows it.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.faults: Optional[int] = None

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, fn: Callable[[], object]) -> float:
        f0 = minor_faults()
        if self.cuda:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ms = float(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1e3
        f1 = minor_faults()
        self.faults = None if f0 is None or f1 is None else f1 - f0
        return ms


def error_text(e: BaseException, limit: int = 160) -> str:
    """One line naming an exception, for a table cell or a JSON field (a missing package: "needs <name>")."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        return f"needs {e.name.split('.')[0]} (pip install {e.name.split('.')[0]})"
    msg = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Result:
    """Samples (ms) of one contender of one case, or why it has none."""

    samples: list = field(default_factory=list)
    warmup_ms: list = field(default_factory=list)
    error: Optional[str] = None
    faults: list = field(default_factory=list)  # minor page faults of each timed call (Timer.faults)

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.samples) if self.samples and self.error is None else None

    @property
    def faults_per_call(self) -> Optional[float]:
        """Median minor page faults per timed call (None when not counted)."""
        counted = [f for f in self.faults if f is not None]
        return statistics.median(counted) if counted and self.error is None else None


def side_by_side(
    contenders: dict[str, Callable[[], object]],
    timer: Timer,
    *,
    reps: int,
    warmup: int = 1,
    time_budget_s: float = 30.0,
    min_reps: int = 3,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict[str, Result]:
    """Warm-up, then round-robin timing of all contenders; a failing contender records its error.

    A contender whose warm-up call says ``reps`` calls would exceed ``time_budget_s`` gets fewer
    repetitions (at least ``min_reps``); the count used is ``len(result.samples)``. ``progress(done,
    total)`` is called after each contender's warm-up and each timed round.
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
        if progress is not None:
            progress(len(planned) + 1, len(contenders) + reps)
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
                res.faults.append(timer.faults)
            except Exception as e:  # noqa: BLE001
                res.error = error_text(e)
        if progress is not None:
            progress(len(contenders) + r + 1, len(contenders) + rounds)
    return results


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
        return {
            "method": "copy between two preallocated float32 tensors, timed at the start and inside every "
            "case; bytes read + written / median time over all samples",
            "bytes_per_copy": self.bytes_per_copy,
            "samples_ms": self.samples_ms,
            "median_ms": statistics.median(self.samples_ms) if self.samples_ms else None,
            "gbps": self.gbps,
        }


def gbps(nbytes: float, ms: Optional[float]) -> Optional[float]:
    return None if not ms else nbytes / (ms * 1e6)


# --------------------------------------------------------------------------------------------
# the machine
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


def run_record() -> dict:
    """When and where a result was measured, for its JSON file: UTC time, the CPU model, the OS / Python / torch /
    spikeforge versions and the load average (a result file without them could not be checked later)."""
    from .. import __version__

    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spikeforge": __version__,
        "load_average": load,
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_sys_file(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None
