"""``spikeforge bench spikes``: event-driven spike propagation (ops.spike_linear / spike_conv2d) against
dense torch (F.linear / F.conv2d) over a sweep of firing rates.

Standard cases (docs/benchmarks.md): linear 4096 -> 4096 and conv 3x3 64 -> 64 at 32x32 (padding 1),
batch*T = 256, float32, binary Bernoulli spikes at rates 0.5% .. 50%. Per case: median ms of the forward
(inputs require grad, as in training) and of forward+backward (torch.autograd.grad w.r.t. the input, the
weight and the bias with a random upstream gradient), spikeforge in mode="sparse" (the event path forced)
and mode="auto" (the rate dispatch), timed round-robin with the dense op in one process
(benchlib.side_by_side). "saved" is what the op keeps of the input for backward
(ops.spike.saved_bytes) against the dense layer's float32 input. The crossover is the highest swept rate
at which the event path is still faster than dense (forward+backward), per op; spikeforge's
ops.spike.CROSSOVER table holds the measured values.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

import benchlib as bu
from spikeforge.cli._common import positive_int

NAME = "spikes"
HELP = (
    "event-driven spike_linear / spike_conv2d vs dense torch over firing rates: ms, speedup, saved bytes, "
    "crossover rate"
)

RATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def add_arguments(p) -> None:
    p.add_argument(
        "--op", nargs="+", choices=("linear", "conv"), default=["linear", "conv"], help="(default: linear conv)"
    )
    p.add_argument(
        "--rates",
        type=bu.firing_rate,
        nargs="+",
        default=None,
        metavar="RATE",
        help=f"firing rates (default {' '.join(map(str, RATES))}; --quick: 0.05 0.5)",
    )
    p.add_argument("--batch", type=positive_int, default=None, help="batch*T rows / images (default 256; --quick 16)")


def _case(op: str, rate: float, batch: int, quick: bool, device: torch.device):
    gen = torch.Generator(device="cpu").manual_seed(1)
    if op == "linear":
        K = N = 512 if quick else 4096
        s = (torch.rand(batch, K, generator=gen) < rate).float()
        w = torch.randn(N, K, generator=gen) / K**0.5
        b = torch.randn(N, generator=gen)
        shape = f"[{batch}, {K}] -> {N}"
    else:
        C, H = (16, 16) if quick else (64, 32)
        s = (torch.rand(batch, C, H, H, generator=gen) < rate).float()
        w = torch.randn(C, C, 3, 3, generator=gen) / (9 * C) ** 0.5
        b = torch.randn(C, generator=gen)
        shape = f"[{batch}, {C}, {H}, {H}] 3x3 -> {C}"
    return shape, s.to(device), w.to(device), b.to(device)


def _fns(op, s, w, b):
    from spikeforge import ops

    def sf(mode):
        if op == "linear":
            return lambda s_, w_, b_: ops.spike_linear(s_, w_, b_, mode=mode)
        return lambda s_, w_, b_: ops.spike_conv2d(s_, w_, b_, 1, 1, mode=mode)

    dense = (
        (lambda s_, w_, b_: F.linear(s_, w_, b_)) if op == "linear" else (lambda s_, w_, b_: F.conv2d(s_, w_, b_, 1, 1))
    )
    return {"spikeforge": sf("sparse"), "spikeforge_auto": sf("auto"), "dense": dense}


def _fwd(fn, s, w, b):
    return lambda: fn(s, w, b)


def _fwd_bwd(fn, s, w, b, gy):
    def run():
        y = fn(s, w, b)
        torch.autograd.grad(y, (s, w, b), gy)

    return run


def _agreement(fns: dict, s, w, b, gy) -> dict:
    """Each contender's output and gradients (s, w, b) against dense torch's, on the timed computation (grad
    mode, forward + backward): True where all agree to float32 rounding (sums of up to K products in another
    order), False where not, the error text where a contender failed. A contender that disagrees is not a
    speed-up (the table flags it; the crossover leaves it out)."""

    def run(f):
        s_, w_, b_ = (t.detach().clone().requires_grad_() for t in (s, w, b))
        y = f(s_, w_, b_)
        return [y.detach(), *torch.autograd.grad(y, (s_, w_, b_), gy)]

    want = run(fns["dense"])
    out = {}
    for key, f in fns.items():
        if key == "dense":
            continue
        try:
            got = run(f)
        except Exception as e:  # noqa: BLE001 - reported in the table
            out[key] = bu.error_text(e, 60)
            continue
        out[key] = all(
            g.shape == r.shape and bool(torch.allclose(g, r, rtol=1e-4, atol=1e-4 * max(1.0, float(r.abs().max()))))
            for g, r in zip(got, want)
        )
    return out


def plot(results: list[dict], ops, path: str, device_name: str) -> None:
    """Spike-propagation crossover curves: median ms of the event-driven and the dense path against the
    firing rate, forward and forward+backward, one panel per op."""
    plt = bu.pyplot()
    if plt is None:
        return
    ops = list(ops)
    fig, axes = plt.subplots(1, len(ops), figsize=(6 * len(ops), 4.5), squeeze=False)
    for ax, op in zip(axes[0], ops):
        rs = sorted((r for r in results if r["op"] == op), key=lambda r: r["rate"])
        x = [100 * r["rate"] for r in rs]
        for key, label, style in (("fwd_ms", "forward", "-"), ("fwd_bwd_ms", "forward+backward", "--")):
            ax.plot(x, [r[key]["spikeforge"] for r in rs], "o" + style, color="C0", label=f"event {label}")
            ax.plot(x, [r[key]["dense"] for r in rs], "s" + style, color="C1", label=f"dense torch {label}")
        bu.ratio_axis(ax, "x")  # firing rates 0.5 ... 50 %, labelled as plain numbers
        ax.set_xlabel("firing rate (%)")
        ax.set_ylabel("ms (median)")
        ax.set_title(f"{op}: {rs[0]['shape'] if rs else ''} ({device_name})", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    bu.save_figure(fig, path)


def run(args) -> int:
    device = bu.resolve_device(args.device)
    bu.setup_threads(args, device)
    timer = bu.Timer(device)
    reps = args.reps or (3 if args.quick else 5)
    rates = args.rates or ((0.05, 0.5) if args.quick else RATES)
    batch = args.batch or (16 if args.quick else 256)
    env = bu.environment(device)
    for line in bu.environment_lines(env):
        print(line)
    from spikeforge.ops import spike as sp

    rows, results = [], []
    for op in args.op:
        for rate in rates:
            shape, s0, w0, b0 = _case(op, rate, batch, args.quick, device)
            s, w, b = (t.clone().requires_grad_() for t in (s0, w0, b0))
            y = _fns(op, s, w, b)["dense"](s, w, b)
            gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(device)
            fns = _fns(op, s, w, b)
            agree = _agreement(fns, s, w, b, gy)
            cont_f = {k: _fwd(f, s, w, b) for k, f in fns.items()}
            cont_fb = {k: _fwd_bwd(f, s, w, b, gy) for k, f in fns.items()}
            rf = bu.side_by_side(cont_f, timer, reps=reps, warmup=args.warmup, time_budget_s=args.time_budget)
            rfb = bu.side_by_side(cont_fb, timer, reps=reps, warmup=args.warmup, time_budget_s=args.time_budget)
            saved = sp.saved_bytes(s0)
            dense_saved = s0.numel() * 4
            rec = {
                "op": op,
                "shape": shape,
                "rate": rate,
                "measured_rate": float((s0 != 0).float().mean()),
                "saved_bytes": saved,
                "dense_saved_bytes": dense_saved,
                "fwd_ms": {k: r.median for k, r in rf.items()},
                "fwd_bwd_ms": {k: r.median for k, r in rfb.items()},
                "fwd_minor_faults": {k: r.faults_per_call for k, r in rf.items()},
                "fwd_bwd_minor_faults": {k: r.faults_per_call for k, r in rfb.items()},
                "errors": {k: r.error for k, r in list(rf.items()) + list(rfb.items()) if r.error},
                "same_as_dense": agree,
            }
            sfw, dfw = rec["fwd_ms"]["spikeforge"], rec["fwd_ms"]["dense"]
            sfb, dfb = rec["fwd_bwd_ms"]["spikeforge"], rec["fwd_bwd_ms"]["dense"]
            ok = agree.get("spikeforge") is True  # a speed-up only for the same numbers
            rec["speedup_fwd"] = dfw / sfw if ok and sfw and dfw else None
            rec["speedup_fwd_bwd"] = dfb / sfb if ok and sfb and dfb else None
            if not ok:
                print(f"  {op} at {100 * rate:g}%: the event path does not compute dense's numbers: {agree}")
            elif agree.get("spikeforge_auto") is not True:
                print(f"  {op} at {100 * rate:g}%: mode='auto' does not compute dense's numbers: {agree}")
            results.append(rec)
            rows.append(
                [
                    op,
                    shape,
                    f"{100 * rate:g}%",
                    bu.fmt(sfw),
                    bu.fmt(rec["fwd_ms"]["spikeforge_auto"]),
                    bu.fmt(dfw),
                    bu.fmt(rec["speedup_fwd"]) + "x",
                    bu.fmt(sfb),
                    bu.fmt(rec["fwd_bwd_ms"]["spikeforge_auto"]),
                    bu.fmt(dfb),
                    bu.fmt(rec["speedup_fwd_bwd"]) + "x",
                    f"{saved}",
                    f"1/{dense_saved / max(saved, 1):.0f}",
                ]
            )
            print(f"  done: {op} at {100 * rate:g}% firing", flush=True)
    print(
        bu.format_table(
            [
                "op",
                "shape",
                "rate",
                "event fwd",
                "auto fwd",
                "dense fwd",
                "x fwd",
                "event f+b",
                "auto f+b",
                "dense f+b",
                "x f+b",
                "saved B",
                "vs f32",
            ],
            rows,
            left=2,
        )
    )
    crossover = {}
    for op in args.op:
        rs = [r for r in results if r["op"] == op]
        # rates without a ratio (a failed or disagreeing contender) are named apart, not counted as slower
        missing = [r["rate"] for r in rs if r["speedup_fwd_bwd"] is None or r["speedup_fwd"] is None]
        if missing:
            print(f"crossover ({op}): no ratio at {', '.join(f'{100 * m:g}%' for m in missing)} (see above)")
        fast = [r["rate"] for r in rs if (r["speedup_fwd_bwd"] or 0) >= 1.0]
        fastf = [r["rate"] for r in rs if (r["speedup_fwd"] or 0) >= 1.0]
        crossover[op] = {"fwd_bwd": max(fast) if fast else None, "fwd": max(fastf) if fastf else None}
        key = "conv2d" if op == "conv" else op
        setting = sp.CROSSOVER.get(device.type, {}).get(key)
        fb, f = crossover[op]["fwd_bwd"], crossover[op]["fwd"]

        def upto(r):
            return "at none of the swept rates" if r is None else f"up to {100 * r:g}% firing"

        auto = f"mode='auto' takes it up to {100 * setting:g}%" if setting is not None else "mode='auto' never takes it"
        print(
            f"crossover ({op}, {device.type}): the event path beats dense {upto(fb)} forward+backward, "
            f"{upto(f)} forward; {auto} (spikeforge.ops.spike.CROSSOVER[{device.type!r}][{key!r}])"
        )
        # the defaults are the lowest crossovers measured on the project's machines: what holds on this one
        fwd_setting = sp.CROSSOVER.get(device.type, {}).get(key + "_fwd")
        if fb is not None and f is not None and (fb, f) != (setting, fwd_setting):
            print(
                f"  for this machine and layer size: spikeforge.ops.spike.CROSSOVER[{device.type!r}].update("
                f"{{{key!r}: {fb!r}, {key + '_fwd'!r}: {f!r}}})"
                + (
                    " (conv: for maps of more than 256 output pixels; smaller maps use CONV_CROSSOVER_SMALL_MAPS)"
                    if op == "conv"
                    else ""
                )
            )
    print(f"load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        bu.write_json(args.json, {"target": NAME, "environment": env, "results": results, "crossover": crossover})
    if args.plot:
        plot(results, args.op, args.plot, env["device_name"])
    return 0


if __name__ == "__main__":
    sys.exit(bu.main(NAME))
