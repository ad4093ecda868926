"""``spikeforge bench neurons``, the main job: one training step (forward + backward) of a layer of spiking
neurons, spikeforge's fused kernel against a plain PyTorch loop and the peer libraries that are installed,
in about a minute. ``--model`` picks the neuron (LIF by default; IF, PLIF, ALIF, I-LIF, ternary, and
snnTorch's Leaky, Synaptic and Alpha, these also through spikeforge.interop.snntorch's drop-in). The full
comparison (both backward modes, forward-only times, per-call overhead, torch.compile at every T, JSON and
plots) is ``spikeforge bench neurons --full`` (bench/bench_neurons.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import benchcore as bc
from ._common import (
    UsageError,
    check_output_path,
    positive_float,
    positive_int,
    thread_count,
    unknown_name,
    write_text_atomic,
)

HELP = (
    "the main job: fused LIF neurons (--model: another) against a PyTorch loop and the peer libraries (about a minute)"
)
DESCRIPTION = """\
Times one training step (forward + backward through time) of N spiking neurons over T time steps:
spikeforge's fused kernel against the same neuron written as a plain PyTorch loop, the peer libraries that
have the model (SpikingJelly, snnTorch; when installed) and torch.compile of the loop (when its compiled
kernels are cached: a cold compile takes from 20 s to minutes on a small CPU; --compile compiles anyway).
Every contender's spikes are checked against spikeforge's. Medians of repeated runs, all contenders timed
round-robin in one process. How it is measured: docs/benchmarks.md.

