"""Spiking transformer modules: attention blocks (Spikformer SSA, Spike-driven Transformer SDSA, QKFormer
token and channel Q-K attention), the spiking MLP block and spiking patch splitting (SPS).

Every module maps a sequence x [T, B, C, H, W] to [T, B, C', H', W']: tokens are the H*W positions and
the "linear" layers are 1x1 convolutions followed by batch norm over T*B*H*W, as in the papers' code (a 1x1
convolution has the parameters of nn.Linear on the tokens). Two orders of the layers exist in the papers:

- post-activation (Spikformer, QKFormer): the residual stream carries spikes (sums of spikes after the
  additions); a block is SN(BN(W x)) and ends in a spiking neuron.
- pre-activation (Spikingformer, Spike-driven Transformer, Meta-SpikeFormer): the residual stream is
  real-valued (a membrane-like sum of BN outputs); a block begins with a spiking neuron and ends in BN, so
  every convolution still sees spikes.

The attention itself is one spikeforge.ops call (or spikeforge.reference with backend="reference") on
q, k, v of shape [T, B, heads, N, D / heads] with the papers' attention neuron (LIF, V_th = 0.5).

The modules hold neurons, so like the neurons they keep their state after a call, with its autograd graph
(the next call continues the sequence; ``detach()`` / spikeforge.nn.detach_net cuts the graph): call
``reset()`` (or spikeforge.nn.reset_net) before an unrelated batch; the models do it at the start of every
forward. The attention neuron inside the op continues too: the fused op starts from rest, so a block keeps
what it needs to rebuild that neuron's last membrane (``attn_state``) and runs a call that continues a
sequence through the composed attention with that membrane as the initial state; chunks then give the
numbers and gradients of one call over the whole sequence. The zoo models, which reset every forward, build
their blocks with ``keep_state=False`` (nothing kept; a continuing call is refused). A call that raises
leaves every state of the block as it was.

compact=True (the models' default with spikeforge neurons): convolutions whose input is spikes or small
integer spike counts keep that input for backward as uint8, and BN followed by a neuron keeps only its
input (spikeforge.nn.fused.bn_spike); numerically identical, fewer bytes saved for backward. Needs neurons
whose outputs are exactly 0/1.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops, reference
from ._accounting import EnergyOp, estimating, report_op
from ._inputs import check_matches_parameters
from ._state import CopiesDetached, atomic, detach_value, in_model_call
from .fused import bn_spike, maxpool_spikes
from .layers import SeqBatchNorm2d, seq_apply
from .neuron import LIF, detach_net, reset_net
from .spike import SpikeInputConv2d

__all__ = [
    "SSA",
    "SDSA",
    "QKTokenAttention",
    "QKChannelAttention",
    "SpikingMLP",
    "SPS",
    "RepConv",
    "SpikeCountConv2d",
    "default_neuron",
    "attention_options",
]

# the keyword options the attention ops accept (docs/attention.md); a neuron's other options do not apply there
_ATTN_KEYS = ("tau", "v_threshold", "v_reset", "detach_reset", "decay_input", "surrogate", "alpha")
# their defaults in the four attention ops (the attention LIF); a continuing call runs ops.lif, whose own
# defaults differ (threshold 1, no detach_reset), with these
_ATTN_DEFAULTS = dict(
    tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True, decay_input=True, surrogate="sigmoid", alpha=None
)


def default_neuron() -> nn.Module:
    """The papers' neuron: SpikingJelly's MultiStepLIFNode(tau=2.0, detach_reset=True), threshold 1, hard
    reset to 0, sigmoid surrogate (alpha 4)."""
    return LIF(tau=2.0, detach_reset=True, step_mode="m")


def attention_options(neuron_kwargs: Optional[dict] = None, v_threshold: float = 0.5) -> dict:
    """Options of the attention neuron: the network's neuron options that the attention ops accept, with
    the attention threshold (0.5 in all the papers) and tau 2 / detach_reset unless given."""
    opts = dict(tau=2.0, detach_reset=True)
    opts.update({k: v for k, v in (neuron_kwargs or {}).items() if k in _ATTN_KEYS})
    opts["v_threshold"] = v_threshold
    return opts


class _Resettable(nn.Module):
    """reset(): forget the state of every neuron inside (multi-step neurons keep it between calls), custom
    neurons from a ``neuron`` factory included (any submodule with a reset(); see nn.reset_net).
    detach(): keep the states' values, cut their graphs (nn.detach_net)."""

    _reset_delegates = True  # reset_net / detach_net visit the children themselves

    def reset(self) -> None:
        reset_net(self)

    def detach(self) -> None:
        detach_net(self)

    def _check_input(self, x: Tensor) -> None:
        """x on the parameters' device and of their dtype (outside autocast), before anything runs; inside a
        zoo model's forward the model checked its input already."""
        if not in_model_call():
            check_matches_parameters(type(self).__name__, "x", x, self)


