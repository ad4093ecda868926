"""E-SpikeFormer (Spike-driven Transformer v3; Yao et al., "Scaling Spike-driven Transformer with Efficient
Spike Firing Approximation Training", TPAMI 2025), in the layout of the authors' released base models.

The paper's "spike firing approximation": neurons fire integer spikes during training (I-LIF,
spikeforge.nn.ILIF: S = round(clamp(H / V_th, 0, D)), soft reset, straight-through gradient) and a spike s
stands for s binary spikes over D virtual steps at inference (ops.counts_to_binary). The paper writes the
time steps as T x D; its ImageNet models train at 1 x 4, so T=1 and D=4 are the defaults here.

Layout (x: [T, B, C, H, W], "S" = an I-LIF, every convolution after S sees integer counts; conv = conv + BN):

- stage 1: conv 7x7/2 -> d0/2 (on the image, once), conv block; S, conv 3x3/2 -> d0, conv block
- stage 2: S, conv 3x3/2 -> d1, 2 conv blocks
- stage 3: S, conv 3x3/2 -> d2, 6 transformer blocks; stage 4: S, conv 3x3/1 -> d3, 2 transformer blocks
  (224 -> 14x14 tokens; the downsampling convolutions have a bias, the others none except the MLP's)
- head: mean over the tokens -> S (integer counts) -> linear.
- conv block: x + SepConv(x) (kernel 7), then x + conv(S(conv(S(x)))) (3x3, dim -> 4 dim -> dim).
- SepConv: S -> pw conv (dim -> 2 dim) -> S -> depthwise conv -> S -> pw conv (2 dim -> dim), each with BN.
- transformer block: x + SepConv(x) (kernel 3), x + attention(x), x + MLP(x) (pre-activation, ratio 4).
- attention (the paper's linear spike-driven self-attention): s = S(x); q = S(conv(s)), k = S(conv(s)),
  v = S(conv(s)) with v 4x wider; per head A = S(Q K^T V * 2 scale), scale = (dim / heads)^-0.5; out =
  conv(A) (4 dim -> dim). Computed as Q (K^T V): the same numbers, no N x N matrix.

Integer spikes flow unnormalised: the released code divides every spike by D before the next layer. A
convolution followed by batch norm gives the same output either way (BN removes the scale) once BN's eps is
scaled with it, so the convolutions here take the counts 0..D themselves (spikeforge's count path:
event-driven, kept for backward as uint8), the BNs after them take eps = 1e-5 D^2, and the attention folds the
three 1/D factors into its scale (2 scale / D^3). The head's neuron is not normalised in the released code
either. Weights of the released code load after the same rescaling: each BN after a count convolution takes
running_mean times D and running_var times D^2, each count convolution's bias (the downsampling and MLP
convolutions) times D.

Parameter counts: 5,105,608 / 10,023,112 / 18,987,504 with 1000 classes, the paper's 5.1M / 10.0M / 19.0M
(the released code's Efficient_Spiking_Transformer_s / _m / _l). The paper's 83M and 173M models are
different networks (masked-autoencoder pretrained, windowed attention, distillation head) whose released
definitions disagree with each other and with the paper's counts; they are not built here.

Every forward first resets every neuron (one call = one batch). ``backend="reference"`` builds the same model
on spikeforge.reference's neurons. ``neuron="lif"`` / ``"if"`` / ``"plif"`` gives the paper's binary-spike
baseline (spikes 0/1: the attention's scale then has no 1/D factors).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

from torch import Tensor, nn

from .. import reference
from ..nn._accounting import estimating, matmul_op, report_op
from ..nn.attention import SpikeCountConv2d, SpikingMLP, _check_int, _check_seq, _conv_bn, _conv_bn_sn
from ..nn.layers import SeqBatchNorm2d
from ..nn.neuron import ILIF
from .resnet import make_neuron
from .transformer import _DEFAULT_NEURON_KWARGS, _MSDownsample, _SpikingTransformer

__all__ = ["ESpikeFormer", "ESpikeAttention", "RefILIF", "e_spikeformer", "E_SPIKEFORMER_MODELS"]

# I-LIF as the authors train it: at T=1 the firing is round(clamp(x, 0, D)) of the BN output itself
# (decay_input=False: H = (1 - 1/tau) V + X, so H = X at the first step); later steps leak with tau 2
_ILIF_DEFAULTS = dict(tau=2.0, decay_input=False, v_threshold=1.0)


class RefILIF(ILIF):
    """ILIF on spikeforge.reference (a Python time loop under autograd): the reference build's neuron."""

    def _multi(self, x_seq, v_init, return_v):
        return reference.ilif(
            x_seq,
            v_init,
            D=self.D,
            tau=self.tau,
            v_threshold=self.v_threshold,
            decay_input=self.decay_input,
            detach_reset=self.detach_reset,
            return_v=return_v,
        )


