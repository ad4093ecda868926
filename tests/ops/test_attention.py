"""Spike-driven attention ops (ssa, sdsa, qk_token_attention, qk_channel_attention) against the plain-PyTorch
reference: spikes, gradients, float64 gradcheck where the true derivative exists, torch.compile(fullgraph=True),
bad inputs, empty tensors, half precision."""

import pytest
import torch

import spikeforge.ops.attention as attention_mod
from spikeforge._native import native
from spikeforge import ops, reference, testing

OPS = ("ssa", "sdsa", "qk_token_attention", "qk_channel_attention")
N_INPUTS = {"ssa": 3, "sdsa": 3, "qk_token_attention": 2, "qk_channel_attention": 2}


def _spikes(shape, p, device="cpu", dtype=torch.float32):
    return (torch.rand(shape, device=device) < p).to(dtype)


def _inputs(name, shape, device="cpu", dtype=torch.float32, p=None, requires_grad=False):
    """Binary q, k(, v). Firing rates keep each op's pre-activation near the 0.5 threshold, so both
    spikes and silences occur and the surrogate gradient is not vanishingly small."""
    if p is None and name == "ssa":  # mean pre-activation 0.125 * N * D * p^3 ~ 0.75
        p = min(0.9, (6.0 / max(1, shape[-1] * shape[-2])) ** (1 / 3))
    if p is None:
        p = {"sdsa": 0.3, "qk_token_attention": 0.15, "qk_channel_attention": 0.15}[name]
    ts = [_spikes(shape, p, device, dtype) for _ in range(N_INPUTS[name])]
    return [t.requires_grad_() for t in ts] if requires_grad else ts


def _call(mod, name, inputs, **kw):
    return getattr(mod, name)(*inputs, **kw)


@pytest.fixture(params=["default", "cpu_reduce_kernel", "cpu_ssa_fused", "cpu_ssa_composed"])
def path(request, monkeypatch):
    """default: the ops as shipped (on CPU, sdsa and the QK ops compose torch ops: ops/attention.py
    REDUCE_KERNEL_DEVICES; ssa's backward is SSA_CPU_BACKWARD="auto"); cpu_reduce_kernel: the same calls
    through the CPU fused kernel; cpu_ssa_fused / cpu_ssa_composed: ssa's CPU backward forced to either."""
    if request.param != "default" and not attention_mod._NATIVE_ATTENTION:
        pytest.skip("the native module has no attention kernels")
    if request.param == "cpu_reduce_kernel":
        monkeypatch.setattr(attention_mod, "REDUCE_KERNEL_DEVICES", ("cpu", "cuda"))
    if request.param.startswith("cpu_ssa_"):
        monkeypatch.setattr(attention_mod, "SSA_CPU_BACKWARD", request.param[len("cpu_ssa_") :])
    return request.param


def _skip_redundant(name, path):
    if name == "ssa" and path == "cpu_reduce_kernel":
        pytest.skip("ssa does not use the reduce kernel")
    if name != "ssa" and path.startswith("cpu_ssa_"):
        pytest.skip("ssa's backward choice only")


SHAPES = [(4, 8, 6), (4, 2, 3, 10, 8), (3, 2, 17, 5), (1, 2, 2, 2, 7, 4)]
OPTIONS = [
    {},
    {"tau": 4.0, "v_threshold": 1.0, "v_reset": None, "surrogate": "atan"},
    {"v_reset": -0.25, "detach_reset": False, "decay_input": False, "surrogate": "rect", "alpha": 0.5},
    {"tau": 3.0, "v_reset": None, "decay_input": False},  # with the others: each reset x decay_input form
]