class _Pending:
    """The attention neuron's last membrane, computed when first needed (the fused op does not return it)."""

    def __init__(self, compute: Callable[[], Tensor], detached: bool = False):
        self.compute, self.detached = compute, detached
        self.grad_enabled = torch.is_grad_enabled()

    def resolve(self) -> Tensor:
        with torch.set_grad_enabled(self.grad_enabled):
            v = self.compute()
        return v.detach() if self.detached else v


class _AttentionState(CopiesDetached, nn.Module):
    """The state of a block's attention neuron (the LIF inside the attention op): None at rest, else its
    membrane after the last call ([T, B, heads, ...] without T), kept with its graph like a neuron's v.

    The fused op starts from rest and returns only the output, so after a call from rest the block keeps
    what rebuilds the membrane (q, k, v of that call) and computes it on the next continuing call or when
    ``v`` is read. keep=False (the zoo models, which reset every forward) keeps nothing: a continuing call
    is refused instead of restarting the attention neuron silently."""

    _NOT_KEPT = "not kept"

    def __init__(self, keep: bool = True):
        super().__init__()
        self.keep = bool(keep)
        self._value: Union[None, _Pending, str, Tensor] = None  # str: _NOT_KEPT

    @property
    def at_rest(self) -> bool:
        return self._value is None

    @property
    def v(self) -> Optional[Tensor]:
        """The attention neuron's membrane (None at rest); raises if it was not kept."""
        if isinstance(self._value, str):  # _NOT_KEPT, the only str it holds
            raise ValueError("the attention state was not kept (keep_state=False); call reset()")
        if isinstance(self._value, _Pending):
            self._value = self._value.resolve()
        return self._value

    def after_fused_call(self, compute: Callable[[], Tensor]) -> None:
        self._value = _Pending(compute) if self.keep else self._NOT_KEPT

    def set(self, v: Tensor) -> None:
        self._value = v

    def reset(self) -> None:
        self._value = None

    def detach(self) -> None:
        if isinstance(self._value, _Pending):
            self._value = _Pending(self._value.compute, detached=True)
        elif isinstance(self._value, Tensor):
            self._value = detach_value(self._value)

    def _state_snapshot(self):
        return self._value

    def _state_restore(self, snapshot) -> None:
        self._value = snapshot

    def extra_repr(self) -> str:
        return f"keep={self.keep}"


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_seq(module: nn.Module, x: Tensor, channels: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(module).__name__} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(f"{type(module).__name__} expects x of shape [T, B, C, H, W], got {tuple(x.shape)}")
    if x.shape[2] != channels:
        raise ValueError(
            f"{type(module).__name__} was built for {channels} channels but x has {x.shape[2]} (shape {tuple(x.shape)})"
        )
    _check_maps(module, x)


def _check_maps(module: nn.Module, x: Tensor) -> None:
    if x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(
            f"{type(module).__name__}: x has empty feature maps ({x.shape[-2]} x {x.shape[-1]}, shape {tuple(x.shape)})"
        )


class SpikeCountConv2d(SpikeInputConv2d):
    """SpikeInputConv2d with ``compact`` off unless asked: nn.Conv2d (same parameters) for inputs that are
    spikes or small integer spike counts (0..255)."""

    def __init__(self, *args, compact: bool = False, **kw):
        super().__init__(*args, compact=compact, **kw)


def _conv_bn(conv: nn.Module, bn: nn.Module, x: Tensor) -> Tensor:
    return bn(seq_apply(conv, x))


def _conv_bn_sn(conv: nn.Module, bn: nn.Module, sn: nn.Module, x: Tensor, compact: bool) -> Tensor:
    """SN(BN(conv(x))) on a sequence; compact: BN and the neuron keep one tensor for backward, not two."""
    return bn_spike(bn, sn, seq_apply(conv, x), compact)


