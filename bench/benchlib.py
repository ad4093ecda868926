"""Benchmark helpers of the bench/ scripts: the options every target takes, per-call overhead, the
environment record, JSON, plots, saved-tensor bytes.

The timing core (round-robin medians, the measured copy bandwidth that is every roofline's denominator,
the machine's name) is spikeforge.cli.benchcore, installed with the package because the main job
(``spikeforge bench neurons``) runs from a pip install; it is re-exported here, so a bench script needs
only ``import benchlib as bu``. How spikeforge is measured: docs/benchmarks.md.

A benchmark target is one file bench/bench_<name>.py exposing NAME, HELP, ``add_arguments(parser)`` and
``run(args) -> int``; ``spikeforge bench <name>`` loads it from this folder, and ``python
bench/bench_<name>.py`` runs it directly (``main``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
import warnings
from typing import Callable, Optional

import torch

from spikeforge.cli._common import write_text_atomic

# re-exported: the bench scripts import the timing core from here
from spikeforge.cli.benchcore import (  # noqa: F401
    MALLOC_ENV,
    THP_ENV,
    Bandwidth,
    Result,
    Timer,
    cpu_model,
    dist_version,
    error_text,
    gbps,
    installed,
    read_sys_file,
    reexec_with_thp,
    side_by_side,
)
from spikeforge.cli._common import non_negative_int, positive_float, positive_int, thread_count
from spikeforge.tools._text import fmt, format_table  # noqa: F401


# --------------------------------------------------------------------------------------------
# command-line options shared by every `spikeforge bench <target>`
# --------------------------------------------------------------------------------------------
def firing_rate(text: str) -> float:
    """argparse type of a firing rate: a fraction in (0, 1] (anything else is a usage error)."""
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a firing rate in (0, 1] (e.g. 0.05 for 5%)")
    return rate


def common_parser() -> argparse.ArgumentParser:
    """Parent parser with the options every bench target takes (argparse ``parents=[...]``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common benchmark options")
    g.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to run (auto: cuda when torch sees a GPU, else cpu)",
    )
    g.add_argument(
        "--reps",
        type=positive_int,
        default=None,
        help="timed repetitions per contender after warm-up; the median is reported (default 5, --quick 3)",
    )
    g.add_argument(
        "--warmup", type=non_negative_int, default=1, help="untimed calls per contender before timing (default 1)"
    )
    g.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="torch.set_num_threads on CPU (default 2; spikeforge's kernels use the same count)",
    )
    g.add_argument(
        "--time-budget",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="per contender and case: a slow contender (e.g. an eager baseline at T=32) gets "
        "fewer repetitions, at least 3, to stay near this budget (default 30)",
    )
    g.add_argument("--json", metavar="PATH", help="write the whole table, with the environment, as JSON")
    g.add_argument("--plot", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    g.add_argument(
        "--no-baselines",
        action="store_true",
        help="time spikeforge only (no reference, torch.compile or peer libraries)",
    )
    g.add_argument("--quick", action="store_true", help="small sizes and few repetitions (CI smoke test)")
    g.add_argument(
        "--no-thp",
        action="store_true",
        help=f"do not re-run with {THP_ENV}=1 and the glibc malloc settings "
        f"{' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())} (huge pages and no "
        "page-fault storm for the fresh output tensors of every contender)",
    )
    return p


def resolve_device(name: str) -> torch.device:
    from spikeforge.cli import UsageError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no GPU; use --device cpu")
    return torch.device(name)


def setup_threads(args, device: torch.device) -> None:
    from spikeforge.cli import UsageError

    threads = args.threads if args.threads is not None else (2 if device.type == "cpu" else None)
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# timing (the core is spikeforge.cli.benchcore: side_by_side, Timer, Bandwidth)
# --------------------------------------------------------------------------------------------
def per_call_us(
    contenders: dict[str, Callable[[], object]], timer: Timer, *, iters: int, reps: int, grad: dict[str, bool]
) -> dict[str, Result]:
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
# two builds side by side (the A/B scripts: neuron_ab.py, attention_ab.py, spike_ab.py)
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def recording(ops_module, names):
    """Within the block, ops_module's handle on the native module (its `native`) records the arguments of the
    last call of each function in names: yields {name: args} (the A/B scripts' way of capturing what this
    tree's op passes to its kernels)."""
    calls: dict = {}
    real = ops_module.native

    class Recorder:
        def __getattr__(self, name):
            f = getattr(real, name)
            if name not in names:
                return f

            def record(*a):
                calls[name] = a
                return f(*a)

            return record

    ops_module.native = Recorder()
    try:
        yield calls
    finally:
        ops_module.native = real


def alternate(f_base: Callable, f_new: Callable, args: tuple, reps: int, before: Optional[Callable] = None) -> str:
    """Times f_base(*args) and f_new(*args) reps times each, alternating call by call (which goes first
    alternates too; before() runs ahead of each call) -> the A/B scripts' columns: "min/median ms" of each build
    and the median of the per-pair ratios new / base."""
    t: dict = {"base": [], "new": []}
    for r in range(reps):
        order = (("base", f_base), ("new", f_new)) if r % 2 == 0 else (("new", f_new), ("base", f_base))
        for key, f in order:
            if before is not None:
                before()
            t0 = time.perf_counter()
            f(*args)
            t[key].append((time.perf_counter() - t0) * 1e3)
    ratio = sorted(n / b for n, b in zip(t["new"], t["base"]))[reps // 2]
    mb, mn = (f"{min(v):7.2f}/{sorted(v)[len(v) // 2]:7.2f}" for v in (t["base"], t["new"]))
    return f"{mb:>16s} {mn:>16s} {ratio:8.3f}"


def _poison(outs: list) -> None:
    """Fills a kernel's outputs with values no kernel writes by chance: NaN (floating), 0x5A bytes (integer)."""
    for t in outs:
        if t.is_floating_point():
            t.fill_(float("nan"))
        else:
            t.fill_(0x5A)


def _largest_difference(a: list, b: list) -> float:
    """Over outputs of the two builds: max |a - b|, where both NaN counts as equal and NaN on one side only as
    inf (an output one build wrote and the other left, or a NaN only one build computes)."""
    d = 0.0
    for u, v in zip(a, b):
        if not u.numel():
            continue
        if not u.is_floating_point():
            d = max(d, 0.0 if torch.equal(u, v) else float("inf"))
            continue
        u, v = u.detach().double(), v.detach().double()
        nan_u, nan_v = torch.isnan(u), torch.isnan(v)
        if not torch.equal(nan_u, nan_v):
            return float("inf")
        same = (u == v) | nan_u  # equal values (inf included) or NaN on both sides
        diff = torch.where(same, torch.zeros_like(u), (u - v).abs()).nan_to_num(nan=float("inf"))
        d = max(d, float(diff.max()))
    return d


def compare_builds(f_base: Callable, f_new: Callable, args: tuple, outs: list) -> float:
    """Runs each build once on args, its outputs `outs` (tensors among args) poisoned before each call, -> the
    largest difference between the two builds' outputs (inf where one build leaves an output unwritten that the
    other writes: without the poison the outputs would keep the values of whichever ran before, and a kernel
    that wrote nothing would compare equal)."""
    _poison(outs)
    f_base(*args)
    got = [t.detach().clone() for t in outs]
    _poison(outs)
    f_new(*args)
    return _largest_difference(outs, got)


def load_other_build(path: str):
    """Another build's native module (its _C shared library) next to this tree's, for the A/B scripts
    (spike_ab.py, neuron_ab.py, attention_ab.py). Its types are this tree's: nanobind's "already registered" warning is
    silenced, and both builds must bind the same types."""
    from spikeforge._native import native

    if native is not None and os.path.exists(path) and os.path.samefile(path, native.__file__):
        raise SystemExit(f"--base: {path} is this tree's own module (the A/B would compare it with itself)")
    spec = importlib.util.spec_from_file_location("spikeforge_base._C", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--base: {path} is not a loadable module")
    mod = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    from spikeforge import __version__
    from spikeforge._native import native, native_error

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
        "kernel_thp": read_sys_file("/sys/kernel/mm/transparent_hugepage/enabled"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "native": None
        if native is None
        else {
            "compiler": native.compiler(),
            "has_cuda": native.has_cuda(),
            "cuda_version": native.cuda_version(),
            "cuda_arch_list": list(native.cuda_arch_list()),
            "has_openmp": native.has_openmp(),
        },
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
# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def write_json(path: str, data: dict) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    # through a temporary file, as the CLI's reports: a failed write leaves no half-written result
    write_text_atomic(path, json.dumps(data, indent=2, default=str, allow_nan=False) + "\n")
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

    if not fig.legends:  # figure_legend has laid the figure out around its legend already
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


def main(name: str, argv: Optional[list] = None) -> int:
    """``python bench/bench_<name>.py [options]``: the same as ``spikeforge bench <name> [options]`` (for neurons:
    ``spikeforge bench neurons --full [options]``)."""
    from spikeforge.cli import main as cli_main

    os.environ.setdefault("SPIKEFORGE_BENCH_DIR", os.path.dirname(os.path.abspath(__file__)))
    full = ["--full"] if name == "neurons" else []  # the installed `bench neurons` is the short main job
    return cli_main(["bench", name, *full, *(sys.argv[1:] if argv is None else argv)])


# --------------------------------------------------------------------------------------------
# charts: grouped bars, a readable log axis, one legend under the figure
# --------------------------------------------------------------------------------------------
def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def grouped_bars(ax, groups: list, series: dict, color_of) -> dict:
    """Bars per group (x tick), one per series label that has a value there: the bars present in a group
    sit side by side centred on its tick (a contender without a value leaves no gap). series: {label:
    [value per group or None]}. Returns {label: bar handle} of the labels drawn, for figure_legend."""
    handles = {}
    for j in range(len(groups)):
        present = [lab for lab, vals in series.items() if _finite(vals[j])]
        width = 0.8 / max(1, len(present))
        for i, lab in enumerate(present):
            bar = ax.bar(j + (i - (len(present) - 1) / 2) * width, series[lab][j], width, color=color_of(lab))
            handles.setdefault(lab, bar)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    return handles


def ratio_axis(ax, axis: str = "y") -> None:
    """A log axis for ratios labelled 0.5, 1, 2, 5, 10 ... (no 3x10^0), with the line at 1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())
    if axis == "y":
        ax.axhline(1.0, color="black", linewidth=0.8)


def figure_legend(fig, *handle_dicts, ncol: int = 3) -> None:
    """One legend under the plots listing every label that has a bar somewhere (first-seen order)."""
    merged = {}
    for d in handle_dicts:
        for lab, h in d.items():
            merged.setdefault(lab, h)
    if not merged:
        return
    rows = math.ceil(len(merged) / ncol)
    fig.legend(
        list(merged.values()), list(merged), loc="lower center", ncol=min(ncol, len(merged)), fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0.035 * rows + 0.02, 1, 1))


def colors_by_label(plt, labels: list):
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    index = {lab: i for i, lab in enumerate(dict.fromkeys(labels))}
    return lambda lab: colors[index.get(lab, 0) % len(colors)]
