"""Helpers shared by the neuron-op tests: one calling convention for IF / LIF / PLIF on either the
native ops (spikeforge.ops) or the plain-PyTorch ground truth (spikeforge.reference)."""

from __future__ import annotations

import math

import torch

from spikeforge import ops, reference

# Neuron kinds used across the tests. The time constants are dyadic (k = 1/2 or 1/4), and PLIF's w is
# chosen so that sigmoid(w) is exactly 1/2 or 1/4 in float32 for both torch.sigmoid and the native
# kernel, so that with dyadic inputs every intermediate value is exact in float32 (checked by
# test_plif_k_is_exact_for_the_chosen_w).
NEURONS = ("lif_tau2", "lif_tau4", "if", "plif", "plif_c")
W_QUARTER = -math.log(3.0)  # sigmoid(-ln 3) = 1/4


def make_w(kind: str, C: int, dtype=torch.float32, device="cpu"):
    """PLIF's w: a 0-dim scalar ("plif") or one value per channel ("plif_c"); None for other kinds."""
    if kind == "plif":
        return torch.tensor(W_QUARTER, dtype=dtype, device=device)
    if kind == "plif_c":
        vals = [0.0 if c % 2 == 0 else W_QUARTER for c in range(C)]
        return torch.tensor(vals, dtype=dtype, device=device)
    return None


def call(impl, kind: str, x, v_init=None, w=None, **kw):
    """impl.<neuron>(x, ...) for impl in (spikeforge.ops, spikeforge.reference) -> (spike_seq, v)."""
    if kind.startswith("lif"):
        kw.setdefault("tau", 2.0 if kind == "lif_tau2" else 4.0)
        return impl.lif(x, v_init, **kw)
    if kind == "if":
        kw.pop("decay_input", None)
        return impl.if_neuron(x, v_init, **kw)
    if kind.startswith("plif"):
        return impl.plif(x, w, v_init, **kw)
    raise AssertionError(kind)


def fwd_bwd(impl, kind, x, v_init, w, grad_s, grad_v, **kw):
    """Runs impl on fresh leaf copies of (x, v_init, w), backpropagates the given upstream gradients of
    both outputs. Returns dict with s, v and the gradients of every leaf that was given."""
    leaves = {"x": x.detach().clone().requires_grad_()}
    if v_init is not None:
        leaves["v_init"] = v_init.detach().clone().requires_grad_()
    if w is not None:
        leaves["w"] = w.detach().clone().requires_grad_()
    s, v = call(impl, kind, leaves["x"], leaves.get("v_init"), leaves.get("w"), **kw)
    loss = (s.float() * grad_s.float()).sum() + (v.float() * grad_v.float()).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    out = {"s": s.detach(), "v": v.detach()}
    out.update({"g_" + n: g for n, g in zip(names, grads)})
    return out


def upstream(x, return_v, dtype=None):
    """Random upstream gradients for (spike_seq, v) of a call on x."""
    dtype = dtype or x.dtype
    gs = torch.randn(x.shape, dtype=dtype, device=x.device)
    gv = torch.randn(x.shape if return_v == "seq" else x.shape[1:], dtype=dtype, device=x.device)
    return gs, gv


def assert_grads_close(got: dict, want: dict, rtol, atol_scale):
    """Every gradient in `want` is in `got` and close: |got - want| <= atol + rtol |want|, with atol a
    fraction atol_scale of the largest |want| of that tensor (gradients are sums of O(T) terms, so an
    absolute slack relative to the tensor's scale covers cancellation down to tiny values)."""
    for name in want:
        if not name.startswith("g_"):
            continue
        a, b = got[name], want[name]
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol_scale * scale, msg=lambda m: f"{name}: {m}")


def charge(kind, x, v_prev, w=None, *, v_reset=0.0, decay_input=True, tau=None):
    """H[t] from V[t-1] and X[t] (docs/ops.md), for margin checks in float64."""
    vr = 0.0 if v_reset is None else v_reset
    if kind == "if":
        return v_prev + x
    if kind.startswith("lif"):
        k = 1.0 / (tau if tau is not None else (2.0 if kind == "lif_tau2" else 4.0))
    else:
        k = torch.sigmoid(w).to(x.dtype)  # in w's precision, as the kernels do
        if k.dim() == 1 and k.numel() > 1:
            k = k.view([-1] + [1] * (x.dim() - 2))
    if decay_input:
        return v_prev + (x - (v_prev - vr)) * k
    return v_prev - (v_prev - vr) * k + x


