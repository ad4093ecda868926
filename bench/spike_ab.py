"""A/B of the native spike kernels of two builds in one process (CPU): this tree's spikeforge._C against another
build's _C module (e.g. a copy of the previous commit's), called directly with the same inputs, the two
alternating call by call (which goes first alternates too) so that load from other jobs hits both alike.
Reports the min and median ms of each, the median of the per-pair ratios new / base per kernel (1.00: no
change; > 1: the new build is slower) and the largest difference between the two builds' outputs (each run on
outputs poisoned with NaN first: inf where one build leaves an output unwritten).

    python bench/spike_ab.py --base /path/to/old/spikeforge/_C.cpython-311-x86_64-linux-gnu.so [--reps 21]

Only the arguments both builds accept are passed (the workspaces a newer build adds are optional).
"""

import argparse

import torch

import benchlib as bu
from spikeforge.cli._common import positive_int, thread_count
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
    yield "pack [256, 4096]", lambda nat: nat.spike_pack(s, pack_bits, info, THREADS, 0), [pack_bits, info]
    yield "linear forward", lambda nat: nat.spike_linear_forward(s, w, b, y, None, THREADS, 0), [y]
    yield (
        "linear grad_weight (bits)",
        lambda nat: nat.spike_linear_grad_weight(bits, None, gy, gw, None, THREADS, 0),
        [gw],
    )
    yield (
        "linear masked grad_input",
        lambda nat: nat.spike_linear_grad_input_masked(mask, gy, w, gs, None, THREADS, 0),
        [gs],
    )
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
            [yc],
        )
        yield (
            name + " grad_weight",
            lambda nat, a=(cbits, None, gyc, gwc, None, None, cp): nat.spike_conv2d_grad_weight(*a, THREADS, 0),
            [gwc],
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="path of the other build's _C shared library")
    ap.add_argument("--reps", type=positive_int, default=21)
    ap.add_argument("--rates", type=bu.firing_rate, nargs="+", default=[0.01, 0.05])
    ap.add_argument("--threads", type=thread_count, default=2)
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    torch.set_num_threads(args.threads)
    base = bu.load_other_build(args.base)
    cpu = bu.cpu_model()
    print(f"cpu: {cpu}, {args.threads} threads, float32; {args.reps} alternating calls of each build, warm")
    print(
        f"{'kernel':40s} {'rate':>5s} {'base min/med ms':>16s} {'new min/med ms':>16s} {'new/base':>8s} "
        f"{'max diff':>9s}"
    )
    for rate in args.rates:
        for name, call, outs in cases(rate, torch.Generator().manual_seed(0)):
            # the outputs of each build from poisoned buffers (also the warm-up)
            diff = bu.compare_builds(lambda: call(base), lambda: call(new), (), outs)
            cols = bu.alternate(lambda: call(base), lambda: call(new), (), args.reps)
            print(f"{name:40s} {rate:5.2f} {cols} {diff:9.2g}", flush=True)


if __name__ == "__main__":
    main()