# ------------------------------------------------------------------------------------------------
# values and gradients against the reference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_spikes_equal_reference(device, name, shape, path):
    """On binary inputs every sum is an integer times a power of two: the op's spikes (and the
    sdsa / qk products) equal the reference's exactly, whatever the summation order."""
    _skip_redundant(name, path)
    inputs = _inputs(name, shape, device)
    out = _call(ops, name, inputs)
    ref = _call(reference, name, inputs)
    assert out.shape == inputs[0].shape and out.dtype == inputs[0].dtype
    assert torch.equal(out, ref)
    assert 0 < out.count_nonzero() < out.numel(), "degenerate case: all or no spikes"


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize(
    "options", OPTIONS, ids=["default", "tau4-soft-atan", "nodecay-reset-rect", "tau3-soft-nodecay"]
)
def test_options_and_grads_match_reference(device, name, options, path):
    """Neuron options reach the LIF with the reference's meaning; gradients of every input agree."""
    _skip_redundant(name, path)
    shape = (4, 2, 12, 8)
    inputs = _inputs(name, shape, device, requires_grad=True)
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = _call(ops, name, inputs, **options)
    ref = _call(reference, name, ref_inputs, **options)
    assert torch.equal(out, ref)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, g)
    ref_grads = torch.autograd.grad(ref, ref_inputs, g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert any(a.abs().sum() > 0 for a in grads)


@pytest.mark.parametrize("name", OPS)
def test_ssa_scale_and_non_binary_inputs(device, name, path):
    """Any float input gives the reference's result (spikes may differ only where the pre-activation is
    within float rounding of the threshold, so compare the pre-activation-free parts loosely)."""
    _skip_redundant(name, path)
    shape = (3, 2, 9, 5)
    inputs = [torch.randn(shape, device=device) * 0.5 + 0.3 for _ in range(N_INPUTS[name])]
    kw = {"scale": 0.3} if name == "ssa" else {}
    out = _call(ops, name, inputs, **kw)
    ref = _call(reference, name, inputs, **kw)
    mismatch = (out != ref).float().mean().item()
    assert mismatch < 0.01
    if name != "ssa":  # products of q or k with spikes: values as well as the spike pattern
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_ssa_scale_is_used(device):
    q, k, v = _inputs("ssa", (4, 6, 5), device)
    assert torch.equal(ops.ssa(q, k, v, 0.25), reference.ssa(q, k, v, 0.25))
    assert not torch.equal(ops.ssa(q, k, v, 0.25), ops.ssa(q, k, v, 0.01))


# ------------------------------------------------------------------------------------------------
# float64
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", OPS)
def test_float64_grads_match_reference_tightly(name, path):
    """Through the surrogate there is no true derivative to gradcheck; in float64 the op's gradients
    equal the reference's autograd to rounding."""
    _skip_redundant(name, path)
    inputs = _inputs(name, (4, 2, 10, 6), dtype=torch.float64, requires_grad=True)
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = _call(ops, name, inputs, surrogate="atan", alpha=0.3)
    ref = _call(reference, name, ref_inputs, surrogate="atan", alpha=0.3)
    assert out.dtype == torch.float64 and torch.equal(out, ref)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, ref_inputs, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["sdsa", "qk_token_attention", "qk_channel_attention"])
