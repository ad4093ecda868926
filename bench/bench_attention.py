"""``spikeforge bench attention``: the spike-driven attention ops (ssa, sdsa, qk_token_attention,
qk_channel_attention) against their composition from torch ops and against the reference.

Standard cases (issue 6): N = 196 tokens, D = 384 and 768 channels split into 8 or 12 heads
(q, k, v of shape [T, B, heads, N, D / heads]), T = 4, batch 2 on CPU. Inputs are Bernoulli spikes
(--rate, default 0.15). Contenders, timed round-robin in one process (benchlib.side_by_side):
  spikeforge  spikeforge.ops.<op> (native fused kernel when the build has it)
  kernel      (sdsa, QK ops on CPU only) the fused kernel torch.ops.spikeforge.attention_reduce_fwd, which
              ops.<op> leaves unused on CPU because the composition measured faster
  composed    the same op composed from torch ops and the fused spikeforge.ops.lif (K^T V first for SSA)
  reference   spikeforge.reference.<op>: the papers' order ((Q K^T) V for SSA, an N x N score matrix)
              with the plain-PyTorch LIF loop
Per case and contender: median ms of the training forward (inputs require grad) and of forward+backward
(torch.autograd.grad w.r.t. q, k, v with a random upstream grad); "saved" = bytes of the unique storages
the forward keeps for the backward (torch.autograd.graph.saved_tensors_hooks), the inputs included, and
"extra" = saved minus the inputs' bytes; on CUDA also the peak allocated bytes of forward+backward above
the inputs (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import gc
import os
import time

import sys

import torch

import benchlib as bu
from spikeforge.cli._common import UsageError, positive_int

NAME = "attention"
HELP = (
    "spike-driven attention ops (ssa, sdsa, qk_token/qk_channel): ms, saved bytes, CUDA peak bytes, "
    "ratios vs the torch-op composition and the reference"
)

OPS = ("ssa", "sdsa", "qk_token_attention", "qk_channel_attention")
OP_ALIASES = {
    "ssa": "ssa",
    "sdsa": "sdsa",
    "qk_token": "qk_token_attention",
    "qk_token_attention": "qk_token_attention",
    "qk_channel": "qk_channel_attention",
    "qk_channel_attention": "qk_channel_attention",
}
N_INPUTS = {"ssa": 3, "sdsa": 3, "qk_token_attention": 2, "qk_channel_attention": 2}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BASELINES = ("composed", "reference")  # plus, for sdsa / QK ops on CPU, the fused kernel ops.<op> does not use


def add_arguments(p) -> None:
    p.add_argument("--op", nargs="+", choices=tuple(OP_ALIASES), default=list(OPS), help="(default: all four)")
    p.add_argument(
        "--dim", type=positive_int, nargs="+", default=None, help="channels D (default 384 768; --quick: 384)"
    )
    p.add_argument("--heads", type=positive_int, nargs="+", default=None, help="heads (default 8 12; --quick: 8)")
    p.add_argument("--tokens", type=positive_int, default=196, help="tokens N (default 196: 14 x 14 patches)")
    p.add_argument("--T", type=positive_int, default=4, help="time steps (default 4)")
    p.add_argument("--batch", type=positive_int, default=None, help="batch (default 2 on CPU, 32 on CUDA)")
    p.add_argument(
        "--rate", type=bu.firing_rate, default=0.15, help="firing rate of the q, k, v spikes in (0, 1] (default 0.15)"
    )
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="(default float32)")
    p.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=BASELINES,
        metavar="BASELINE",
        help=f"baselines to leave out, of: {', '.join(BASELINES)}",
    )


def _reduce_kernel(op: str):
    from spikeforge.ops import attention as attention_ops

    return attention_ops.fused_kernel(op)


def contenders(op: str, args, device: torch.device) -> dict:
    from spikeforge import ops, reference
    from spikeforge.ops import attention as attention_ops

    out = {"spikeforge": (f"spikeforge ops.{op}", getattr(ops, op))}
    if args.no_baselines:
        return out
    if (
        op != "ssa"
        and device.type not in attention_ops.REDUCE_KERNEL_DEVICES
        and attention_ops._native_ok(torch.empty(0, device=device))
    ):
        # where ops.<op> composes torch ops, the fused kernel it does not use (the measurement behind that)
        out["kernel"] = ("fused kernel (attention_reduce_fwd)", _reduce_kernel(op))
    if "composed" not in args.skip:
        out["composed"] = ("torch ops + ops.lif", attention_ops.composed(op))
    if "reference" not in args.skip:
        out["reference"] = (f"reference.{op} (paper order, eager LIF)", getattr(reference, op))
    return out


def cuda_peak_bytes(run_fb, device: torch.device) -> int:
    """Peak bytes allocated during one forward+backward above what was allocated before it."""
    torch.cuda.synchronize(device)
    gc.collect()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run_fb()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def run_case(op: str, D: int, heads: int, device: torch.device, args, timer: bu.Timer) -> dict:
    if D % heads != 0:
        raise SystemExit(f"spikeforge bench attention: heads {heads} does not divide D={D}")
    dtype = DTYPES[args.dtype]
    shape = [args.T, args.batch, heads, args.tokens, D // heads]
    gen = torch.Generator(device="cpu").manual_seed(0)
    inputs = [
        (torch.rand(shape, generator=gen) < args.rate).to(device=device, dtype=dtype).requires_grad_(True)
        for _ in range(N_INPUTS[op])
    ]
    g = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    input_bytes = sum(t.numel() * t.element_size() for t in inputs)

    rows, fns, timed = [], {}, {}
    for key, (label, f) in contenders(op, args, device).items():
        rows.append({"impl": key, "label": label, "status": "ok"})
        fns[key] = f
        timed[f"{key}/fwd"] = lambda f=f: f(*inputs)
        timed[f"{key}/fwd_bwd"] = lambda f=f: torch.autograd.grad(f(*inputs), inputs, g)
    res = bu.side_by_side(timed, timer, reps=args.reps, warmup=args.warmup, time_budget_s=args.time_budget)

    s_sf = None
    for row in rows:
        for phase in ("fwd", "fwd_bwd"):
            r = res[f"{row['impl']}/{phase}"]
            if r.error is not None:
                row["status"] = f"n/a: {r.error}"
                break
            row[f"{phase}_ms"], row[f"{phase}_samples_ms"] = r.median, r.samples
            row[f"{phase}_minor_faults"] = r.faults_per_call
        if row["status"] != "ok":
            continue
        f = fns[row["impl"]]
        row["saved_bytes"] = bu.saved_bytes(f, *inputs)
        row["saved_extra_bytes"] = row["saved_bytes"] - input_bytes
        if device.type == "cuda":
            row["cuda_peak_fwd_bwd_bytes"] = cuda_peak_bytes(timed[f"{row['impl']}/fwd_bwd"], device)
        with torch.no_grad():
            s = f(*inputs)
        s_sf = s if s_sf is None else s_sf
        row["output_nonzero_rate"] = float((s != 0).float().mean())
        row["output_equal_to_spikeforge"] = float((s == s_sf).float().mean())
        del s
    del s_sf, timed
    gc.collect()
    bu.add_ratios(rows, rows[0])  # rows[0] is spikeforge
    return {
        "op": op,
        "D": D,
        "heads": heads,
        "head_dim": D // heads,
        "T": args.T,
        "batch": args.batch,
        "tokens": args.tokens,
        "shape": shape,
        "rate": args.rate,
        "dtype": args.dtype,
        "device": str(device),
        "input_bytes": input_bytes,
        "rows": rows,
    }


def _mib(b):
    return bu.fmt(None if b is None else b / 2**20, ".2f")


def case_table(c: dict) -> str:
    head = (
        f"{c['op']}  D={c['D']} heads={c['heads']} (Dh={c['head_dim']})  shape={c['shape']}  {c['dtype']}  "
        f"{c['device']}  inputs {_mib(c['input_bytes'])} MiB"
    )
    headers = [
        "contender",
        "fwd ms",
        "f+b ms",
        "x sf fwd",
        "x sf f+b",
        "saved MiB",
        "extra MiB",
        "cuda peak MiB",
        "out=sf",
    ]
    rows = []
    for r in c["rows"]:
        if r["status"] != "ok":
            rows.append([r["label"], r["status"]])
            continue
        eq = r.get("output_equal_to_spikeforge")
        rows.append(
            [
                r["label"],
                bu.fmt(r["fwd_ms"], ".3f"),
                bu.fmt(r["fwd_bwd_ms"], ".3f"),
                bu.fmt(r["fwd_ratio_vs_spikeforge"]),
                bu.fmt(r["fwd_bwd_ratio_vs_spikeforge"]),
                _mib(r.get("saved_bytes")),
                _mib(r.get("saved_extra_bytes")),
                _mib(r.get("cuda_peak_fwd_bwd_bytes")),
                bu.fmt(None if eq is None else 100 * eq, ".1f"),
            ]
        )
    return head + "\n" + bu.format_table(headers, rows)


def plot(cases: list[dict], path: str, title: str) -> None:
    """Forward and forward+backward time of every contender over spikeforge's, one bar group per case."""
    plt = bu.pyplot()
    if plt is None:
        return
    labels = list(dict.fromkeys(r["label"] for c in cases for r in c["rows"][1:]))
    color_of = bu.colors_by_label(plt, labels)
    names = [f"{c['op'].replace('_attention', '')}\nD={c['D']}\nh={c['heads']}" for c in cases]
    fig, axes = plt.subplots(2, 1, figsize=(max(9, 0.75 * len(cases) + 3), 9), sharey=True)
    handles = []
    for ax, phase, name in zip(axes, ("fwd", "fwd_bwd"), ("forward", "forward+backward")):
        series = {
            lab: [
                next((r.get(f"{phase}_ratio_vs_spikeforge") for r in c["rows"] if r["label"] == lab), None)
                for c in cases
            ]
            for lab in labels
        }
        handles.append(bu.grouped_bars(ax, names, series, color_of))
        bu.ratio_axis(ax)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("time / spikeforge's\n(>1: spikeforge faster)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    bu.figure_legend(fig, *handles, ncol=2)
    bu.save_figure(fig, path)


def run(args) -> int:
    device = bu.resolve_device(args.device)
    bu.setup_threads(args, device)
    args.reps = args.reps or (3 if args.quick else 5)
    args.batch = args.batch or (2 if device.type == "cpu" else 32)
    dims = args.dim or ([384] if args.quick else [384, 768])
    heads_list = args.heads or ([8] if args.quick else [8, 12])
    for D in dims:  # every pair is a case: checked before the first one runs (one failed mid-run, results lost)
        for heads in heads_list:
            if D % heads:
                raise UsageError(f"--heads {heads} does not divide --dim {D} (every --dim x --heads pair runs)")
    op_names = list(dict.fromkeys(OP_ALIASES[o] for o in args.op))
    timer = bu.Timer(device)
    env = bu.environment(device)
    print("spikeforge bench attention")
    for line in bu.environment_lines(env):
        print("  " + line)
    t_start = time.perf_counter()
    cases = []
    for op in op_names:
        for D in dims:
            for heads in heads_list:
                t0 = time.perf_counter()
                cases.append(run_case(op, D, heads, device, args, timer))
                print(f"  ... {op} D={D} heads={heads} done in {time.perf_counter() - t0:.1f} s", flush=True)
    print(
        f"\n  timing: median of {args.reps} reps after {args.warmup} warm-up, round-robin; fwd = training "
        "forward (inputs require grad); f+b = forward + autograd.grad w.r.t. q, k, v"
    )
    print(
        "  columns: 'x sf' = time / spikeforge's (> 1: spikeforge faster); 'saved' = the forward's "
        "saved-for-backward storages (inputs included), 'extra' = saved - inputs; 'out=sf' = % of output "
        "elements equal to spikeforge's\n"
    )
    for c in cases:
        print(case_table(c) + "\n")
    end_load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    wall = time.perf_counter() - t_start
    print(f"  load average at end: {', '.join(f'{v:.1f}' for v in end_load)}; run time {wall:.0f} s")
    data = {
        "benchmark": "attention",
        "environment": env,
        "run_time_s": wall,
        "load_average_end": end_load,
        "settings": {
            "ops": op_names,
            "D": dims,
            "heads": heads_list,
            "T": args.T,
            "batch": args.batch,
            "tokens": args.tokens,
            "rate": args.rate,
            "dtype": args.dtype,
            "reps": args.reps,
            "warmup": args.warmup,
            "threads": torch.get_num_threads(),
            "quick": args.quick,
            "baselines": not args.no_baselines,
            "skipped": args.skip,
            "ratio": "contender time / spikeforge time",
        },
        "cases": cases,
    }
    if args.json:
        bu.write_json(args.json, data)
    if args.plot:
        plot(
            cases,
            args.plot,
            f"spikeforge bench attention on {env['device_name']} ({env['device']}, {env['torch_threads']} threads)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(bu.main(NAME))
