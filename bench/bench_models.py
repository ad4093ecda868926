"""``spikeforge bench models``: one training step of a zoo model built on spikeforge's fused neurons against
the same model built on the reference neurons (spikeforge.reference, a plain-PyTorch time loop).

Standard cases (docs/benchmarks.md): sew_resnet18 (ImageNet layout, 1000 classes) at T=4, batch 8, 64x64
input on CPU, and spikformer_8_384 at T=4 (``--model spikformer_8_384 --batch 2 --size 224`` on this CPU: the
paper's 14x14 = 196 tokens at a batch a 2-core machine steps in about 15 s), whose reference build also runs the
attention from spikeforge.reference (the papers' (Q K^T) V order). Both models get the same initial weights
and the same input; a step is zero_grad, forward, cross-entropy of the time-averaged logits, backward and an
SGD step, timed round-robin in one process
(benchlib.side_by_side, medians). "saved" is what the forward keeps for the backward: the unique storages
seen by torch.autograd.graph.saved_tensors_hooks, attributed to the module that saved them (conv, BN,
neuron, attn = the attention op of a transformer block, other = additions, pooling, fc), so the table shows
where the memory goes. --profile adds the
operators that dominate each contender's step (torch.profiler, self CPU time). "host ms" is the time a step
takes to return on the host: on CUDA, close to the step time means a host-bound step.
"""

from __future__ import annotations

import copy
import math
import os
import time
from typing import Optional

import sys

import torch
import torch.nn.functional as F
from torch import nn

import benchlib as bu
from spikeforge.cli._common import positive_int

NAME = "models"
HELP = (
    "one training step of a zoo model (default sew_resnet18, T=4; also spikformer_8_384): spikeforge vs "
    "reference build, ms and bytes saved for backward"
)


def add_arguments(p) -> None:
    p.add_argument("--model", nargs="+", default=["sew_resnet18"], help="zoo model names (default sew_resnet18)")
    p.add_argument("--T", type=positive_int, default=None, help="time steps (default 4; --quick 2)")
    p.add_argument("--batch", type=positive_int, default=None, help="batch size (default 8; --quick 2)")
    p.add_argument("--size", type=positive_int, default=None, help="input height = width (default 64; --quick 32)")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--profile", action="store_true", help="print the top operators of each contender's step")


def _category(m: nn.Module) -> str:
    from spikeforge.nn import SDSA, SSA, QKChannelAttention, QKTokenAttention
    from spikeforge.nn.observe import is_neuron

    if is_neuron(m):
        return "neuron"
    # what the attention op saves (its layers are categorised on their own)
    if isinstance(m, (SSA, SDSA, QKTokenAttention, QKChannelAttention)):
        return "attn"
    if isinstance(m, nn.Conv2d):
        return "conv"
    if isinstance(m, nn.modules.batchnorm._BatchNorm) or type(m).__name__ == "TEBN":
        return "bn"
    return "other"


def saved_bytes_by_module(model: nn.Module, x: torch.Tensor) -> dict:
    """Unique storages saved for backward by one forward (+ loss), attributed to the innermost module
    (conv / bn / neuron / other) running when autograd saved them."""
    stack: list[str] = []
    seen: dict = {}
    handles = []

    def push(mod, inp, c):
        stack.append(c)

    def pop(mod, inp, out):
        stack.pop()  # returns None: the module's output is left alone

    for m in model.modules():
        cat = _category(m)
        if m is model or len(list(m.children())) == 0 or cat != "other":
            handles.append(m.register_forward_pre_hook(lambda mod, inp, c=cat: push(mod, inp, c)))
            handles.append(m.register_forward_hook(pop))

    # parameters saved by reference (conv weights, ...) are memory the model holds anyway: counted apart
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        s = t.untyped_storage()
        key = (s.data_ptr(), str(t.device))
        if key not in seen:  # a storage saved by several ops counts once, for the first that saved it
            seen[key] = ("params" if s.data_ptr() in param_ptrs else (stack[-1] if stack else "other"), s.nbytes())
        return t

    # the fused BN + SN (spikeforge.nn.fused.bn_spike) is a function, not a module: tag what it saves by
    # wrapping it in every spikeforge module that calls it by name (for the duration of this forward)
    import sys

    from spikeforge.nn import fused

    plain_bn_spike = fused.bn_spike

    def tagged_bn_spike(bn, sn, y, fuse):
        stack.append("bn+sn")
        try:
            return plain_bn_spike(bn, sn, y, fuse)
        finally:
            stack.pop()

    users = [
        m
        for name, m in list(sys.modules.items())
        if name.startswith("spikeforge.") and getattr(m, "bn_spike", None) is plain_bn_spike
    ]
    for m in users:
        m.bn_spike = tagged_bn_spike
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
            logits = out.mean(0)  # [B, classes] (x may be [B, ...] or, for SpikingJelly, [T, B, ...])
            loss = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=x.device))
        del out, loss
    finally:
        for m in users:
            m.bn_spike = plain_bn_spike
        for h in handles:
            h.remove()
    by = {"conv": 0, "bn": 0, "neuron": 0, "bn+sn": 0, "attn": 0, "other": 0, "params": 0}
    for cat, nb in seen.values():
        by[cat] += nb
    by["activations"] = sum(nb for cat, nb in seen.values() if cat != "params")
    by["total"] = by["activations"] + by["params"]
    return by


