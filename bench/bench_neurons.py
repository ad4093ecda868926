"""``spikeforge bench neurons``: multi-step IF / LIF / PLIF against the roofline and the baselines.

Standard cases (docs/benchmarks.md): T in {4, 8, 32}; N = 2^20 neurons per step on CPU, the shape
[T, 64, 65536] on CUDA. Per case and implementation: median ms of the forward (of an input that
requires grad, i.e. the training forward) and of forward+backward (torch.autograd.grad of the
spikes with a random grad_spike), all contenders timed round-robin in one process.

Minimal-traffic model (per element and time step, activations of b bytes): forward reads x and
writes spikes (2 b); backward reads grad_spike and the saved state (x, in recompute mode) and
writes grad_x (3 b); forward+backward = 5 b. Every row's GB/s is these bytes over its time, so
GB/s compare like ratios, and "%bw" is that over the bandwidth of a large tensor copy measured in
the same run: the fraction of the roofline a fused kernel reaches. spikeforge's other backward
mode (saving h in the forward) moves 3 b + 3 b; its own-model numbers are in the JSON.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

import sys

import torch

import benchlib as bu
from spikeforge.cli._common import positive_int

NAME = "neurons"
HELP = "multi-step IF/LIF/PLIF neurons: ms, GB/s, roofline fraction, ratios vs reference, torch.compile, peers"

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
NEURONS = ("lif", "if", "plif")
# The options every implementation runs with (SpikingJelly's defaults; spikeforge's too).
TAU, V_TH, V_RESET, ALPHA = 2.0, 1.0, 0.0, 4.0
OPTIONS = dict(
    tau=TAU, v_threshold=V_TH, v_reset=V_RESET, decay_input=True, detach_reset=False, surrogate="sigmoid", alpha=ALPHA
)
BASELINES = ("spikeforge-other-mode", "reference", "torch.compile", "spikingjelly", "snntorch")
TRAFFIC = {"fwd": 2, "fwd_bwd": 5}  # bytes per element-step, in units of b (minimal model)
TRAFFIC_SAVE_H = {"fwd": 3, "fwd_bwd": 6}  # spikeforge when the forward saves h for the backward
TRAFFIC_MODEL = (
    "minimal traffic, per element-step with b bytes per activation: forward = read x + write "
    "spikes = 2b; backward = read grad_spike + read saved state (x, recompute) + write grad_x "
    "= 3b; forward+backward = 5b (spikeforge's default CPU mode). Save-h mode moves 3b + 3b."
)


def add_arguments(p) -> None:
    p.add_argument(
        "--T",
        type=positive_int,
        nargs="+",
        default=None,
        metavar="T",
        help="time steps, one case each (default 4 8 32; --quick: 4)",
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="neurons per time step: shape [T, n] (default 2^20 on CPU; on CUDA the shape is "
        "[T, 64, 65536]; --quick: 2^14)",
    )
    p.add_argument(
        "--dtype", nargs="+", choices=tuple(DTYPES), default=["float32"], help="activation dtypes (default float32)"
    )
    p.add_argument("--neuron", nargs="+", choices=NEURONS, default=["lif"], help="neuron models (default lif)")
    p.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=BASELINES,
        metavar="BASELINE",
        help=f"baselines to leave out, of: {', '.join(BASELINES)} (e.g. torch.compile: a cold inductor "
        "cache takes minutes to compile the T=32 loop on 2 cores)",
    )
    p.add_argument("--no-overhead", action="store_true", help="skip the per-call overhead measurement")


# --------------------------------------------------------------------------------------------
# implementations: each builds f(x) -> spikes and the parameters it trains
# --------------------------------------------------------------------------------------------
class Unavailable(Exception):
    """An implementation that cannot run here (not installed, import failed, unsupported)."""


@dataclass
class Impl:
    key: str
    label: str
    note: str
    build: Callable[[], tuple[Callable[[torch.Tensor], torch.Tensor], list]]
    baseline: bool = True  # ratios are reported against the default spikeforge row
    compiled: bool = False  # compile warm-up is timed separately and excluded
    default: bool = False


def _plif_w(device) -> torch.Tensor:
    # 1/tau = sigmoid(w) = 0.5 -> tau = 2, as for LIF
    return torch.zeros((), device=device, dtype=torch.float32, requires_grad=True)


def _spikeforge_fn(module, neuron: str, device):
    opts = dict(OPTIONS)
    if neuron == "lif":
        return (lambda x: module.lif(x, **opts)[0]), []
    opts.pop("tau")
    if neuron == "if":
        opts.pop("decay_input")
        return (lambda x: module.if_neuron(x, **opts)[0]), []
    w = _plif_w(device)
    return (lambda x: module.plif(x, w, **opts)[0]), [w]


def _spikeforge_impl(neuron: str, device: torch.device, recompute: bool, default: bool) -> Impl:
    from spikeforge.ops import neuron as ops_neuron

    def build():
        f, params = _spikeforge_fn(ops_neuron, neuron, device)
        if recompute == ops_neuron.default_recompute.get(device.type):
            return f, params  # the op as a user calls it (no mode switch around it in the overhead timing)

        def run(x):
            saved = ops_neuron.default_recompute.get(device.type)
            ops_neuron.default_recompute[device.type] = recompute
            try:
                return f(x)
            finally:
                ops_neuron.default_recompute[device.type] = saved

        return run, params

    mode = "recompute" if recompute else "save h"
    note = (
        "backward recomputes h from x (forward saves x only)" if recompute else "forward also writes h for the backward"
    )
    return Impl(
        "spikeforge[recompute]" if recompute else "spikeforge[save_h]",
        f"spikeforge ({mode}{', default' if default else ''})",
        note,
        build,
        baseline=not default,
        default=default,
    )


def _reference_impl(neuron: str, device: torch.device) -> Impl:
    from spikeforge import reference

    return Impl(
        "reference",
        "reference (eager loop)",
        f"spikeforge.reference.{'if_neuron' if neuron == 'if' else neuron}: plain PyTorch time loop, autograd BPTT",
        lambda: _spikeforge_fn(reference, neuron, device),
    )


def _compile_impl(neuron: str, device: torch.device) -> Impl:
    from spikeforge import reference

    def build():
        f, params = _spikeforge_fn(reference, neuron, device)
        torch._dynamo.reset()  # a fresh cache per case: no recompilation limits, no dynamic shapes
        return torch.compile(f, dynamic=False), params

    return Impl(
        "torch.compile",
        "torch.compile(reference)",
        "torch.compile(reference, dynamic=False), default inductor backend; compile time excluded (reported apart)",
        build,
        compiled=True,
    )


def _quiet_triton_warnings() -> None:
    # SpikingJelly probes for Triton at import; torch logs a warning per kernel family without it.
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)


def _spikingjelly_impl(neuron: str, device: torch.device) -> Impl:
    version = bu.dist_version("spikingjelly")
    label = f"SpikingJelly {version}" if version else "SpikingJelly"
    impl = _spikingjelly_cuda_implementation(neuron, device)
    if impl:
        label += f" [{impl}]"

    def build():
        if not bu.installed("spikingjelly"):
            raise Unavailable("not installed (pip install spikingjelly)")
        _quiet_triton_warnings()
        try:
            from spikingjelly.activation_based import neuron as sjn
            from spikingjelly.activation_based import surrogate as sjs
        except Exception as e:  # noqa: BLE001
            raise Unavailable(f"import failed: {bu.error_text(e)}") from e
        common = dict(
            v_threshold=V_TH,
            v_reset=V_RESET,
            surrogate_function=sjs.Sigmoid(alpha=ALPHA),
            detach_reset=False,
            step_mode="m",
        )
        if neuron == "lif":
            cls, kw = sjn.LIFNode, dict(tau=TAU, decay_input=True)
        elif neuron == "if":
            cls, kw = sjn.IFNode, {}
        else:
            cls, kw = sjn.ParametricLIFNode, dict(init_tau=TAU, decay_input=True)
        kw.update(common)
        if "backend" in inspect.signature(cls.__init__).parameters:
            # SpikingJelly < 2.0: 'torch' on CPU, its CUDA backend ('cupy') when available on a GPU.
            kw["backend"] = "cupy" if device.type == "cuda" and bu.installed("cupy") else "torch"
        node = cls(**kw).to(device)

        def run(x):
            node.reset()
            return node(x)

        return run, [p for p in node.parameters() if p.requires_grad]

    return Impl("spikingjelly", label, _spikingjelly_note(neuron, device), build)


def _spikingjelly_cuda_implementation(neuron: str, device: torch.device) -> Optional[str]:
    """Which CUDA implementation SpikingJelly 2.x binds for this neuron (cuda, triton or torch), so the
    table says what spikeforge was compared with; None on CPU, for older versions or on any failure."""
    if device.type != "cuda" or not bu.installed("spikingjelly"):
        return None
    try:
        _quiet_triton_warnings()
        from spikingjelly.activation_based import functional as sjf

        return str(sjf.neuron_implementation(neuron, device)["implementation"])
    except Exception:  # noqa: BLE001 - older SpikingJelly, or no CUDA implementation at all
        return None


def _spikingjelly_note(neuron: str, device: torch.device) -> str:
    cls = {
        "lif": "LIFNode(tau=2, decay_input=True",
        "if": "IFNode(",
        "plif": "ParametricLIFNode(init_tau=2, decay_input=True",
    }[neuron]
    sep = "" if neuron == "if" else ", "
    where = (
        "on CPU its sj_* op runs a PyTorch time loop with a hand-written backward (the 'torch' "
        "implementation, the only one on CPU)"
        if device.type == "cpu"
        else "on CUDA it picks its fastest implementation (cuda > triton > torch; env SJ_*_CUDA_IMPLEMENTATION)"
    )
    return (
        f"{cls}{sep}v_threshold=1, v_reset=0, detach_reset=False, surrogate Sigmoid(alpha=4), step_mode='m'); "
        f"same semantics as spikeforge; SpikingJelly 2.x has no backend argument: {where}"
    )


def _snntorch_impl(neuron: str, device: torch.device) -> Impl:
    version = bu.dist_version("snntorch")
    label = f"snnTorch {version} Leaky †" if version else "snnTorch Leaky †"
    beta = 1.0 if neuron == "if" else 1.0 - 1.0 / TAU

    def build():
        if not bu.installed("snntorch"):
            raise Unavailable("not installed (pip install snntorch)")
        try:
            import snntorch as snn
            from snntorch import surrogate as sns
        except Exception as e:  # noqa: BLE001
            raise Unavailable(f"import failed: {bu.error_text(e)}") from e
        b = torch.tensor(beta) if neuron == "plif" else beta
        leaky = snn.Leaky(
            beta=b,
            threshold=V_TH,
            spike_grad=sns.sigmoid(slope=ALPHA),
            reset_mechanism="zero",
            learn_beta=neuron == "plif",
        ).to(device)

        def run(x):
            mem = torch.zeros_like(x[0])
            out = []
            for t in range(x.shape[0]):
                s, mem = leaky(x[t], mem)
                out.append(s)
            return torch.stack(out)

        return run, [p for p in leaky.parameters() if p.requires_grad]

    note = (
        f"† different semantics: Leaky(beta={beta:g}{' learnable' if neuron == 'plif' else ''}, threshold=1, "
        "reset_mechanism='zero', spike_grad=sigmoid(slope=4)) looped over T in Python; "
        "U[t] = beta*U[t-1] + X[t] (beta = 1 - 1/tau; the input is not scaled by 1/tau) and the reset to 0 "
        "comes one step late from the previous membrane, detached; its spikes differ from spikeforge's"
    )
    return Impl("snntorch", label, note, build)


def implementations(neuron: str, device: torch.device, baselines: bool, skip=()) -> list[Impl]:
    """spikeforge in its default backward mode first, then the baselines not skipped."""
    from spikeforge.ops import neuron as ops_neuron

    default_recompute = bool(ops_neuron.default_recompute.get(device.type, False))
    impls = [_spikeforge_impl(neuron, device, default_recompute, True)]
    if "spikeforge-other-mode" not in skip:
        impls.append(_spikeforge_impl(neuron, device, not default_recompute, False))
    if baselines:
        for name, make in (
            ("reference", _reference_impl),
            ("torch.compile", _compile_impl),
            ("spikingjelly", _spikingjelly_impl),
            ("snntorch", _snntorch_impl),
        ):
            if name not in skip:
                impls.append(make(neuron, device))
    return impls


# --------------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------------
def _shape(T: int, n: Optional[int], device: torch.device) -> list[int]:
    if n is None and device.type == "cuda":
        return [T, 64, 65536]
    return [T, n if n is not None else 1 << 20]


def _fwd_bwd(f, x, params, g):
    def run():
        s = f(x)
        return torch.autograd.grad(s, [x] + params, g)

    return run


def run_case(
    neuron: str,
    T: int,
    n: Optional[int],
    dtype: torch.dtype,
    device: torch.device,
    args,
    bw: bu.Bandwidth,
    timer: bu.Timer,
) -> dict:
    shape = _shape(T, n, device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    g = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    x_req = x.clone().requires_grad_(True)
    b = x.element_size()
    elems = x.numel()
    nbytes = {k: v * b * elems for k, v in TRAFFIC.items()}

    impls = implementations(neuron, device, not args.no_baselines, args.skip)
    rows: list[dict] = []
    contenders: dict[str, Callable[[], object]] = {}
    fns = {}
    for impl in impls:
        row = {"impl": impl.key, "label": impl.label, "note": impl.note, "default": impl.default, "status": "ok"}
        rows.append(row)
        try:
            f, params = impl.build()
        except Unavailable as e:
            row["status"] = f"n/a: {e}"
            continue
        except Exception as e:  # noqa: BLE001
            row["status"] = f"n/a: {bu.error_text(e)}"
            continue
        if impl.compiled:
            # compile (forward and backward graphs) outside the timed region; report its time
            try:
                row["compile_s"] = timer.once(_fwd_bwd(f, x_req, params, g)) / 1e3
            except Exception as e:  # noqa: BLE001
                row["status"] = f"n/a: compilation failed: {bu.error_text(e)}"
                continue
        fns[impl.key] = (f, params)
        contenders[f"{impl.key}/fwd"] = lambda f=f: f(x_req)
        contenders[f"{impl.key}/fwd_bwd"] = _fwd_bwd(f, x_req, params, g)
    contenders["copy"] = bw.fn

    reps = args.reps
    res = bu.side_by_side(contenders, timer, reps=reps, warmup=args.warmup, time_budget_s=args.time_budget)
    bw.add(res["copy"].samples)
    copy_ms = res["copy"].median
    del contenders
    gc.collect()

    # spike agreement with spikeforge: one more training forward each (grad mode on, so a compiled
    # baseline reuses its graph instead of compiling an inference one)
    spikes_sf = None
    for row in rows:
        if row["impl"] not in fns:
            continue
        try:
            s = fns[row["impl"]][0](x_req).detach().float()
            row["spike_rate"] = float(s.mean())
            if spikes_sf is None:
                spikes_sf = s
            row["spikes_equal_to_spikeforge"] = float((s == spikes_sf).float().mean())
            del s
        except Exception as e:  # noqa: BLE001
            row["spike_rate_error"] = bu.error_text(e)
    del spikes_sf
    gc.collect()

    sf = next(r for r in rows if r["default"])
    for row in rows:
        if row["status"] != "ok":
            continue
        for phase in ("fwd", "fwd_bwd"):
            r = res[f"{row['impl']}/{phase}"]
            if r.error is not None:
                row["status"] = f"n/a: {r.error}"
                break
            row[f"{phase}_ms"] = r.median
            row[f"{phase}_samples_ms"] = r.samples
            row[f"{phase}_minor_faults"] = r.faults_per_call
            row[f"{phase}_gbps"] = bu.gbps(nbytes[phase], r.median)
        if row["impl"] == "spikeforge[save_h]" and row["status"] == "ok":
            own = {k: v * b * elems for k, v in TRAFFIC_SAVE_H.items()}
            row["own_model_gbps"] = {k: bu.gbps(own[k], row.get(f"{k}_ms")) for k in own}
    bu.add_ratios(rows, sf)

    return {
        "neuron": neuron,
        "T": T,
        "shape": shape,
        "dtype": str(dtype).replace("torch.", ""),
        "device": str(device),
        "elements": elems,
        "bytes_per_element": b,
        "bytes_fwd": nbytes["fwd"],
        "bytes_fwd_bwd": nbytes["fwd_bwd"],
        "copy_gbps_this_case": bu.gbps(bw.bytes_per_copy, copy_ms),
        "rows": rows,
    }


def set_roofline_fractions(cases: list[dict], bandwidth_gbps: Optional[float]) -> None:
    """'%bw': each row's GB/s over the run's copy bandwidth (known only once every case ran)."""
    for case in cases:
        case["bandwidth_gbps"] = bandwidth_gbps
        for row in case["rows"]:
            for phase in ("fwd", "fwd_bwd"):
                v = row.get(f"{phase}_gbps")
                if row["status"] == "ok":
                    row[f"{phase}_roofline_fraction"] = v / bandwidth_gbps if v and bandwidth_gbps else None


def case_table(case: dict) -> str:
    head = (
        f"{case['neuron']}  T={case['T']}  shape={case['shape']}  {case['dtype']}  {case['device']}  "
        f"(copy in this case: {bu.fmt(case['copy_gbps_this_case'], '.1f')} GB/s)"
    )
    headers = [
        "implementation",
        "fwd ms",
        "f+b ms",
        "fwd GB/s",
        "f+b GB/s",
        "fwd %bw",
        "f+b %bw",
        "x sf fwd",
        "x sf f+b",
        "spikes=sf",
    ]
    rows = []
    for r in case["rows"]:
        if r["status"] != "ok":
            rows.append([r["label"], r["status"]])
            continue
        pct = lambda v: bu.fmt(None if v is None else 100 * v, ".1f")  # noqa: E731
        rows.append(
            [
                r["label"],
                bu.fmt(r["fwd_ms"]),
                bu.fmt(r["fwd_bwd_ms"]),
                bu.fmt(r["fwd_gbps"]),
                bu.fmt(r["fwd_bwd_gbps"]),
                pct(r["fwd_roofline_fraction"]),
                pct(r["fwd_bwd_roofline_fraction"]),
                bu.fmt(r["fwd_ratio_vs_spikeforge"]),
                bu.fmt(r["fwd_bwd_ratio_vs_spikeforge"]),
                pct(r.get("spikes_equal_to_spikeforge")),
            ]
        )
    return head + "\n" + bu.format_table(headers, rows)


# --------------------------------------------------------------------------------------------
# per-call overhead on a tiny tensor
# --------------------------------------------------------------------------------------------
def run_overhead(neuron: str, device: torch.device, args, timer: bu.Timer) -> dict:
    shape = [4, 8]
    x = torch.randn(shape, device=device)
    x_req = x.clone().requires_grad_(True)
    g = torch.randn(shape, device=device)
    iters = 50 if args.quick else 300
    reps = 3 if args.quick else 7
    contenders, grad = {}, {}
    contenders["torch x*2/no_grad"], grad["torch x*2/no_grad"] = (lambda: x * 2), False
    contenders["torch x*2/fwd_bwd"] = lambda: torch.autograd.grad(x_req * 2, x_req, g)
    labels = {"torch x*2": "bare torch op (x * 2)"}
    notes = {}
    for impl in implementations(neuron, device, not args.no_baselines, args.skip):
        if impl.key == "spikeforge[save_h]":
            continue
        try:
            f, params = impl.build()
        except Exception as e:  # noqa: BLE001
            notes[impl.key] = f"n/a: {e}"
            continue
        labels[impl.key] = impl.label
        contenders[f"{impl.key}/no_grad"], grad[f"{impl.key}/no_grad"] = (lambda f=f: f(x)), False
        contenders[f"{impl.key}/fwd_bwd"] = _fwd_bwd(f, x_req, params, g)
    res = bu.per_call_us(contenders, timer, iters=iters, reps=reps, grad=grad)
    out = {"shape": shape, "iters": iters, "reps": reps, "unit": "us per call", "rows": []}
    for key, label in labels.items():
        row = {"impl": key, "label": label}
        for mode in ("no_grad", "fwd_bwd"):
            r = res.get(f"{key}/{mode}")
            row[f"{mode}_us"] = None if r is None else r.median
            if r is not None and r.error:
                row[f"{mode}_error"] = r.error
        out["rows"].append(row)
    for key, why in notes.items():
        out["rows"].append({"impl": key, "label": key, "status": why})
    return out


def overhead_table(ov: dict) -> str:
    headers = ["implementation", "no_grad fwd us", "fwd+bwd us"]
    rows = []
    for r in ov["rows"]:
        if "status" in r:
            rows.append([r["label"], r["status"]])
            continue
        if r.get("no_grad_error") and r.get("no_grad_error") == r.get("fwd_bwd_error"):
            rows.append([r["label"], f"n/a: {r['no_grad_error']}"])
            continue
        rows.append(
            [
                r["label"],
                bu.fmt(r["no_grad_us"], ".1f", r.get("no_grad_error", "n/a")),
                bu.fmt(r["fwd_bwd_us"], ".1f", r.get("fwd_bwd_error", "n/a")),
            ]
        )
    return (
        f"per-call overhead, tiny input {ov['shape']} (median of {ov['reps']} loops of {ov['iters']} calls)\n"
        + bu.format_table(headers, rows)
    )


# --------------------------------------------------------------------------------------------
# summary, plot, entry point
# --------------------------------------------------------------------------------------------
def summary_table(cases: list[dict]) -> str:
    baselines = []
    for c in cases:
        for r in c["rows"]:
            if not r["default"] and r["label"] not in baselines:
                baselines.append(r["label"])
    headers = ["case", "sf fwd ms", "sf f+b ms", "f+b GB/s", "f+b %bw"] + [f"x {b}" for b in baselines]
    rows = []
    for c in cases:
        sf = next(r for r in c["rows"] if r["default"])
        by_label = {r["label"]: r for r in c["rows"]}
        frac = sf.get("fwd_bwd_roofline_fraction")
        row = [
            f"{c['neuron']} T={c['T']} {c['dtype']}",
            bu.fmt(sf.get("fwd_ms")),
            bu.fmt(sf.get("fwd_bwd_ms")),
            bu.fmt(sf.get("fwd_bwd_gbps")),
            bu.fmt(None if frac is None else 100 * frac, ".1f"),
        ]
        for b in baselines:
            r = by_label.get(b)
            row.append(
                "n/a"
                if r is None or r.get("fwd_bwd_ratio_vs_spikeforge") is None
                else f"{r['fwd_bwd_ratio_vs_spikeforge']:.2f}"
            )
        rows.append(row)
    return (
        "summary (forward+backward; 'x NAME' = NAME's time / spikeforge's time, > 1: spikeforge is faster)\n"
        + bu.format_table(headers, rows)
    )


def plot(cases: list[dict], path: str, title: str) -> None:
    """Four panels: forward and forward+backward roofline fractions (every contender), and their times over
    spikeforge's (log scale). One legend under the figure, listing the contenders that have bars."""
    plt = bu.pyplot()
    if plt is None:
        return
    labels = list(dict.fromkeys(r["label"] for c in cases for r in c["rows"]))
    defaults = {r["label"] for c in cases for r in c["rows"] if r["default"]}
    color_of = bu.colors_by_label(plt, labels)
    names = [f"{c['neuron']} T={c['T']}\n{c['dtype']}" for c in cases]
    fig, axes = plt.subplots(2, 2, figsize=(max(10, 2.2 * len(cases) + 6), 9))
    handles = []
    for col, phase in enumerate(("fwd", "fwd_bwd")):
        for ax, key, ylabel, log in (
            (axes[0][col], f"{phase}_roofline_fraction", "fraction of copy bandwidth", False),
            (axes[1][col], f"{phase}_ratio_vs_spikeforge", "time / spikeforge's (>1: spikeforge faster)", True),
        ):
            shown = [lab for lab in labels if not (log and lab in defaults)]
            series = {
                lab: [next((r.get(key) for r in c["rows"] if r["label"] == lab), None) for c in cases] for lab in shown
            }
            handles.append(bu.grouped_bars(ax, names, series, color_of))
            ax.set_ylabel(ylabel, fontsize=9)
            if log:
                bu.ratio_axis(ax)
            ax.set_title(
                ("forward" if phase == "fwd" else "forward+backward")
                + (": roofline fraction" if not log else ": time over spikeforge's"),
                fontsize=10,
            )
    fig.suptitle(title, fontsize=10)
    bu.figure_legend(fig, *handles)
    bu.save_figure(fig, path)


