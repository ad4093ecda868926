"""Conv firing-rate crossover sweep over ResNet geometries (CPU): forward+backward of ops.spike_conv2d with
mode="sparse" against F.conv2d, per output-map size, at batch*T = 32 (sew_resnet18 T=4 batch 8 64x64 has
these maps). The result sets ops.spike.CROSSOVER["cpu"]["conv2d"] and CONV_CROSSOVER_SMALL_MAPS.

    python bench/conv_crossover.py [--threads 2] [--json bench/results/cpu_conv_crossover.json]
"""

import argparse
import time

import torch
import torch.nn.functional as F

from spikeforge.ops import spike_conv2d
import benchlib as bu
from spikeforge.cli._common import positive_int, thread_count

GEOMETRIES = [
    (64, 64, 32, 3, 1),
    (64, 64, 16, 3, 1),
    (128, 128, 8, 3, 1),
    (256, 256, 4, 3, 1),
    (512, 512, 2, 3, 1),
    (256, 512, 4, 3, 2),
    (256, 256, 8, 1, 1),
    (128, 256, 8, 1, 2),
]  # cin, cout, input size, kernel, stride
RATES = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4]


def median_ms(f, reps: int) -> float:
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=thread_count, default=2)
    ap.add_argument("--reps", type=positive_int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = []
    for cin, cout, size, k, stride in GEOMETRIES:
        w = (torch.randn(cout, cin, k, k) * 0.05).requires_grad_(True)
        row = {"cin": cin, "cout": cout, "input": size, "kernel": k, "stride": stride, "speedup_fwd_bwd": {}}
        for rate in RATES:
            s = (torch.rand(32, cin, size, size) < rate).float().requires_grad_(True)
            g = torch.randn_like(F.conv2d(s, w, None, stride, k // 2))
            dense = median_ms(lambda: F.conv2d(s, w, None, stride, k // 2).backward(g), args.reps)
            sparse = median_ms(lambda: spike_conv2d(s, w, None, stride, k // 2, mode="sparse").backward(g), args.reps)
            row["speedup_fwd_bwd"][str(rate)] = dense / sparse
        row["output_pixels"] = ((size + 2 * (k // 2) - k) // stride + 1) ** 2
        cases.append(row)
        print(
            f"{cin}->{cout} {size}x{size} k{k} s{stride} (out {row['output_pixels']} px): "
            + "  ".join(f"{r}: {v:.2f}x" for r, v in row["speedup_fwd_bwd"].items()),
            flush=True,
        )
    if args.json:
        bu.write_json(
            args.json,
            {
                "benchmark": "conv_crossover",
                "environment": bu.environment(torch.device("cpu")),
                "batch_times_T": 32,
                "threads": args.threads,
                "reps": args.reps,
                "note": "speedup = dense F.conv2d f+b time / spike_conv2d(mode='sparse') f+b time",
                "cases": cases,
            },
        )


if __name__ == "__main__":
    main()
