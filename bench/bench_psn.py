"""``spikeforge bench psn``: parallel spiking neurons (PSN, masked PSN, sliding PSN) against the roofline,
the baselines and the bare GEMM of the same size.

Standard cases (docs/benchmarks.md): T in {4, 8, 32}; N = 2^20 neurons per step on CPU, [T, 64, 65536]
on CUDA. Per case and contender: median ms of the training forward (the input requires grad) and of
forward+backward (torch.autograd.grad of the output w.r.t. x, W and b with a random upstream grad), all
timed round-robin in one process (benchlib.side_by_side). The minimal traffic is that of
bench_neurons: forward reads X and writes S (2 b per element-step), forward+backward adds read gS,
read X, write gX (5 b); "%bw" is GB/s under that model over the copy bandwidth measured in the same run.
"saved" is what the forward keeps for the backward: the unique storages' bytes seen by
torch.autograd.graph.saved_tensors_hooks (X itself included: "xX" = saved bytes / bytes of X).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
from typing import Optional

import sys

import torch

import benchlib as bu
from spikeforge.cli._common import UsageError, positive_float, positive_int

NAME = "psn"
HELP = (
    "parallel spiking neurons (psn, masked_psn, sliding_psn): ms, GB/s, saved bytes, ratios vs reference, "
    "torch.compile, SpikingJelly, bare GEMM"
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OPS = {
    "psn": "psn",
    "masked": "masked_psn",
    "masked_psn": "masked_psn",
    "sliding": "sliding_psn",
    "sliding_psn": "sliding_psn",
}
K, LAM, ALPHA = 4, 1.0, 2.0  # order of masked/sliding PSN (capped at T), mask lambda, atan surrogate alpha
BASELINES = ("reference", "torch.compile", "spikingjelly", "gemm")
TRAFFIC = {"fwd": 2, "fwd_bwd": 5}  # bytes per element-step in units of b (minimal model)
TRAFFIC_MODEL = (
    "minimal traffic per element-step, b bytes per activation: forward = read X + write S = 2b; "
    "backward = read grad_S + read X + write grad_X = 3b; forward+backward = 5b"
)


def add_arguments(p) -> None:
    p.add_argument(
        "--op",
        nargs="+",
        choices=tuple(OPS),
        default=["psn"],
        help=f"psn (default), masked[_psn] (k=min({K}, T), lam=1), sliding[_psn] (k={K})",
    )
    p.add_argument(
        "--T", type=positive_int, nargs="+", default=None, metavar="T", help="time steps (default 4 8 32; --quick: 4)"
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="neurons per step: shape [T, n] (default 2^20 on CPU, [T, 64, 65536] on CUDA; --quick: 2^14)",
    )
    p.add_argument("--dtype", nargs="+", choices=tuple(DTYPES), default=["float32"], help="(default float32)")
    p.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=BASELINES,
        metavar="BASELINE",
        help=f"baselines to leave out, of: {', '.join(BASELINES)}",
    )
    p.add_argument(
        "--compile-limit",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="once torch.compile took longer than this in a case, cases with a larger T skip it (n/a)",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add this run's cases to the existing --json file of `bench psn` instead of replacing it",
    )


# --------------------------------------------------------------------------------------------
# contenders: name -> (label, f(x) -> output, trainable params); spikeforge first
# --------------------------------------------------------------------------------------------
def _params(op: str, T: int, device: torch.device) -> tuple[list, dict]:
    gen = torch.Generator(device="cpu").manual_seed(1)
    if op == "sliding_psn":  # SlidingPSN's exp_init taps (..., 1/4, 1/2, 1), bias -1
        w = torch.tensor([0.5 ** (K - 1 - i) for i in range(K)])
        b = torch.tensor(-1.0)
    else:  # kaiming-uniform(a=sqrt 5) as nn.PSN: U(-1/sqrt T, 1/sqrt T); bias -1
        w = (torch.rand(T, T, generator=gen) * 2 - 1) / math.sqrt(T)
        b = torch.full((T,), -1.0)
    ps = [t.to(device).requires_grad_(True) for t in (w, b)]
    return ps, ({"k": min(K, T), "lam": LAM} if op == "masked_psn" else {})


def _call(module, op: str, ps: list, kw: dict):
    fn = getattr(module, op)
    return lambda x: fn(x, *ps, **kw, surrogate="atan", alpha=ALPHA)


def _spikingjelly(op: str, T: int, ps: list, kw: dict, device: torch.device):
    if not bu.installed("spikingjelly"):
        raise RuntimeError("not installed (pip install spikingjelly)")
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)  # SpikingJelly probes for Triton
    from spikingjelly.activation_based import neuron as sjn
    from spikingjelly.activation_based import surrogate as sjs

    sg = sjs.ATan(alpha=ALPHA)
    if op == "psn":
        m = sjn.PSN(T, surrogate_function=sg)
    elif op == "masked_psn":
        m = sjn.MaskedPSN(kw["k"], T, lambda_init=kw["lam"], surrogate_function=sg, step_mode="m")
    else:
        m = sjn.SlidingPSN(K, surrogate_function=sg, step_mode="m")
    m = m.to(device)
    with torch.no_grad():  # the same weights and bias as ours
        m.weight.copy_(ps[0])
        m.bias.copy_(ps[1].reshape(m.bias.shape))
    return lambda x: m(x), [p for p in m.parameters() if p.requires_grad]


def contenders(op: str, T: int, device: torch.device, args, skip: set) -> dict:
    from spikeforge import ops, reference

    ps, kw = _params(op, T, device)
    out = {"spikeforge": (f"spikeforge ops.{op}", lambda: (_call(ops, op, ps, kw), ps))}
    if args.no_baselines:
        return out
    if "reference" not in skip:
        out["reference"] = (f"reference.{op} (eager)", lambda: (_call(reference, op, ps, kw), ps))
    if "torch.compile" not in skip:

        def build_compiled():
            torch._dynamo.reset()  # a fresh cache per case
            return torch.compile(_call(reference, op, ps, kw), dynamic=False), ps

        out["torch.compile"] = ("torch.compile(reference)", build_compiled)
    if "spikingjelly" not in skip:
        v = bu.dist_version("spikingjelly")
        cls = {"psn": "PSN", "masked_psn": "MaskedPSN", "sliding_psn": "SlidingPSN"}[op]
        out["spikingjelly"] = (
            f"SpikingJelly {v or ''} {cls}".replace("  ", " "),
            lambda: _spikingjelly(op, T, ps, kw, device),
        )
    if "gemm" not in skip:

        def build_gemm():
            w, b = (p.detach().clone().requires_grad_(True) for p in _params("psn", T, device)[0])
            return (lambda x: torch.addmm(b.to(x.dtype).unsqueeze(1), w.to(x.dtype), x.reshape(T, -1))), [w, b]

        out["gemm"] = ("bare GEMM torch.addmm(b, W, X)", build_gemm)
    return out


# --------------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------------


def run_case(
    op: str, T: int, dtype: torch.dtype, device: torch.device, args, bw: bu.Bandwidth, timer: bu.Timer, skip: set
) -> dict:
    shape = [T, 64, 65536] if args.n is None and device.type == "cuda" else [T, args.n or (1 << 20)]
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
    g = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    b = x.element_size()
    nbytes = {k: v * b * x.numel() for k, v in TRAFFIC.items()}

    rows, fns, timed = [], {}, {}
    for key, (label, build) in contenders(op, T, device, args, skip).items():
        row = {"impl": key, "label": label, "status": "ok"}
        rows.append(row)
        try:
            f, ps = build()
            if key == "gemm":  # its own upstream grad, of H's shape
                gg = g.reshape(T, -1)
                run_fb = lambda f=f, ps=ps, gg=gg: torch.autograd.grad(f(x), [x] + ps, gg)  # noqa: E731
            else:
                run_fb = lambda f=f, ps=ps: torch.autograd.grad(f(x), [x] + ps, g)  # noqa: E731
            if key == "torch.compile":  # compile forward and backward graphs outside the timings
                row["compile_s"] = timer.once(run_fb) / 1e3
        except Exception as e:  # noqa: BLE001 - a baseline that fails is reported, not fatal
            row["status"] = f"n/a: {bu.error_text(e)}"
            continue
        fns[key] = f
        timed[f"{key}/fwd"] = lambda f=f: f(x)
        timed[f"{key}/fwd_bwd"] = run_fb
    timed["copy"] = bw.fn
    res = bu.side_by_side(timed, timer, reps=args.reps, warmup=args.warmup, time_budget_s=args.time_budget)
    bw.add(res["copy"].samples)
    del timed
    gc.collect()

    s_sf = None
    for row in rows:
        if row["status"] != "ok":
            continue
        for phase in ("fwd", "fwd_bwd"):
            r = res[f"{row['impl']}/{phase}"]
            if r.error is not None:
                row["status"] = f"n/a: {r.error}"
                break
            row[f"{phase}_ms"], row[f"{phase}_samples_ms"] = r.median, r.samples
            row[f"{phase}_minor_faults"] = r.faults_per_call
            row[f"{phase}_gbps"] = bu.gbps(nbytes[phase], r.median)
        f = fns[row["impl"]]
        if row["impl"] != "torch.compile":  # hooks around a compiled graph would measure a different thing
            row["saved_bytes"] = bu.saved_bytes(f, x)
            row["saved_in_x"] = row["saved_bytes"] / (x.numel() * b)
        if row["impl"] != "gemm":
            s = f(x).detach()
            s_sf = s if s_sf is None else s_sf
            row["spike_rate"] = float(s.float().mean())
            row["spikes_equal_to_spikeforge"] = float((s == s_sf).float().mean())
            del s
    del s_sf, fns
    gc.collect()
    bu.add_ratios(rows, rows[0])  # rows[0] is spikeforge
    return {
        "run": 0,
        "op": op,
        "T": T,
        "k": K if op == "sliding_psn" else (min(K, T) if op == "masked_psn" else None),
        "shape": shape,
        "dtype": str(dtype).replace("torch.", ""),
        "device": str(device),
        "elements": x.numel(),
        "bytes_per_element": b,
        "bytes_fwd": nbytes["fwd"],
        "bytes_fwd_bwd": nbytes["fwd_bwd"],
        "copy_gbps_this_case": bu.gbps(bw.bytes_per_copy, res["copy"].median),
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _pct(v):
    return bu.fmt(None if v is None else 100 * v, ".1f")


def case_table(c: dict) -> str:
    k = f" k={c['k']}" if c["k"] else ""
    head = (
        f"{c['op']} T={c['T']}{k}  shape={c['shape']}  {c['dtype']}  {c['device']}  "
        f"(copy in this case: {bu.fmt(c['copy_gbps_this_case'], '.1f')} GB/s)"
    )
    headers = [
        "contender",
        "fwd ms",
        "f+b ms",
        "fwd GB/s",
        "f+b GB/s",
        "fwd %bw",
        "f+b %bw",
        "x sf fwd",
        "x sf f+b",
        "saved MiB",
        "xX",
        "spikes=sf",
    ]
    rows = []
    for r in c["rows"]:
        if r["status"] != "ok":
            rows.append([r["label"], r["status"]])
            continue
        sb = r.get("saved_bytes")
        rows.append(
            [
                r["label"],
                bu.fmt(r["fwd_ms"]),
                bu.fmt(r["fwd_bwd_ms"]),
                bu.fmt(r["fwd_gbps"], ".1f"),
                bu.fmt(r["fwd_bwd_gbps"], ".1f"),
                _pct(r.get("fwd_roofline_fraction")),
                _pct(r.get("fwd_bwd_roofline_fraction")),
                bu.fmt(r["fwd_ratio_vs_spikeforge"]),
                bu.fmt(r["fwd_bwd_ratio_vs_spikeforge"]),
                bu.fmt(None if sb is None else sb / 2**20, ".0f"),
                bu.fmt(r.get("saved_in_x"), ".2f"),
                _pct(r.get("spikes_equal_to_spikeforge")),
            ]
        )
    return head + "\n" + bu.format_table(headers, rows)


def plot(cases: list[dict], path: str, title: str) -> None:
    """Two panels over the cases: the forward+backward roofline fraction (GB/s over the copy
    bandwidth) of every contender, and its time over spikeforge's (log scale)."""
    plt = bu.pyplot()
    if plt is None:
        return
    labels = list(dict.fromkeys(r["label"] for c in cases for r in c["rows"]))
    spikeforge = {c["rows"][0]["label"] for c in cases}
    color_of = bu.colors_by_label(plt, labels)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.8 * len(cases) + 4), 9))
    names = [f"{c['op']} T={c['T']}" + (f"\n{c['dtype']}" if c.get("dtype") else "") for c in cases]
    handles = []
    for ax, key, log, ylabel in (
        (axes[0], "fwd_bwd_roofline_fraction", False, "forward+backward GB/s / copy GB/s"),
        (axes[1], "fwd_bwd_ratio_vs_spikeforge", True, "forward+backward time / spikeforge's\n(>1: spikeforge faster)"),
    ):
        shown = [lab for lab in labels if not (log and lab in spikeforge)]
        series = {
            lab: [next((r.get(key) for r in c["rows"] if r["label"] == lab), None) for c in cases] for lab in shown
        }
        handles.append(bu.grouped_bars(ax, names, series, color_of))
        ax.set_ylabel(ylabel, fontsize=9)
        if log:
            bu.ratio_axis(ax)
        else:
            ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")  # the copy bandwidth
    axes[0].set_title(title + "\nroofline fraction (dashed: the copy bandwidth)", fontsize=9)
    axes[1].set_title("time over spikeforge's", fontsize=9)
    bu.figure_legend(fig, *handles)
    bu.save_figure(fig, path)


