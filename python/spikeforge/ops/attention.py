"""Spike-driven attention ops: Spikformer SSA, Spike-driven Transformer SDSA, QKFormer token and
channel Q-K attention (shared/SEMANTICS.md "Attention on spikes").

Layout of q, k, v: [T, *batch, N, D]: time first, any batch dims (models pass [T, B, heads, N, Dh]),
N tokens, D channels of one head. SN is the multi-step LIF of spikeforge.ops.lif with the papers'
attention neuron as default (SpikingJelly LIF tau=2, v_threshold=0.5, detach_reset=True).

Half-precision inputs are computed in float32 and the spikes cast back: the attention sums reach
thousands (Q K^T V on binary inputs sums up to N * D products), which float16 cannot hold exactly.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._native import native
from ._common import _FLOAT_DTYPES, _check_number, _has_native, _stream
from .neuron import _neuron_options, lif

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
            raise ValueError(f"{name} must have shape [T, *batch, N, D] (at least 3 dimensions); "
                             f"got a tensor of shape {tuple(t.shape)}")
        if t.dtype == torch.float64 and t.device.type == "cuda":
            raise TypeError(f"{name}: float64 is supported on CPU only (for gradcheck)")
        if first is None:
            first_name, first = name, t
            continue
        if tuple(t.shape) != tuple(first.shape):
            raise ValueError(f"{name} must have the shape of {first_name} {tuple(first.shape)} "
                             f"([T, *batch, N, D]), got {tuple(t.shape)}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")


def _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha) -> tuple[dict, tuple]:
    """Validates the neuron options (the same checks and messages as spikeforge.ops.lif) ->
    (lif kwargs for the composed path, the custom ops' neuron arguments
    (k, v_threshold, v_reset, hard_reset, decay_input, detach_reset, surrogate id, alpha))."""
    if tau is None:  # the neuron ops read tau=None as "no leak" (IF); the attention neuron is a LIF
        raise TypeError("tau must be a real number > 0 (the attention neuron is a LIF), got None")
    k, vth, vr, decay, detach, sid, alpha_v, _ = _neuron_options(tau, v_threshold, v_reset, decay_input,
                                                                 detach_reset, surrogate, alpha, "last")
    lif_kw = dict(tau=tau, v_threshold=v_threshold, v_reset=v_reset, decay_input=decay_input,
                  detach_reset=detach_reset, surrogate=surrogate, alpha=alpha)
    hard = vr is not None
    return lif_kw, (k, vth, vr if hard else 0.0, hard, decay, detach, sid, alpha_v)


def _work(t: Tensor) -> Tensor:
    return t.float() if t.dtype in _HALF else t


def _sn(x: Tensor, lif_kw: dict) -> Tensor:
    return lif(x, **lif_kw)[0]


def _empty(t: Tensor) -> Tensor:
    """An output like t with standard contiguous strides, as the fake kernels' new_empty (empty_like would
    copy the odd strides a contiguous t may have on size-1 dims, and torch.compile checks strides)."""
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernels' sum and state type: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _slices(q: Tensor) -> tuple[int, int, int, int]:
    """[T, *batch, N, D] -> (T, B, N, D), B the product of the batch dims."""
    T, N, D = q.shape[0], q.shape[-2], q.shape[-1]
    B = 1
    for s in q.shape[1:-2]:
        B *= s
    return T, B, N, D


# --------------------------------------------------------------------------------------------
# native forward (csrc/core/attention.h); backward composed from torch ops and neuron_bwd
# --------------------------------------------------------------------------------------------
def _ssa_forward_impl(q: Tensor, k: Tensor, v: Tensor, scale: float, k_leak: float, v_threshold: float,
                      v_reset: float, hard_reset: bool, decay_input: bool) -> Tensor:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = _empty(q)
    if out.numel() == 0:
        return out
    T, B, N, D = _slices(q)
    # CUDA forms K^T V in a workspace first (csrc/cuda/attention_cuda.cu); the CPU kernel keeps it per thread.
    ktv_ws = q.new_empty(T * B * D * D, dtype=torch.float32) if q.is_cuda else None
    # The kernels index by element count only: flat views also lift the 8-dim limit of the native views.
    native.attention_ssa_forward(q.view(-1), k.view(-1), v.view(-1), out.view(-1), ktv_ws, T, B, N, D, scale, k_leak,
                                 v_threshold, v_reset, hard_reset, decay_input, torch.get_num_threads(), _stream(q))
    return out


def _small_shape(a: Tensor, reduce_tokens: bool) -> list[int]:
    """Shape of the sums and the attention mask: [T, *batch, 1, D] (over tokens) or [T, *batch, N, 1]."""
    shape = list(a.shape)
    shape[-2 if reduce_tokens else -1] = 1
    return shape


def _reduce_forward_impl(a: Tensor, b: Optional[Tensor], m: Tensor, reduce_tokens: bool, k_leak: float,
                         v_threshold: float, v_reset: float, hard_reset: bool,
                         decay_input: bool) -> tuple[Tensor, Tensor, Tensor]:
    a, m = a.contiguous(), m.contiguous()
    b = None if b is None else b.contiguous()
    out = _empty(a)
    cdt = _compute_dtype(a.dtype)
    small = _small_shape(a, reduce_tokens)
    pre = a.new_empty(small, dtype=cdt)
    mask = a.new_empty(small, dtype=cdt)
    if pre.numel() == 0:
        return out, pre, mask
    T, B, N, D = _slices(a)
    native.attention_reduce_forward(a.view(-1), None if b is None else b.view(-1), m.view(-1), out.view(-1),
                                    pre.view(-1), mask.view(-1), reduce_tokens, T, B, N, D, k_leak, v_threshold,
                                    v_reset, hard_reset, decay_input, torch.get_num_threads(), _stream(a))
    return out, pre, mask


def _lif_backward(grad_spike: Tensor, pre: Tensor, neuron: tuple) -> Tensor:
    """dL/d(pre-activation) of the attention LIF, recomputing its states from pre (neuron_bwd, fused)."""
    k_leak, vth, vr, hard, decay, detach, sid, alpha = neuron
    return torch.ops.spikeforge.neuron_bwd(grad_spike.to(pre.dtype), None, pre, None, None, None, k_leak, vth, vr,
                                           hard, decay, detach, sid, alpha, False, False)[0]


@torch.library.custom_op("spikeforge::ssa_fwd", mutates_args=())
def ssa_fwd(q: Tensor, k: Tensor, v: Tensor, scale: float, k_leak: float, v_threshold: float, v_reset: float,
            hard_reset: bool, decay_input: bool, detach_reset: bool, surrogate: int, alpha: float) -> Tensor:
    """SSA fused with the attention LIF -> spikes [T, *batch, N, D] (detach_reset, surrogate, alpha: backward)."""
    return _ssa_forward_impl(q, k, v, scale, k_leak, v_threshold, v_reset, hard_reset, decay_input)


@ssa_fwd.register_fake
def _(q, k, v, scale, k_leak, v_threshold, v_reset, hard_reset, decay_input, detach_reset, surrogate, alpha):
    return q.new_empty(q.shape)


def _ssa_backward_impl(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: float, k_leak: float,
                       v_threshold: float, v_reset: float, hard_reset: bool, decay_input: bool, detach_reset: bool,
                       surrogate: int, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    q, k, v, grad_out = q.contiguous(), k.contiguous(), v.contiguous(), grad_out.contiguous().to(q.dtype)
    grads = tuple(_empty(q) for _ in range(3))
    if q.numel() == 0:
        return grads
    T, B, N, D = _slices(q)
    native.attention_ssa_backward(grad_out.view(-1), q.view(-1), k.view(-1), v.view(-1),
                                  *(g.view(-1) for g in grads), T, B, N, D, scale, k_leak, v_threshold, v_reset,
                                  hard_reset, decay_input, detach_reset, surrogate, alpha, torch.get_num_threads())
    return grads


@torch.library.custom_op("spikeforge::ssa_bwd", mutates_args=())
def ssa_bwd(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: float, k_leak: float, v_threshold: float,
            v_reset: float, hard_reset: bool, decay_input: bool, detach_reset: bool, surrogate: int,
            alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """SSA backward on CPU (csrc/core/attention.h), the forward recomputed -> (grad_q, grad_k, grad_v)."""
    return _ssa_backward_impl(grad_out, q, k, v, scale, k_leak, v_threshold, v_reset, hard_reset, decay_input,
                              detach_reset, surrogate, alpha)


@ssa_bwd.register_fake
def _(grad_out, q, k, v, scale, k_leak, v_threshold, v_reset, hard_reset, decay_input, detach_reset, surrogate,
      alpha):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _ssa_setup_context(ctx, inputs, output):
    q, k, v = inputs[:3]
    ctx.scale = inputs[3]
    ctx.neuron = inputs[4:]
    # Only the inputs are kept: the [T, *batch, N, D] pre-activation is recomputed in backward, which is
    # what saves its bytes over the composition (whose LIF keeps it for backward).
    ctx.save_for_backward(q, k, v)


def _ssa_backward(ctx, grad_out):
    q, k, v = ctx.saved_tensors
    need_q, need_k, need_v = ctx.needs_input_grad[:3]
    none = (None,) * 9
    if grad_out is None or not (need_q or need_k or need_v):
        return (None, None, None) + none
    scale = ctx.scale
    if q.device.type == "cpu":
        # One fused pass per slice (event-driven over the spikes of q, k and v): `spikeforge bench attention`.
        gq, gk, gv = torch.ops.spikeforge.ssa_bwd(grad_out, q, k, v, scale, *ctx.neuron)
        return (gq if need_q else None, gk if need_k else None, gv if need_v else None) + none
    # CUDA: cuBLAS products around neuron_bwd, the pre-activation recomputed. On spikes the products are
    # exact integers (times scale), so the recomputed spikes equal the forward kernel's; on real-valued
    # q, k, v cuBLAS sums in another order (or in TF32 when the user enabled it) and a pre-activation
    # within rounding of v_threshold may fire differently here than in the forward.
    cdt = _compute_dtype(q.dtype)
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    ktv = kc.transpose(-2, -1) @ vc  # [.., D, D]
    pre = (qc @ ktv) * scale
    g_pre = _lif_backward(grad_out, pre, ctx.neuron) * scale
    grad_q = (g_pre @ ktv.transpose(-2, -1)).to(q.dtype) if need_q else None
    grad_k = grad_v = None
    if need_k or need_v:
        g_ktv = qc.transpose(-2, -1) @ g_pre  # [.., D, D]
        grad_k = (vc @ g_ktv.transpose(-2, -1)).to(k.dtype) if need_k else None
        grad_v = (kc @ g_ktv).to(v.dtype) if need_v else None
    return (grad_q, grad_k, grad_v) + none


ssa_fwd.register_autograd(_ssa_backward, setup_context=_ssa_setup_context)


@torch.library.custom_op("spikeforge::attention_reduce_fwd", mutates_args=())
def attention_reduce_fwd(a: Tensor, b: Optional[Tensor], m: Tensor, reduce_tokens: bool, k_leak: float,
                         v_threshold: float, v_reset: float, hard_reset: bool, decay_input: bool,
                         detach_reset: bool, surrogate: int, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """m * SN(sum of a (* b) over tokens (reduce_tokens) or channels) -> (out, sums, mask).

    SDSA: (a, b, m) = (K, V, Q); QK channel attention: (Q, None, K); QK token attention: (Q, None, K) with
    reduce_tokens=False. sums and mask ([T, *batch, 1, D] or [T, *batch, N, 1], float32 or float64) are
    for the backward only: the public ops return out and no gradient flows into them.
    """
    return _reduce_forward_impl(a, b, m, reduce_tokens, k_leak, v_threshold, v_reset, hard_reset, decay_input)


@attention_reduce_fwd.register_fake
def _(a, b, m, reduce_tokens, k_leak, v_threshold, v_reset, hard_reset, decay_input, detach_reset, surrogate,
      alpha):
    small = _small_shape(a, reduce_tokens)
    cdt = _compute_dtype(a.dtype)
    return a.new_empty(a.shape), a.new_empty(small, dtype=cdt), a.new_empty(small, dtype=cdt)


def _reduce_setup_context(ctx, inputs, output):
    a, b, m, reduce_tokens = inputs[:4]
    ctx.reduce_tokens = reduce_tokens
    ctx.neuron = inputs[4:]
    ctx.has_b = b is not None
    ctx.a_shape, ctx.a_dtype = a.shape, a.dtype
    _, pre, mask = output
    # a enters the gradients only through b's (d(a * b)/db = a): without b it is not kept.
    ctx.save_for_backward(a if b is not None else None, b, m, pre, mask)


def _reduce_backward(ctx, grad_out, _grad_pre, _grad_mask):
    a, b, m, pre, mask = ctx.saved_tensors
    need_a, need_b, need_m = ctx.needs_input_grad[:3]
    none = (None,) * 9
    if grad_out is None:
        return (None, None, None) + none
    cdt = pre.dtype
    g = grad_out.to(cdt)
    grad_m = (g * mask).to(m.dtype) if need_m else None
    grad_a = grad_b = None
    if need_a or (ctx.has_b and need_b):
        dim = -2 if ctx.reduce_tokens else -1
        g_mask = (g * m.to(cdt)).sum(dim=dim, keepdim=True)
        g_pre = _lif_backward(g_mask, pre, ctx.neuron)
        if ctx.has_b:
            grad_a = (g_pre * b.to(cdt)).to(a.dtype) if need_a else None
            grad_b = (g_pre * a.to(cdt)).to(b.dtype) if need_b else None
        else:
            grad_a = g_pre.expand(ctx.a_shape).to(ctx.a_dtype).contiguous()  # a real tensor, not a stride-0 view
    return (grad_a, grad_b, grad_m) + none


attention_reduce_fwd.register_autograd(_reduce_backward, setup_context=_reduce_setup_context)


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
    impls = {"ssa": _composed_ssa, "sdsa": _composed_sdsa, "qk_token_attention": _composed_qk_token,
             "qk_channel_attention": _composed_qk_channel}
    impl = impls[name]

    def run(*tensors, scale=None, tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True, decay_input=True,
            surrogate="sigmoid", alpha=None):
        lif_kw, _ = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
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


# Devices where sdsa and the QK ops take the fused kernel. On CPU the composition is faster:
# `spikeforge bench attention` (bench/results/cpu_attention.json, row "native kernel") measured the
# kernel at 0.5-0.8x the composition's speed forward and 0.7-1.0x forward+backward at the sizes,
# with equal saved bytes. The composition is a few memory-bound passes that torch already runs near the
# bandwidth; the kernel saves one of them but pays the custom op's dispatch and a fresh output like
# the composition. The CPU kernel stays reachable as torch.ops.spikeforge.attention_reduce_fwd.
REDUCE_KERNEL_DEVICES = ("cuda",)


def _reduce_native_ok(t: Tensor) -> bool:
    return t.device.type in REDUCE_KERNEL_DEVICES and _native_ok(t)


# --------------------------------------------------------------------------------------------
# public functional API
# --------------------------------------------------------------------------------------------
def ssa(q: Tensor, k: Tensor, v: Tensor, scale: float = 0.125, *, tau: float = 2.0, v_threshold: float = 0.5,
        v_reset: Optional[float] = 0.0, detach_reset: bool = True, decay_input: bool = True,
        surrogate: str = "sigmoid", alpha: Optional[float] = None) -> Tensor:
    """Spikformer spiking self-attention: SN((Q K^T V) * scale) over q, k, v [T, *batch, N, D] -> [T, *batch, N, D].

    Native kernels fuse the LIF over T and form K^T V ([D, D] per head; on CPU event-driven over the
    spikes of K and then of Q), so neither the N x N scores nor the [T, *batch, N, D] pre-activation is
    stored; the backward recomputes the pre-activation. On spike inputs every order of the sums gives the same
    integers, hence the paper's spikes exactly.
    """
    _check_qkv((("q", q), ("k", k), ("v", v)))
    scale = _check_number("scale", scale)
    lif_kw, neuron = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    if not _native_ok(q):
        return _composed_ssa(q, k, v, scale, lif_kw)
    return torch.ops.spikeforge.ssa_fwd(q, k, v, scale, *neuron)


def sdsa(q: Tensor, k: Tensor, v: Tensor, *, tau: float = 2.0, v_threshold: float = 0.5,
         v_reset: Optional[float] = 0.0, detach_reset: bool = True, decay_input: bool = True,
         surrogate: str = "sigmoid", alpha: Optional[float] = None) -> Tensor:
    """Spike-driven self-attention: Q * SN(sum over tokens of K * V) over [T, *batch, N, D] -> [T, *batch, N, D].

    On CUDA a fused kernel makes one pass per (t, slice): the K * V products are summed as they are
    formed and the LIF runs on the [D] sums, so no [T, *batch, N, D] intermediate is written. On CPU
    the composition of torch ops measured faster (REDUCE_KERNEL_DEVICES).
    """
    _check_qkv((("q", q), ("k", k), ("v", v)))
    lif_kw, neuron = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    if not _reduce_native_ok(q):
        return _composed_sdsa(q, k, v, lif_kw)
    return torch.ops.spikeforge.attention_reduce_fwd(k, v, q, True, *neuron)[0]


def qk_token_attention(q: Tensor, k: Tensor, *, tau: float = 2.0, v_threshold: float = 0.5,
                       v_reset: Optional[float] = 0.0, detach_reset: bool = True, decay_input: bool = True,
                       surrogate: str = "sigmoid", alpha: Optional[float] = None) -> Tensor:
    """QKFormer token attention: SN(sum over the channels of Q) * K over [T, *batch, N, D] -> [T, *batch, N, D]."""
    _check_qkv((("q", q), ("k", k)))
    lif_kw, neuron = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    if not _reduce_native_ok(q):
        return _composed_qk_token(q, k, lif_kw)
    return torch.ops.spikeforge.attention_reduce_fwd(q, None, k, False, *neuron)[0]


def qk_channel_attention(q: Tensor, k: Tensor, *, tau: float = 2.0, v_threshold: float = 0.5,
                         v_reset: Optional[float] = 0.0, detach_reset: bool = True, decay_input: bool = True,
                         surrogate: str = "sigmoid", alpha: Optional[float] = None) -> Tensor:
    """QKFormer channel attention: SN(sum over the tokens of Q) * K over [T, *batch, N, D] -> [T, *batch, N, D].

    v_threshold defaults to 0.5 as SpikingJelly's ChannelQKAttention (the QKFormer attention LIF).
    """
    _check_qkv((("q", q), ("k", k)))
    lif_kw, neuron = _options(tau, v_threshold, v_reset, detach_reset, decay_input, surrogate, alpha)
    if not _reduce_native_ok(q):
        return _composed_qk_channel(q, k, lif_kw)
    return torch.ops.spikeforge.attention_reduce_fwd(q, None, k, True, *neuron)[0]