def h_seq(kind, x_seq, v_init, w=None, *, v_threshold=1.0, v_reset=0.0, decay_input=True, tau=None):
    """All H[t] of the reference dynamics (float64 recommended), for margin checks."""
    vr = 0.0 if v_reset is None else v_reset
    v = v_init if v_init is not None else torch.full_like(x_seq[0], vr)
    hs = []
    for t in range(x_seq.shape[0]):
        h = charge(kind, x_seq[t], v, w, v_reset=v_reset, decay_input=decay_input, tau=tau)
        s = (h >= v_threshold).to(h.dtype)
        v = s * vr + (1 - s) * h if v_reset is not None else h - s * v_threshold
        hs.append(h)
    return torch.stack(hs) if hs else x_seq.clone()


__all__ = [
    "NEURONS",
    "W_QUARTER",
    "make_w",
    "call",
    "fwd_bwd",
    "upstream",
    "assert_grads_close",
    "charge",
    "h_seq",
    "ops",
    "reference",
]


def native_params(**fields):
    """A bound NeuronParams (the options of a direct native call) with these fields set."""
    from spikeforge import native

    p = native.NeuronParams()
    for name, value in fields.items():
        setattr(p, name, value)
    return p


_PARAM_KEYS = (
    "model",
    "tau",
    "v_threshold",
    "v_reset",
    "hard_reset",
    "decay_input",
    "detach_reset",
    "surrogate",
    "alpha",
)


def native_fwd_args(**over):
    """Arguments of a valid direct call of the native neuron forward for a LIF (T=3, N=8, outputs pre-filled
    with 7.0 so a test can see that a rejected call wrote nothing), as a flat dict whose entries `over`
    replaces; call_native_forward(args) makes the call. v_init / w / v_out / h_out are the first state,
    coefficient slot, state output and the saved values, v_last the optional last state written apart
    (state_last); C, S the slot's layout."""
    T, N = 3, 8
    a = dict(
        x=torch.randn(T, N),
        v_init=None,
        w=None,
        spike=torch.full((T, N), 7.0),
        h_out=None,
        v_out=torch.full((N,), 7.0),
        v_last=None,
        T=T,
        N=N,
        C=1,
        S=1,
        model=0,
        tau=2.0,
        v_threshold=1.0,
        v_reset=0.0,
        hard_reset=True,
        decay_input=True,
        detach_reset=False,
        surrogate=0,
        alpha=4.0,
        num_threads=1,
        stream=0,
    )
    a.update(over)
    return a


def call_native_forward(a):
    from spikeforge import native

    params = native_params(**{k: a[k] for k in _PARAM_KEYS})
    return native.neuron_forward(
        a["x"],
        (a["v_init"], None, None),
        (a["w"], None, None, None),
        a["spike"],
        (a["v_out"], None, None),
        a["h_out"],
        params,
        a["T"],
        a["N"],
        (a["C"], a["S"], 1, 1, 1, 1, 1, 1),
        a["num_threads"],
        a["stream"],
        (a["v_last"], None, None),
    )


def native_bwd_args(**over):
    """As native_fwd_args for the native backward of a PLIF (k in slot 0, its gradient requested)."""
    T, N = 3, 8
    a = dict(
        grad_spike=torch.randn(T, N),
        grad_v=None,
        x=torch.randn(T, N),
        h=None,
        v_init=None,
        w=torch.full((1,), 0.5),
        grad_x=torch.full((T, N), 7.0),
        grad_v_init=None,
        grad_k_ws=torch.zeros(N),
        grad_w=torch.full((1,), 7.0),
        T=T,
        N=N,
        C=1,
        S=1,
        model=0,
        tau=0.0,
        v_threshold=1.0,
        v_reset=0.0,
        hard_reset=True,
        decay_input=True,
        detach_reset=False,
        surrogate=0,
        alpha=4.0,
        num_threads=1,
        stream=0,
    )
    a.update(over)
    return a


def call_native_backward(a):
    from spikeforge import native

    params = native_params(**{k: a[k] for k in _PARAM_KEYS})
    return native.neuron_backward(
        a["grad_spike"],
        (a["grad_v"], None, None),
        a["x"],
        a["h"],
        (a["v_init"], None, None),
        (a["w"], None, None, None),
        a["grad_x"],
        (a["grad_v_init"], None, None),
        (a["grad_k_ws"], None, None, None),
        (a["grad_w"], None, None, None),
        params,
        a["T"],
        a["N"],
        (a["C"], a["S"], 1, 1, 1, 1, 1, 1),
        a["num_threads"],
        a["stream"],
    )


def capture_cuda_graph(step, warmup: int = 2):
    """Warms step up on a side stream (as torch.cuda.graphs documents), then captures one call of it into
    a CUDA graph -> (graph, the captured call's outputs)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph, out