def _appended_to(args) -> Optional[dict]:
    """The earlier `bench psn` result that --append extends, read and checked before the run (a file that was
    not one failed after the run, and --append without --json was ignored)."""
    if not args.append:
        return None
    if not args.json:
        raise UsageError("--append needs --json PATH (the result file to extend)")
    if not os.path.exists(args.json):
        return None
    import json

    try:
        with open(args.json, encoding="utf-8") as fh:
            old = json.load(fh)
    except (OSError, ValueError) as e:
        raise UsageError(f"--append: {args.json} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(old, dict) or old.get("benchmark") != "psn" or not isinstance(old.get("cases"), list):
        raise UsageError(f"--append: {args.json} is not a `bench psn` result")
    return old


def run(args) -> int:
    old = _appended_to(args)
    device = bu.resolve_device(args.device)
    bu.setup_threads(args, device)
    args.reps = args.reps or (3 if args.quick else 5)
    args.n = args.n if args.n is not None else ((1 << 14) if args.quick else None)
    Ts = sorted(args.T or ([4] if args.quick else [4, 8, 32]))
    timer = bu.Timer(device)
    env = bu.environment(device)
    print("spikeforge bench psn")
    for line in bu.environment_lines(env):
        print("  " + line)
    bw = bu.Bandwidth(device)
    bw.measure(timer)
    t_start = time.perf_counter()

    cases, slow_compile = [], None
    for op in dict.fromkeys(OPS[o] for o in args.op):
        for dname in args.dtype:
            for T in Ts:
                skip = set(args.skip)
                if slow_compile is not None and T > slow_compile[0]:
                    skip.add("torch.compile")
                t0 = time.perf_counter()
                case = run_case(op, T, DTYPES[dname], device, args, bw, timer, skip)
                if "torch.compile" in skip - set(args.skip) and not args.no_baselines:
                    case["rows"].insert(
                        2,
                        {
                            "impl": "torch.compile",
                            "label": "torch.compile(reference)",
                            "status": f"n/a: skipped, compile at T={slow_compile[0]} took "
                            f"{slow_compile[1]:.0f} s > --compile-limit",
                        },
                    )
                cs = next((r.get("compile_s") for r in case["rows"] if r["impl"] == "torch.compile"), None)
                if cs is not None and cs > args.compile_limit and slow_compile is None:
                    slow_compile = (T, cs)
                cases.append(case)
                print(f"  ... {op} T={T} {dname} done in {time.perf_counter() - t0:.0f} s", flush=True)
    for c in cases:
        c["bandwidth_gbps"] = bw.gbps
        for r in c["rows"]:
            for phase in ("fwd", "fwd_bwd"):
                v = r.get(f"{phase}_gbps")
                r[f"{phase}_roofline_fraction"] = v / bw.gbps if v and bw.gbps else None

    print(
        f"\n  memory bandwidth: {bu.fmt(bw.gbps, '.1f')} GB/s (copy of {bw.bytes_per_copy / 2 / 2**20:.0f} MiB, "
        f"median of {len(bw.samples_ms)} copies at the start and inside each case)"
    )
    print(f"  traffic model: {TRAFFIC_MODEL}")
    print(
        f"  timing: median of {args.reps} reps after {args.warmup} warm-up, round-robin; fwd = training forward; "
        "f+b = forward + autograd.grad w.r.t. x, W, b"
    )
    print(
        "  columns: '%bw' = GB/s / copy bandwidth; 'x sf' = time / spikeforge's (> 1: spikeforge faster); "
        "'saved' = forward's saved-for-backward storages (X included), 'xX' = that / bytes of X\n"
    )
    for c in cases:
        print(case_table(c) + "\n")
    compile_s = [
        f"{c['op']} T={c['T']}: {r['compile_s']:.1f} s"
        for c in cases
        for r in c["rows"]
        if r.get("compile_s") is not None
    ]
    if compile_s:
        print("  torch.compile compile time (excluded from the timings): " + "; ".join(compile_s))
    end_load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    wall = time.perf_counter() - t_start
    print(f"  load average at end: {', '.join(f'{v:.1f}' for v in end_load)}; run time {wall:.0f} s")

    run_info = {
        "environment": env,
        "bandwidth": bw.as_dict(),
        "run_time_s": wall,
        "load_average_end": end_load,
        "settings": {
            "ops": [OPS[o] for o in args.op],
            "T": Ts,
            "reps": args.reps,
            "warmup": args.warmup,
            "time_budget_s": args.time_budget,
            "threads": torch.get_num_threads(),
            "quick": args.quick,
            "baselines": not args.no_baselines,
            "skipped": args.skip,
            "k": K,
            "lam": LAM,
            "surrogate": f"atan(alpha={ALPHA})",
            "ratio": "contender time / spikeforge time",
        },
    }
    data = {
        "benchmark": "psn",
        **run_info,
        "traffic_model": {"description": TRAFFIC_MODEL, "bytes_per_element_step_in_b": TRAFFIC},
        "cases": cases,
    }
    if old is not None:
        run_no = 1 + len(old.setdefault("appended_runs", []))
        old["appended_runs"].append(run_info)
        old["cases"] += [dict(c, run=run_no) for c in cases]
        data = old
    if args.json:
        bu.write_json(args.json, data)
    if args.plot:
        plot(
            data["cases"],
            args.plot,
            f"spikeforge bench psn on {env['device_name']} ({env['device']}, {env['torch_threads']} threads)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(bu.main(NAME))
