"""The ``spikeforge`` command line (also ``python -m spikeforge``).

    spikeforge info                      build, native module, CUDA arches, OpenMP/threads, devices
    spikeforge bench neurons [options]   kernel benchmarks (shared/BENCHMARKS.md); --json / --plot
    spikeforge train [options]           train a zoo model (default: sew_resnet18_cifar on the shipped digits)

A benchmark target is a module ``spikeforge.tools.bench_<name>`` exposing NAME, HELP,
``add_arguments(parser)`` and ``run(args) -> int``; registering it is one line in BENCH_TARGETS.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Optional

# bench target name -> module. Adding a target: write the module, add its line here.
BENCH_TARGETS = {
    "neurons": "spikeforge.tools.bench_neurons",
    "psn": "spikeforge.tools.bench_psn",
    "spikes": "spikeforge.tools.bench_spikes",
    "models": "spikeforge.tools.bench_models",
    "attention": "spikeforge.tools.bench_attention",
}


def _info() -> dict:
    import torch

    from . import __version__
    from ._native import native, native_error
    from .tools.benchutil import THP_ENV, dist_version

    d = {"spikeforge": __version__, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
         "torch_threads": torch.get_num_threads(),
         "gpu_visible_to_torch": torch.cuda.is_available(),
         "torch_cuda_device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
         "torch_cuda_devices": ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                                if torch.cuda.is_available() else []),
         "native_module": None if native is None else getattr(native, "__file__", "spikeforge._C"),
         "native_error": native_error,
         THP_ENV: os.environ.get(THP_ENV),
         "peers": {name: dist_version(name) for name in ("spikingjelly", "snntorch", "norse")}}
    if native is not None:
        d.update({"native_version": native.version(), "compiler": native.compiler(),
                  "cuda_kernels": native.has_cuda(), "cuda_version": native.cuda_version() or None,
                  "cuda_arch_list": list(native.cuda_arch_list()),
                  "native_cuda_device_count": native.cuda_device_count(),
                  "openmp": native.has_openmp(), "openmp_max_threads": native.openmp_max_threads()})
    return d


def cmd_info(args) -> int:
    d = _info()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    yn = lambda b: "yes" if b else "no"  # noqa: E731
    print(f"spikeforge {d['spikeforge']}")
    if d["native_module"] is None:
        print(f"  native module:   missing ({d['native_error']}); ops fall back to spikeforge.reference")
    else:
        print(f"  native module:   {d['native_module']} (version {d['native_version']})")
        print(f"  compiler:        {d['compiler']}")
        if d["cuda_kernels"]:
            archs = ", ".join(d["cuda_arch_list"]) or "(arch list not recorded)"
            print(f"  CUDA kernels:    compiled for {archs}; CUDA {d['cuda_version'] or '?'}")
        else:
            print("  CUDA kernels:    not compiled (CPU-only build)")
        print(f"  OpenMP:          {yn(d['openmp'])} (max threads {d['openmp_max_threads']})")
    print(f"  torch:           {d['torch']} (CUDA {d['torch_cuda'] or 'none'}); "
          f"torch.get_num_threads() = {d['torch_threads']}")
    gpus = ", ".join(d["torch_cuda_devices"])
    print(f"  GPU for torch:   {yn(d['gpu_visible_to_torch'])}"
          + (f" ({d['torch_cuda_device_count']}: {gpus})" if d["gpu_visible_to_torch"] else ""))
    if d["native_module"] is not None:
        print(f"  GPU for native:  {d['native_cuda_device_count']} device(s) visible to spikeforge._C")
    peers = ", ".join(f"{k} {v}" for k, v in d["peers"].items() if v) or "none"
    print(f"  peers installed: {peers}")
    return 0


def _bench_module(name: str):
    return importlib.import_module(BENCH_TARGETS[name])


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="spikeforge", description="spikeforge: fused spiking-neuron kernels")
    p.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    pi = sub.add_parser("info", help="build, native module, CUDA arches, OpenMP/threads, devices")
    pi.add_argument("--json", action="store_true", help="print as JSON")
    pi.set_defaults(func=cmd_info)

    pb = sub.add_parser("bench", help="kernel benchmarks (shared/BENCHMARKS.md)",
                        description="Kernel benchmarks: medians side by side, GB/s against a measured copy "
                                    "bandwidth, ratios against the baselines. Re-runs itself with "
                                    "THP_MEM_ALLOC_ENABLE=1 unless set or --no-thp.")
    targets = pb.add_subparsers(dest="target", metavar="TARGET")
    from .tools.benchutil import common_parser

    common = common_parser()
    for name in BENCH_TARGETS:
        mod = _bench_module(name)
        pt = targets.add_parser(name, help=mod.HELP, description=(mod.__doc__ or "").strip().split("\n\n")[0],
                                parents=[common])
        mod.add_arguments(pt)
        pt.set_defaults(func=mod.run, bench_target=name)
    pb.set_defaults(func=lambda args: (pb.print_help(), 2)[1])

    from . import train as train_mod  # the training loop (python/spikeforge/train.py)

    ptr = sub.add_parser("train", help="train a zoo model on a shipped dataset or arrays (no downloads)",
                         description=(train_mod.__doc__ or "").strip().split("\n\n")[0])
    train_mod.add_arguments(ptr)
    ptr.set_defaults(func=train_mod.run)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if args.command == "bench" and getattr(args, "bench_target", None) and not args.no_thp:
        from .tools.benchutil import reexec_with_thp

        reexec_with_thp(argv)  # returns only when THP_MEM_ALLOC_ENABLE is already set
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