--model (default lif): lif, if, plif, alif, ilif, ternary (SpikingJelly's family), leaky, synaptic, alpha
(snnTorch's), norse (Norse's current-based LIF)
(snnTorch's models with its defaults; these are also timed as snnTorch's own module patched with
spikeforge.interop.snntorch, against snnTorch's per-step loop)."""

TAU, V_TH, V_RESET, ALPHA = 2.0, 1.0, 0.0, 4.0  # SpikingJelly's LIF defaults, spikeforge's too
OPTIONS = dict(
    tau=TAU, v_threshold=V_TH, v_reset=V_RESET, decay_input=True, detach_reset=False, surrogate="sigmoid", alpha=ALPHA
)
BYTES_PER_ELEMENT_STEP = 5  # forward+backward minimum: read x, write s; read grad_s, saved x, write grad_x
# torch.compile rows from the cache take 1-3 s each; once compiling has taken this long in a run (the cache
# missed), the remaining rows are left out instead of compiling for minutes (--compile compiles them all)
COMPILE_BUDGET_S = 15.0
# the median page faults per timed call from which the main job's notes name a contender (a few per call are
# the interpreter's own small allocations)
FAULTS_NOTED = 8


def add_arguments(p) -> None:
    p.add_argument(
        "--T",
        type=positive_int,
        nargs="+",
        default=None,
        metavar="T",
        help="time steps, one row each (default: 4 8 32; --quick: 4)",
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="neurons per time step (default: 2^20 on CPU, 2^22 on a GPU; --quick: 2^14)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: cuda when torch sees a GPU, else cpu (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="torch.set_num_threads on CPU (default: torch's own, the number a training job gets)",
    )
    p.add_argument(
        "--time-budget",
        type=positive_float,
        default=1.5,
        metavar="SECONDS",
        help="timing budget per contender and row: a slow one gets fewer repetitions, at least 3 "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="time torch.compile of the loop even when its kernels are not cached (slow the first time)",
    )
    p.add_argument("--no-peers", action="store_true", help="leave out SpikingJelly and snnTorch")
    p.add_argument("--quick", action="store_true", help="T=4, 2^14 neurons: a smoke test in seconds")
    p.add_argument(
        "--no-thp",
        action="store_true",
        help="run in the process's own memory settings (by default the run restarts itself with "
        "PyTorch's huge pages and glibc malloc keeping freed memory, the settings docs/benchmarks.md "
        "recommends for CPU training; they speed up every contender, the eager loops most)",
    )
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    p.add_argument(
        "--model",
        type=model_name,
        default="lif",
        metavar="{" + ",".join(MODELS) + "}",
        help="the neuron model (default: %(default)s); snnTorch's leaky / synaptic / alpha with its "
        "defaults, also through spikeforge.interop.snntorch",
    )


def model_name(text: str) -> str:
    """argparse type of --model: one of MODELS (any case), else a one-line error naming the choices."""
    name = text.strip().lower()
    if name not in MODELS:
        raise argparse.ArgumentTypeError(str(unknown_name("model", text, MODELS)))
    return name


# ------------------------------------------------------------------------------------------------
# contenders: each builder returns (f, leaves): f(x [T, n]) -> spikes [T, n]; forward + backward is
# autograd.grad(f(x), [x, *leaves], grad), leaves being the model's learnable parameters (PLIF's w)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    build: Callable
    why: Optional[str] = None  # why it is absent (not installed), else None
    dist: Optional[str] = None  # the pip distribution of a peer
    same_model: bool = True  # computes the model spikeforge computes, so the spikes must be the same


def _spikingjelly_node(make: Callable) -> Callable:
    """A builder for a SpikingJelly node, multi-step, reset before each call (a fresh sequence)."""

    def build():
        logging.getLogger("torch._library.triton").setLevel(logging.ERROR)  # SJ probes for Triton at import
        from spikingjelly.activation_based import neuron, surrogate

        node = make(neuron, surrogate)

        def run(x):
            node.to(x.device)
            node.reset()
            return node(x)

        return run, [p for p in node.parameters() if p.requires_grad]

    return build


def _snntorch_lif():
    """snnTorch's Leaky as close to the LIF as it gets (its input is unscaled and its reset one step late)."""
    import snntorch as snn
    from snntorch import surrogate

    leaky = snn.Leaky(
        beta=1.0 - 1.0 / TAU, threshold=V_TH, spike_grad=surrogate.sigmoid(slope=ALPHA), reset_mechanism="zero"
    )

    def run(x):
        leaky.to(x.device)
        mem = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            s, mem = leaky(x[t], mem)
            out.append(s)
        return torch.stack(out)

    return run, []


def _snntorch_module(make: Callable, patched: bool) -> Callable:
    """A builder for a snnTorch module built with its defaults (init_hidden=False: a call returns the spikes
    and the states). patched=False: snnTorch's own per-step loop, one call per step as its tutorials write it;
    True: the same module patched with spikeforge.interop.snntorch (step_mode "m"), one call per sequence.
    x [T, n] is run as [T, 1, n] (a batch of one sample of n neurons)."""

    def build():
        import snntorch as snn

        module = make(snn)
        if patched:
            from ..interop import snntorch as sfs

            sfs.patch(module, step_mode="m")

        def run(x):
            module.to(x.device)
            module.reset_mem()
            x3 = x.unsqueeze(1)
            if patched:
                return module(x3)[0].reshape(x.shape)
            return torch.stack([module(x3[t])[0] for t in range(x.shape[0])]).reshape(x.shape)

        return run, [p for p in module.parameters() if p.requires_grad]

    return build


def _norse_lif() -> Callable:
    """A builder for Norse's LIF module (norse.torch.LIF with LIFParameters()'s defaults), one call per sequence."""

    def build():
        from norse.torch import LIF

        module = LIF()

        def run(x):
            module.to(x.device)
            return module(x)[0]  # a fresh state on every call (none passed): from v_leak and no current

        return run, []

    return build


@dataclass(frozen=True)
class Model:
    """One --model: what spikeforge runs, its PyTorch loop, the peers that have it, and its traffic."""

    name: str
    title: str  # the first line: "LIF neurons"
    options: dict  # the configuration timed (JSON)
    op: Callable  # builder of spikeforge's fused op
    reference: Callable  # builder of the same neuron as a plain PyTorch loop (spikeforge.reference)
    peers: tuple  # ((key, dist, label, builder, same_model), ...)
    states: str  # what the recomputing backward rebuilds from x, in words
    saved: tuple  # the values per neuron and step the forward saves when the backward does not recompute
    reads_x: bool = False  # the backward reads x besides the saved values (ops.neuron's _reads_x)
    drive: tuple = (1.0, 0.0)  # x = scale * randn + shift: membranes crossing the threshold often


def _fn(call: Callable, leaves: Callable = lambda: []) -> Callable:
    """A builder from call(x, *leaves) -> spikes."""

    def build():
        ls = leaves()
        return (lambda x: call(x, *ls)), ls

    return build


def _plif_w():
    return [torch.zeros((), requires_grad=True)]  # SpikingJelly's init_tau = 2: w = -ln(tau - 1) = 0


IF_OPTIONS = dict(v_threshold=V_TH, v_reset=V_RESET, detach_reset=False, surrogate="sigmoid", alpha=ALPHA)
PLIF_OPTIONS = dict(decay_input=True, **IF_OPTIONS)
ALIF_OPTIONS = dict(
    tau=TAU,
    v_threshold=V_TH,
    v_reset=None,
    beta_a=1.8,
    rho=0.9,
    decay_input=True,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=ALPHA,
)  # ops.alif's defaults
ILIF_OPTIONS = dict(D=4, tau=4.0 / 3.0, v_threshold=V_TH, decay_input=False, detach_reset=False)  # SJ's ILIFNode
TERNARY_OPTIONS = dict(
    tau=TAU,
    v_threshold=V_TH,
    v_reset=V_RESET,
    decay_input=True,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=ALPHA,
    two_sided=True,
)  # SpikingJelly's TernaryLIFNode
LEAKY_OPTIONS = dict(beta=0.9)  # snnTorch's defaults otherwise: threshold 1, subtract reset, atan(alpha=2)
SYNAPTIC_OPTIONS = dict(alpha=0.9, beta=0.8)
ALPHA_OPTIONS = dict(alpha=0.9, beta=0.8)  # Alpha's default reset is "zero"
NORSE_OPTIONS: dict = {}  # LIFParameters(): dt 1 ms, tau_syn_inv 200, tau_mem_inv 100, v_th 1, SuperSpike


def _ops():
    from .. import ops

    return ops


def _ref():
    from .. import reference

    return reference


_SJ, _SNN = ("spikingjelly", "spikingjelly", "SpikingJelly"), ("snntorch", "snntorch", "snnTorch")
_SNN_PATCHED = ("snntorch_patched", "snntorch", "snnTorch")
_NORSE = ("norse", "norse", "Norse")  # label: "snnTorch <version> patched"
_SNN_DEFAULTS = "snnTorch's defaults otherwise: threshold 1, atan surrogate (alpha 2), init_hidden=False"
MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model(
            "lif",
            "LIF neurons",
            OPTIONS,
            _fn(lambda x: _ops().lif(x, **OPTIONS)[0]),
            _fn(lambda x: _ref().lif(x, **OPTIONS)[0]),
            (
                (
                    *_SJ,
                    _spikingjelly_node(
                        lambda n, sg: n.LIFNode(
                            tau=TAU,
                            decay_input=True,
                            v_threshold=V_TH,
                            v_reset=V_RESET,
                            detach_reset=False,
                            surrogate_function=sg.Sigmoid(alpha=ALPHA),
                            step_mode="m",
                        )
                    ),
                    True,
                ),
                (*_SNN, _snntorch_lif, False),
            ),
            "H",
            ("H",),
        ),
        Model(
            "if",
            "IF neurons",
            IF_OPTIONS,
            _fn(lambda x: _ops().if_neuron(x, **IF_OPTIONS)[0]),
            _fn(lambda x: _ref().if_neuron(x, **IF_OPTIONS)[0]),
            (
                (
                    *_SJ,
                    _spikingjelly_node(
                        lambda n, sg: n.IFNode(
                            v_threshold=V_TH,
                            v_reset=V_RESET,
                            detach_reset=False,
                            surrogate_function=sg.Sigmoid(alpha=ALPHA),
                            step_mode="m",
                        )
                    ),
                    True,
                ),
            ),
            "H",
            ("H",),
            drive=(0.5, 0.1),
        ),
        Model(
            "plif",
            "PLIF neurons (learnable tau, w = 0: tau 2)",
            dict(w=0.0, **PLIF_OPTIONS),
            _fn(lambda x, w: _ops().plif(x, w, **PLIF_OPTIONS)[0], _plif_w),
            _fn(lambda x, w: _ref().plif(x, w, **PLIF_OPTIONS)[0], _plif_w),
            (
                (
                    *_SJ,
                    _spikingjelly_node(
                        lambda n, sg: n.ParametricLIFNode(
                            init_tau=2.0,
                            decay_input=True,
                            v_threshold=V_TH,
                            v_reset=V_RESET,
                            detach_reset=False,
                            surrogate_function=sg.Sigmoid(alpha=ALPHA),
                            step_mode="m",
                        )
                    ),
                    True,
                ),
            ),
            "H",
            ("H",),
            reads_x=True,
            drive=(1.0, 0.5),
        ),
        Model(
            "alif",
            "ALIF neurons (adaptive threshold)",
            ALIF_OPTIONS,
            _fn(lambda x: _ops().alif(x, **ALIF_OPTIONS)[0]),
            _fn(lambda x: _ref().alif(x, **ALIF_OPTIONS)[0]),
            (),
            "H and the threshold B",
            ("H", "B[t-1]"),
            drive=(1.0, 0.5),
        ),
        Model(
            "ilif",
            "I-LIF neurons (integer spikes 0..4, SpikingJelly's ILIFNode: tau 4/3)",
            ILIF_OPTIONS,
            _fn(lambda x: _ops().ilif(x, **ILIF_OPTIONS)[0]),
            _fn(lambda x: _ref().ilif(x, **ILIF_OPTIONS)[0]),
            ((*_SJ, _spikingjelly_node(lambda n, sg: n.ILIFNode(step_mode="m")), True),),
            "H",
            ("H",),
            drive=(1.5, 0.5),
        ),
        Model(
            "ternary",
            "ternary-spike LIF neurons (SpikingJelly's TernaryLIFNode)",
            TERNARY_OPTIONS,
            _fn(lambda x: _ops().ternary_lif(x, **TERNARY_OPTIONS)[0]),
            _fn(lambda x: _ref().ternary_lif(x, **TERNARY_OPTIONS)[0]),
            ((*_SJ, _spikingjelly_node(lambda n, sg: n.TernaryLIFNode(step_mode="m")), True),),
            "H",
            ("H",),
            drive=(1.5, 0.0),
        ),
        Model(
            "leaky",
            "snnTorch Leaky neurons (beta 0.9, subtract reset; " + _SNN_DEFAULTS + ")",
            LEAKY_OPTIONS,
            _fn(lambda x: _ops().leaky(x, **LEAKY_OPTIONS)[0]),
            _fn(lambda x: _ref().leaky(x, **LEAKY_OPTIONS)[0]),
            (
                (*_SNN, _snntorch_module(lambda snn: snn.Leaky(**LEAKY_OPTIONS), False), True),
                (*_SNN_PATCHED, _snntorch_module(lambda snn: snn.Leaky(**LEAKY_OPTIONS), True), True),
            ),
            "the membrane",
            ("U", "U after the reset"),
            drive=(0.5, 0.3),
        ),
        Model(
            "synaptic",
            "snnTorch Synaptic neurons (alpha 0.9, beta 0.8, subtract reset; " + _SNN_DEFAULTS + ")",
            SYNAPTIC_OPTIONS,
            _fn(lambda x: _ops().synaptic(x, **SYNAPTIC_OPTIONS)[0]),
            _fn(lambda x: _ref().synaptic(x, **SYNAPTIC_OPTIONS)[0]),
            (
                (*_SNN, _snntorch_module(lambda snn: snn.Synaptic(**SYNAPTIC_OPTIONS), False), True),
                (*_SNN_PATCHED, _snntorch_module(lambda snn: snn.Synaptic(**SYNAPTIC_OPTIONS), True), True),
            ),
            "the membrane and the synaptic current",
            ("U", "U after the reset", "I"),
            drive=(0.25, 0.05),
        ),
        Model(
            "alpha",
            "snnTorch Alpha neurons (alpha 0.9, beta 0.8, zero reset; " + _SNN_DEFAULTS + ")",
            ALPHA_OPTIONS,
            _fn(lambda x: _ops().alpha_neuron(x, **ALPHA_OPTIONS)[0]),
            _fn(lambda x: _ref().alpha_neuron(x, **ALPHA_OPTIONS)[0]),
            (
                (*_SNN, _snntorch_module(lambda snn: snn.Alpha(**ALPHA_OPTIONS), False), True),
                (*_SNN_PATCHED, _snntorch_module(lambda snn: snn.Alpha(**ALPHA_OPTIONS), True), True),
            ),
            "the membrane and both synaptic currents",
            ("U", "E", "I"),
            reads_x=True,
            drive=(1.0, 1.0),
        ),
        Model(
            "norse",
            "Norse LIF neurons (current-based; LIFParameters()'s defaults: dt 1 ms, tau_syn_inv 200, "
            "tau_mem_inv 100, threshold 1, SuperSpike)",
            NORSE_OPTIONS,
            _fn(lambda x: _ops().norse_lif(x, **NORSE_OPTIONS)[0]),
            _fn(lambda x: _ref().norse_lif(x, **NORSE_OPTIONS)[0]),
            ((*_NORSE, _norse_lif(), True),),
            "the membrane and the synaptic current",
            ("V before the reset", "V", "I"),
            reads_x=True,
            drive=(1.0, 1.0),
        ),
    )
}


def _compiled(model: Model):
    def build():
        torch._dynamo.reset()  # one graph per row: no recompilation limit, no dynamic shapes
        f, leaves = model.reference()
        return torch.compile(f, dynamic=False), leaves

    return build


def contenders(args) -> list:
    """The Contenders of args.model in table order (peers that are not installed carry why)."""
    model = MODELS[getattr(args, "model", "lif")]
    rows = [Contender("spikeforge", "spikeforge", model.op), Contender("reference", "PyTorch loop", model.reference)]
    if not args.no_peers:
        for key, dist, label, build, same in model.peers:
            version = bc.dist_version(dist)
            why = None if version and bc.installed(dist) else f"not installed (pip install {dist})"
            label = f"{label} {version}" if version else label
            if key == "snntorch_patched":
                label += " patched"
            rows.append(Contender(key, label, build, why, dist, same))
    rows.append(Contender("torch.compile", "torch.compile(loop)", _compiled(model)))
    return rows


def traffic(model: Model, device: torch.device) -> tuple[int, str]:
    """(values per neuron and step that one training step must move at least, which ones): the roofline of
    the fused op as it runs on this device. With the recomputing backward (ops.neuron.default_recompute, the
    CPU default) the states stay in registers and only x is read again; with saved values the forward writes
    them and the backward reads them back (and x too where the backward needs it)."""
    from ..ops import neuron as ops_neuron

    if ops_neuron.default_recompute.get(device.type, False):
        return BYTES_PER_ELEMENT_STEP, (
            f"forward reads x and writes the spikes; backward reads the spikes' "
            f"gradient and x (it recomputes {model.states} from x) and writes x's "
            "gradient"
        )
    n = len(model.saved)
    names = ", ".join(model.saved)
    return 4 + 2 * n + int(model.reads_x), (
        f"forward reads x and writes the spikes and {n} saved value{'s' if n > 1 else ''} ({names}); backward "
        f"reads the spikes' gradient, the saved values{' and x' if model.reads_x else ''} and writes x's gradient"
    )


# ------------------------------------------------------------------------------------------------
# the torch.compile cache record: which rows compiled before with this torch (inductor caches the kernels)
# ------------------------------------------------------------------------------------------------
def _cache_file() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "spikeforge", "bench_neurons_compiled.json")