def run(args) -> int:
    device = bu.resolve_device(args.device)
    bu.setup_threads(args, device)
    if args.reps is None:
        args.reps = 3 if args.quick else 5
    Ts = args.T or ([4] if args.quick else [4, 8, 32])
    n = args.n if args.n is not None else ((1 << 14) if args.quick else None)
    timer = bu.Timer(device)

    env = bu.environment(device)
    print("spikeforge bench neurons")
    for line in bu.environment_lines(env):
        print("  " + line)
    bw = bu.Bandwidth(device)
    bw.measure(timer)
    t_start = time.perf_counter()

    cases = []
    for neuron in args.neuron:
        for dname in args.dtype:
            for T in Ts:
                t0 = time.perf_counter()
                cases.append(run_case(neuron, T, n, DTYPES[dname], device, args, bw, timer))
                print(f"  ... {neuron} T={T} {dname} done in {time.perf_counter() - t0:.0f} s", flush=True)
    overhead = None
    if not args.no_overhead:
        t0 = time.perf_counter()
        overhead = {nm: run_overhead(nm, device, args, timer) for nm in args.neuron}
        print(f"  ... per-call overhead done in {time.perf_counter() - t0:.0f} s", flush=True)
    set_roofline_fractions(cases, bw.gbps)
    case_copies = ", ".join(bu.fmt(c["copy_gbps_this_case"], ".1f") for c in cases)
    print(
        f"\n  memory bandwidth: {bu.fmt(bw.gbps, '.1f')} GB/s = copy of {bw.bytes_per_copy / 2 / 2**20:.0f} MiB "
        f"(read + write) / median time of {len(bw.samples_ms)} copies timed at the start and inside each case "
        f"(per case: {case_copies} GB/s)"
    )
    print(f"  traffic model: {TRAFFIC_MODEL}")
    print(
        f"  timing: median of {args.reps} reps after {args.warmup} warm-up, contenders round-robin "
        f"(slow ones fewer reps, >= 3, to stay near {args.time_budget:g} s each); fwd = training forward "
        "(input requires grad)"
    )
    print(
        "  columns: '%bw' = GB/s / copy bandwidth; 'x sf' = time / spikeforge default time (> 1: spikeforge "
        "faster); 'spikes=sf' = % of spikes equal to spikeforge's\n"
    )
    for case in cases:
        print(case_table(case))
        print()
    if overhead:
        for nm, ov in overhead.items():
            print(f"[{nm}] " + overhead_table(ov))
            print()

    print(summary_table(cases))
    notes = {}
    for c in cases:
        for r in c["rows"]:
            notes.setdefault(r["label"], r["note"])
    compile_s = [
        f"{c['neuron']} T={c['T']}: {r['compile_s']:.1f} s"
        for c in cases
        for r in c["rows"]
        if r.get("compile_s") is not None
    ]
    print("\nnotes:")
    for label, note in notes.items():
        print(f"  {label}: {note}")
    if compile_s:
        print("  torch.compile compile time (excluded from the timings): " + "; ".join(compile_s))
    end_load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    wall = time.perf_counter() - t_start
    print(f"  load average at end: {', '.join(f'{v:.1f}' for v in end_load)}; run time {wall:.0f} s")

    data = {
        "benchmark": "neurons",
        "environment": env,
        "bandwidth": bw.as_dict(),
        "run_time_s": wall,
        "settings": {
            "reps": args.reps,
            "warmup": args.warmup,
            "time_budget_s": args.time_budget,
            "threads": torch.get_num_threads(),
            "quick": args.quick,
            "baselines": not args.no_baselines,
            "skipped": args.skip,
            "fwd": "training forward (input requires grad)",
            "fwd_bwd": "forward + torch.autograd.grad(spikes, [x] + params, grad_spike)",
            "options": OPTIONS,
            "ratio": "implementation time / spikeforge default time",
        },
        "traffic_model": {
            "description": TRAFFIC_MODEL,
            "bytes_per_element_step_in_b": TRAFFIC,
            "spikeforge_save_h_in_b": TRAFFIC_SAVE_H,
        },
        "cases": cases,
        "overhead": overhead,
        "notes": notes,
        "load_average_end": end_load,
    }
    if args.json:
        bu.write_json(args.json, data)
    if args.plot:
        plot(
            cases,
            args.plot,
            f"spikeforge bench neurons on {env['device_name']} ({env['device']}, "
            f"{env['torch_threads']} threads, copy {bu.fmt(bw.gbps, '.1f')} GB/s)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(bu.main(NAME))
