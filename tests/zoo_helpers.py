"""Helpers shared by the tests of the newer neuron models (tests/ops/test_neuron_zoo*.py, test_neuron_peers.py):
one calling convention for alif / ilif / ternary_lif (SpikingJelly conventions) and leaky / synaptic /
alpha_neuron (snnTorch conventions) on either spikeforge.ops or spikeforge.reference."""

from __future__ import annotations

import torch
from torch import Tensor

from spikeforge import ops, reference

# Per public op: the positional initial states (in the op's order), the outputs (spikes first), which
# output is every step with return_v / return_mem = "seq", and the keyword of that option.
SPECS = {
    "alif": dict(inits=("v_init", "b_init"), outs=("s", "v", "b"), seq=1, ret="return_v"),
    "ilif": dict(inits=("v_init",), outs=("s", "v"), seq=1, ret="return_v"),
    "ternary_lif": dict(inits=("v_init",), outs=("s", "v"), seq=1, ret="return_v"),
    "leaky": dict(inits=("mem_init",), outs=("s", "mem"), seq=1, ret="return_mem"),
    "synaptic": dict(inits=("syn_init", "mem_init"), outs=("s", "syn", "mem"), seq=2, ret="return_mem"),
    "alpha_neuron": dict(
        inits=("syn_exc_init", "syn_inh_init", "mem_init"),
        outs=("s", "syn_exc", "syn_inh", "mem"),
        seq=3,
        ret="return_mem",
    ),
}
SNN_MODELS = ("leaky", "synaptic", "alpha_neuron")
SJ_MODELS = ("alif", "ilif", "ternary_lif")


def out_shapes(name: str, x: Tensor, kw: dict) -> list:
    spec = SPECS[name]
    seq = kw.get(spec["ret"], "last") == "seq"
    return [tuple(x.shape)] + [
        tuple(x.shape) if (seq and k == spec["seq"]) else tuple(x.shape[1:]) for k in range(1, len(spec["outs"]))
    ]


def upstream_grads(name: str, x: Tensor, kw: dict, dtype=None) -> list:
    """Random upstream gradients, one per output of the op."""
    return [torch.randn(s, dtype=dtype or x.dtype, device=x.device) for s in out_shapes(name, x, kw)]


def run(impl, name: str, x: Tensor, inits: dict, kw: dict, grads=None, leaves=None) -> dict:
    """impl.<name>(x, *inits, **kw) on fresh leaf copies of x, the given initial states and every
    floating-point tensor in kw. With grads (one per output), also the gradient of sum(out * grad) with
    respect to each leaf (None -> zeros). `leaves` limits which inputs require grad (default: all).
    -> {"out": [outputs, detached], "g_<name>": gradient}."""

    def leaf(key, t):
        t = t.detach().clone()
        if grads is not None and (leaves is None or key in leaves):
            t.requires_grad_()
            made[key] = t
        return t

    made = {}
    xl = leaf("x", x)
    args = [None if inits.get(n) is None else leaf(n, inits[n]) for n in SPECS[name]["inits"]]
    call_kw = {k: (leaf(k, v) if isinstance(v, Tensor) and v.is_floating_point() else v) for k, v in kw.items()}
    outs = getattr(impl, name)(xl, *args, **call_kw)
    res = {"out": [o.detach() for o in outs]}
    if grads is not None:
        loss = sum((o.double() * g.double()).sum() for o, g in zip(outs, grads) if o.requires_grad)
        wrt = list(made.values())
        got = torch.autograd.grad(loss, wrt, allow_unused=True) if torch.is_tensor(loss) else [None] * len(wrt)
        for key, t, g in zip(made, wrt, got):
            res["g_" + key] = torch.zeros_like(t) if g is None else g
    return res


def assert_same_forward(got: dict, want: dict, name: str):
    for k, (a, b) in enumerate(zip(got["out"], want["out"])):
        what = SPECS[name]["outs"][k]
        assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
        if not torch.equal(a, b):
            bad = (a != b) & ~(a.isnan() & b.isnan())
            if bad.any():
                idx = bad.nonzero()[0].tolist()
                raise AssertionError(
                    f"{name}: output {what} differs at {int(bad.sum())} of {a.numel()} places, "
                    f"first {idx}: {a[tuple(idx)].item()!r} != {b[tuple(idx)].item()!r}"
                )


def assert_grads_close(got: dict, want: dict, rtol: float, atol_scale: float, skip=()):
    """Every gradient of `want` is in `got`, of the same shape and dtype, and |got - want| <= atol + rtol |want|
    with atol a fraction atol_scale of the largest |want| of that tensor (gradients are sums over time in a
    different order, so cancellation makes small entries relatively inexact)."""
    for key in want:
        if not key.startswith("g_") or key[2:] in skip:
            continue
        a, b = got[key], want[key]
        assert a.shape == b.shape and a.dtype == b.dtype, (key, a.shape, b.shape, a.dtype, b.dtype)
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol_scale * scale, msg=lambda m: f"{key}: {m}")


__all__ = [
    "SPECS",
    "SNN_MODELS",
    "SJ_MODELS",
    "out_shapes",
    "upstream_grads",
    "run",
    "assert_same_forward",
    "assert_grads_close",
    "ops",
    "reference",
]
