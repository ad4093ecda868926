"""A/B of the native SSA kernels of two builds in one process (CPU): this tree's spikeforge._C against another
build's _C module (e.g. a copy of the previous commit's), both called on the same arguments: those this tree's
ops.ssa passes to its kernels in one training call (captured there: q, k, v spikes, the forward's K^T V and
spike bits, the gradients), with the same, already-touched output tensors. The two builds alternate call by
call (which goes first alternates too), as in neuron_ab.py. Reports per shape and kernel the min and the median
ms of each build, the median of the per-pair ratios new / base (1.00: no change; < 1: the new build is faster)
and the largest difference between the two builds' outputs (outputs poisoned with NaN before each build's run:
inf where one build leaves an output unwritten).

    python bench/attention_ab.py --base /path/to/old/spikeforge/_C.cpython-311-x86_64-linux-gnu.so \\
        [--dim 384 768] [--heads 8 12] [--kernel forward backward] [--reps 21]

Both builds must bind the same functions with the same arguments (an A/B of kernel code, not of the bindings:
benchlib.load_other_build).
"""

import argparse

import torch

import benchlib as bu
import spikeforge as sf
from spikeforge.cli._common import positive_int, thread_count
from spikeforge.ops import attention as attention_ops

KERNELS = {"forward": "attention_ssa_forward", "backward": "attention_ssa_backward"}


def capture(shape: tuple, rate: float, gen: torch.Generator) -> dict:
    """The native arguments of one forward and one backward of ops.ssa on spikes of this shape (this tree's op)."""
    q, k, v = ((torch.rand(shape, generator=gen) < rate).float().requires_grad_(True) for _ in range(3))
    with bu.recording(attention_ops, KERNELS.values()) as calls:
        out = sf.ops.ssa(q, k, v)
        torch.autograd.grad(out, [q, k, v], torch.randn(out.shape, generator=gen))
    return calls


def outputs(name: str, args: tuple) -> list:
    """The tensors a kernel writes: out, K^T V and the bits (forward), the three gradients (backward)."""
    if name == "attention_ssa_forward":
        return [t.detach() for t in args[3:6] if isinstance(t, torch.Tensor)]
    return [t.detach() for t in args[6:9]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="path of the other build's _C shared library")
    ap.add_argument("--dim", type=positive_int, nargs="+", default=[384, 768], help="channels D (default 384 768)")
    ap.add_argument("--heads", type=positive_int, nargs="+", default=[8, 12], help="heads (default 8 12)")
    ap.add_argument("--tokens", type=positive_int, default=196)
    ap.add_argument("--T", type=positive_int, default=4)
    ap.add_argument("--batch", type=positive_int, default=2)
    ap.add_argument("--rate", type=bu.firing_rate, default=0.15, help="firing rate of q, k, v in (0, 1] (default 0.15)")
    ap.add_argument("--kernel", nargs="+", default=["forward", "backward"], choices=sorted(KERNELS))
    ap.add_argument("--reps", type=positive_int, default=21, help="timed calls of each build (default 21)")
    ap.add_argument("--threads", type=thread_count, default=2)
    args = ap.parse_args()
    if any(d % h for d in args.dim for h in args.heads):
        ap.error("every --dim must be a multiple of every --heads")
    torch.set_num_threads(args.threads)
    base = bu.load_other_build(args.base)
    new = attention_ops.native
    print(
        f"cpu: {bu.cpu_model()}, {args.threads} threads, float32, N = {args.tokens}, T = {args.T}, batch "
        f"{args.batch}, {args.rate:.0%} spikes; {args.reps} alternating calls of each build, warm"
    )
    print(
        f"{'D':>4s} {'heads':>5s} {'kernel':9s} {'base min/med ms':>16s} {'new min/med ms':>16s} "
        f"{'new/base':>8s} {'max diff':>9s}"
    )
    for dim in args.dim:
        for heads in args.heads:
            shape = (args.T, args.batch, heads, args.tokens, dim // heads)
            calls = capture(shape, args.rate, torch.Generator().manual_seed(0))
            for kernel in args.kernel:
                name = KERNELS[kernel]
                a = calls[name]
                f_base, f_new = getattr(base, name), getattr(new, name)
                diff = bu.compare_builds(f_base, f_new, a, outputs(name, a))
                cols = bu.alternate(f_base, f_new, a, args.reps)
                print(f"{dim:4d} {heads:5d} {kernel:9s} {cols} {diff:9.2g}", flush=True)


if __name__ == "__main__":
    main()