def _neuron_factory(neuron, neuron_kwargs: Optional[dict], D: int, backend: str) -> tuple[Callable, int]:
    """(factory of fresh neurons, the largest spike they emit) for the model's neuron choice."""
    if callable(neuron) and not isinstance(neuron, str):
        return functools.partial(neuron, **(neuron_kwargs or {})), D
    key = str(neuron).lower()
    if key == "ilif":
        kw = {**_ILIF_DEFAULTS, **(neuron_kwargs or {})}
        if "D" in kw:
            raise ValueError(
                "neuron_kwargs: give the spike range as the model's D argument, not neuron_kwargs['D'] "
                "(the attention's scale depends on it)"
            )
        cls = ILIF if backend == "spikeforge" else RefILIF
        return functools.partial(cls, D=D, step_mode="m", **kw), D
    if key in ("if", "lif", "plif"):
        kw = dict(_DEFAULT_NEURON_KWARGS[key]) if neuron_kwargs is None else dict(neuron_kwargs)
        return make_neuron(key, backend, **kw), 1
    raise ValueError(
        f"neuron must be 'ilif' (integer spikes, the default), 'if', 'lif', 'plif' (binary spikes) or "
        f"a callable returning a neuron module, got {neuron!r}"
    )


class _SepConvSpike(nn.Module):
    """S -> pw conv (dim -> 2 dim) + BN -> S -> depthwise k x k conv + BN -> S -> pw conv (2 dim -> dim) + BN."""

    def __init__(self, dim: int, sn: Callable, compact: bool, kernel: int):
        super().__init__()
        med = 2 * dim
        self.sn1, self.sn2, self.sn3 = sn(), sn(), sn()
        self.pwconv1 = SpikeCountConv2d(dim, med, 1, bias=False, compact=compact)
        self.bn1 = SeqBatchNorm2d(med)
        self.dwconv = SpikeCountConv2d(med, med, kernel, padding=kernel // 2, groups=med, bias=False, compact=compact)
        self.bn2 = SeqBatchNorm2d(med)
        self.pwconv2 = SpikeCountConv2d(med, dim, 1, bias=False, compact=compact)
        self.bn3 = SeqBatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        h = _conv_bn(self.pwconv1, self.bn1, self.sn1(x))
        h = _conv_bn(self.dwconv, self.bn2, self.sn2(h))
        return _conv_bn(self.pwconv2, self.bn3, self.sn3(h))


class _ConvBlock(nn.Module):
    """x = x + SepConv_7x7(x); x + BN(conv3x3(S(BN(conv3x3(S(x)))))) with mlp_ratio * dim hidden channels."""

    def __init__(self, dim: int, sn: Callable, compact: bool, mlp_ratio: int = 4):
        super().__init__()
        self.sepconv = _SepConvSpike(dim, sn, compact, kernel=7)
        self.sn1 = sn()
        self.conv1 = SpikeCountConv2d(dim, dim * mlp_ratio, 3, padding=1, bias=False, compact=compact)
        self.bn1 = SeqBatchNorm2d(dim * mlp_ratio)
        self.sn2 = sn()
        self.conv2 = SpikeCountConv2d(dim * mlp_ratio, dim, 3, padding=1, bias=False, compact=compact)
        self.bn2 = SeqBatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.sepconv(x)
        h = _conv_bn(self.conv1, self.bn1, self.sn1(x))
        return x + _conv_bn(self.conv2, self.bn2, self.sn2(h))


class ESpikeAttention(nn.Module):
    """E-SpikeFormer's linear spike-driven self-attention on a real-valued stream x [T, B, dim, H, W]:

    s = S(x); q, k = S(BN(W s)) [dim channels], v = S(BN(W s)) [v_ratio * dim channels]; per head
    A = S(Q (K^T V) * 2 scale / levels^3) with scale = (dim // heads)^-0.5; out = BN(W_proj A) [dim].

    sn: a factory of fresh neurons; levels: the largest spike they emit (D for I-LIF: the released code
    feeds q, k, v divided by D, whose three factors the scale takes here; 1 for binary neurons). All
    convolutions 1x1 without bias; compact keeps their inputs (integer counts) as uint8 for backward.
    """

    def __init__(self, dim: int, num_heads: int, sn: Callable, *, levels: int, v_ratio: int = 4, compact: bool = False):
        super().__init__()
        dim, num_heads = _check_int("dim", dim), _check_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must divide dim ({dim}): each head gets dim / num_heads channels"
            )
        self.dim, self.num_heads, self.levels = dim, num_heads, _check_int("levels", levels)
        self.v_ratio = _check_int("v_ratio", v_ratio)
        self.scale = (dim // num_heads) ** -0.5
        dv = v_ratio * dim
        self.head_sn = sn()
        for name, cout in (("q", dim), ("k", dim), ("v", dv)):
            setattr(self, f"{name}_conv", SpikeCountConv2d(dim, cout, 1, bias=False, compact=compact))
            setattr(self, f"{name}_bn", SeqBatchNorm2d(cout))
            setattr(self, f"{name}_sn", sn())
        self.attn_sn = sn()
        self.proj_conv = SpikeCountConv2d(dv, dim, 1, bias=False, compact=compact)
        self.proj_bn = SeqBatchNorm2d(dim)
        self.compact = bool(compact)

    def _heads(self, s: Tensor) -> Tensor:
        """[T, B, C, H, W] -> [T, B, heads, N, C / heads] (channel c = head * (C / heads) + j, as the code)."""
        T, B, C, H, W = s.shape
        return s.reshape(T, B, self.num_heads, C // self.num_heads, H * W).transpose(-1, -2)

    def forward(self, x: Tensor) -> Tensor:
        _check_seq(self, x, self.dim)
        T, B, C, H, W = x.shape
        s = self.head_sn(x)
        q, k, v = (
            self._heads(
                _conv_bn_sn(
                    getattr(self, f"{n}_conv"), getattr(self, f"{n}_bn"), getattr(self, f"{n}_sn"), s, self.compact
                )
            )
            for n in ("q", "k", "v")
        )
        kv = k.transpose(-2, -1) @ v  # [T, B, heads, C / heads, dv / heads]: integer sums, exact in float32
        if estimating():  # the two products no hooked layer sees: each count of K adds a row of V, of Q a row of K^T V
            report_op(self, matmul_op("kT@v", k.transpose(-2, -1), v, operand=k), matmul_op("q@(kT@v)", q, kv))
        a = (q @ kv) * (2.0 * self.scale / self.levels**3)
        a = a.transpose(-1, -2).reshape(T, B, self.v_ratio * C, H, W)
        return _conv_bn(self.proj_conv, self.proj_bn, self.attn_sn(a))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, v_ratio={self.v_ratio}, levels={self.levels}"


class _Block(nn.Module):
    """x + SepConv_3x3(x), x + attention(x), x + MLP(x)."""

    def __init__(self, dim: int, num_heads: int, sn: Callable, levels: int, compact: bool, mlp_ratio: int = 4):
        super().__init__()
        self.sepconv = _SepConvSpike(dim, sn, compact, kernel=3)
        self.attn = ESpikeAttention(dim, num_heads, sn, levels=levels, compact=compact)
        self.mlp = SpikingMLP(dim, mlp_ratio=mlp_ratio, pre_activation=True, neuron=sn, compact=compact)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.sepconv(x)
        x = x + self.attn(x)
        return x + self.mlp(x)


class ESpikeFormer(_SpikingTransformer):
    """E-SpikeFormer with stage widths dims (d0, d1, d2, d3), e.g. (32, 64, 128, 192) for the 5.1M model.

    D: the I-LIF spike range (spikes 0..D; the paper's T x D is T x D here). neuron: "ilif" (default),
    "if" / "lif" / "plif" (binary spikes) or a callable returning a neuron module whose spikes are taken to
    be integers 0..D (the attention's scale divides by D^3; compact is then off unless asked for);
    neuron_kwargs override the I-LIF's tau 2, decay_input False, v_threshold 1 (or the binary neuron's
    defaults). See the module docstring.
    """

    def __init__(
        self,
        dims: Sequence[int] = (32, 64, 128, 192),
        num_heads: int = 8,
        *,
        num_classes: int = 1000,
        T: int = 1,
        D: int = 4,
        in_channels: int = 3,
        mlp_ratio: int = 4,
        neuron="ilif",
        neuron_kwargs: Optional[dict] = None,
        backend: str = "spikeforge",
        compact: Optional[bool] = None,
    ):
        if backend not in ("spikeforge", "reference"):
            raise ValueError(f"backend must be 'spikeforge' or 'reference', got {backend!r}")
        D = _check_int("D", D)
        if D > 255:
            raise ValueError(f"D must be <= 255 (integer spikes travel as uint8 counts), got {D}")
        factory, levels = _neuron_factory(neuron, neuron_kwargs, D, backend)
        if compact is None:  # uint8 copies are exact for spikeforge's neurons (counts 0..D <= 255)
            compact = backend == "spikeforge" and not (callable(neuron) and not isinstance(neuron, str))
        super().__init__(
            num_classes=num_classes,
            T=T,
            in_channels=in_channels,
            neuron=factory,
            neuron_kwargs={},
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
        num_heads, mlp_ratio = _check_int("num_heads", num_heads), _check_int("mlp_ratio", mlp_ratio)
        for i in (2, 3):
            if dims[i] % num_heads:
                raise ValueError(
                    f"num_heads ({num_heads}) must divide the transformer stages' widths dims[2] and "
                    f"dims[3], got dims={dims}"
                )
        self.dims, self.D, self.levels = dims, D, levels
        sn, c = self.sn, self.compact
        d0, d1, d2, d3 = dims
        self.downsample1_1 = _MSDownsample(in_channels, d0 // 2, 7, 2, 3, sn, True, c)
        self.conv_blocks1_1 = nn.ModuleList([_ConvBlock(d0 // 2, sn, c, mlp_ratio)])
        self.downsample1_2 = _MSDownsample(d0 // 2, d0, 3, 2, 1, sn, False, c)
        self.conv_blocks1_2 = nn.ModuleList([_ConvBlock(d0, sn, c, mlp_ratio)])
        self.downsample2 = _MSDownsample(d0, d1, 3, 2, 1, sn, False, c)
        self.conv_blocks2 = nn.ModuleList([_ConvBlock(d1, sn, c, mlp_ratio) for _ in range(2)])
        self.downsample3 = _MSDownsample(d1, d2, 3, 2, 1, sn, False, c)
        self.blocks3 = nn.ModuleList([_Block(d2, num_heads, sn, levels, c, mlp_ratio) for _ in range(6)])
        self.downsample4 = _MSDownsample(d2, d3, 3, 1, 1, sn, False, c)
        self.blocks4 = nn.ModuleList([_Block(d3, num_heads, sn, levels, c, mlp_ratio) for _ in range(2)])
        self.head_sn = sn()  # the pooled features as integer counts (not divided by D in the released code)
        self.head = nn.Linear(d3, num_classes)
        self._init_head()
        if levels > 1:
            # every BN after the image's own (downsample1_1) follows a convolution of counts, which the released
            # code divides by D first: its input is D times the released one's and its variance D^2 times, so
            # its eps times D^2 gives BN the released output exactly (with eps 1e-5 as is, BN's output differed
            # by about 4e-3 and spikes flipped from the first block on)
            for name, m in self.named_modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith("downsample1_1."):
                    m.eps = m.eps * levels**2

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
        return f"dims={self.dims}, T={self.T}, D={self.D}"


def e_spikeformer(
    dims: Sequence[int], num_heads: int = 8, *, num_classes: int = 1000, T: int = 1, D: int = 4, **kw
) -> ESpikeFormer:
    """E-SpikeFormer with stage widths dims (d0, d1, d2, d3) and I-LIF spikes 0..D (see ESpikeFormer)."""
    return ESpikeFormer(dims, num_heads, num_classes=num_classes, T=T, D=D, **kw)


_DOC = """

    Arguments: num_classes, T (time steps; 1 as the paper's 1 x D), D (I-LIF spike range, 4 as the paper's
    ImageNet runs), neuron ("ilif" default | "if" | "lif" | "plif" | a callable), neuron_kwargs, backend
    ("spikeforge" | "reference"), compact, in_channels, mlp_ratio; dims / num_heads resize the model (it is
    then no longer the paper's). Returns an nn.Module: x [B, C, H, W] or [T, B, C, H, W] -> logits
    [T, B, num_classes]."""


def _make(dims: Sequence[int], name: str, size: str, code_name: str):
    def fn(
        num_classes: int = 1000,
        T: int = 1,
        *,
        dims: Sequence[int] = tuple(dims),
        num_heads: int = 8,
        D: int = 4,
        dim=None,
        depth=None,
        **kw,
    ) -> ESpikeFormer:
        if dim is not None or depth is not None:  # the other transformers' size options (spikeforge train --dim)
            raise ValueError(
                f"{name} has four stage widths and fixed depths: dim / depth do not apply (spikeforge train --dim / "
                f"--depth; in Python {name}(dims=(d0, d1, d2, d3)) builds another size)"
            )
        return ESpikeFormer(dims, num_heads, num_classes=num_classes, T=T, D=D, **kw)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (
        f"E-SpikeFormer {size} (Spike-driven Transformer v3; the released code's {code_name}), stage "
        f"widths {tuple(dims)}, 8 heads, ImageNet layout (224x224 -> 14x14 tokens)." + _DOC
    )
    return fn


# the paper's three base models by size (exact counts with 1000 classes: 5,105,608 / 10,023,112 / 18,987,504)
E_SPIKEFORMER_MODELS = {
    name: _make(dims, name, size, code)
    for name, dims, size, code in (
        ("e_spikeformer_5m", (32, 64, 128, 192), "5.1M", "Efficient_Spiking_Transformer_s"),
        ("e_spikeformer_10m", (48, 96, 192, 240), "10.0M", "Efficient_Spiking_Transformer_m"),
        ("e_spikeformer_19m", (64, 128, 256, 360), "19.0M", "Efficient_Spiking_Transformer_l"),
    )
}
globals().update(E_SPIKEFORMER_MODELS)
__all__ += sorted(E_SPIKEFORMER_MODELS)
