"""Spiking transformers: Spikformer, Spikingformer, Spike-driven Transformer (SDT), Meta-SpikeFormer
(Spike-driven Transformer v2) and QKFormer, in the layouts of the authors' released code.

Every model maps an image batch x [B, C, H, W] (direct encoding: the same image at each of the T steps; the
first convolution runs once) or a sequence x [T, B, C, H, W] to per-step logits [T, B, num_classes]; average
over dim 0 for a prediction (the papers average the pooled features over T before their linear head, which
is the same thing: the head is linear). Every forward first resets all neurons (one call = one batch).

Families (x: [T, B, C, H, W], tokens = H*W positions, "W" = 1x1 conv + BN over T*B*H*W):
- spikformer (Zhou et al. 2023): SPS -> depth x [x + SSA(x); x + MLP(x)] with the post-activation blocks
  (SN(BN(W .))), so the residual stream carries spike counts -> mean over tokens -> linear head.
- spikingformer (Zhou et al. 2023): spiking tokenizer -> blocks in pre-activation order (SN first, BN
  last: the residual stream is real-valued and every convolution sees spikes) -> mean -> head.
- sdt (Yao et al. 2023): MS_SPS -> blocks [x + SDSA(x); x + MLP(x)] with the membrane shortcut (pre-
  activation) -> mean -> SN -> head.
- meta_spikformer (Yao et al. 2024): two conv stages (downsample = [SN] conv + BN; conv block = x +
  SepConv(x), then x + BN(conv3x3(SN(BN(conv3x3(SN(x))))))), then 6 + 2 transformer blocks whose q, k, v
  and projection are RepConv + BN (SSA with the 0.5 attention neuron) -> mean -> SN -> head (the released
  code's head reads the spikes of its final LIF since its commit d95ad13, "Update models.py", of March
  2024; before, the pooled stream; its distillation head is not built here).
- qkformer (Zhou et al. 2024), hierarchical: patch embedding with a deformed shortcut (main path of 3x3
  convs + max-pool, shortcut SN(BN(conv1x1 stride 2)), added) -> stage 1 (dim/4, QKTA blocks) -> patch
  embedding -> stage 2 (dim/2, QKTA) -> patch embedding -> stage 3 (dim, SSA blocks) -> mean -> head.
  qk_attention="channel" swaps QKTA for QKCA.

Neurons: LIF tau 2, threshold 1, hard reset, detach_reset, sigmoid surrogate (SpikingJelly's
MultiStepLIFNode defaults in all five codes); attention neurons threshold 0.5. MLP ratio 4. The
papers' unused layers (LayerNorms built but never called in Spikformer/Spikingformer, SDT's unused
talking-heads conv) are not built: they are in no forward pass and the papers' parameter counts leave
them out. ``backend="reference"`` builds the same model on spikeforge.reference (neurons and attention
ops), the baseline of ``spikeforge bench models``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from torch import Tensor, nn

from ..nn.attention import (
    SDSA,
    SPS,
    SSA,
    QKChannelAttention,
    QKTokenAttention,
    SpikeCountConv2d,
    SpikingMLP,
    _check_int,
    attention_options,
)
from ..nn._inputs import check_model_input, model_errors
from ..nn._state import atomic
from ..nn.layers import SeqBatchNorm2d, seq_apply
from . import resnet
from .resnet import make_neuron

__all__ = [
    "TransformerBlock",
    "SpikformerNet",
    "MetaSpikformer",
    "QKFormer",
    "spikformer",
    "spikingformer",
    "sdt",
    "qkformer_hst",
    "TRANSFORMER_MODELS",
]

_DEFAULT_NEURON_KWARGS: dict[str, dict[str, Any]] = {
    "lif": dict(tau=2.0, detach_reset=True),
    "if": dict(detach_reset=True),
    "plif": dict(init_tau=2.0, detach_reset=True),
}


def _stem(conv: nn.Module, x: Tensor, T: Optional[int]) -> Tensor:
    """The first convolution: once on a static image batch [B, ...] and repeated over T (exact), or per
    step on a sequence [T, B, ...]."""
    if x.dim() == 4:
        if T is None:
            raise ValueError("an image batch [B, C, H, W] needs the number of time steps T to repeat it over")
        y = conv(x)
        return y.unsqueeze(0).expand((T,) + tuple(y.shape)).contiguous()
    return seq_apply(conv, x)


class TransformerBlock(nn.Module):
    """x + attn(x), then x + mlp(x): the residual form shared by all five families."""

    def __init__(self, attn: nn.Module, mlp: nn.Module):
        super().__init__()
        self.attn, self.mlp = attn, mlp

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


# ------------------------------------------------------------------------------------------------
# the shared skeleton: neuron factory, input checks, reset, pooling and head
# ------------------------------------------------------------------------------------------------
class _SpikingTransformer(nn.Module):
    head: nn.Linear  # built by each family
    head_sn: Optional[nn.Module]

    def __init__(
        self,
        *,
        num_classes: int,
        T: int,
        in_channels: int,
        neuron,
        neuron_kwargs: Optional[dict],
        backend: str,
        compact: Optional[bool],
    ):
        super().__init__()
        self.T = _check_int("T", T)
        self.num_classes = _check_int("num_classes", num_classes)
        self.in_channels = _check_int("in_channels", in_channels)
        if backend not in ("spikeforge", "reference"):
            raise ValueError(f"backend must be 'spikeforge' or 'reference', got {backend!r}")
        if neuron_kwargs is None:
            key = neuron.lower() if isinstance(neuron, str) else None
            neuron_kwargs = dict(_DEFAULT_NEURON_KWARGS.get(key or "", {}))
        self.backend = backend
        self.sn = make_neuron(neuron, backend, **neuron_kwargs)
        self.attn_options = attention_options(neuron_kwargs)
        # compact (see nn.attention): exact for neurons whose outputs are 0/1, so on by default only for
        # spikeforge's own neurons; a custom neuron with graded outputs needs compact=False
        if compact is None:
            compact = backend == "spikeforge" and not callable(neuron)
        self.compact = bool(compact)

    def _attn_kw(self, pre_activation: bool, **extra) -> dict:
        # keep_state=False: the model resets every forward, so its blocks never continue a sequence and
        # need not keep q, k, v to rebuild the attention neuron's membrane
        return dict(
            pre_activation=pre_activation,
            neuron=self.sn,
            attn_options=self.attn_options,
            backend=self.backend,
            compact=self.compact,
            keep_state=False,
            **extra,
        )

    def _init_head(self) -> None:
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # all five codes: timm's trunc_normal_(std=.02)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError  # each family builds its own trunk

    def forward(self, x: Tensor) -> Tensor:
        check_model_input(type(self).__name__, x, self.T, self.in_channels, self)
        # one call = one batch of independent sequences: every neuron is reset first (nn.reset_net), and a
        # call that raises gives them back their states
        with model_errors(type(self).__name__, x), atomic(self, reset=True):
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        y = self.forward_features(x).flatten(3).mean(3)  # global average over the tokens -> [T, B, C]
        if self.head_sn is not None:
            y = self.head_sn(y)
        return self.head(y)


# ------------------------------------------------------------------------------------------------
# Spikformer, Spikingformer, Spike-driven Transformer
# ------------------------------------------------------------------------------------------------
_FLAT_VARIANTS = {
    # variant: (SPS variant, attention class, pre-activation blocks, SN before the head)
    "spikformer": ("spikformer", SSA, False, False),
    "spikingformer": ("spikingformer", SSA, True, False),
    "sdt": ("sdt", SDSA, True, True),
}


class SpikformerNet(_SpikingTransformer):
    """SPS + depth transformer blocks at one width: variant "spikformer" | "spikingformer" | "sdt".

    imagenet: SPS pools after all four stages (224 -> 14x14 tokens); otherwise after the last two (CIFAR:
    32 -> 8x8 tokens). See the module docstring for the layer orders.
    """

    def __init__(
        self,
        variant: str = "spikformer",
        depth: int = 8,
        dim: int = 384,
        num_heads: int = 8,
        *,
        imagenet: bool = True,
        num_classes: int = 1000,
        T: int = 4,
        in_channels: int = 3,
        mlp_ratio: float = 4.0,
        neuron="lif",
        neuron_kwargs: Optional[dict] = None,
        backend: str = "spikeforge",
        compact: Optional[bool] = None,
    ):
        super().__init__(
            num_classes=num_classes,
            T=T,
            in_channels=in_channels,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
            backend=backend,
            compact=compact,
        )
        if variant not in _FLAT_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(_FLAT_VARIANTS)}, got {variant!r}")
        sps_variant, attn_cls, pre, head_sn = _FLAT_VARIANTS[variant]
        self.variant, self.depth, self.dim = variant, _check_int("depth", depth), _check_int("dim", dim)
        self.patch_embed = SPS(
            in_channels,
            dim,
            pooling="1111" if imagenet else "0011",
            variant=sps_variant,
            neuron=self.sn,
            compact=self.compact,
        )
        # the released CIFAR Spikformer's q, k, v are nn.Linear with bias (its ImageNet code: convolutions without)
        cifar_spikformer = variant == "spikformer" and not imagenet
        attn_extra = dict(qkv_bias=True) if cifar_spikformer else {}
        self.blocks = nn.ModuleList(
            [
                TransformerBlock(
                    attn_cls(dim, num_heads, **attn_extra, **self._attn_kw(pre)),
                    SpikingMLP(dim, mlp_ratio=mlp_ratio, pre_activation=pre, neuron=self.sn, compact=self.compact),
                )
                for _ in range(depth)
            ]
        )
        self.head_sn = self.sn() if head_sn else None
        self.head = nn.Linear(dim, num_classes)
        if variant == "sdt":  # the SDT code initialises every Conv2d with trunc_normal_(std=.02), bias 0
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        if cifar_spikformer:  # its blocks' nn.Linear layers (q, k, v, projection, MLP; 1x1 convs here) likewise
            for m in self.blocks.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        self._init_head()

    def forward_features(self, x: Tensor) -> Tensor:
        y = self.patch_embed(x, self.T) if x.dim() == 4 else self.patch_embed(x)
        for blk in self.blocks:
            y = blk(y)
        return y

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, depth={self.depth}, dim={self.dim}, T={self.T}"


# ------------------------------------------------------------------------------------------------
# Meta-SpikeFormer (Spike-driven Transformer v2)
# ------------------------------------------------------------------------------------------------
class _MSDownsample(nn.Module):
    """[SN] -> conv (with bias) -> BN; the first one sees the image and has no SN."""

    def __init__(self, cin, cout, kernel, stride, padding, sn, first: bool, compact: bool):
        super().__init__()
        self.first = first
        self.sn = None if first else sn()
        conv_cls = nn.Conv2d if first else SpikeCountConv2d
        extra: dict[str, Any] = {} if first else dict(compact=compact)
        self.conv = conv_cls(cin, cout, kernel, stride, padding, **extra)
        self.bn = SeqBatchNorm2d(cout)

    def forward(self, x: Tensor, T: int) -> Tensor:
        if self.first:
            return self.bn(_stem(self.conv, x, T))
        assert self.sn is not None  # built for every unit but the first
        return self.bn(seq_apply(self.conv, self.sn(x)))


class _SepConv(nn.Module):
    """MobileNetV2's inverted separable conv on spikes: SN -> pw (x2) -> BN -> SN -> dw 7x7 -> pw -> BN."""

    def __init__(self, dim: int, sn, compact: bool, expansion: int = 2, kernel: int = 7):
        super().__init__()
        med = dim * expansion
        self.sn1 = sn()
        self.pwconv1 = SpikeCountConv2d(dim, med, 1, bias=False, compact=compact)
        self.bn1 = SeqBatchNorm2d(med)
        self.sn2 = sn()
        self.dwconv = SpikeCountConv2d(med, med, kernel, padding=kernel // 2, groups=med, bias=False, compact=compact)
        self.pwconv2 = nn.Conv2d(med, dim, 1, bias=False)  # sees the depthwise output (real values)
        self.bn2 = SeqBatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn1(seq_apply(self.pwconv1, self.sn1(x)))
        return self.bn2(seq_apply([self.dwconv, self.pwconv2], self.sn2(h)))


class _MSConvBlock(nn.Module):
    """x = x + SepConv(x); x + BN(conv3x3(SN(BN(conv3x3(SN(x)))))) with mlp_ratio * dim hidden channels."""

    def __init__(self, dim: int, sn, compact: bool, mlp_ratio: int = 4):
        super().__init__()
        self.sepconv = _SepConv(dim, sn, compact)
        self.sn1 = sn()
        self.conv1 = SpikeCountConv2d(dim, dim * mlp_ratio, 3, padding=1, bias=False, compact=compact)
        self.bn1 = SeqBatchNorm2d(dim * mlp_ratio)
        self.sn2 = sn()
        self.conv2 = SpikeCountConv2d(dim * mlp_ratio, dim, 3, padding=1, bias=False, compact=compact)
        self.bn2 = SeqBatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.sepconv(x)
        h = self.bn1(seq_apply(self.conv1, self.sn1(x)))
        return x + self.bn2(seq_apply(self.conv2, self.sn2(h)))


class MetaSpikformer(_SpikingTransformer):
    """Meta-SpikeFormer: stage widths dims (d0, d1, d2, d3), e.g. (64, 128, 256, 360) for the 15.1M model.

    Stem 7x7/2 -> d0/2, conv block; 3x3/2 -> d0, conv block; 3x3/2 -> d1, 2 conv blocks; 3x3/2 -> d2,
    6 transformer blocks; 3x3/1 -> d3, 2 transformer blocks (224 -> 14x14 tokens).
    """

    def __init__(
        self,
        dims: Sequence[int] = (64, 128, 256, 360),
        num_heads: int = 8,
        *,
        num_classes: int = 1000,
        T: int = 4,
        in_channels: int = 3,
        mlp_ratio: int = 4,
        neuron="lif",
        neuron_kwargs: Optional[dict] = None,
        backend: str = "spikeforge",
        compact: Optional[bool] = None,
    ):
        super().__init__(
            num_classes=num_classes,
            T=T,
            in_channels=in_channels,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
            backend=backend,
            compact=compact,
        )
        dims = tuple(dims)
        if len(dims) != 4:
            raise ValueError(f"dims must be four stage widths (d0, d1, d2, d3), got {dims!r}")
        for i, d in enumerate(dims):
            _check_int(f"dims[{i}]", d)
        if dims[0] % 2:
            raise ValueError(f"dims[0] must be even (the stem has dims[0] / 2 channels), got {dims[0]}")
        self.dims = dims
        sn, c = self.sn, self.compact
        d0, d1, d2, d3 = dims
        self.downsample1_1 = _MSDownsample(in_channels, d0 // 2, 7, 2, 3, sn, True, c)
        self.conv_blocks1_1 = nn.ModuleList([_MSConvBlock(d0 // 2, sn, c, mlp_ratio)])
        self.downsample1_2 = _MSDownsample(d0 // 2, d0, 3, 2, 1, sn, False, c)
        self.conv_blocks1_2 = nn.ModuleList([_MSConvBlock(d0, sn, c, mlp_ratio)])
        self.downsample2 = _MSDownsample(d0, d1, 3, 2, 1, sn, False, c)
        self.conv_blocks2 = nn.ModuleList([_MSConvBlock(d1, sn, c, mlp_ratio) for _ in range(2)])
        self.downsample3 = _MSDownsample(d1, d2, 3, 2, 1, sn, False, c)
        self.blocks3 = nn.ModuleList([self._block(d2, num_heads, mlp_ratio) for _ in range(6)])
        self.downsample4 = _MSDownsample(d2, d3, 3, 1, 1, sn, False, c)
        self.blocks4 = nn.ModuleList([self._block(d3, num_heads, mlp_ratio) for _ in range(2)])
        self.head_sn = self.sn()  # the released code's self.lif (tau 2, detach_reset) before the head
        self.head = nn.Linear(d3, num_classes)
        self._init_head()

    def _block(self, dim, num_heads, mlp_ratio):
        return TransformerBlock(
            SSA(dim, num_heads, **self._attn_kw(True, repconv=True)),
            SpikingMLP(dim, mlp_ratio=mlp_ratio, pre_activation=True, neuron=self.sn, compact=self.compact),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        y = self.downsample1_1(x, self.T)
        for stage, down in (
            (self.conv_blocks1_1, None),
            (self.conv_blocks1_2, self.downsample1_2),
            (self.conv_blocks2, self.downsample2),
            (self.blocks3, self.downsample3),
            (self.blocks4, self.downsample4),
        ):
            if down is not None:
                y = down(y, self.T)
            for blk in stage:
                y = blk(y)
        return y

    def extra_repr(self) -> str:
        return f"dims={self.dims}, T={self.T}"


# ------------------------------------------------------------------------------------------------
# QKFormer (hierarchical spiking transformer)
# ------------------------------------------------------------------------------------------------
class _ConvBNSN(nn.Module):
    """conv (no bias) -> BN [-> max-pool 3x3/2] -> SN; the first one of a net sees the image."""

    def __init__(self, cin, cout, kernel, stride, sn, *, pool: bool, image_input: bool, compact: bool):
        super().__init__()
        padding = kernel // 2
        if image_input:
            self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        else:
            self.conv = SpikeCountConv2d(cin, cout, kernel, stride, padding, bias=False, compact=compact)
        self.bn = SeqBatchNorm2d(cout)
        self.pool = nn.MaxPool2d(3, 2, 1) if pool else None
        self.sn = sn()
        self.compact, self.image_input = compact, image_input

    def forward(self, x: Tensor, T: Optional[int] = None) -> Tensor:
        y = _stem(self.conv, x, T) if self.image_input else seq_apply(self.conv, x)
        if self.pool is None:
            return resnet.bn_spike(self.bn, self.sn, y, self.compact)
        return self.sn(seq_apply(self.pool, self.bn(y)))  # the pool sits between BN and SN


class QKPatchEmbed(nn.Module):
    """QKFormer's patch embedding with a deformed shortcut: main path of 3x3 conv units, shortcut
    SN(BN(conv1x1(x_feat))), added (a spike count 0..2).

    first=True (PatchEmbedInit, input the image): x_feat = unit0(x), main = unit1(x_feat) [-> unit2 on
    ImageNet]; first=False (PatchEmbeddingStage, input the previous stage, cin = dim / 2): x_feat = x,
    main = unit4(unit3(x)). The stride-2 pools: ImageNet after units 0 and 1 (shortcut stride 2) and after
    unit 3; CIFAR none in the first embedding (shortcut stride 1), after unit 4 in the others.
    """

    def __init__(self, cin: int, dim: int, sn, *, first: bool, imagenet: bool, compact: bool):
        super().__init__()
        self.first = first
        if first:
            self.unit0: Optional[_ConvBNSN] = _ConvBNSN(
                cin, dim // 2, 3, 1, sn, pool=imagenet, image_input=True, compact=compact
            )
            main = [_ConvBNSN(dim // 2, dim, 3, 1, sn, pool=imagenet, image_input=False, compact=compact)]
            if imagenet:
                main.append(_ConvBNSN(dim, dim, 3, 1, sn, pool=False, image_input=False, compact=compact))
            self.res = _ConvBNSN(
                dim // 2, dim, 1, 2 if imagenet else 1, sn, pool=False, image_input=False, compact=compact
            )
        else:
            self.unit0 = None
            main = [
                _ConvBNSN(cin, dim, 3, 1, sn, pool=imagenet, image_input=False, compact=compact),
                _ConvBNSN(dim, dim, 3, 1, sn, pool=not imagenet, image_input=False, compact=compact),
            ]
            self.res = _ConvBNSN(cin, dim, 1, 2, sn, pool=False, image_input=False, compact=compact)
        self.main = nn.ModuleList(main)

    def forward(self, x: Tensor, T: Optional[int] = None) -> Tensor:
        x_feat = self.unit0(x, T) if self.unit0 is not None else x
        y = x_feat
        for unit in self.main:
            y = unit(y)
        return y + self.res(x_feat)


class QKFormer(_SpikingTransformer):
    """QKFormer HST-depth-dim: three stages at dim/4, dim/2, dim with 1, 2, depth-3 blocks (ImageNet) or
    1, 1, depth-2 (CIFAR); QK attention in stages 1-2, SSA in stage 3."""

    def __init__(
        self,
        depth: int = 10,
        dim: int = 384,
        num_heads: int = 6,
        *,
        imagenet: bool = True,
        num_classes: int = 1000,
        T: int = 4,
        in_channels: int = 3,
        mlp_ratio: float = 4.0,
        qk_attention: str = "token",
        neuron="lif",
        neuron_kwargs: Optional[dict] = None,
        backend: str = "spikeforge",
        compact: Optional[bool] = None,
    ):
        super().__init__(
            num_classes=num_classes,
            T=T,
            in_channels=in_channels,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
            backend=backend,
            compact=compact,
        )
        depth, dim = _check_int("depth", depth), _check_int("dim", dim)
        if dim % 8 != 0:
            raise ValueError(
                f"dim must be a multiple of 8 (stage widths dim/4, dim/2 and the first embedding's dim/8), got {dim}"
            )
        if qk_attention not in ("token", "channel"):
            raise ValueError(f"qk_attention must be 'token' or 'channel', got {qk_attention!r}")
        n1, n2 = (1, 2) if imagenet else (1, 1)
        if depth <= n1 + n2:
            raise ValueError(f"depth must exceed {n1 + n2} (stage 3 has depth - {n1 + n2} blocks), got {depth}")
        self.depth, self.dim, self.qk_attention = depth, dim, qk_attention
        qk_cls = QKTokenAttention if qk_attention == "token" else QKChannelAttention
        sn, c = self.sn, self.compact
        self.patch_embed1 = QKPatchEmbed(in_channels, dim // 4, sn, first=True, imagenet=imagenet, compact=c)
        self.stage1 = nn.ModuleList([self._block(qk_cls, dim // 4, num_heads, mlp_ratio) for _ in range(n1)])
        self.patch_embed2 = QKPatchEmbed(dim // 4, dim // 2, sn, first=False, imagenet=imagenet, compact=c)
        self.stage2 = nn.ModuleList([self._block(qk_cls, dim // 2, num_heads, mlp_ratio) for _ in range(n2)])
        self.patch_embed3 = QKPatchEmbed(dim // 2, dim, sn, first=False, imagenet=imagenet, compact=c)
        self.stage3 = nn.ModuleList([self._block(SSA, dim, num_heads, mlp_ratio) for _ in range(depth - n1 - n2)])
        self.head_sn = None
        self.head = nn.Linear(dim, num_classes)
        self._init_head()

    def _block(self, attn_cls, dim, num_heads, mlp_ratio):
        return TransformerBlock(
            attn_cls(dim, num_heads, **self._attn_kw(False)),
            SpikingMLP(dim, mlp_ratio=mlp_ratio, pre_activation=False, neuron=self.sn, compact=self.compact),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        y = self.patch_embed1(x, self.T)
        for embed, stage in ((None, self.stage1), (self.patch_embed2, self.stage2), (self.patch_embed3, self.stage3)):
            if embed is not None:
                y = embed(y)
            for blk in stage:
                y = blk(y)
        return y

    def extra_repr(self) -> str:
        return f"depth={self.depth}, dim={self.dim}, qk_attention={self.qk_attention!r}, T={self.T}"


# ------------------------------------------------------------------------------------------------
# public constructors
# ------------------------------------------------------------------------------------------------
_COMMON_DOC = """

    Arguments: num_classes, T (steps for a static image input), neuron ("lif" default | "if" | "plif" | a
    callable returning a module), neuron_kwargs (default LIF tau 2, detach_reset; the attention neuron takes
    the ones it accepts, with threshold 0.5), backend ("spikeforge" | "reference"), compact (None = on for
    spikeforge neurons), in_channels, mlp_ratio; depth / dim / num_heads (dims for Meta-SpikeFormer) override
    the named configuration (the model is then no longer the paper's). Returns an nn.Module: x [B, C, H, W]
    or [T, B, C, H, W] -> logits [T, B, num_classes]."""


def spikformer(
    depth: int, dim: int, num_heads: int = 8, *, imagenet: bool = True, num_classes: int = 1000, T: int = 4, **kw
) -> SpikformerNet:
    """Spikformer-depth-dim (Zhou et al. 2023): SPS + depth SSA blocks; imagenet=False: CIFAR layout."""
    return SpikformerNet("spikformer", depth, dim, num_heads, imagenet=imagenet, num_classes=num_classes, T=T, **kw)


def spikingformer(
    depth: int, dim: int, num_heads: int = 8, *, imagenet: bool = True, num_classes: int = 1000, T: int = 4, **kw
) -> SpikformerNet:
    """Spikingformer-depth-dim: spiking tokenizer + pre-activation SSA blocks (real-valued residual stream)."""
    return SpikformerNet("spikingformer", depth, dim, num_heads, imagenet=imagenet, num_classes=num_classes, T=T, **kw)


def sdt(
    depth: int, dim: int, num_heads: int = 8, *, imagenet: bool = True, num_classes: int = 1000, T: int = 4, **kw
) -> SpikformerNet:
    """Spike-driven Transformer depth-dim: MS_SPS + membrane-shortcut SDSA blocks + SN before the head."""
    return SpikformerNet("sdt", depth, dim, num_heads, imagenet=imagenet, num_classes=num_classes, T=T, **kw)


def qkformer_hst(
    depth: int, dim: int, num_heads: int = 8, *, imagenet: bool = True, num_classes: int = 1000, T: int = 4, **kw
) -> QKFormer:
    """QKFormer HST-depth-dim (Zhou et al. 2024): hierarchical, QKTA in stages 1-2, SSA in stage 3."""
    return QKFormer(depth, dim, num_heads, imagenet=imagenet, num_classes=num_classes, T=T, **kw)


def _make(builder: Callable, depth: int, dim: int, heads: int, imagenet: bool, name: str, title: str):
    default_classes = 1000 if imagenet else 10

    def fn(
        num_classes: int = default_classes,
        T: int = 4,
        *,
        depth: int = depth,
        dim: int = dim,
        num_heads: int = heads,
        **kw,
    ):
        return builder(depth, dim, num_heads, imagenet=imagenet, num_classes=num_classes, T=T, **kw)

    layout = "ImageNet layout (224x224 -> 14x14 tokens)" if imagenet else "CIFAR layout (32x32 -> 8x8 tokens)"
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{title}, {layout}, {heads} heads." + _COMMON_DOC
    return fn


def _make_meta(dims: Sequence[int], name: str, size: str):
    def fn(num_classes: int = 1000, T: int = 4, *, dims: Sequence[int] = tuple(dims), num_heads: int = 8, **kw):
        return MetaSpikformer(dims, num_heads, num_classes=num_classes, T=T, **kw)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (
        f"Meta-SpikeFormer {size} (Spike-driven Transformer v2), stage widths {tuple(dims)}, 8 heads, "
        "ImageNet layout (224x224 -> 14x14 tokens)." + _COMMON_DOC
    )
    return fn


# name -> (builder, depth, dim, heads, imagenet, title). Heads: Spikformer's and SDT's ImageNet configs use
# 8, their CIFAR codes 12 at dim 384 (8 where 12 does not divide the width); QKFormer uses 6/8/12 heads at
# 384/512/768 on ImageNet and 8 on CIFAR. Heads change no parameter count.
# name -> (builder, depth, dim, heads, imagenet, title)
_CONFIGS: dict[str, tuple[Callable[..., nn.Module], int, int, int, bool, str]] = {}
for _d in (384, 512, 768):
    _CONFIGS[f"spikformer_8_{_d}"] = (spikformer, 8, _d, 8, True, f"Spikformer-8-{_d}")
    _CONFIGS[f"spikingformer_8_{_d}"] = (spikingformer, 8, _d, 8, True, f"Spikingformer-8-{_d}")
    _CONFIGS[f"sdt_8_{_d}"] = (sdt, 8, _d, 8, True, f"Spike-driven Transformer-8-{_d}")
    _CONFIGS[f"qkformer_hst_10_{_d}"] = (
        qkformer_hst,
        10,
        _d,
        {384: 6, 512: 8, 768: 12}[_d],
        True,
        f"QKFormer HST-10-{_d}",
    )
for _depth in (6, 10):
    _CONFIGS[f"sdt_{_depth}_512"] = (sdt, _depth, 512, 8, True, f"Spike-driven Transformer-{_depth}-512")
for _depth, _d, _h in ((4, 256, 8), (2, 384, 12), (4, 384, 12)):
    _CONFIGS[f"spikformer_{_depth}_{_d}_cifar"] = (spikformer, _depth, _d, _h, False, f"Spikformer-{_depth}-{_d}")
    _CONFIGS[f"spikingformer_{_depth}_{_d}_cifar"] = (
        spikingformer,
        _depth,
        _d,
        _h,
        False,
        f"Spikingformer-{_depth}-{_d}",
    )
_CONFIGS["sdt_2_512_cifar"] = (sdt, 2, 512, 8, False, "Spike-driven Transformer-2-512")
_CONFIGS["qkformer_hst_4_384_cifar"] = (qkformer_hst, 4, 384, 8, False, "QKFormer HST-4-384")

TRANSFORMER_MODELS = {name: _make(*cfg[:5], name, cfg[5]) for name, cfg in _CONFIGS.items()}
# Meta-SpikeFormer: the paper's three ImageNet models by size. Their widths are the ones whose parameter
# counts give the paper's 15.1M / 31.3M / 55.4M (15,112,208 / 31,333,864 / 55,350,248); the released code
# names the 31.3M widths "metaspikformer_8_384" and the 55.4M widths "metaspikformer_8_512" (its "8_768",
# widths 192-384-768-960, has 123.7M parameters and is not in the paper).
for _name, _dims, _size in (
    ("meta_spikformer_15m", (64, 128, 256, 360), "15.1M"),
    ("meta_spikformer_31m", (96, 192, 384, 480), "31.3M"),
    ("meta_spikformer_55m", (128, 256, 512, 640), "55.4M"),
):
    TRANSFORMER_MODELS[_name] = _make_meta(_dims, _name, _size)
globals().update(TRANSFORMER_MODELS)
__all__ += sorted(TRANSFORMER_MODELS)