def _compile_key(T: int, n: int, device: torch.device, model: str = "lif") -> str:
    # the compiled graph's cache entries depend on torch and on where the traced code lives (another install
    # of spikeforge compiles afresh), so both are part of the key
    from .. import reference

    return f"torch {torch.__version__} {os.path.dirname(reference.__file__)} {device.type} {model} T={T} n={n} float32"


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
    return {
        k: v
        for k, v in d.items()
        if isinstance(v, dict) and v.get("cache") and os.path.isdir(v["cache"]) and os.listdir(v["cache"])
    }


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
        sys.stderr.write(
            f"\r[{'#' * fill}{'.' * (w - fill)}] {100 * frac:3.0f}% "
            f"{time.perf_counter() - self.t0:4.0f} s  {what:<36.36}"
        )
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
def _fwd_bwd(f: Callable, x: torch.Tensor, leaves: list, g: torch.Tensor):
    return lambda: torch.autograd.grad(f(x), [x, *leaves], g)


def _spikes_and_grad(f: Callable, x: torch.Tensor, g: torch.Tensor) -> tuple:
    """The timed computation once, for the correctness gate: the spikes of f(x) in grad mode and the gradient
    of x for the upstream g (a contender that skipped work in a training call would pass a no-grad check)."""
    s = f(x)
    (gx,) = torch.autograd.grad(s, [x], g)
    return s.detach(), gx