def _step_fn(model, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out.mean(0), y).backward()
        opt.step()

    return step


def _profile(fn, top: int = 8) -> list:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [(e.key, e.self_cpu_time_total / 1e3, e.self_cpu_time_total / total, e.count) for e in rows[:top]]


def _spikingjelly_model(name: str, T: int, num_classes: int, device):
    """SpikingJelly's own model of the same name (multi-step, the zoo's default IF neuron with the same
    surrogate: sigmoid, alpha 4, hard reset to 0), or the reason it cannot run. Its input is [T, B, C, H, W]
    (the image repeated over T: SpikingJelly runs the stem conv T times where spikeforge runs it once)."""
    if not bu.installed("spikingjelly"):
        return None, "not installed (pip install spikingjelly)"
    if not name.startswith(("sew_resnet", "spiking_resnet")) or name.endswith("_cifar"):
        return None, "no SpikingJelly model of that name"
    try:
        import importlib

        from spikingjelly.activation_based import functional, neuron, surrogate

        zoo = importlib.import_module(
            "spikingjelly.activation_based.model." + ("sew_resnet" if name.startswith("sew") else "spiking_resnet")
        )
        kw = dict(cnf="ADD") if name.startswith("sew") else {}
        m = getattr(zoo, name)(
            spiking_neuron=neuron.IFNode,
            surrogate_function=surrogate.Sigmoid(alpha=4.0),
            detach_reset=False,
            num_classes=num_classes,
            **kw,
        )
        functional.set_step_mode(m, "m")
        return m.to(device), None
    except Exception as e:  # noqa: BLE001
        return None, f"failed: {bu.error_text(e)}"


