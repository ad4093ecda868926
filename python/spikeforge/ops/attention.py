"""Spike-driven attention ops: Spikformer SSA, Spike-driven Transformer SDSA, QKFormer token and
channel Q-K attention (docs/attention.md).

Layout of q, k, v: [T, *batch, N, D]: time first, any batch dims (models pass [T, B, heads, N, Dh]),
N tokens, D channels of one head. SN is the multi-step LIF of spikeforge.ops.lif with the papers'
attention neuron as default (SpikingJelly LIF tau=2, v_threshold=0.5, detach_reset=True).

Half-precision inputs are computed in float32 and the spikes cast back: the attention sums reach
thousands (Q K^T V on binary inputs sums up to N * D products), which float16 cannot hold exactly.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import reference
from .._native import native
from ._common import _FLOAT_DTYPES, FusedOp, _check_number, _compute_dtype, _has_native, _stream
from .neuron import NeuronOptions, _native_params, _sj_options, lif, lif_input_grad

__all__ = ["ssa", "sdsa", "qk_token_attention", "qk_channel_attention"]

_HALF = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _check_qkv(named: tuple[tuple[str, object], ...]) -> None:
    """Every tensor is a float tensor of shape [T, *batch, N, D], all of one shape, dtype and device."""
    first_name, first = None, None
    for name, t in named:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
        if t.dim() < 3:
            raise ValueError(
                f"{name} must have shape [T, *batch, N, D] (at least 3 dimensions); "
                f"got a tensor of shape {tuple(t.shape)}"
            )
        if t.dtype == torch.float64 and t.device.type == "cuda":
            raise TypeError(f"{name}: float64 is supported on CPU only (for gradcheck)")
        if first is None:
            first_name, first = name, t
            continue
        if tuple(t.shape) != tuple(first.shape):
            raise ValueError(
                f"{name} must have the shape of {first_name} {tuple(first.shape)} "
                f"([T, *batch, N, D]), got {tuple(t.shape)}"
            )
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")


class AttentionOptions(NamedTuple):
    """The attention neuron (a LIF, spikeforge.ops.lif's options) and the op's own scalars."""

    scale: float
    tau: float
    v_threshold: float
    v_reset: float
    hard_reset: bool
    decay_input: bool
    detach_reset: bool
    surrogate: int
    alpha: float
    reduce_tokens: bool  # attention_reduce: sum over tokens (SDSA, QK channel) or channels (QK token)
    has_b: bool  # attention_reduce: a second operand b (SDSA's K * V)
    keep_bits: bool = False  # ssa on CPU: the forward keeps q, k and v's spike bits for a backward to come


def _options(
    tau,
    v_threshold,
    v_reset,
    detach_reset,
    decay_input,
    surrogate,
    alpha,
    x,
    *,
    scale=0.0,
    reduce_tokens=False,
    has_b=False,
) -> tuple[dict, AttentionOptions]:
    """Validates the neuron options (spikeforge.ops.lif's checks and messages) -> (lif kwargs for the
    composed path, the fused ops' options)."""
    if tau is None:  # the neuron ops read tau=None as "no leak" (IF); the attention neuron is a LIF
        raise TypeError("tau must be a real number > 0 (the attention neuron is a LIF), got None")
    tau = _check_number("tau", tau, positive=True)
    o = _sj_options(0, x, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha, "last")
    lif_kw = dict(
        tau=tau,
        v_threshold=v_threshold,
        v_reset=v_reset,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=alpha,
    )
    return lif_kw, AttentionOptions(
        float(scale),
        o.tau,
        o.v_threshold,
        o.v_reset,
        o.hard_reset,
        o.decay_input,
        o.detach_reset,
        o.surrogate,
        o.alpha,
        reduce_tokens,
        has_b,
    )


def _neuron(o: AttentionOptions) -> NeuronOptions:
    return NeuronOptions(
        0,
        o.tau,
        o.v_threshold,
        o.v_reset,
        o.hard_reset,
        o.decay_input,
        o.detach_reset,
        1.8,
        0.9,
        4,
        False,
        0,
        True,
        o.surrogate,
        o.alpha,
        0.0,
        1,
        1,
        1,
        1,
        False,
        False,
    )


def _lif_kw(o: AttentionOptions) -> dict:
    from ..surrogate import SURROGATES

    name = next(n for n, spec in SURROGATES.items() if spec.id == o.surrogate)
    return dict(
        tau=o.tau,
        v_threshold=o.v_threshold,
        v_reset=o.v_reset if o.hard_reset else None,
        decay_input=o.decay_input,
        detach_reset=o.detach_reset,
        surrogate=name,
        alpha=o.alpha,
    )


def _work(t: Tensor) -> Tensor:
    return t.float() if t.dtype in _HALF else t


def _sn(x: Tensor, lif_kw: dict) -> Tensor:
    return lif(x, **lif_kw)[0]


def _empty(t: Tensor) -> Tensor:
    """An output like t with standard contiguous strides, as the fake kernels' new_empty (empty_like would
    copy the odd strides a contiguous t may have on size-1 dims, and torch.compile checks strides)."""
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


def _slices(q: Tensor) -> tuple[int, int, int, int]:
    """[T, *batch, N, D] -> (T, B, N, D), B the product of the batch dims."""
    T, N, D = q.shape[0], q.shape[-2], q.shape[-1]
    B = 1
    for s in q.shape[1:-2]:
        B *= s
    return T, B, N, D


# --------------------------------------------------------------------------------------------
# SSA: native forward (csrc/core/attention.h); backward composed (BLAS + neuron) or, on CPU, fused
# --------------------------------------------------------------------------------------------
def _ktv_shape(q: Tensor) -> tuple:
    """The forward's K^T V of every (t, slice): [T, B, D, D] (csrc/core/attention.h, ssa_workspace_elems)."""
    T, B, _, D = _slices(q)
    return (T, B, D, D)


def _bits_words(q: Tensor, o: AttentionOptions) -> int:
    """int64 words of the spike bits of q, k and v the CPU forward keeps when a backward will come (o.keep_bits),
    else none (csrc/core/attention.h, ssa_spike_bits_words: per (input, t, slice) N rows of ceil(D / 64) words,
    then N one-byte flags)."""
    if q.device.type != "cpu" or not o.keep_bits:
        return 0
    T, B, N, D = _slices(q)
    return 3 * T * B * (N * ((D + 63) // 64) + (N + 7) // 8)


def _ssa_forward(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions) -> tuple[Tensor, Tensor, Tensor]:
    """-> (out, ktv, spike_bits): ktv [T, B, D, D] in the compute dtype, K^T V of every (t, slice), and on CPU
    the spike bits of q, k and v (int64 words, empty on CUDA), which the CPU backward reads back instead of
    forming them again."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = _empty(q)
    ktv = q.new_empty(_ktv_shape(q), dtype=_compute_dtype(q.dtype))
    bits = q.new_empty(_bits_words(q, o), dtype=torch.int64)
    if out.numel() == 0:
        return out, ktv.zero_(), bits.zero_()  # N = 0: K^T V sums no token
    T, B, N, D = _slices(q)
    # The kernels index by element count only: flat views also lift the 8-dim limit of the native views.
    native.attention_ssa_forward(
        q.view(-1),
        k.view(-1),
        v.view(-1),
        out.view(-1),
        ktv.view(-1),
        bits if bits.numel() else None,
        T,
        B,
        N,
        D,
        o.scale,
        _native_params(_neuron(o)),
        torch.get_num_threads(),
        _stream(q),
    )
    return out, ktv, bits


# The CPU backward of ssa: "fused" (the native kernel: one pass per slice, event-driven over the spikes of q, k
# and v) or "composed" (BLAS products around the neuron backward, the pre-activation recomputed: the CUDA
# path). Both keep only the inputs for backward. "auto" is the fused one on every CPU: forward+backward over the
# four shapes of `spikeforge bench attention` on an AVX-512 Intel Xeon (2 threads), fused 3.6-3.8 / 3.6-3.8 /
# 10.5-10.7 / 7.9-8.1 ms, composed 4.1-4.4 / 3.9-4.1 / 11.4-11.9 / 9.2-9.6 ms (the composed one had been the
# faster there until the fused kernel's attention LIF vectorised); on an AVX2 AMD EPYC the fused one was
# already the faster (bench/results/cpu_attention.json). Read at each backward. The fused backward's sums do not
# depend on the thread count; the composed one's are BLAS's (docs/attention.md).
SSA_CPU_BACKWARD = "auto"
_SSA_CPU_BACKWARDS = ("auto", "fused", "composed")


def _ssa_cpu_backward() -> str:
    """The CPU backward that runs: SSA_CPU_BACKWARD, "auto" resolved for this machine."""
    mode = SSA_CPU_BACKWARD
    if mode not in _SSA_CPU_BACKWARDS:
        raise ValueError(
            f"spikeforge.ops.attention.SSA_CPU_BACKWARD must be one of {list(_SSA_CPU_BACKWARDS)}, got {mode!r}"
        )
    return "fused" if mode == "auto" else mode


def _ssa_backward(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    ktv: Optional[Tensor],
    spike_bits: Optional[Tensor],
    o: AttentionOptions,
) -> tuple[Tensor, Tensor, Tensor]:
    q, k, v, grad_out = q.contiguous(), k.contiguous(), v.contiguous(), grad_out.contiguous().to(q.dtype)
    if q.device.type == "cpu" and _ssa_cpu_backward() == "fused":
        # One fused pass per slice (event-driven over the spikes of q, k and v): `spikeforge bench attention`.
        grads = (_empty(q), _empty(q), _empty(q))
        if q.numel() == 0:
            return grads
        T, B, N, D = _slices(q)
        native.attention_ssa_backward(
            grad_out.view(-1),
            q.view(-1),
            k.view(-1),
            v.view(-1),
            None if ktv is None else ktv.view(-1),
            spike_bits if spike_bits is not None and spike_bits.numel() else None,  # empty: not kept
            *(g.view(-1) for g in grads),
            T,
            B,
            N,
            D,
            o.scale,
            _native_params(_neuron(o)),
            torch.get_num_threads(),
        )
        return grads
    # Composed (CUDA, and CPU per SSA_CPU_BACKWARD): BLAS products around the neuron backward, the
    # pre-activation recomputed. On spikes the products are exact integers (times scale), so the recomputed
    # spikes equal the forward kernel's; on real-valued q, k, v BLAS sums in another order (or in TF32 when the
    # user enabled it) and a pre-activation within rounding of v_threshold may fire differently here than in
    # the forward.
    cdt = _compute_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    ktv = kc.transpose(-2, -1) @ vc  # [.., D, D]
    pre = (qc @ ktv) * o.scale
    g_pre = lif_input_grad(grad_out, pre, _neuron(o)) * o.scale
    g_ktv = qc.transpose(-2, -1) @ g_pre  # [.., D, D]
    return (
        (g_pre @ ktv.transpose(-2, -1)).to(q.dtype),
        (vc @ g_ktv.transpose(-2, -1)).to(k.dtype),
        (kc @ g_ktv).to(v.dtype),
    )


def _ssa_save(inputs, o, outputs):
    # The inputs and, on CPU, the forward's K^T V ([T, B, D, D]: D / N of one input's bytes) and spike bits
    # (1/32 to 1/16 of the inputs' float32 bytes) for the fused backward to read back (the CUDA backward forms
    # its products again); the [T, *batch, N, D] pre-activation is recomputed in backward, which is what saves
    # its bytes over the composition (whose LIF keeps it).
    if inputs[0].device.type == "cpu":
        return (*inputs, *outputs[1:]), None
    return (*inputs, None, None), None


def _ssa_grads(saved, info, o, needs, grad_outputs, call_bwd):
    grad_out = grad_outputs[0]  # the hidden K^T V and spike bits get none
    if grad_out is None:
        return [None, None, None]
    gq, gk, gv = call_bwd(grad_out, *saved, o)
    return [gq if needs[0] else None, gk if needs[1] else None, gv if needs[2] else None]


_SSA = FusedOp(
    "ssa",
    "spikeforge.ops.ssa",
    inputs=("q", "k", "v"),
    options=AttentionOptions,
    n_out=3,
    visible=1,
    forward=_ssa_forward,
    fake_forward=lambda q, k, v, o: (
        q.new_empty(q.shape),
        q.new_empty(_ktv_shape(q), dtype=_compute_dtype(q.dtype)),
        q.new_empty(_bits_words(q, o), dtype=torch.int64),
    ),
    bwd_inputs=("grad_out", "q", "k", "v", "ktv?", "spike_bits?"),
    bwd_options=AttentionOptions,
    n_grads=3,
    backward=_ssa_backward,
    fake_backward=lambda g, q, k, v, ktv, bits, o: (q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)),
    save=_ssa_save,
    grads=_ssa_grads,
    reference=lambda q, k, v, o: reference.ssa(q, k, v, o.scale, **_lif_kw(o)),
    reference_inputs=lambda saved, info: saved[:3],
)


# --------------------------------------------------------------------------------------------
# SDSA / QK attention: m * SN(sum of a (* b) over tokens or channels); native forward, composed backward
# --------------------------------------------------------------------------------------------
def _small_shape(a: Tensor, reduce_tokens: bool) -> list[int]:
    """Shape of the sums and the attention mask: [T, *batch, 1, D] (over tokens) or [T, *batch, N, 1]."""
    shape = list(a.shape)
    shape[-2 if reduce_tokens else -1] = 1
    return shape


def _reduce_forward(a: Tensor, b: Optional[Tensor], m: Tensor, o: AttentionOptions) -> tuple[Tensor, Tensor, Tensor]:
    """-> (out, sums, mask); sums and mask ([T, *batch, 1, D] or [T, *batch, N, 1], compute dtype) are for
    the backward only."""
    a, m = a.contiguous(), m.contiguous()
    b = None if b is None else b.contiguous()
    out = _empty(a)
    cdt = _compute_dtype(a.dtype)
    small = _small_shape(a, o.reduce_tokens)
    pre = a.new_empty(small, dtype=cdt)
    mask = a.new_empty(small, dtype=cdt)
    if pre.numel() == 0:
        return out, pre, mask
    T, B, N, D = _slices(a)
    native.attention_reduce_forward(
        a.view(-1),
        None if b is None else b.view(-1),
        m.view(-1),
        out.view(-1),
        pre.view(-1),
        mask.view(-1),
        o.reduce_tokens,
        T,
        B,
        N,
        D,
        _native_params(_neuron(o)),
        torch.get_num_threads(),
        _stream(a),
    )
    return out, pre, mask


def _reduce_fake(a, b, m, o):
    small = _small_shape(a, o.reduce_tokens)
    cdt = _compute_dtype(a.dtype)
    return a.new_empty(a.shape), a.new_empty(small, dtype=cdt), a.new_empty(small, dtype=cdt)


def _reduce_backward(grad_out, a, b, m, pre, mask, o: AttentionOptions) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_a, grad_b or empty, grad_m): torch ops around the neuron backward of the sums."""
    cdt = pre.dtype
    g = grad_out.to(cdt)
    grad_m = (g * mask).to(m.dtype)
    dim = -2 if o.reduce_tokens else -1
    g_pre = lif_input_grad((g * m.to(cdt)).sum(dim=dim, keepdim=True), pre, _neuron(o))
    if o.has_b:
        return (g_pre * b.to(cdt)).to(a.dtype), (g_pre * a.to(cdt)).to(b.dtype), grad_m
    shape = list(m.shape)
    return g_pre.expand(shape).to(m.dtype).contiguous(), g.new_empty(0), grad_m  # a real tensor, not a stride-0 view


def _reduce_fake_backward(grad_out, a, b, m, pre, mask, o):
    e = m.new_empty
    return e(m.shape), (e(m.shape) if o.has_b else e(0)), e(m.shape)


def _reduce_save(inputs, o, outputs):
    a, b, m = inputs
    _, pre, mask = outputs
    # a enters the gradients only through b's (d(a * b)/db = a): without b it is not kept.
    return (a if b is not None else None, b, m, pre, mask), None


def _reduce_grads(saved, info, o, needs, grad_outputs, call_bwd):
    grad_out = grad_outputs[0]
    if grad_out is None:
        return [None, None, None]
    a, b, m, pre, mask = saved
    ga, gb, gm = call_bwd(grad_out, a, b, m, pre, mask, o)
    return [ga if needs[0] else None, gb if (needs[1] and b is not None) else None, gm if needs[2] else None]


def _reduce_reference(a, b, m, o):
    kw = _lif_kw(o)
    if o.has_b:
        return reference.sdsa(m, a, b, **kw)
    if o.reduce_tokens:
        return reference.qk_channel_attention(a, m, **kw)
    return reference.qk_token_attention(a, m, **kw)


_REDUCE = FusedOp(
    "attention_reduce",
    "spikeforge.ops (sdsa / qk attention)",
    inputs=("a", "b?", "m"),
    options=AttentionOptions,
    n_out=3,
    visible=1,
    forward=_reduce_forward,
    fake_forward=_reduce_fake,
    bwd_inputs=("grad_out", "a?", "b?", "m", "pre", "mask"),
    bwd_options=AttentionOptions,
    n_grads=3,
    backward=_reduce_backward,
    fake_backward=_reduce_fake_backward,
    save=_reduce_save,
    grads=_reduce_grads,
    reference=_reduce_reference,
    # without b, a is not kept (its gradient comes from the saved sums): double backward then raises
    reference_inputs=lambda saved, info: saved[:3] if saved[0] is not None else None,
    double_backward_hint="the fused QK attention kernel (CUDA) keeps only the reduced sums; "
    "spikeforge.reference's QK attention composes torch ops",
)
ssa_fwd, ssa_bwd = _SSA.fwd_op, _SSA.bwd_op
attention_reduce_fwd, attention_reduce_bwd = _REDUCE.fwd_op, _REDUCE.bwd_op


# --------------------------------------------------------------------------------------------
# composed implementations (torch ops + the fused LIF): the fallback without native kernels for the
# device, and the baseline of `spikeforge bench attention`
# --------------------------------------------------------------------------------------------
def _composed_ssa(q, k, v, scale, lif_kw):
    dtype = q.dtype
    q, k, v = _work(q), _work(k), _work(v)
    pre = (q @ (k.transpose(-2, -1) @ v)) * scale  # K^T V first: no N x N scores
    return _sn(pre, lif_kw).to(dtype)


def _composed_sdsa(q, k, v, lif_kw):
    dtype = q.dtype
    q, k, v = _work(q), _work(k), _work(v)
    return (q * _sn((k * v).sum(dim=-2, keepdim=True), lif_kw)).to(dtype)


def _composed_qk_token(q, k, lif_kw):
    dtype = q.dtype
    q, k = _work(q), _work(k)
    return (_sn(q.sum(dim=-1, keepdim=True), lif_kw) * k).to(dtype)


def _composed_qk_channel(q, k, lif_kw):
    dtype = q.dtype
    q, k = _work(q), _work(k)
    return (_sn(q.sum(dim=-2, keepdim=True), lif_kw) * k).to(dtype)


def composed(name: str):
    """The composed implementation of op `name` with the public op's signature (benchmarks, tests)."""
    impls = {
        "ssa": _composed_ssa,
        "sdsa": _composed_sdsa,
        "qk_token_attention": _composed_qk_token,
        "qk_channel_attention": _composed_qk_channel,
    }
    impl = impls[name]

    def run(
        *tensors,
        scale=None,
        tau=2.0,
        v_threshold=0.5,
        v_reset=0.0,
        detach_reset=True,
        decay_input=True,
        surrogate="sigmoid",
        alpha=None,
    ):
        lif_kw, _ = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha, tensors[0])
        if name == "ssa":
            return impl(*tensors, 0.125 if scale is None else scale, lif_kw)
        return impl(*tensors, lif_kw)

    return run


# A native module built before this family existed (an older install next to newer Python code) has
# no attention kernels: the ops then compose, which is correct, only slower. Read once at import: a
# plain bool is a constant to torch.compile.
_NATIVE_ATTENTION = native is not None and hasattr(native, "attention_ssa_forward")


def _native_ok(t: Tensor) -> bool:
    return _NATIVE_ATTENTION and _has_native(t.device)


# Devices where sdsa and the QK ops take the fused kernel. On CPU the better one depends on the machine:
# `spikeforge bench attention` on 2 AMD EPYC cores (bench/results/cpu_attention.json, row "native kernel")
# measured the kernel at 0.5-0.8x the composition's speed forward and 0.7-1.0x forward+backward, with equal
# saved bytes (the composition is a few memory-bound passes that torch already runs near the bandwidth); on
# the AVX-512 Intel Xeon VM at 1.2-1.6x forward, 1.1-1.2x (sdsa) and 0.9-1.0x (QK ops) forward+backward
# (bench/results/cpu_attention_reduce_xeon.json). CPU stays off until both machines are measured again with the
# same code. The CPU kernel stays reachable as torch.ops.spikeforge.attention_reduce_fwd.
REDUCE_KERNEL_DEVICES = ("cuda",)


def _reduce_native_ok(t: Tensor) -> bool:
    return t.device.type in REDUCE_KERNEL_DEVICES and _native_ok(t)


def fused_kernel(name: str):
    """sdsa / qk_token_attention / qk_channel_attention through the fused kernel on any device with native
    kernels, with the public op's defaults (benchmarks compare it with the composition)."""

    def run(*tensors):
        lif_kw = dict(
            tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True, decay_input=True, surrogate="sigmoid", alpha=None
        )
        if name == "sdsa":
            q, k, v = tensors
            _, o = _options(*lif_kw.values(), q, reduce_tokens=True, has_b=True)
            return _REDUCE((k, v, q), o)
        q, k = tensors
        _, o = _options(*lif_kw.values(), q, reduce_tokens=name == "qk_channel_attention")
        return _REDUCE((q, None, k), o)

    return run


# --------------------------------------------------------------------------------------------
# public functional API
# --------------------------------------------------------------------------------------------
def ssa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float = 0.125,
    *,
    tau: float = 2.0,
    v_threshold: float = 0.5,
    v_reset: Optional[float] = 0.0,
    detach_reset: bool = True,
    decay_input: bool = True,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
) -> Tensor:
    """Spikformer spiking self-attention: SN((Q K^T V) * scale) over q, k, v [T, *batch, N, D] -> [T, *batch, N, D].

    Native kernels fuse the LIF over T and form K^T V ([D, D] per head; on CPU event-driven over the
    spikes of K and then of Q), so neither the N x N scores nor the [T, *batch, N, D] pre-activation is
    stored; the backward recomputes the pre-activation (on CPU from q and the K^T V and spike bits that the
    forward keeps for it, D / N of one input's bytes and 1/32 to 1/16 of the inputs'). On spike inputs every
    order of the sums gives the same integers, hence the paper's spikes exactly.
    """
    _check_qkv((("q", q), ("k", k), ("v", v)))
    scale = _check_number("scale", scale)
    lif_kw, o = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha, q, scale=scale)
    if not _native_ok(q):
        return _composed_ssa(q, k, v, scale, lif_kw)
    # the spike bits cost the forward a pass over v: kept only when a backward can come (inference skips it)
    o = o._replace(keep_bits=torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))
    return _SSA((q, k, v), o, "spikeforge.ops.ssa")