def test_gradcheck_float64_true_derivative(name):
    """The multiplied operand (q of sdsa, k of the QK ops) has a true derivative (the spike mask), which
    finite differences can check; the other operands pass through the spikes and are held fixed."""
    shape = (3, 2, 5, 4)
    fixed = _inputs(name, shape, dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    if name == "sdsa":

        def fn(q):
            return ops.sdsa(q, fixed[1], fixed[2])
    else:

        def fn(k):
            return getattr(ops, name)(fixed[0], k)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# torch.compile
# ------------------------------------------------------------------------------------------------
def _chain(q, k, v):
    """All four ops in one graph, fed into one another."""
    a = ops.ssa(q, k, v)
    b = ops.sdsa(a, k, v, surrogate="atan")
    c = ops.qk_token_attention(q, b + 0.5 * v)
    d = ops.qk_channel_attention(c + k, a, v_reset=None)
    return (a * v).sum() + (b * q).sum() + c.sum() * 0.5 + d.square().sum()


def test_compile_fullgraph_matches_eager(device, path):
    """Dynamo traces the ops without a graph break; forward and backward equal eager."""
    torch._dynamo.reset()
    compiled = torch.compile(_chain, backend="aot_eager", fullgraph=True)
    for shape in ((4, 2, 9, 6), (3, 1, 7, 5)):
        inputs = _inputs("ssa", shape, device, requires_grad=True)
        out_c = compiled(*inputs)
        g_c = torch.autograd.grad(out_c, inputs)
        out_e = _chain(*inputs)
        g_e = torch.autograd.grad(out_e, inputs)
        torch.testing.assert_close(out_c, out_e, rtol=1e-6, atol=1e-6)
        for a, b in zip(g_c, g_e):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# bad inputs and edge cases
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", OPS)
def test_bad_inputs_name_the_argument(name):
    shape = (2, 3, 4)
    good = _inputs(name, shape)
    names = ("q", "k", "v")[: N_INPUTS[name]]
    fn = getattr(ops, name)
    for i, arg in enumerate(names):

        def with_(bad):
            args = list(good)
            args[i] = bad
            return args

        with pytest.raises(TypeError, match=f"{arg} must be a torch.Tensor"):
            fn(*with_(good[i].tolist()))
        with pytest.raises(TypeError, match=f"{arg} must be float32"):
            fn(*with_(good[i].int()))
        with pytest.raises(ValueError, match=f"{arg} must have shape \\[T, \\*batch, N, D\\]"):
            fn(*with_(good[i][0]))
        if i > 0:
            with pytest.raises(ValueError, match=f"{arg} must have the shape of q"):
                fn(*with_(torch.zeros(2, 3, 5)))
            with pytest.raises(ValueError, match=f"{arg} must have the shape of q"):
                fn(*with_(torch.zeros(2, 1, 3, 4)))
            with pytest.raises(TypeError, match=f"{arg} has dtype torch.float64"):
                fn(*with_(good[i].double()))
    with pytest.raises(ValueError, match="tau must be > 0"):
        fn(*good, tau=0.0)
    with pytest.raises(TypeError, match="tau must be a real number"):  # None is IF for ops.lif, not here
        fn(*good, tau=None)
    with pytest.raises(TypeError, match="v_threshold must be a number"):
        fn(*good, v_threshold="0.5")
    with pytest.raises(ValueError, match="surrogate: unknown surrogate"):
        fn(*good, surrogate="relu")
    with pytest.raises(TypeError, match="detach_reset must be a bool"):
        fn(*good, detach_reset=1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        fn(*good, alpha=-1.0)
    if name == "ssa":
        with pytest.raises(ValueError, match="scale must be finite"):
            fn(*good, float("nan"))
        with pytest.raises(TypeError, match="scale must be a number"):
            fn(*good, torch.tensor(0.125))


def test_native_outputs_have_standard_strides():
    """A contiguous input may carry odd strides on size-1 dims; the native ops' outputs (and gradients)
    have the standard strides of the fake kernels, which torch.compile relies on."""

    def odd(t):  # same values, stride 99 on the size-1 dim: still is_contiguous()
        o = torch.empty_strided(t.shape, (12, 99, 4, 1))
        o.copy_(t)
        assert o.is_contiguous() and o.stride() != t.stride()
        return o

    q, k, v = (odd(t) for t in _inputs("ssa", (2, 1, 3, 4)))
    standard = torch.empty(q.shape).stride()
    o = _op_options(NEURON_ARGS[0], q, scale=0.125)
    out, ktv, bits = torch.ops.spikeforge.ssa_fwd(q, k, v, *o)
    assert out.stride() == standard and ktv.is_contiguous() and bits.is_contiguous()
    for saved in ((ktv, bits), (None, None)):
        for g in torch.ops.spikeforge.ssa_bwd(torch.ones_like(q), q, k, v, *saved, *o):
            assert g.stride() == standard
    out, _, _ = torch.ops.spikeforge.attention_reduce_fwd(
        k, v, q, *_op_options(NEURON_ARGS[0], q, reduce_tokens=True, has_b=True)
    )
    assert out.stride() == standard


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", [(0, 2, 5, 4), (3, 0, 5, 4), (3, 2, 0, 4), (3, 2, 5, 0)], ids=str)
def test_empty(device, name, shape, path):
    _skip_redundant(name, path)
    inputs = _inputs(name, shape, device, requires_grad=True)
    out = _call(ops, name, inputs)
    assert out.shape == shape
    assert torch.equal(out, _call(reference, name, [t.detach() for t in inputs]))
    grads = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
    for g, t in zip(grads, inputs):
        assert g is None or (g.shape == t.shape and not g.any())


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_matches_float32(device, name, dtype, path):
    """Spikes are exact in any dtype and the sums run in float32, so spikes equal float32's; gradients
    agree to the half dtype's rounding."""
    _skip_redundant(name, path)
    inputs32 = _inputs(name, (4, 2, 20, 16), device, requires_grad=True)
    inputs_h = [t.detach().to(dtype).requires_grad_() for t in inputs32]
    out32 = _call(ops, name, inputs32)
    out_h = _call(ops, name, inputs_h)
    assert out_h.dtype == dtype
    assert torch.equal(out_h.float(), out32)
    g = torch.randn_like(out32)
    grads32 = torch.autograd.grad(out32, inputs32, g)
    grads_h = torch.autograd.grad(out_h, inputs_h, g.to(dtype))
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    for a, b in zip(grads_h, grads32):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


def test_non_contiguous_inputs(device):
    """Views in the models' layout ([T, B, N, heads, Dh] permuted to [T, B, heads, N, Dh])."""
    for name in OPS:
        base = _inputs(name, (3, 2, 11, 4, 6), device)
        inputs = [t.transpose(2, 3) for t in base]
        assert not inputs[0].is_contiguous()
        assert torch.equal(_call(ops, name, inputs), _call(reference, name, [t.contiguous() for t in inputs]))


# ------------------------------------------------------------------------------------------------
# native kernels: custom ops, the composed fallback, per-slice binary detection
# ------------------------------------------------------------------------------------------------

needs_native = pytest.mark.skipif(
    not testing.native_available("attention"), reason="the native module has no attention kernels"
)
# the attention neuron's public options: (tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
NEURON_ARGS = [(2.0, 0.5, 0.0, True, True, "sigmoid", 4.0), (4.0, 1.0, None, False, False, "atan", 2.0)]


def _op_options(neuron, x, **kw):
    """The custom ops' scalar arguments for these public options (ops.attention builds them the same way)."""
    return attention_mod._options(*neuron, x, **kw)[1]


@needs_native
@pytest.mark.parametrize("neuron", NEURON_ARGS, ids=["default", "soft-nodecay"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_opcheck_ssa_fwd(device, neuron, dtype):
    if dtype == torch.float64 and device == "cuda":
        pytest.skip("float64 is CPU only")
    q, k, v = _inputs("ssa", (3, 2, 9, 5), device, dtype=dtype, requires_grad=True)
    o = _op_options(neuron, q, scale=0.125)
    for keep_bits in (True, False):  # with the spike bits for the backward (CPU only), without
        torch.library.opcheck(torch.ops.spikeforge.ssa_fwd.default, (q, k, v) + tuple(o._replace(keep_bits=keep_bits)))


@needs_native
@pytest.mark.parametrize("neuron", NEURON_ARGS, ids=["default", "soft-nodecay"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_opcheck_ssa_bwd(neuron, dtype):
    """The fused CPU backward (CUDA composes its backward from cuBLAS products and neuron_bwd)."""
    q, k, v = _inputs("ssa", (3, 2, 9, 5), dtype=dtype)
    g = torch.randn(q.shape, dtype=dtype)
    o = tuple(_op_options(neuron, q, scale=0.125)._replace(keep_bits=True))
    _, ktv, bits = torch.ops.spikeforge.ssa_fwd(q, k, v, *o)
    # the forward's K^T V and spike bits, either, or none (formed again)
    for saved in ((ktv, bits), (ktv, None), (None, bits), (None, None)):
        torch.library.opcheck(torch.ops.spikeforge.ssa_bwd.default, (g, q, k, v) + saved + o)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("kind", ["spikes", "real", "nonfinite"])
def test_ssa_backward_reads_what_the_forward_kept(dtype, kind):
    """The CPU backward reads K^T V (ssa_fwd's second output, [T, B, D, D] in the compute dtype) and the spike
    bits of q, k, v (its third) back from the forward instead of forming them again: the same gradients, bit
    for bit, as with them formed again, on spikes, on real values (the dense products) and with an inf in v
    (no zero skipped)."""
    q, k, v = _inputs("ssa", (3, 2, 2, 9, 5), dtype=dtype)
    if kind != "spikes":
        k = k + 0.25 * torch.randn(k.shape).to(dtype)
    if kind == "nonfinite":
        v[1, 0, 1, 3, 2] = float("inf")
    g = torch.randn(q.shape).to(dtype)
    o = tuple(_op_options(NEURON_ARGS[0], q, scale=0.125)._replace(keep_bits=True))
    out, ktv, bits = torch.ops.spikeforge.ssa_fwd(q, k, v, *o)
    no_bits = torch.ops.spikeforge.ssa_fwd(q, k, v, *_op_options(NEURON_ARGS[0], q, scale=0.125))
    assert no_bits[2].numel() == 0 and torch.equal(no_bits[0], out) and torch.equal(no_bits[1], ktv)
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    assert ktv.shape == (3, 4, 5, 5) and ktv.dtype == cdt
    ref = k.to(cdt).reshape(3, 4, 9, 5).transpose(-2, -1) @ v.to(cdt).reshape(3, 4, 9, 5)
    assert torch.allclose(ktv, ref, equal_nan=True) if kind != "spikes" else torch.equal(ktv, ref)
    # 3 inputs x T x slices, each 9 rows of one word and 9 one-byte flags (2 words); the core's count alike
    assert bits.dtype == torch.int64 and bits.numel() == 3 * 3 * 4 * (9 + 2)
    assert bits.numel() == native.attention_ssa_bits_words(3, 4, 9, 5)
    flags = bits.view(3, 3, 4, 11)[..., 9:].contiguous().view(torch.uint8)  # [x, t, slice, 16 bytes]
    rows_binary = torch.stack([((x == 0) | (x == 1)).all(-1).reshape(3, 4, 9) for x in (q, k, v)])
    assert torch.equal(flags[..., :9].bool(), rows_binary) and not flags[..., 9:].any()  # padding zeroed
    if kind == "spikes":  # row n's word: bit i is x[n, i] == 1
        weights = 2 ** torch.arange(5)
        for i, x in enumerate((q, k, v)):
            words = (x.reshape(3, 4, 9, 5).long() * weights).sum(-1)
            assert torch.equal(bits.view(3, 3, 4, 11)[i, ..., :9], words)
    formed_again = torch.ops.spikeforge.ssa_bwd(g, q, k, v, None, None, *o)
    for saved in ((ktv, bits), (ktv, None), (None, bits)):
        for a, b in zip(torch.ops.spikeforge.ssa_bwd(g, q, k, v, *saved, *o), formed_again):
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0), b.nan_to_num(0))
    if kind == "spikes":  # and it is what the forward kept that the backward reads
        other = torch.ops.spikeforge.ssa_bwd(g, q, k, v, torch.zeros_like(ktv), bits, *o)
        assert not torch.equal(other[0], formed_again[0])
        silent = bits.clone()
        silent.view(3, 3, 4, 11)[..., :9] = 0  # every row binary and without a spike
        assert not torch.equal(torch.ops.spikeforge.ssa_bwd(g, q, k, v, ktv, silent, *o)[2], formed_again[2])


@needs_native
def test_ssa_kept_tensors_are_checked():
    """What the backward reads back from the forward is checked like every other argument: a clear
    ValueError naming it, and no gradient written."""
    q, k, v = _inputs("ssa", (3, 2, 9, 5))
    g = torch.randn(q.shape)
    o = tuple(_op_options(NEURON_ARGS[0], q, scale=0.125)._replace(keep_bits=True))
    _, ktv, bits = torch.ops.spikeforge.ssa_fwd(q, k, v, *o)
    bad = {
        "ktv has 49 elements": (ktv.flatten()[:49], bits),
        "ktv must be float32": (ktv.double(), bits),
        "spike_bits has 65 elements": (ktv, bits[:65]),
        "spike_bits must be int64": (ktv, bits.to(torch.float32)),
    }
    params = attention_mod._native_params(attention_mod._neuron(attention_mod.AttentionOptions(*o)))
    grads = [torch.full(q.shape, 7.0) for _ in range(3)]
    for message, (kt, bi) in bad.items():
        with pytest.raises(ValueError, match=message):
            args = [t.view(-1) for t in (g, q, k, v)] + [kt.reshape(-1), bi] + [t.view(-1) for t in grads]
            native.attention_ssa_backward(*args, 3, 2, 9, 5, 0.125, params, 1)
        assert all(bool((t == 7.0).all()) for t in grads)


@needs_native
@pytest.mark.parametrize("neuron", NEURON_ARGS, ids=["default", "soft-nodecay"])
@pytest.mark.parametrize("case", ["sdsa", "qk_channel", "qk_token"])
def test_opcheck_attention_reduce_fwd(device, neuron, case):
    name = {"sdsa": "sdsa", "qk_channel": "qk_channel_attention", "qk_token": "qk_token_attention"}[case]
    ts = _inputs(name, (3, 2, 9, 5), device, requires_grad=True)
    if case == "sdsa":
        args = (ts[1], ts[2], ts[0])
    else:
        args = (ts[0], None, ts[1])
    o = _op_options(neuron, ts[0], reduce_tokens=case != "qk_token", has_b=case == "sdsa")
    torch.library.opcheck(torch.ops.spikeforge.attention_reduce_fwd.default, args + tuple(o))


@needs_native
@pytest.mark.parametrize("name", OPS)
def test_native_matches_composed_fallback(device, name, monkeypatch):
    """The same call through the composed fallback (no native kernels) gives the same spikes and
    gradients."""
    monkeypatch.setattr(attention_mod, "REDUCE_KERNEL_DEVICES", ("cpu", "cuda"))
    inputs = _inputs(name, (4, 3, 14, 8), device, requires_grad=True)
    out = _call(ops, name, inputs)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, g)
    monkeypatch.setattr(attention_mod, "_NATIVE_ATTENTION", False)
    out_c = _call(ops, name, inputs)
    grads_c = torch.autograd.grad(out_c, inputs, g)
    assert torch.equal(out, out_c)
    for a, b in zip(grads, grads_c):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_native
def test_compiled_graph_holds_the_custom_ops(monkeypatch):
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        from torch._dynamo.backends.debugging import aot_eager

        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(_chain, backend=recording_backend, fullgraph=True)
    compiled(*_inputs("ssa", (3, 2, 7, 4), requires_grad=True))
    assert graphs and "spikeforge.ssa_fwd" in graphs[0] and "spikeforge.attention_reduce_fwd" not in graphs[0]
    graphs.clear()
    monkeypatch.setattr(attention_mod, "REDUCE_KERNEL_DEVICES", ("cpu", "cuda"))
    torch._dynamo.reset()
    compiled = torch.compile(_chain, backend=recording_backend, fullgraph=True)
    compiled(*_inputs("ssa", (3, 2, 7, 4), requires_grad=True))
    assert graphs and "spikeforge.ssa_fwd" in graphs[0] and "spikeforge.attention_reduce_fwd" in graphs[0]


def test_ssa_binary_and_dense_slices_mixed(device):
    """The popcount path is taken per (t, slice) only where K and V are 0/1; a slice holding any other
    value (here 2 or 0.5) is summed densely. Both kinds in one call equal the reference."""
    q, k, v = _inputs("ssa", (4, 3, 10, 6), device, p=0.4)
    k[1, 2, 3, 1] = 2.0
    v[3, 0, 5, 5] = 0.5
    assert torch.equal(ops.ssa(q, k, v), reference.ssa(q, k, v))
    q[2, 1, 0, 0] = -1.0  # a negative query weight
    assert torch.equal(ops.ssa(q, k, v), reference.ssa(q, k, v))


def test_nan_and_inf_propagate_like_the_reference(device, path):
    """A zero query times an infinite K^T V entry is NaN in a matmul; the kernel's zero skipping must not
    hide it (compared with the composition, which has the kernel's K^T V order: with inf the paper's
    (Q K^T) V order differs), and a NaN in k spreads like the reference's."""
    q, k, v = _inputs("ssa", (2, 1, 6, 4), device, p=0.5)
    v[0, 0, 2, 1] = float("inf")
    k[0, 0, 2, :] = 1.0
    out, ref = ops.ssa(q, k, v), attention_mod.composed("ssa")(q, k, v)
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(7), ref.nan_to_num(7))
    q, k = _inputs("qk_token_attention", (2, 1, 6, 4), device)
    k[1, 0, 3, 2] = float("nan")
    for name in ("qk_token_attention", "qk_channel_attention"):
        out, ref = _call(ops, name, (q, k)), _call(reference, name, (q, k))
        assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(7), ref.nan_to_num(7))


def test_ssa_cpu_backward_setting(monkeypatch):
    """SSA_CPU_BACKWARD: both CPU backwards give the reference's gradients; "auto" is the fused one; a bad
    value is refused with the setting's name, before any gradient is written."""
    q, k, v = _inputs("ssa", (4, 2, 3, 10, 8), requires_grad=True)
    gy = torch.randn(q.shape)
    want = torch.autograd.grad(reference.ssa(q, k, v), (q, k, v), gy)
    for mode in ("fused", "composed", "auto"):
        monkeypatch.setattr(attention_mod, "SSA_CPU_BACKWARD", mode)
        got = torch.autograd.grad(ops.ssa(q, k, v), (q, k, v), gy)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert attention_mod._ssa_cpu_backward() == "fused"
    monkeypatch.setattr(attention_mod, "SSA_CPU_BACKWARD", "fast")
    with pytest.raises(ValueError, match="SSA_CPU_BACKWARD"):
        torch.autograd.grad(ops.ssa(q, k, v), (q, k, v), gy)


def test_results_do_not_depend_on_thread_count(path):
    inputs = {name: _inputs(name, (4, 5, 12, 8)) for name in OPS}
    torch.set_num_threads(1)
    one = {name: _call(ops, name, ts) for name, ts in inputs.items()}
    torch.set_num_threads(2)
    for name, ts in inputs.items():
        assert torch.equal(_call(ops, name, ts), one[name])


def _has_matplotlib():
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def test_bench_attention_smoke(tmp_path):
    """`spikeforge bench attention` runs end to end at a tiny size and writes its JSON (every contender
    timed, outputs equal to spikeforge's, saved bytes recorded)."""
    import json

    from spikeforge import cli

    out = tmp_path / "attention.json"
    rc = cli.main(
        [
            "bench",
            "attention",
            "--no-thp",
            "--quick",
            "--dim",
            "16",
            "--heads",
            "2",
            "--tokens",
            "9",
            "--reps",
            "1",
            "--op",
            "ssa",
            "qk_channel",
            "--json",
            str(out),
        ]
        + (["--plot", str(tmp_path / "attention.png")] if _has_matplotlib() else [])
    )
    assert rc == 0
    data = json.loads(out.read_text())
    if _has_matplotlib():
        assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [c["op"] for c in data["cases"]] == ["ssa", "qk_channel_attention"]
    for case in data["cases"]:
        assert case["shape"] == [4, 2, 2, 9, 8]
        for row in case["rows"]:
            assert row["status"] == "ok" and row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0
            assert row["output_equal_to_spikeforge"] == 1.0 and row["saved_bytes"] > 0


@pytest.mark.parametrize("D", [70, 131])
def test_ssa_wide_heads(device, D):
    """Heads wider than 64 channels (several bit words per spike row) and not a multiple of the 8-wide
    vector blocks: values and gradients as the reference's."""
    q, k, v = _inputs("ssa", (2, 2, 9, D), device, requires_grad=True)
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out, ref = ops.ssa(q, k, v), reference.ssa(*ref_inputs)
    assert torch.equal(out, ref) and 0 < out.count_nonzero() < out.numel()
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, ref_inputs, g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gradients_do_not_depend_on_thread_count(path):
    inputs = {name: _inputs(name, (4, 5, 12, 8), requires_grad=True) for name in OPS}
    g = torch.randn(4, 5, 12, 8)

    def grads(name):
        ts = inputs[name]
        return torch.autograd.grad(_call(ops, name, ts), ts, g)

    torch.set_num_threads(1)
    one = {name: grads(name) for name in OPS}
    torch.set_num_threads(2)
    for name in OPS:
        for a, b in zip(grads(name), one[name]):
            assert torch.equal(a, b)
