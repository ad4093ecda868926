"""``spikeforge info``: what was built (native module, CUDA architectures, OpenMP), devices, peers."""

from __future__ import annotations

import json
import os

HELP = "what was built (native module, CUDA kernels, OpenMP), devices, installed peer libraries"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print as JSON")


def _info() -> dict:
    import torch

    from .. import __version__
    from .._native import native, native_error
    from .benchcore import THP_ENV, dist_version

    d = {
        "spikeforge": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "gpu_visible_to_torch": torch.cuda.is_available(),
        "torch_cuda_device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch_cuda_devices": (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available()
            else []
        ),
        "native_module": None if native is None else getattr(native, "__file__", "spikeforge._C"),
        "native_error": native_error,
        THP_ENV: os.environ.get(THP_ENV),
        "peers": {name: dist_version(name) for name in ("spikingjelly", "snntorch", "norse")},
        "spike_crossover_cpu": _spike_crossover(),
    }
    if native is not None:
        d.update(
            {
                "native_version": native.version(),
                "compiler": native.compiler(),
                "cuda_kernels": native.has_cuda(),
                "cuda_version": native.cuda_version() or None,
                "cuda_arch_list": list(native.cuda_arch_list()),
                "native_cuda_device_count": native.cuda_device_count(),
                "openmp": native.has_openmp(),
                "openmp_max_threads": native.openmp_max_threads(),
                # which code the CPU kernels run here: portable builds pick the neuron kernels' clone at load
                # time and the variant of the spike propagation / attention / PSN kernels at their first call
                "cpu_kernel_path": native.cpu_kernel_path() if hasattr(native, "cpu_kernel_path") else None,
                "cpu_isa_variants": list(native.cpu_isa_variants()) if hasattr(native, "cpu_isa_variants") else None,
                "ssa_cpu_backward": _ssa_cpu_backward(),
            }
        )
    return d


def _spike_crossover() -> dict:
    """The firing rates up to which spike_linear / spike_conv2d mode="auto" take the event path on CPU, and
    where they come from (the shipped defaults, or `spikeforge tune`'s entry for this machine)."""
    from ..ops import spike as sp

    values = {k: sp.CROSSOVER["cpu"].get(k) for k in sp.TUNED_KEYS}
    if sp.TUNED and values == sp.TUNED["crossover"]:
        source = f"tuned on this machine {sp.TUNED.get('measured') or ''} ({sp.TUNED['path']})"
    elif values == {k: sp.CROSSOVER_DEFAULTS["cpu"].get(k) for k in sp.TUNED_KEYS}:
        source = (
            "defaults (SPIKEFORGE_TUNED=0: any tuned file is ignored)"
            if sp.tuned_disabled()
            else "defaults (`spikeforge tune` measures this machine's)"
        )
    else:
        source = "set in this process (ops.spike.CROSSOVER)"
    if sp._TUNED_PROBLEM:
        source += f"; {sp._TUNED_PROBLEM.removeprefix('spikeforge: ')}"
    return {"values": values, "source": source}


def _ssa_cpu_backward() -> str:
    """ssa's CPU backward here ("fused" / "composed", with the setting that chose it), or the setting's error."""
    from ..ops import attention

    try:
        path = attention._ssa_cpu_backward()
    except ValueError as e:
        return f"error: {e}"
    if attention.SSA_CPU_BACKWARD == "auto":
        return f"{path} (auto: the fused kernel on every CPU; ops.attention.SSA_CPU_BACKWARD)"
    return f"{path} (ops.attention.SSA_CPU_BACKWARD)"


def run(args) -> int:
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
        print(f"  CPU kernels:     {d['cpu_kernel_path'] or 'unknown (older native module)'}")
        print(f"  OpenMP:          {yn(d['openmp'])} (max threads {d['openmp_max_threads']})")
        print(f"  SSA on CPU:      backward {d['ssa_cpu_backward']}")
    print(
        f"  torch:           {d['torch']} (CUDA {d['torch_cuda'] or 'none'}); "
        f"torch.get_num_threads() = {d['torch_threads']}"
    )
    gpus = ", ".join(d["torch_cuda_devices"])
    print(
        f"  GPU for torch:   {yn(d['gpu_visible_to_torch'])}"
        + (f" ({d['torch_cuda_device_count']}: {gpus})" if d["gpu_visible_to_torch"] else "")
    )
    if d["native_module"] is not None:
        print(f"  GPU for native:  {d['native_cuda_device_count']} device(s) visible to spikeforge._C")
    xo = d["spike_crossover_cpu"]
    rate = lambda v: "dense always" if v is None else f"<= {100 * v:g}%"  # noqa: E731
    v = xo["values"]
    print(
        f"  spike auto, CPU: event path at firing rates linear {rate(v['linear'])} (forward only "
        f"{rate(v['linear_fwd'])}), conv2d {rate(v['conv2d'])} ({rate(v['conv2d_fwd'])}); {xo['source']}"
    )
    peers = ", ".join(f"{k} {v}" for k, v in d["peers"].items() if v) or "none"
    print(f"  peers installed: {peers}")
    return 0