def _same_grad(gx: torch.Tensor, ref: torch.Tensor) -> bool:
    """Gradients that agree to float32 rounding (the same surrogate at the same spikes, in another order)."""
    scale = max(1.0, float(ref.abs().max()))
    return gx.shape == ref.shape and bool(torch.allclose(gx.to(ref.dtype), ref, rtol=1e-3, atol=1e-4 * scale))


def run_row(
    T: int,
    n: int,
    device: torch.device,
    rows: list,
    args,
    timer: bc.Timer,
    bw: bc.Bandwidth,
    progress: _Progress,
    model: Optional[Model] = None,
) -> dict:
    model = model or MODELS["lif"]
    gen = torch.Generator().manual_seed(0)
    scale, shift = model.drive
    x = (torch.randn(T, n, generator=gen) * scale + shift).to(device).requires_grad_(True)
    g = torch.randn(T, n, generator=gen).to(device)
    compiled = _compiled_before()
    out = {"T": T, "n": n, "cells": {}}
    fns, spikes = {}, {}
    for c in rows:
        cell = out["cells"][c.key] = {"label": c.label}
        if c.why:
            cell["status"] = c.why
            continue
        if c.key == "torch.compile" and not args.compile:
            if _compile_key(T, n, device, model.name) not in compiled:
                cell["status"] = "not cached"
                continue
            if args.compile_spent_s > COMPILE_BUDGET_S:  # the cache did not serve the earlier rows
                cell["status"] = "not timed (compiling was slow)"
                continue
        try:
            f, leaves = c.build()
            if c.key == "torch.compile":  # compile outside the timing; the warm-up of side_by_side follows
                progress.update(f"T={T}: compiling the loop")
                t0 = time.perf_counter()
                _fwd_bwd(f, x, leaves, g)()
                cell["compile_s"] = time.perf_counter() - t0
                args.compile_spent_s += cell["compile_s"]
                _remember_compile(_compile_key(T, n, device, model.name), cell["compile_s"])
            # the timed computation of every contender against spikeforge's before any timing: spikes bit for
            # bit, the gradient of x to float32 rounding
            progress.update(f"T={T}: checking {c.label}")
            s, gx = _spikes_and_grad(f, x, g)
            if c.key == "spikeforge":
                spikes["spikeforge"], spikes["grad"] = s, gx
                out["firing_rate"] = float((s != 0).float().mean())
            elif "spikeforge" in spikes:
                cell["same_spikes"] = bool(
                    s.shape == spikes["spikeforge"].shape
                    and torch.equal(s.to(spikes["spikeforge"].dtype), spikes["spikeforge"])
                )
                cell["same_grad"] = _same_grad(gx, spikes["grad"])
                cell["same_model"] = c.same_model
            del s, gx
            fns[c.key] = _fwd_bwd(f, x, leaves, g)
        except Exception as e:  # noqa: BLE001 - a contender that fails is reported, not fatal
            cell["status"] = f"failed: {bc.error_text(e, 80)}"
    spikes.clear()
    fns["copy"] = bw.fn
    # a slow contender (an eager loop at T=32 on a busy machine: seconds per step) gets 3 timed steps, the
    # fewest whose median is not a mean of two
    res = bc.side_by_side(
        fns,
        timer,
        reps=7,
        warmup=1,
        time_budget_s=args.time_budget,
        min_reps=3,
        progress=lambda done, total: progress.update(f"T={T}: timing", done, total),
    )
    progress.next_row()
    bw.add(res.pop("copy").samples)
    for key, r in res.items():
        cell = out["cells"][key]
        if r.error:
            cell["status"] = f"failed: {r.error}"
        else:
            cell["ms"], cell["samples_ms"] = r.median, r.samples
            cell["minor_faults"] = r.faults_per_call
    sf = out["cells"]["spikeforge"].get("ms")
    for cell in out["cells"].values():
        if cell.get("ms") and sf:
            cell["x_spikeforge"] = cell["ms"] / sf
    values, _ = traffic(model, device)
    out["bytes"] = values * 4 * T * n
    return out