def sdsa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    tau: float = 2.0,
    v_threshold: float = 0.5,
    v_reset: Optional[float] = 0.0,
    detach_reset: bool = True,
    decay_input: bool = True,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
) -> Tensor:
    """Spike-driven self-attention: Q * SN(sum over tokens of K * V) over [T, *batch, N, D] -> [T, *batch, N, D].

    On CUDA a fused kernel makes one pass per (t, slice): the K * V products are summed as they are
    formed and the LIF runs on the [D] sums, so no [T, *batch, N, D] intermediate is written. On CPU
    the composition of torch ops measured faster (REDUCE_KERNEL_DEVICES).
    """
    _check_qkv((("q", q), ("k", k), ("v", v)))
    lif_kw, o = _options(
        tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha, q, reduce_tokens=True, has_b=True
    )
    if not _reduce_native_ok(q):
        return _composed_sdsa(q, k, v, lif_kw)
    return _REDUCE((k, v, q), o, "spikeforge.ops.sdsa")


def qk_token_attention(
    q: Tensor,
    k: Tensor,
    *,
    tau: float = 2.0,
    v_threshold: float = 0.5,
    v_reset: Optional[float] = 0.0,
    detach_reset: bool = True,
    decay_input: bool = True,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
) -> Tensor:
    """QKFormer token attention: SN(sum over the channels of Q) * K over [T, *batch, N, D] -> [T, *batch, N, D]."""
    _check_qkv((("q", q), ("k", k)))
    lif_kw, o = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha, q, reduce_tokens=False)
    if not _reduce_native_ok(q):
        return _composed_qk_token(q, k, lif_kw)
    return _REDUCE((q, None, k), o, "spikeforge.ops.qk_token_attention")


def qk_channel_attention(
    q: Tensor,
    k: Tensor,
    *,
    tau: float = 2.0,
    v_threshold: float = 0.5,
    v_reset: Optional[float] = 0.0,
    detach_reset: bool = True,
    decay_input: bool = True,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
) -> Tensor:
    """QKFormer channel attention: SN(sum over the tokens of Q) * K over [T, *batch, N, D] -> [T, *batch, N, D].

    v_threshold defaults to 0.5 as SpikingJelly's ChannelQKAttention (the QKFormer attention LIF).
    """
    _check_qkv((("q", q), ("k", k)))
    lif_kw, o = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha, q, reduce_tokens=True)
    if not _reduce_native_ok(q):
        return _composed_qk_channel(q, k, lif_kw)
    return _REDUCE((q, None, k), o, "spikeforge.ops.qk_channel_attention")
