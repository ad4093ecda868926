"""A/B of the native spike kernels of two builds in one process (CPU): this tree's spikeforge._C against another
build's _C module (e.g. a copy of the previous commit's), called directly with the same inputs, the two
alternating call by call so that load from other jobs hits both alike. Reports the median ms of each and the
ratio new / base per kernel (1.00: no change; > 1: the new build is slower).

    python bench/spike_ab.py --base /path/to/old/spikeforge/_C.cpython-311-x86_64-linux-gnu.so [--reps 21]

Only the arguments both builds accept are passed (the workspaces a newer build adds are optional).
"""

import argparse
import time

import torch

import benchlib as bu
from spikeforge import reference as R
from spikeforge._native import native as new
from spikeforge.ops import spike as S


THREADS = 2  # --threads


def cases(rate: float, gen: torch.Generator):
    K = N = 4096
    M = 256
    s = (torch.rand(M, K, generator=gen) < rate).float()
    w = torch.randn(N, K, generator=gen) / K**0.5
    b = torch.randn(N, generator=gen)
    gy = torch.randn(M, N, generator=gen)
    bits = R.pack_bits(s)
    info = torch.empty(2, dtype=torch.int64)
    mask = R.pack_bits((torch.rand(M, K, generator=gen) < rate).float())
    y, gw, gs = torch.empty(M, N), torch.empty(N, K), torch.empty(M, K)
    pack_bits = torch.empty_like(bits)
    yield "pack [256, 4096]", lambda nat: nat.spike_pack(s, pack_bits, info, THREADS, 0)
    yield "linear forward", lambda nat: nat.spike_linear_forward(s, w, b, y, None, THREADS, 0)
    yield "linear grad_weight (bits)", lambda nat: nat.spike_linear_grad_weight(bits, None, gy, gw, None, THREADS, 0)
    yield "linear masked grad_input", lambda nat: nat.spike_linear_grad_input_masked(mask, gy, w, gs, None, THREADS, 0)
    for groups, C, H, B in ((1, 64, 16, 64), (2, 64, 32, 64)):
        sc = (torch.rand(B, C, H, H, generator=gen) < rate).float()
        wc = torch.randn(C, C // groups, 3, 3, generator=gen)
        cp = S._conv_params(sc, wc, (1, 1), (1, 1), (1, 1), groups)
        yc, gwc = torch.empty(B, C, H, H), torch.empty_like(wc)
        gyc = torch.randn(B, C, H, H, generator=gen)
        cbits = R.pack_bits(sc.reshape(B, -1))
        name = f"conv {C}->{C} {H}x{H} g{groups}"
        yield (
            name + " forward",
            lambda nat, a=(sc, wc, None, yc, None, None, cp): nat.spike_conv2d_forward(*a, THREADS, 0),
        )
        yield (
            name + " grad_weight",
            lambda nat, a=(cbits, None, gyc, gwc, None, None, cp): nat.spike_conv2d_grad_weight(*a, THREADS, 0),
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="path of the other build's _C shared library")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    torch.set_num_threads(args.threads)
    base = bu.load_other_build(args.base)
    cpu = bu.cpu_model()
    print(f"cpu: {cpu}, {args.threads} threads, float32; median of {args.reps} alternating calls each")
    print(f"{'kernel':40s} {'rate':>5s} {'base ms':>8s} {'new ms':>8s} {'new/base':>8s}")
    for rate in args.rates:
        for name, call in cases(rate, torch.Generator().manual_seed(0)):
            call(base), call(new)  # warm-up
            t = {"base": [], "new": []}
            for _ in range(args.reps):
                for key, nat in (("base", base), ("new", new)):
                    t0 = time.perf_counter()
                    call(nat)
                    t[key].append(time.perf_counter() - t0)
            mb, mn = (sorted(v)[len(v) // 2] * 1e3 for v in (t["base"], t["new"]))
            print(f"{name:40s} {rate:5.2f} {mb:8.2f} {mn:8.2f} {mn / mb:8.2f}", flush=True)


if __name__ == "__main__":
    main()