def _differs(cell: dict) -> Optional[str]:
    """What differs for a contender computing spikeforge's model ("spikes", "gradients"; a finding, flagged and
    left out of the summary), else None."""
    if not cell.get("same_model", False):
        return None
    if cell.get("same_spikes") is False:
        return "spikes"
    if cell.get("same_grad") is False:
        return "gradients"
    return None


def _cell(cell: dict, key: str) -> str:
    if key == "spikeforge":
        return f"{cell['ms']:.2f} ms" if cell.get("ms") else cell.get("status", "n/a")
    if cell.get("x_spikeforge"):
        what = _differs(cell)
        return f"{cell['x_spikeforge']:.1f}x" + (f" ({what} differ)" if what else "")
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
    """One sentence over the ratios of the contenders that computed spikeforge's numbers (a contender whose
    spikes or gradients differ is left out and named; one of a similar model says so)."""
    parts, left_out = [], []
    for key in ("reference", "spikingjelly", "snntorch", "norse", "torch.compile"):
        cells = [r["cells"][key] for r in results if r["cells"].get(key, {}).get("x_spikeforge")]
        xs = [c["x_spikeforge"] for c in cells if not _differs(c)]
        if len(xs) < len(cells):
            left_out.append(labels[key])
        if xs:
            name = "the same neuron written as a PyTorch loop" if key == "reference" else labels[key]
            if any(c.get("same_model") is False for c in cells):
                name += " (a similar model, not the same spikes)"
            parts.append(_versus(xs, name))
    note = f" Left out, as its numbers differ from spikeforge's: {', '.join(left_out)}." if left_out else ""
    if not parts:
        return "In short: no baseline ran with spikeforge's numbers; see the table." + note
    return (
        "In short: for one training step of a layer of spiking neurons, spikeforge is "
        + ", ".join(parts[:-1])
        + (" and " if len(parts) > 1 else "")
        + parts[-1]
        + "."
        + note
    )