def _host_ms(step, device, reps: int = 5) -> float:
    """Median time for step() to return on the host (kernels queued, not waited for). On CUDA a step whose
    host time is close to its full time is bound by the host (Python, dispatch, launches), not the GPU; on
    the CPU the two are the same."""
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sorted(times)[len(times) // 2]


def _peak_step_bytes(step, device) -> Optional[int]:
    """Peak CUDA memory of one training step above what was allocated before it (model, optimizer state)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def run_case(name: str, T: int, batch: int, size: int, num_classes: int, device, args, timer) -> dict:
    from spikeforge.models import get_model

    torch.manual_seed(0)
    sf_model = get_model(name, T=T, num_classes=num_classes).to(device)
    ref_model = get_model(name, T=T, num_classes=num_classes, backend="reference").to(device)
    ref_model.load_state_dict(copy.deepcopy(sf_model.state_dict()))  # the same weights
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)

    # same model, same numbers: logits of one forward in eval mode agree, and in training mode (batch
    # statistics; an untrained transformer may not fire at all with BN's initial running statistics, which
    # makes the eval-mode check trivially 0). The training-mode forward runs with autograd on, so it takes
    # the paths the timed step takes (fused BN + neuron, uint8-saved inputs), and its backward compares the
    # parameter gradients. It moves both models' running statistics by the same step.
    sf_model.eval(), ref_model.eval()
    with torch.no_grad():
        diff = float((sf_model(x) - ref_model(x)).abs().max())
    sf_model.train(), ref_model.train()
    out_sf, out_ref = sf_model(x), ref_model(x)
    diff_train = float((out_sf - out_ref).detach().abs().max())
    logit_scale_train = float(out_ref.detach().abs().max())
    for out in (out_sf, out_ref):
        F.cross_entropy(out.mean(0), y).backward()
    del out_sf, out_ref
    grad_diff = grad_scale = 0.0
    for p_sf, p_ref in zip(sf_model.parameters(), ref_model.parameters()):
        if p_ref.grad is not None and p_sf.grad is not None:
            grad_diff = max(grad_diff, float((p_sf.grad - p_ref.grad).abs().max()))
            grad_scale = max(grad_scale, float(p_ref.grad.abs().max()))
    sf_model.zero_grad(set_to_none=True), ref_model.zero_grad(set_to_none=True)

    models = {"spikeforge": sf_model, "reference": ref_model}
    inputs = {"spikeforge": x, "reference": x}
    steps = {k: _step_fn(m, torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9), x, y) for k, m in models.items()}
    sj_model, sj_note = _spikingjelly_model(name, T, num_classes, device)
    if sj_model is not None:
        from spikingjelly.activation_based import functional as sjf

        x_seq = x.unsqueeze(0).expand(T, *x.shape).contiguous()
        sj_step = _step_fn(sj_model, torch.optim.SGD(sj_model.parameters(), lr=1e-3, momentum=0.9), x_seq, y)

        def sj_reset_step(f=sj_step, m=sj_model):
            sjf.reset_net(m)
            f()

        models["spikingjelly"], inputs["spikingjelly"], steps["spikingjelly"] = sj_model, x_seq, sj_reset_step
    res = bu.side_by_side(steps, timer, reps=args.reps, warmup=args.warmup, time_budget_s=args.time_budget)
    rows = []
    for k, m in models.items():
        r = {"impl": k, "median_ms": res[k].median, "samples_ms": res[k].samples, "error": res[k].error}
        r["minor_faults"] = res[k].faults_per_call
        if k == "spikingjelly":
            sjf.reset_net(m)
        r["saved"] = saved_bytes_by_module(m, inputs[k])
        r["peak_step_bytes"] = _peak_step_bytes(steps[k], device)
        r["host_ms"] = _host_ms(steps[k], device)
        if args.profile:
            r["top_ops"] = _profile(steps[k])
        rows.append(r)
    sf, ref = rows[0], rows[1]
    sj = rows[2] if len(rows) > 2 else None
    return {
        "model": name,
        "T": T,
        "batch": batch,
        "size": size,
        "num_classes": num_classes,
        "device": str(device),
        "dtype": "float32",
        "params": sum(p.numel() for p in sf_model.parameters()),
        "max_abs_logit_diff": diff,
        "max_abs_logit_diff_train": diff_train,
        "max_abs_logit_train": logit_scale_train,
        "max_abs_grad_diff_train": grad_diff,
        "max_abs_grad_train": grad_scale,
        "rows": rows,
        "speedup": (ref["median_ms"] / sf["median_ms"]) if sf["median_ms"] and ref["median_ms"] else None,
        "saved_ratio": (
            sf["saved"]["activations"] / ref["saved"]["activations"] if ref["saved"]["activations"] else None
        ),
        "saved_ratio_with_params": sf["saved"]["total"] / ref["saved"]["total"] if ref["saved"]["total"] else None,
        "spikingjelly": sj_note or "ok",
        "speedup_vs_spikingjelly": (
            sj["median_ms"] / sf["median_ms"] if sj and sj["median_ms"] and sf["median_ms"] else None
        ),
        "peak_ratio_vs_spikingjelly": (
            sf["peak_step_bytes"] / sj["peak_step_bytes"]
            if sj and sj["peak_step_bytes"] and sf["peak_step_bytes"]
            else None
        ),
    }


def case_table(c: dict) -> str:
    mib = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    head = [
        "impl",
        "step ms",
        "x sf",
        "saved act MiB",
        "conv in",
        "bn in",
        "neuron",
        "bn+sn",
        "attn",
        "other",
        "x sf act",
        "+params MiB",
        "peak MiB",
        "host ms",
    ]
    sf = c["rows"][0]
    rows = []
    for r in c["rows"]:
        s = r["saved"]
        rows.append(
            [
                r["impl"],
                bu.fmt(r["median_ms"], ".1f"),
                bu.fmt(r["median_ms"] / sf["median_ms"] if r["median_ms"] and sf["median_ms"] else None),
                mib(s["activations"]),
                mib(s["conv"]),
                mib(s["bn"]),
                mib(s["neuron"]),
                mib(s["bn+sn"]),
                mib(s.get("attn", 0)),
                mib(s["other"]),
                bu.fmt(s["activations"] / sf["saved"]["activations"]),
                mib(s["params"]),
                mib(r["peak_step_bytes"]) if r.get("peak_step_bytes") else "n/a",
                bu.fmt(r.get("host_ms"), ".1f"),
            ]
        )
    title = (
        f"{c['model']} T={c['T']} batch={c['batch']} {c['size']}x{c['size']} {c['device']} {c['dtype']} "
        f"({c['params'] / 1e6:.2f}M params; max |logit diff| sf vs reference {c['max_abs_logit_diff']:.2e} eval"
        + (
            f", {c['max_abs_logit_diff_train']:.2e} train (logits up to {c['max_abs_logit_train']:.2g})"
            if c.get("max_abs_logit_diff_train") is not None
            else ""
        )
        + (
            f"; max |grad diff| {c['max_abs_grad_diff_train']:.2e} (grads up to {c['max_abs_grad_train']:.2g})"
            if c.get("max_abs_grad_diff_train") is not None
            else ""
        )
        + ")"
    )
    if c.get("spikingjelly", "ok") != "ok":
        title += f"\n  SpikingJelly: {c['spikingjelly']}"
    return title + "\n" + bu.format_table(head, rows)


def plot(cases: list[dict], path: str, title: str) -> None:
    """Per model: training-step time and saved activations (MiB) of every implementation, side by side."""
    plt = bu.pyplot()
    if plt is None:
        return
    impls = list(dict.fromkeys(r["impl"] for c in cases for r in c["rows"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(9, 2.5 * len(cases) + 5), 4.5))
    width = 0.8 / max(1, len(impls))
    names = [f"{c['model']}\nT={c['T']} B={c['batch']} {c['size']}px" for c in cases]
    for ax, value, ylabel in (
        (axes[0], lambda r: r.get("median_ms"), "training step, ms (median)"),
        (
            axes[1],
            lambda r: r["saved"]["activations"] / 2**20 if r.get("saved") else None,
            "activations saved for backward, MiB",
        ),
    ):
        for i, impl in enumerate(impls):
            vals = [next((value(r) for r in c["rows"] if r["impl"] == impl), None) for c in cases]
            ax.bar(
                [j + (i - (len(impls) - 1) / 2) * width for j in range(len(cases))],
                [math.nan if v is None else v for v in vals],
                width,
                label=impl,
            )
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    bu.save_figure(fig, path)


def run(args) -> int:
    from spikeforge.cli import UsageError
    from spikeforge.cli._common import unknown_name
    from spikeforge.models import MODELS

    for name in args.model:
        if name not in MODELS:
            raise unknown_name("model", name, MODELS)
    for option in ("T", "batch", "size"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise UsageError(f"--{option} must be >= 1, got {getattr(args, option)}")
    device = bu.resolve_device(args.device)
    bu.setup_threads(args, device)
    args.reps = args.reps or (3 if args.quick else 5)
    T = args.T or (2 if args.quick else 4)
    batch = args.batch or (2 if args.quick else 8)
    size = args.size or (32 if args.quick else 64)
    timer = bu.Timer(device)
    env = bu.environment(device)
    print("spikeforge bench models")
    for line in bu.environment_lines(env):
        print("  " + line)
    t_start = time.perf_counter()
    cases = []
    for name in args.model:
        t0 = time.perf_counter()
        cases.append(run_case(name, T, batch, size, args.num_classes, device, args, timer))
        print(f"  ... {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(
        f"\n  timing: median of {args.reps} reps after {args.warmup} warm-up, round-robin; a step = zero_grad + "
        "forward + CE(mean over T) + backward + SGD step"
    )
    print(
        "  'x sf' = step time / spikeforge's (> 1: spikeforge faster); saved act = unique non-parameter storages "
        "saved for backward by the forward (+ loss), split by the module that saved them (conv: its input; bn: its "
        "input; neuron: what the neuron op keeps; bn+sn: the fused BN + neuron (the conv output and BN statistics); "
        "attn: the attention op of a transformer block (q, k, v and its neuron's state); "
        "other: the stem image, max-pool, adds, fc, loss); '+params' = parameters saved by "
        "reference (held by the model anyway); 'x sf act' = saved act / spikeforge's\n"
    )
    for c in cases:
        print(case_table(c))
        if args.profile:
            for r in c["rows"]:
                print(f"  top operators, {r['impl']} (self CPU ms, share, calls):")
                for key, ms, share, count in r["top_ops"]:
                    print(f"    {key:<40s} {ms:9.1f} {100 * share:5.1f}% {count:6d}")
        print()
    end_load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    wall = time.perf_counter() - t_start
    print(f"  load average at end: {', '.join(f'{v:.1f}' for v in end_load)}; run time {wall:.0f} s")
    if args.json:
        bu.write_json(
            args.json,
            {
                "benchmark": "models",
                "environment": env,
                "run_time_s": wall,
                "load_average_end": end_load,
                "settings": {
                    "reps": args.reps,
                    "warmup": args.warmup,
                    "threads": torch.get_num_threads(),
                    "quick": args.quick,
                },
                "cases": cases,
            },
        )
    if args.plot:
        plot(
            cases,
            args.plot,
            f"spikeforge bench models on {env['device_name']} ({env['device']}, {env['torch_threads']} threads)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(bu.main(NAME))
