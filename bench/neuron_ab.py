"""A/B of the native neuron kernels of two builds in one process (CPU): this tree's spikeforge._C against another
build's _C module (e.g. a copy of the previous commit's), both called on the same arguments: those this tree's op
passes to its kernel in one training call (captured there), with the same, already-touched output tensors. The
two builds alternate call by call (which goes first alternates too), so that the load of other jobs on a shared
machine hits both alike, and no call pays for fresh pages (the page faults that made separate runs of one build
differ by 25% and more on a VM: docs/benchmarks.md). Reports per model, T and kernel the min and the median ms of
each build, the median of the per-pair ratios new / base (1.00: no change; < 1: the new build is faster) and the
largest difference between the two builds' outputs (each build's run on outputs poisoned with NaN first: inf
where one build leaves an output unwritten).

    python bench/neuron_ab.py --base /path/to/old/spikeforge/_C.cpython-311-x86_64-linux-gnu.so \\
        [--model lif alif] [--T 4 8 32] [--kernel backward] [--reps 21] [--cold]

Both builds must bind the same types (NeuronParams and the argument lists): an A/B of kernel code, not of the
bindings: the second module's functions take this tree's objects (benchlib.load_other_build).
"""

import argparse

import torch

import benchlib as bu
import spikeforge as sf
from spikeforge.cli._common import positive_int, thread_count
from spikeforge.ops import neuron as neuron_ops

N = 1 << 20  # --n

# one training call of each model with the defaults a user gets (spikes, the states the call returns)
CALLS = {
    "lif": lambda x: sf.ops.lif(x),
    "if": lambda x: sf.ops.if_neuron(x),
    "plif": lambda x: sf.ops.plif(x, torch.zeros((), requires_grad=True)),
    "alif": lambda x: sf.ops.alif(x),
    "ilif": lambda x: sf.ops.ilif(x),
    "ternary": lambda x: sf.ops.ternary_lif(x),
    "leaky": lambda x: sf.ops.leaky(x, beta=0.9),
    "synaptic": lambda x: sf.ops.synaptic(x, alpha=0.9, beta=0.8),  # the main job's (bench neurons --model)
    "alpha": lambda x: sf.ops.alpha_neuron(x, alpha=0.9, beta=0.8),
    "norse": lambda x: sf.ops.norse_lif(x),
}
KERNELS = {"forward": "neuron_forward", "backward": "neuron_backward"}


def capture(model: str, T: int, gen: torch.Generator) -> dict:
    """The native arguments of one forward and one backward of `model` at [T, N] (this tree's op)."""
    x = (torch.randn(T, N, generator=gen) * 0.8 + 0.5).requires_grad_(True)
    with bu.recording(neuron_ops, KERNELS.values()) as calls:
        out = CALLS[model](x)
        spikes = out[0] if isinstance(out, tuple) else out
        torch.autograd.grad(spikes, [x], torch.randn(spikes.shape, generator=gen))
    return calls


def tensors(args) -> list:
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (tuple, list)):
            out += tensors(a)
    return out


# the arguments a kernel writes (csrc/bindings/bind_neuron.cpp): the forward's spikes, states, saved values and
# last states; the backward's gradients of x, of the initial states and of the coefficient slots (with their
# per-neuron workspaces)
OUTPUTS = {"neuron_forward": (3, 4, 5, 12), "neuron_backward": (6, 7, 8, 9)}


def outputs(name: str, args: tuple) -> list:
    return tensors([args[i] for i in OUTPUTS[name] if i < len(args)])


def main() -> None:
    global N
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="path of the other build's _C shared library")
    ap.add_argument("--model", nargs="+", default=["lif", "alif", "ternary"], choices=sorted(CALLS))
    ap.add_argument("--T", type=positive_int, nargs="+", default=[4, 8, 32])
    ap.add_argument("--kernel", nargs="+", default=["forward", "backward"], choices=sorted(KERNELS))
    ap.add_argument("--reps", type=positive_int, default=21, help="timed calls of each build (default 21)")
    ap.add_argument("--threads", type=thread_count, default=2)
    ap.add_argument("--n", type=positive_int, default=N, help="neurons per step (default 2^20)")
    ap.add_argument("--cold", action="store_true", help="write 256 MiB before each call (caches dirtied)")
    args = ap.parse_args()
    N = args.n
    torch.set_num_threads(args.threads)
    base = bu.load_other_build(args.base)
    new = neuron_ops.native
    dirt = torch.empty(64 << 20) if args.cold else None
    cpu = bu.cpu_model()
    print(
        f"cpu: {cpu}, {args.threads} threads, float32, N = {N}; {args.reps} alternating calls of each build"
        + (", caches dirtied before each" if args.cold else ", warm")
    )
    print(
        f"{'model':9s} {'T':>3s} {'kernel':9s} {'base min/med ms':>16s} {'new min/med ms':>16s} "
        f"{'new/base':>8s} {'max diff':>9s}"
    )
    for model in args.model:
        for T in args.T:
            calls = capture(model, T, torch.Generator().manual_seed(0))
            for kernel in args.kernel:
                a = calls[KERNELS[kernel]]
                f_base, f_new = getattr(base, KERNELS[kernel]), getattr(new, KERNELS[kernel])
                diff = bu.compare_builds(f_base, f_new, a, outputs(KERNELS[kernel], a))
                cols = bu.alternate(f_base, f_new, a, args.reps, None if dirt is None else lambda: dirt.fill_(1.0))
                print(f"{model:9s} {T:3d} {kernel:9s} {cols} {diff:9.2g}", flush=True)


if __name__ == "__main__":
    main()