def drop_in_line(results: list, model: Model) -> Optional[str]:
    """snnTorch's own module, patched, against snnTorch's per-step loop (None when either did not run)."""
    xs, same = [], True
    for r in results:
        own, patched = r["cells"].get("snntorch", {}), r["cells"].get("snntorch_patched", {})
        if own.get("ms") and patched.get("ms"):
            xs.append(own["ms"] / patched["ms"])
            same = same and patched.get("same_spikes") is True and own.get("same_spikes") is True
    if not xs:
        return None
    cls = {"leaky": "Leaky", "synaptic": "Synaptic", "alpha": "Alpha"}[model.name]
    return (
        f"snnTorch's own {cls} module patched with spikeforge.interop.snntorch is "
        f"{_versus(xs, 'its per-step loop in snnTorch')}, "
        + ("with the same spikes." if same else "BUT THE SPIKES DIFFER (a bug: please report it).")
    )


def check_args(args) -> None:
    """The checks that need no measurement (before the run restarts itself with other memory settings)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no GPU; use --device cpu")
    if args.json:
        check_output_path("--json", args.json)


def run(args) -> int:
    check_args(args)
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    Ts = args.T or ([4] if args.quick else [4, 8, 32])
    n = args.n or ((1 << 14) if args.quick else ((1 << 22) if device.type == "cuda" else (1 << 20)))
    model = MODELS[getattr(args, "model", "lif")]
    rows = contenders(args)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{bc.cpu_model()}, {torch.get_num_threads()} threads"
    )
    print(
        f"spikeforge bench neurons: {model.title}, one training step (forward + backward) of {n:,} neurons "
        f"x T steps, float32, on {machine}",
        flush=True,
    )
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
            results.append(run_row(T, n, device, rows, args, timer, bw, progress, model))
    finally:
        progress.close()
    labels = {c.key: c.label for c in rows}
    from ..tools._text import format_table

    # peers that are not installed get a note instead of a column
    absent = [c for c in rows if c.why]
    shown = [c.key for c in rows[1:] if not c.why]
    head = ["T", "spikeforge", "% of memory bw"] + [labels[k] for k in shown]
    table = []
    for r in results:
        sf = r["cells"]["spikeforge"]
        frac = bc.gbps(r["bytes"], sf.get("ms")) / bw.gbps if sf.get("ms") and bw.gbps else None
        table.append(
            [str(r["T"]), _cell(sf, "spikeforge"), "n/a" if frac is None else f"{100 * frac:.0f}%"]
            + [_cell(r["cells"][k], k) for k in shown]
        )
    print()
    print(format_table(head, table))
    print()
    print(summary_line(results, labels))
    drop_in = drop_in_line(results, model) if "snntorch_patched" in labels else None
    if drop_in:
        print(drop_in)
    values, which = traffic(model, device)
    notes = [
        "columns after the first two: how many times longer the contender takes than spikeforge "
        "(> 1: spikeforge is faster); ratios depend on the CPU / GPU and on what else runs on it",
        f"% of memory bw: spikeforge's minimum traffic ({values} x 4 bytes per neuron and "
        f"step) over the {bw.gbps or 0:.1f} GB/s of a memory copy measured in this run"
        + ("" if model.name == "lif" else f"; the {values} values: {which}"),
    ]
    if absent:
        dists = list(dict.fromkeys(c.dist for c in absent))
        names = list(dict.fromkeys(labels[c.key].replace(" patched", "") for c in absent))
        notes.append(
            f"{' and '.join(names)}: not installed, so not compared (pip install "
            f"{' '.join(dists)} adds {'them' if len(dists) > 1 else 'it'})"
        )
    if not model.peers:
        notes.append(f"no peer library has this model ({model.title}): compared with the PyTorch loop only")
    if model.name == "lif" and "snntorch" in labels and any(r["cells"]["snntorch"].get("ms") for r in results):
        notes.append(
            "snnTorch's Leaky differs slightly (unscaled input, reset one step late): same cost, not the same spikes"
        )
    if "snntorch_patched" in labels and any(r["cells"]["snntorch_patched"].get("ms") for r in results):
        notes.append(
            f"{labels['snntorch_patched']}: the same snnTorch module after "
            "spikeforge.interop.snntorch.patch(module, step_mode='m'), one call per sequence instead of "
            "one per step"
        )
    if model.name != "lif":
        checked = [labels[k] for k in shown if any("same_spikes" in r["cells"][k] for r in results)]
        if checked:
            notes.append(
                f"firing rate {results[0].get('firing_rate', 0):.2f}; spikes checked bit for bit and the gradient "
                f"of x to float32 rounding against spikeforge's, in a training call: {', '.join(checked)}"
            )
    differ = sorted({labels[k] for r in results for k in shown if _differs(r["cells"][k])})
    if differ:
        notes.append(
            f"spikes or gradients differ from spikeforge's for {', '.join(differ)}, which compute(s) the same "
            "model: a bug, please report it (left out of the summary)"
        )
    if any(r["cells"]["torch.compile"].get("status", "").startswith("not timed") for r in results):
        notes.append(
            f"torch.compile: its cached kernels did not serve this run (compiling took "
            f"{args.compile_spent_s:.0f} s), so the larger T were not compiled; --compile compiles them"
        )
    if any(r["cells"]["torch.compile"].get("status") == "not cached" for r in results):
        notes.append(
            "torch.compile: not timed, its kernels are not cached yet (a cold compile takes from 20 s "
            "to minutes here); --compile compiles them, and later runs include it"
        )
    compile_s = [
        f"T={r['T']} {r['cells']['torch.compile']['compile_s']:.0f} s"
        for r in results
        if r["cells"]["torch.compile"].get("compile_s")
    ]
    if compile_s:
        notes.append("torch.compile's compile time (not in the ratios): " + ", ".join(compile_s))
    if os.environ.get(bc.THP_ENV) is not None:
        notes.append(
            f"memory settings: {bc.THP_ENV}={os.environ[bc.THP_ENV]} "
            + " ".join(f"{k}={os.environ.get(k)}" for k in bc.MALLOC_ENV)
            + " (huge pages; freed memory kept for reuse); --no-thp runs without them"
        )
    else:
        notes.append(
            "memory settings: the process's defaults (--no-thp); on some machines the eager loops run "
            "many times slower like this, every fresh tensor faulting in new pages"
        )
    # a fresh output faults on every one of its pages (a 2 MiB huge page counts one), each zeroed in the call
    faulted = [
        f"{labels.get(key, key)} at T={r['T']}: {cell['minor_faults']:.0f}"
        for r in results
        for key, cell in r["cells"].items()
        if (cell.get("minor_faults") or 0) >= FAULTS_NOTED and cell.get("ms")
    ]
    if faulted:
        notes.append(
            "page faults inside the timed calls (median per call; JSON: minor_faults): "
            + ", ".join(faulted)
            + "; those times include the kernel zeroing the fresh pages"
        )
    notes.append(
        "the full comparison (forward-only times, both backward modes, overhead, JSON, plots): "
        "spikeforge bench neurons --full, from a source checkout"
    )
    cores = os.cpu_count() or 1
    if device.type == "cpu" and load_start is not None and load_start > 0.5 * cores + 0.5:
        notes.append(
            f"the machine was busy before the run (load average {load_start:.1f} on {cores} cores): other "
            "programs competed for the cores and the memory, so these numbers are noisy; run again when "
            "it is idle"
        )
    wall = time.perf_counter() - t_start
    for line in notes:
        print(f"  - {line}")
    print(f"  ({wall:.0f} s)")
    if args.json:
        data = {
            "benchmark": "neurons (main job)",
            "model": model.name,
            "device": str(device),
            "machine": machine,
            "memory_settings": {k: os.environ.get(k) for k in (bc.THP_ENV, *bc.MALLOC_ENV)},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "options": model.options,
            "traffic": {"values_per_element_step": values, "bytes_per_value": 4, "which": which},
            "n": n,
            "copy_gbps": bw.gbps,
            "rows": results,
            "summary": summary_line(results, labels),
            "drop_in": drop_in,
            "load_average_start": load_start,
            "run_time_s": wall,
            "recorded": bc.run_record(),
        }
        write_text_atomic(args.json, json.dumps(data, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0
