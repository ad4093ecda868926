"""Every event-driven path of spike_linear / spike_conv2d against the dense torch op, side by side in one
process: forward and forward+backward of linear (binary, counts and ternary input), the masked grad_input of
linear, conv2d on its im2col-list kernels (groups=1) and on its scatter kernels (groups=2). The event path is
forced with mode="sparse"; "auto" is timed too (ternary input takes the event path under "auto" only where the
build knows the ternary kind). The ratio column is dense ms / event ms (> 1: the event path is faster).

Use it to compare two builds on the same machine: run it once per build (PYTHONPATH=<tree>/python) back to back
and compare the ratios, which are measured in one process each.

    python bench/spike_paths.py [--threads 2] [--reps 7] [--rate 0.05] [--json out.json]
"""

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from spikeforge.ops import spike_conv2d, spike_linear
from spikeforge.cli._common import positive_int, thread_count

import benchlib as bu


def median_ms(f, reps: int) -> float:
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


def spikes(shape, rate, kind, gen):
    on = (torch.rand(shape, generator=gen) < rate).float()
    if kind == "counts":
        return on * torch.randint(1, 5, shape, generator=gen).float()
    if kind == "ternary":
        return on * (torch.randint(0, 2, shape, generator=gen).float() * 2 - 1)
    return on


def cases(rate, gen):
    K = N = 4096
    w = torch.randn(N, K, generator=gen) / K**0.5
    b = torch.randn(N, generator=gen)
    for kind in ("binary", "counts", "ternary"):
        s = spikes((256, K), rate, kind, gen)
        yield (
            f"linear {kind} [256, 4096] -> 4096",
            s,
            w,
            b,
            None,
            lambda s_, w_, b_, m: F.linear(s_, w_, b_),
            lambda mode: lambda s_, w_, b_, m: spike_linear(s_, w_, b_, mode=mode),
        )
    s = spikes((256, K), rate, "binary", gen)
    mask = torch.rand(256, K, generator=gen) < rate
    yield (
        "linear masked grad_input",
        s,
        w,
        b,
        mask,
        lambda s_, w_, b_, m: F.linear(s_, w_, b_),
        lambda mode: lambda s_, w_, b_, m: spike_linear(s_, w_, b_, mode=mode, grad_mask=m),
    )
    for groups, C, H in ((1, 64, 16), (2, 64, 32)):
        s = spikes((64, C, H, H), rate, "binary", gen)
        wc = torch.randn(C, C // groups, 3, 3, generator=gen) / (9 * C) ** 0.5
        bc = torch.randn(C, generator=gen)
        yield (
            f"conv 3x3 {C}->{C} {H}x{H} groups={groups}",
            s,
            wc,
            bc,
            None,
            lambda s_, w_, b_, m, g=groups: F.conv2d(s_, w_, b_, 1, 1, 1, g),
            lambda mode, g=groups: lambda s_, w_, b_, m: spike_conv2d(s_, w_, b_, 1, 1, 1, g, mode=mode),
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=thread_count, default=2)
    ap.add_argument("--reps", type=positive_int, default=7)
    ap.add_argument("--rate", type=bu.firing_rate, default=0.05)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    cpu = (
        next(
            (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
            platform.processor(),
        )
        if platform.system() == "Linux"
        else platform.processor()
    )
    print(f"cpu: {cpu}, threads {args.threads}, rate {args.rate}, torch {torch.__version__}")
    print(
        f"{'case':40s} {'event fwd':>9s} {'dense fwd':>9s} {'x fwd':>6s} {'event f+b':>9s} {'auto f+b':>9s} "
        f"{'dense f+b':>9s} {'x f+b':>6s}"
    )
    for name, s, w, b, mask, dense, sf in cases(args.rate, gen):
        s_, w_, b_ = (t.clone().requires_grad_(True) for t in (s, w, b))
        gy = torch.randn_like(dense(s, w, b, mask))

        def fwd(fn):
            return lambda: fn(s_, w_, b_, mask)

        def fb(fn):
            return lambda: torch.autograd.grad(fn(s_, w_, b_, mask), (s_, w_, b_), gy)

        dense_fb = (
            (lambda: torch.autograd.grad(dense(s_, w_, b_, mask), (s_, w_, b_), gy))
            if mask is None
            else (
                lambda: [
                    g * mask if i == 0 else g
                    for i, g in enumerate(torch.autograd.grad(dense(s_, w_, b_, mask), (s_, w_, b_), gy))
                ]
            )
        )
        r = {
            "case": name,
            "event_fwd": median_ms(fwd(sf("sparse")), args.reps),
            "dense_fwd": median_ms(fwd(dense), args.reps),
            "event_fb": median_ms(fb(sf("sparse")), args.reps),
            "auto_fb": median_ms(fb(sf("auto")), args.reps),
            "dense_fb": median_ms(dense_fb, args.reps),
        }
        r["x_fwd"], r["x_fb"] = r["dense_fwd"] / r["event_fwd"], r["dense_fb"] / r["event_fb"]
        rows.append(r)
        print(
            f"{name:40s} {r['event_fwd']:9.2f} {r['dense_fwd']:9.2f} {r['x_fwd']:5.2f}x {r['event_fb']:9.2f} "
            f"{r['auto_fb']:9.2f} {r['dense_fb']:9.2f} {r['x_fb']:5.2f}x",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"cpu": cpu, "threads": args.threads, "rate": args.rate, "torch": torch.__version__, "rows": rows},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