# ------------------------------------------------------------------------------------------------
# RepConv (Meta-SpikeFormer's linear layer of the attention)
# ------------------------------------------------------------------------------------------------
class _BNAndPad(nn.BatchNorm2d):
    """BN whose output is padded by `pad` pixels with the value BN gives a zero input (the running-statistics
    affine of 0, detached), so the following unpadded 3x3 convolution sees a border equal to what a zero-
    padded input would have produced after BN: the re-parameterisable form of Meta-SpikeFormer's RepConv."""

    def __init__(self, num_features: int, pad: int = 1):
        super().__init__(num_features)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        if self.pad <= 0:
            return y
        # BatchNorm2d's default track_running_stats=True (built so in __init__) registers the running stats
        assert self.running_mean is not None and self.running_var is not None
        pad_value = (self.bias - self.running_mean * self.weight / torch.sqrt(self.running_var + self.eps)).detach()
        pad_value = pad_value.view(1, -1, 1, 1)
        # pad (y - value) with zeros, then add value back: border = value, interior = y (differentiable in y)
        return F.pad(y - pad_value, [self.pad] * 4) + pad_value


class RepConv(nn.Module):
    """Meta-SpikeFormer's RepConv: conv1x1 -> BN(+pad) -> depthwise 3x3 -> conv1x1 -> BN, all without bias
    (input [N, C, H, W]; its first convolution sees spikes, so compact keeps that input as uint8)."""

    def __init__(self, in_channels: int, out_channels: int, compact: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            SpikeCountConv2d(in_channels, in_channels, 1, bias=False, compact=compact),
            _BNAndPad(in_channels, pad=1),
            nn.Conv2d(in_channels, in_channels, 3, 1, 0, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


# ------------------------------------------------------------------------------------------------
# attention
# ------------------------------------------------------------------------------------------------
_QK_ARGUMENTS = """
    dim: channels C; num_heads must divide it. compact=True keeps the convolutions' inputs as uint8 for
    backward, exact only for spikes or small spike counts (0..255): with pre_activation=False the module's
    input goes straight into the q/k/v convolutions, so it must be such (as in every model built here);
    give real-valued input only with compact=False (the default). pre_activation: the Spikingformer / SDT
    order (SN first, no SN after the projection; the input is a real-valued stream) instead of Spikformer's
    (the input is spikes or spike counts, the output SN(BN(proj))). repconv: Meta-SpikeFormer's RepConv + BN as the
    linear layers (then pre_activation is required, as in its code). neuron: a factory of fresh neuron modules
    (default: LIF tau 2, threshold 1, detach_reset). attn_options: options of the attention neuron (default
    attention_options(): LIF, V_th 0.5). backend: "spikeforge" (ops) or "reference" (spikeforge.reference).
    keep_state: keep what continues the attention neuron on the next call (see the module docstring; the zoo models
    pass False). qkv_bias / proj_bias: biases of the q, k, v / projection convolutions (the CIFAR Spikformer's
    released code has q, k, v biases; the others none).
"""


class _QKAttention(_Resettable):
    """Shared skeleton: [SN] -> q, k (, v) = SN(BN(W x)) -> attention op per head -> BN(W_proj a) [-> SN].

    The arguments (_QK_ARGUMENTS) are appended to each attention module's docstring below.
    """

    uses_v = True
    op_name = ""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        pre_activation: bool = False,
        repconv: bool = False,
        neuron: Optional[Callable[[], nn.Module]] = None,
        attn_options: Optional[dict] = None,
        backend: str = "spikeforge",
        compact: bool = False,
        proj_bias: bool = True,
        keep_state: bool = True,
        qkv_bias: bool = False,
    ):
        super().__init__()
        dim = _check_int("dim", dim)
        num_heads = _check_int("num_heads", num_heads)
        if dim % num_heads != 0:
            raise ValueError(
                f"num_heads ({num_heads}) must divide dim ({dim}): each head gets dim / num_heads channels"
            )
        if backend not in ("spikeforge", "reference"):
            raise ValueError(f"backend must be 'spikeforge' or 'reference', got {backend!r}")
        if repconv and not pre_activation:
            raise ValueError("repconv (Meta-SpikeFormer) needs pre_activation=True: its blocks begin with a neuron")
        if neuron is not None and not callable(neuron):
            raise TypeError(f"neuron must be a callable returning a fresh neuron module, got {type(neuron).__name__}")
        neuron = neuron or default_neuron
        self.dim, self.num_heads, self.pre_activation = dim, num_heads, bool(pre_activation)
        self.backend, self.compact, self.repconv = backend, bool(compact), bool(repconv)
        self.attn_options = attention_options() if attn_options is None else dict(attn_options)
        bad = sorted(set(self.attn_options) - set(_ATTN_KEYS))
        if bad:
            raise ValueError(f"attn_options: unknown option(s) {bad}; the attention neuron takes {list(_ATTN_KEYS)}")
        self.pre_sn = neuron() if pre_activation else None
        names = ("q", "k", "v") if self.uses_v else ("q", "k")
        for name in names:
            if repconv:  # RepConv + BN (Meta-SpikeFormer: q_conv = Sequential(RepConv, BatchNorm2d))
                setattr(self, f"{name}_conv", RepConv(dim, dim, compact=self.compact))
            else:
                setattr(self, f"{name}_conv", SpikeCountConv2d(dim, dim, 1, bias=qkv_bias, compact=self.compact))
            setattr(self, f"{name}_bn", SeqBatchNorm2d(dim))
            setattr(self, f"{name}_sn", neuron())
        if repconv:
            self.proj_conv: nn.Module = RepConv(dim, dim, compact=self.compact)
        else:
            self.proj_conv = SpikeCountConv2d(dim, dim, 1, bias=proj_bias, compact=self.compact)
        self.proj_bn = SeqBatchNorm2d(dim)
        self.proj_sn = None if pre_activation else neuron()
        self.attn_state = _AttentionState(keep=keep_state)

    def _op(self):
        return getattr(ops if self.backend == "spikeforge" else reference, self.op_name)

    def _heads(self, s: Tensor) -> Tensor:
        """[T, B, C, H, W] -> [T, B, heads, N, C / heads] (channel c = head * (C / heads) + j, as the papers)."""
        T, B, C, H, W = s.shape
        return s.reshape(T, B, self.num_heads, C // self.num_heads, H * W).transpose(-1, -2)

    def _project(self, name: str, s: Tensor) -> Tensor:
        conv, bn, sn = getattr(self, f"{name}_conv"), getattr(self, f"{name}_bn"), getattr(self, f"{name}_sn")
        return _conv_bn_sn(conv, bn, sn, s, self.compact)

    def _fused(self, q: Tensor, k: Tensor, v: Optional[Tensor]) -> Tensor:
        """The attention op named by op_name on (q, k[, v]) with the neuron options (SSA adds its scale): its
        attention neuron starts from rest."""
        return self._op()(q, k, *((v,) if self.uses_v else ()), **self.attn_options)

    def _pre(self, q: Tensor, k: Tensor, v: Optional[Tensor]) -> Tensor:
        """The attention neuron's input sequence (subclasses; q, k, v in the working dtype)."""
        raise NotImplementedError

    def _post(self, a: Tensor, q: Tensor, k: Tensor, v: Optional[Tensor]) -> Tensor:
        """The output from the attention neuron's spikes a (subclasses)."""
        raise NotImplementedError

    def _composed(self, q: Tensor, k: Tensor, v: Optional[Tensor], v_init: Optional[Tensor]):
        """(output, the attention neuron's last membrane) of the attention composed from torch ops and the
        multi-step LIF from v_init (as the ops' composed path, half precision computed in float32)."""

        def working(t: Tensor) -> Tensor:
            return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

        wq, wk, wv = working(q), working(k), (None if v is None else working(v))
        lif = ops.lif if self.backend == "spikeforge" else reference.lif
        a, v_last = lif(self._pre(wq, wk, wv), v_init, return_v="last", **{**_ATTN_DEFAULTS, **self.attn_options})
        return self._post(a, wq, wk, wv).to(q.dtype), v_last

    def _attend(self, q: Tensor, k: Tensor, v: Optional[Tensor]) -> Tensor:
        """From rest: the fused op, keeping what rebuilds its neuron's last membrane; continuing a sequence:
        the composed attention from the stored membrane, keeping the new one (with its graph)."""
        state = self.attn_state
        if state.at_rest:
            out = self._fused(q, k, v)
            state.after_fused_call(lambda: self._composed(q, k, v, None)[1])
            return out
        out, v_last = self._composed(q, k, v, state.v)
        state.set(v_last)
        return out

    def _energy_ops(self, q: Tensor, k: Tensor, v: Optional[Tensor]) -> list:
        """The EnergyOps of the attention op for spikeforge.tools.energy (q, k, v: [T, B, heads, N, d]).
        Masking by a spike (a multiply by 0/1) is a select, not a synaptic operation, and is not charged."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        _check_seq(self, x, self.dim)
        self._check_input(x)
        if not self.attn_state.keep and not self.attn_state.at_rest:
            raise ValueError(
                f"{type(self).__name__} was built with keep_state=False and cannot continue a "
                "sequence: call reset() (spikeforge.nn.reset_net) before the next call, or build it "
                "with keep_state=True"
            )
        with atomic(self):
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        T, B, C, H, W = x.shape
        s = self.pre_sn(x) if self.pre_sn is not None else x
        q = self._heads(self._project("q", s))
        k = self._heads(self._project("k", s))
        v = self._heads(self._project("v", s)) if self.uses_v else None
        a = self._attend(q, k, v)  # [T, B, heads, N, C / heads]
        if estimating():  # the attention's own accumulates, which no hooked layer sees
            report_op(self, *self._energy_ops(q, k, v))
        a = a.transpose(-1, -2).reshape(T, B, C, H, W)
        if self.proj_sn is None:
            return _conv_bn(self.proj_conv, self.proj_bn, a)
        return _conv_bn_sn(self.proj_conv, self.proj_bn, self.proj_sn, a, self.compact)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, pre_activation={self.pre_activation}, "
            f"backend={self.backend!r}, attn={self.attn_options}"
        )


class SSA(_QKAttention):
    """Spikformer spiking self-attention: SN_{0.5}(Q K^T V * scale) per head (scale 0.125), q, k, v spikes.

    Spikformer / QKFormer order by default; pre_activation=True gives Spikingformer's, repconv=True (with
    pre_activation) Meta-SpikeFormer's.
    """

    op_name = "ssa"

    def __init__(self, dim: int, num_heads: int = 8, scale: float = 0.125, **kw):
        super().__init__(dim, num_heads, **kw)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
        self.scale = float(scale)

    def _fused(self, q, k, v):
        return self._op()(q, k, v, self.scale, **self.attn_options)

    def _pre(self, q, k, v):
        return (q @ (k.transpose(-2, -1) @ v)) * self.scale  # K^T V first, as the op: no N x N scores

    def _post(self, a, q, k, v):
        return a

    def _energy_ops(self, q, k, v):
        # what the op computes, Q (K^T V): every spike of K adds a row of V (d accumulates), every spike of Q a
        # row of K^T V: N d^2 MACs per product. The papers' (Q K^T) V order would be charged N^2 d per
        # product (4x more at N = 196, d = 48); we report the work actually done.
        T, B, h, N, d = q.shape
        macs = float(T * B * h * N * d * d)
        return [EnergyOp("kT@v", macs, k), EnergyOp("q@(kT@v)", macs, q)]


class SDSA(_QKAttention):
    """Spike-driven self-attention (Yao et al. 2023): Q * SN_{0.5}(sum over tokens of K * V) per head.

    The Spike-driven Transformer uses it with pre_activation=True (its membrane shortcut: the block begins
    with SN and ends in BN of the projection).
    """

    op_name = "sdsa"

    def _pre(self, q, k, v):
        return (k * v).sum(dim=-2, keepdim=True)

    def _post(self, a, q, k, v):
        return q * a

    def _energy_ops(self, q, k, v):
        # K * V is a mask (select); the sum over tokens accumulates each non-zero product once
        return [EnergyOp("sum_tokens(k*v)", float(k.numel()), k * v)]


class QKTokenAttention(_QKAttention):
    """QKFormer token attention (QKTA): SN_{0.5}(sum over the channels of Q within a head) * K: one binary
    weight per token and head masks K; no V (q and k projections only)."""

    uses_v = False
    op_name = "qk_token_attention"

    def _pre(self, q, k, v):
        return q.sum(dim=-1, keepdim=True)

    def _post(self, a, q, k, v):
        return a * k

    def _energy_ops(self, q, k, v):
        return [EnergyOp("sum_channels(q)", float(q.numel()), q)]  # then a per-token mask of K


class QKChannelAttention(_QKAttention):
    """QKFormer channel attention (QKCA): SN_{0.5}(sum over the tokens of Q) * K: one binary weight per
    channel masks K; no V."""

    uses_v = False
    op_name = "qk_channel_attention"

    def _pre(self, q, k, v):
        return q.sum(dim=-2, keepdim=True)

    def _post(self, a, q, k, v):
        return a * k

    def _energy_ops(self, q, k, v):
        return [EnergyOp("sum_tokens(q)", float(q.numel()), q)]  # then a per-channel mask of K


for _cls in (SSA, SDSA, QKTokenAttention, QKChannelAttention):  # help() shows the shared arguments
    _cls.__doc__ = (_cls.__doc__ or "").rstrip() + "\n\n    Arguments:" + _QK_ARGUMENTS.rstrip() + "\n    "


# ------------------------------------------------------------------------------------------------
# MLP
# ------------------------------------------------------------------------------------------------
class SpikingMLP(_Resettable):
    """The transformers' MLP on tokens (1x1 convolutions with bias, hidden = mlp_ratio * dim):

    post-activation (Spikformer, QKFormer): SN(BN(fc2(SN(BN(fc1(x))))))
    pre-activation (Spikingformer, SDT, Meta-SpikeFormer): BN(fc2(SN(BN(fc1(SN(x)))))).
    """

    def __init__(
        self,
        dim: int,
        hidden: Optional[int] = None,
        *,
        mlp_ratio: float = 4.0,
        pre_activation: bool = False,
        neuron: Optional[Callable[[], nn.Module]] = None,
        compact: bool = False,
    ):
        super().__init__()
        dim = _check_int("dim", dim)
        if hidden is None:
            if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
                raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
            hidden = int(dim * mlp_ratio)
        hidden = _check_int("hidden", hidden)
        neuron = neuron or default_neuron
        self.dim, self.hidden, self.pre_activation, self.compact = dim, hidden, bool(pre_activation), bool(compact)
        self.fc1_sn = neuron() if pre_activation else None
        self.fc1_conv = SpikeCountConv2d(dim, hidden, 1, compact=self.compact)
        self.fc1_bn = SeqBatchNorm2d(hidden)
        self.fc2_sn = neuron()
        self.fc2_conv = SpikeCountConv2d(hidden, dim, 1, compact=self.compact)
        self.fc2_bn = SeqBatchNorm2d(dim)
        self.out_sn = None if pre_activation else neuron()

    def forward(self, x: Tensor) -> Tensor:
        _check_seq(self, x, self.dim)
        self._check_input(x)
        with atomic(self):
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        if self.pre_activation:
            assert self.fc1_sn is not None  # built with pre_activation
            h = _conv_bn(self.fc1_conv, self.fc1_bn, self.fc1_sn(x))
            return _conv_bn(self.fc2_conv, self.fc2_bn, self.fc2_sn(h))
        assert self.out_sn is not None  # built without pre_activation
        h = _conv_bn_sn(self.fc1_conv, self.fc1_bn, self.fc2_sn, x, self.compact)
        return _conv_bn_sn(self.fc2_conv, self.fc2_bn, self.out_sn, h, self.compact)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, pre_activation={self.pre_activation}"


# ------------------------------------------------------------------------------------------------
# spiking patch splitting
# ------------------------------------------------------------------------------------------------
class SPS(_Resettable):
    """Spiking patch splitting: four 3x3 conv + BN stages with dim/8, dim/4, dim/2, dim channels, a 3x3
    stride-2 max-pool after the stages marked in ``pooling`` ("1111": /16, ImageNet; "0011": /4, CIFAR),
    then a relative position embedding. ``variant`` picks the paper's layer order:

    - "spikformer": x_i = [pool] SN(BN(conv_i(x))); out = SN(BN(rpe(x_4))) + x_4 (spike counts 0..2).
    - "sdt" (Spike-driven Transformer MS_SPS): as spikformer for the first three; the last stage pools the
      BN output u = [pool] BN(conv_4(x)), out = BN(rpe(SN(u))) + u: a real-valued (membrane) stream.
    - "spikingformer" (spiking tokenizer): u_0 = BN(conv_0(x)); u_i = BN(conv_i([pool] SN(u_{i-1}))) for
      i = 1..4 (the fifth conv, dim -> dim, takes the place of the rpe conv); out = u_4, real-valued.

    All variants have the same parameters (convs without bias, BN). Input: [T, B, C, H, W], or a static
    image batch [B, C, H, W] with T given: its first convolution runs once and is repeated over the T steps
    (exact: the input is the same at every step).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        *,
        pooling: str = "1111",
        variant: str = "spikformer",
        neuron: Optional[Callable[[], nn.Module]] = None,
        compact: bool = False,
    ):
        super().__init__()
        in_channels = _check_int("in_channels", in_channels)
        dim = _check_int("dim", dim)
        if dim % 8 != 0:
            raise ValueError(f"dim must be a multiple of 8 (SPS widths dim/8, dim/4, dim/2), got {dim}")
        if not (isinstance(pooling, str) and len(pooling) == 4 and set(pooling) <= {"0", "1"}):
            raise ValueError(f"pooling must be a string of four '0'/'1' flags (e.g. '1111', '0011'), got {pooling!r}")
        if variant not in ("spikformer", "sdt", "spikingformer"):
            raise ValueError(f"variant must be 'spikformer', 'sdt' or 'spikingformer', got {variant!r}")
        neuron = neuron or default_neuron
        self.in_channels, self.dim, self.pooling, self.variant = in_channels, dim, pooling, variant
        self.compact = bool(compact)
        widths = [in_channels, dim // 8, dim // 4, dim // 2, dim, dim]
        # conv 0 sees the image (real values); the others see spikes (compact: saved as uint8)
        self.convs = nn.ModuleList(
            [nn.Conv2d(widths[0], widths[1], 3, 1, 1, bias=False)]
            + [
                SpikeCountConv2d(widths[i], widths[i + 1], 3, 1, 1, bias=False, compact=self.compact)
                for i in range(1, 5)
            ]
        )
        self.bns = nn.ModuleList([SeqBatchNorm2d(w) for w in widths[1:]])
        # spikformer: a neuron after every BN; sdt and spikingformer: after the first four (the stream is real)
        self.sns = nn.ModuleList([neuron() for _ in range(5 if variant == "spikformer" else 4)])
        self.pool = nn.MaxPool2d(3, 2, 1)

    def _first_conv(self, x: Tensor, T: Optional[int]) -> Tensor:
        if x.dim() == 4:
            if T is None:
                raise ValueError("SPS: a static image batch [B, C, H, W] needs T (the number of steps)")
            _check_int("T", T)
            y = self.convs[0](x)
            return y.unsqueeze(0).expand((T,) + tuple(y.shape)).contiguous()
        if x.dim() != 5:
            raise ValueError(f"SPS expects x of shape [T, B, C, H, W] or [B, C, H, W], got {tuple(x.shape)}")
        if T is not None and T != x.shape[0]:
            raise ValueError(f"SPS: T={T} but the sequence x has {x.shape[0]} steps (shape {tuple(x.shape)})")
        return seq_apply(self.convs[0], x)

    def forward(self, x: Tensor, T: Optional[int] = None) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"SPS expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() in (4, 5) and x.shape[-3] != self.in_channels:
            raise ValueError(
                f"SPS was built for {self.in_channels} input channels but x has {x.shape[-3]} (shape {tuple(x.shape)})"
            )
        if x.dim() in (4, 5):
            _check_maps(self, x)
        self._check_input(x)
        with atomic(self):
            return self._forward(x, T)

    def _forward(self, x: Tensor, T: Optional[int]) -> Tensor:
        y = self._first_conv(x, T)
        pools = [flag == "1" for flag in self.pooling]
        if self.variant == "spikingformer":
            u = self.bns[0](y)
            for i in range(1, 5):
                s = self.sns[i - 1](u)
                if pools[i - 1]:
                    s = maxpool_spikes(self.pool, s, self.compact)
                u = self.bns[i](seq_apply(self.convs[i], s))
            return u
        for i in range(3 if self.variant == "sdt" else 4):
            if i > 0:
                y = seq_apply(self.convs[i], s)  # s: set by the previous step
            s = bn_spike(self.bns[i], self.sns[i], y, self.compact)
            if pools[i]:
                s = maxpool_spikes(self.pool, s, self.compact)
        if self.variant == "spikformer":
            r = _conv_bn_sn(self.convs[4], self.bns[4], self.sns[4], s, self.compact)
            return r + s
        u = self.bns[3](seq_apply(self.convs[3], s))
        if pools[3]:
            u = seq_apply(self.pool, u)
        r = self.bns[4](seq_apply(self.convs[4], self.sns[3](u)))
        return r + u

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, dim={self.dim}, pooling={self.pooling!r}, variant={self.variant!r}"
