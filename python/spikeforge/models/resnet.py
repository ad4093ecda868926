"""Residual spiking networks: Spiking ResNet, SEW ResNet (Fang et al. 2021), MS-ResNet (Hu et al.).

Every model maps an image batch x [B, C, H, W] (direct encoding: the same image at each of the T steps)
or a sequence x [T, B, C, H, W] (Poisson or event input) to per-step logits [T, B, num_classes]; average
over dim 0 for a prediction, or train on every step with spikeforge.nn.tet_loss.

Layout of the families (per block, x is [T, B, C, H, W]; conv and BN fold T into the batch):
- spiking_resnet: out = SN(BN(conv(SN(BN(conv(x))))) + shortcut(x)), shortcut = BN(conv1x1) when shapes
  change: the activation follows the addition, as in torchvision's ResNet with ReLU -> SN.
- sew_resnet: out = g(SN(BN(conv(SN(BN(conv(x)))))), shortcut(x)) with g = ADD (a + s), AND (a * s) or
  IAND ((1 - a) * s) and a spiking shortcut SN(BN(conv1x1)). With zero_init_residual the last BN of each
  residual branch starts at weight 0, so the branch is silent and ADD / IAND blocks start as identities
  (the paper's argument for ADD/IAND; AND would need an always-firing branch, so it keeps the default init).
- ms_resnet: membrane shortcut, out = x + BN(conv(SN(BN(conv(SN(x)))))), shortcut BN(conv1x1) on the
  membrane (avgpool then conv1x1 in the 104-layer net); the last BN of each branch is zero-initialised and
  the BNs are threshold-dependent (tdBN, V_th = 0.5), neurons LIF with decay 0.25, threshold 0.5 and the
  rectangular surrogate, as in the authors' code. A 7x7 stem without max-pool (the first stage strides
  instead); the 104-layer net ([3, 8, 32, 8] blocks) shortcuts through avgpool + conv1x1 and drops out
  (p = 0.2) before fc. Its stem is the 7x7 conv of the paper's table (77.28M parameters); the authors'
  released 104-layer code has three 3x3 stem convs with bias instead (77.35M).

The stem convolution of a static image is computed once on [B, ...] and repeated over T (exact: the
input is the same at every step); its BN then runs on the [T, B, ...] sequence, so any normalisation
(including TEBN's per-step scale) sees what it would see without the shortcut.

Neurons are spikeforge.nn.IF / LIF / PLIF in multi-step mode (one fused kernel per layer and batch).
Every forward first resets all neurons: one call is one independent batch of sequences, so nothing
leaks from one batch into the next. ``backend="reference"`` builds the same model on the plain-PyTorch
reference neurons (spikeforge.reference), the baseline of ``spikeforge bench models``.

Parameter counts equal torchvision's ResNets (11,689,512 for 18 layers, ImageNet, 1000 classes): neurons
have no parameters (PLIF has one per layer) and BN / tdBN have the usual two vectors.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Protocol, Sequence, Union, cast

from torch import Tensor, nn

from .. import reference
from ..nn._inputs import check_model_input, model_errors
from ..nn._state import atomic
from ..nn.fused import bn_spike, maxpool_spikes  # noqa: F401  (also looked up here by models.transformer)
from ..nn.layers import TEBN, SeqBatchNorm2d, TdBatchNorm2d, seq_apply
from ..nn.neuron import IF, LIF, PLIF
from ..nn.spike import SpikeInputConv2d

__all__ = ["SpikingResNet", "SpikeInputConv2d", "make_neuron", "RefIF", "RefLIF", "RefPLIF"]


# ------------------------------------------------------------------------------------------------
# neurons: spikeforge (fused kernels) or reference (plain-PyTorch loop, same module interface)
# ------------------------------------------------------------------------------------------------
class RefIF(IF):
    """IF on spikeforge.reference (a Python time loop under autograd): the baseline of the benchmarks."""

    def _multi(self, x_seq, v_init, return_v):
        return reference.if_neuron(x_seq, v_init, return_v=return_v, **self._options())


class RefLIF(LIF):
    def _multi(self, x_seq, v_init, return_v):
        return reference.lif(
            x_seq, v_init, tau=self.tau, decay_input=self.decay_input, return_v=return_v, **self._options()
        )


class RefPLIF(PLIF):
    def _multi(self, x_seq, v_init, return_v):
        return reference.plif(x_seq, self.w, v_init, decay_input=self.decay_input, return_v=return_v, **self._options())


_NEURONS = {
    "spikeforge": {"if": IF, "lif": LIF, "plif": PLIF},
    "reference": {"if": RefIF, "lif": RefLIF, "plif": RefPLIF},
}


def make_neuron(
    neuron: Union[str, Callable[[], nn.Module]] = "if", backend: str = "spikeforge", **neuron_kwargs
) -> Callable[[], nn.Module]:
    """A factory of fresh neuron modules: neuron in {"if", "lif", "plif"} (or a callable returning a module)."""
    if callable(neuron) and not isinstance(neuron, str):
        return functools.partial(neuron, **neuron_kwargs)
    if backend not in _NEURONS:
        raise ValueError(f"backend must be one of {sorted(_NEURONS)}, got {backend!r}")
    key = str(neuron).lower()
    if key not in _NEURONS[backend]:
        raise ValueError(f"neuron must be one of {sorted(_NEURONS[backend])} or a callable, got {neuron!r}")
    return functools.partial(_NEURONS[backend][key], step_mode="m", **neuron_kwargs)


def _norm_factory(norm_layer, T: int, default: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    if norm_layer is None:
        return default
    if callable(norm_layer):
        return norm_layer
    key = str(norm_layer).lower()
    if key == "bn":
        return SeqBatchNorm2d
    if key == "tdbn":
        return TdBatchNorm2d
    if key == "tebn":
        return lambda c: TEBN(c, T)
    raise ValueError(f"norm_layer must be 'bn', 'tdbn', 'tebn', a callable or None, got {norm_layer!r}")


def _zero_norm(m: nn.Module) -> None:
    """Zero the scale of a norm layer (BN / tdBN weight, TEBN's inner BN weight)."""
    bn = m.bn if isinstance(m, TEBN) else m
    assert isinstance(bn.weight, Tensor), f"{type(m).__name__} has no affine weight to zero"
    nn.init.zeros_(bn.weight)


def conv3x3(cin, cout, stride=1, spikes=False):
    """spikes=True: the input is spikes / spike counts, so its saved copy may be uint8 (SpikeInputConv2d)."""
    return (SpikeInputConv2d if spikes else nn.Conv2d)(cin, cout, 3, stride, 1, bias=False)


def conv1x1(cin, cout, stride=1, spikes=False):
    return (SpikeInputConv2d if spikes else nn.Conv2d)(cin, cout, 1, stride, 0, bias=False)


class _Shortcut(nn.Module):
    """[avgpool] -> conv1x1 -> norm [-> SN] on a sequence (the projection shortcut of every family)."""

    def __init__(self, cin, cout, stride, norm, sn=None, avgpool=False, spikes=False):
        super().__init__()
        # ceil_mode: odd sizes keep their last row/column, as a strided conv1x1 would
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if avgpool and stride != 1 else None
        self.conv = conv1x1(cin, cout, 1 if self.pool is not None else stride, spikes)
        self.bn = norm(cout)
        self.sn = sn
        self.fuse = spikes  # compact mode: BN + SN saves one tensor

    def forward(self, x):
        y = seq_apply([self.conv] if self.pool is None else [self.pool, self.conv], x)
        return self.bn(y) if self.sn is None else bn_spike(self.bn, self.sn, y, self.fuse)


# ------------------------------------------------------------------------------------------------
# blocks (x: [T, B, C, H, W])
# ------------------------------------------------------------------------------------------------
class _BlockClass(Protocol):
    """What SpikingResNet needs of a block class: its channel expansion and a constructor."""

    expansion: int

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module: ...


class SpikingBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, shortcut, norm, sn, compact=False):
        super().__init__()
        self.compact = compact
        self.conv1, self.bn1, self.sn1 = conv3x3(cin, planes, stride, spikes=compact), norm(planes), sn()
        self.conv2, self.bn2 = conv3x3(planes, planes, spikes=compact), norm(planes)
        self.downsample = shortcut
        self.sn2 = sn()

    def last_norm(self):
        return self.bn2

    def forward(self, x):
        out = bn_spike(self.bn1, self.sn1, seq_apply(self.conv1, x), self.compact)
        out = self.bn2(seq_apply(self.conv2, out))
        return self.sn2(out + (x if self.downsample is None else self.downsample(x)))


class SpikingBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, shortcut, norm, sn, compact=False):
        super().__init__()
        self.compact = compact
        self.conv1, self.bn1, self.sn1 = conv1x1(cin, planes, spikes=compact), norm(planes), sn()
        self.conv2, self.bn2, self.sn2 = conv3x3(planes, planes, stride, spikes=compact), norm(planes), sn()
        self.conv3, self.bn3 = conv1x1(planes, planes * 4, spikes=compact), norm(planes * 4)
        self.downsample = shortcut
        self.sn3 = sn()

    def last_norm(self):
        return self.bn3

    def forward(self, x):
        out = bn_spike(self.bn1, self.sn1, seq_apply(self.conv1, x), self.compact)
        out = bn_spike(self.bn2, self.sn2, seq_apply(self.conv2, out), self.compact)
        out = self.bn3(seq_apply(self.conv3, out))
        return self.sn3(out + (x if self.downsample is None else self.downsample(x)))


def _sew(identity: Tensor, out: Tensor, cnf: str) -> Tensor:
    if cnf == "ADD":
        return identity + out
    if cnf == "AND":
        return identity * out
    return identity * (1.0 - out)  # IAND: (not A) and S


class SEWBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, shortcut, norm, sn, cnf, compact=False):
        super().__init__()
        self.cnf, self.compact = cnf, compact
        self.conv1, self.bn1, self.sn1 = conv3x3(cin, planes, stride, spikes=compact), norm(planes), sn()
        self.conv2, self.bn2, self.sn2 = conv3x3(planes, planes, spikes=compact), norm(planes), sn()
        self.downsample = shortcut

    def last_norm(self):
        return self.bn2

    def forward(self, x):
        out = bn_spike(self.bn1, self.sn1, seq_apply(self.conv1, x), self.compact)
        out = bn_spike(self.bn2, self.sn2, seq_apply(self.conv2, out), self.compact)
        return _sew(x if self.downsample is None else self.downsample(x), out, self.cnf)

    def extra_repr(self):
        return f"cnf={self.cnf!r}"


class SEWBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, shortcut, norm, sn, cnf, compact=False):
        super().__init__()
        self.cnf, self.compact = cnf, compact
        self.conv1, self.bn1, self.sn1 = conv1x1(cin, planes, spikes=compact), norm(planes), sn()
        self.conv2, self.bn2, self.sn2 = conv3x3(planes, planes, stride, spikes=compact), norm(planes), sn()
        self.conv3, self.bn3, self.sn3 = conv1x1(planes, planes * 4, spikes=compact), norm(planes * 4), sn()
        self.downsample = shortcut

    def last_norm(self):
        return self.bn3

    def forward(self, x):
        out = bn_spike(self.bn1, self.sn1, seq_apply(self.conv1, x), self.compact)
        out = bn_spike(self.bn2, self.sn2, seq_apply(self.conv2, out), self.compact)
        out = bn_spike(self.bn3, self.sn3, seq_apply(self.conv3, out), self.compact)
        return _sew(x if self.downsample is None else self.downsample(x), out, self.cnf)

    def extra_repr(self):
        return f"cnf={self.cnf!r}"


class MSBasicBlock(nn.Module):
    """Membrane shortcut: x + BN(conv(SN(BN(conv(SN(x)))))); x is a membrane-like real tensor."""

    expansion = 1

    def __init__(self, cin, planes, stride, shortcut, norm, sn, compact=False):
        super().__init__()
        self.sn1, self.conv1, self.bn1 = sn(), conv3x3(cin, planes, stride, spikes=compact), norm(planes)
        self.sn2, self.conv2, self.bn2 = sn(), conv3x3(planes, planes, spikes=compact), norm(planes)
        self.downsample = shortcut

    def last_norm(self):
        return self.bn2

    def forward(self, x):
        out = self.bn1(seq_apply(self.conv1, self.sn1(x)))
        out = self.bn2(seq_apply(self.conv2, self.sn2(out)))
        return out + (x if self.downsample is None else self.downsample(x))


# ------------------------------------------------------------------------------------------------
# the network
# ------------------------------------------------------------------------------------------------
class SpikingResNet(nn.Module):
    """Shared skeleton: stem -> 4 stages -> [SN] -> global average pool -> [dropout] -> fc, per time step.

    family: "spiking" | "sew" | "ms"; layers: blocks per stage; bottleneck: Bottleneck blocks (50+ layers);
    imagenet: ImageNet stem (strided 7x7 conv, max-pool) or CIFAR stem (3x3 stride 1, no pool).
    """

    def __init__(
        self,
        family: str,
        layers: Sequence[int],
        *,
        bottleneck: bool = False,
        num_classes: int = 1000,
        T: int = 4,
        imagenet: bool = True,
        cnf: str = "ADD",
        neuron=None,
        neuron_kwargs: Optional[dict] = None,
        backend: str = "spikeforge",
        norm_layer=None,
        zero_init_residual: Optional[bool] = None,
        width: int = 64,
        in_channels: int = 3,
        ms_avgpool_shortcut: bool = False,
        dropout: float = 0.0,
        compact: Optional[bool] = None,
    ):
        super().__init__()
        if family not in ("spiking", "sew", "ms"):
            raise ValueError(f"family must be 'spiking', 'sew' or 'ms', got {family!r}")
        for name, value in (("T", T), ("num_classes", num_classes), ("width", width), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (
            isinstance(layers, (list, tuple))
            and len(layers) == 4
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layers)
        ):
            raise ValueError(f"layers must be four ints >= 1 (blocks per stage), got {layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        cnf = str(cnf).upper()
        if family == "sew" and cnf not in ("ADD", "AND", "IAND"):
            raise ValueError(f"cnf must be 'ADD', 'AND' or 'IAND', got {cnf!r}")
        if family == "ms" and bottleneck:
            raise ValueError("MS-ResNet uses basic blocks only")
        self.family, self.T, self.cnf, self.num_classes = family, T, cnf if family == "sew" else None, num_classes
        self.in_channels = in_channels
        if family == "ms":
            default_norm: Callable[[int], nn.Module] = functools.partial(TdBatchNorm2d, v_threshold=0.5)
            # V = 0.25 V (1 - S) + X, fire at 0.5 (authors' code); the threshold, surrogate and detach for an
            # IF or PLIF neuron named instead (PLIF's initial tau for LIF's)
            neuron = "lif" if neuron is None else neuron
            shared = dict(v_threshold=0.5, surrogate="rect", alpha=1.0, detach_reset=True)
            key = neuron.lower() if isinstance(neuron, str) else None
            default_neuron = (
                shared
                if key == "if"
                else dict(init_tau=4.0 / 3.0, decay_input=False, **shared)
                if key == "plif"
                else dict(tau=4.0 / 3.0, decay_input=False, **shared)
            )
        else:
            neuron = "if" if neuron is None else neuron
            default_norm = SeqBatchNorm2d
            default_neuron = dict(surrogate="atan", detach_reset=True)  # SEW's IF neurons (ATan surrogate)
        norm = _norm_factory(norm_layer, T, default_norm)
        sn = make_neuron(neuron, backend, **(default_neuron if neuron_kwargs is None else neuron_kwargs))
        # compact: convolutions and the stem max-pool whose input is spikes (or SEW-ADD spike counts,
        # integers <= 1 + blocks per stage) keep that input for backward compactly (spike_input_conv: bits
        # or uint8; the max-pool: uint8), and BN followed by a
        # neuron keeps only the conv output (bn_spike); on by default with spikeforge's neurons, whose
        # outputs are exactly 0/1. A custom neuron with graded outputs needs compact=False.
        if compact is None:
            compact = backend == "spikeforge" and not callable(neuron)
        self.compact = bool(compact)
        if zero_init_residual is None:
            zero_init_residual = family == "ms" or (family == "sew" and cnf != "AND")

        # stem: convolutions of the (static) input, computed once; then norm [+ SN] [+ max-pool]
        if imagenet:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False))
        else:
            self.stem = nn.Sequential(conv3x3(in_channels, width))
        self.stem_bn = norm(width)
        self.stem_sn = None if family == "ms" else sn()  # MS blocks begin with their own SN
        # MS-ResNet strides in its first stage instead of max-pooling (the authors' ImageNet nets)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet and family != "ms" else None
        first_stride = 2 if imagenet and family == "ms" else 1

        block = cast(
            _BlockClass,
            {
                ("spiking", False): SpikingBasicBlock,
                ("spiking", True): SpikingBottleneck,
                ("sew", False): SEWBasicBlock,
                ("sew", True): SEWBottleneck,
                ("ms", False): MSBasicBlock,
            }[(family, bottleneck)],
        )
        extra = dict(cnf=cnf) if family == "sew" else {}
        cin = width
        stages = []
        for i, n in enumerate(layers):
            planes = width * (2**i)
            blocks = []
            for j in range(n):
                stride = (first_stride if i == 0 else 2) if j == 0 else 1
                cout = planes * block.expansion
                shortcut = None
                if stride != 1 or cin != cout:
                    # the MS shortcut carries membrane potentials (real values), the others spikes
                    shortcut = _Shortcut(
                        cin,
                        cout,
                        stride,
                        norm,
                        sn() if family == "sew" else None,
                        avgpool=family == "ms" and ms_avgpool_shortcut,
                        spikes=self.compact and family != "ms",
                    )
                blocks.append(block(cin, planes, stride, shortcut, norm, sn, compact=self.compact, **extra))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.final_sn = sn() if family == "ms" else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fc = nn.Linear(cin, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for stage in stages:
                for b in stage:
                    _zero_norm(cast(Any, b).last_norm())  # every block class has last_norm()

    def forward(self, x: Tensor) -> Tensor:
        check_model_input(type(self).__name__, x, self.T, self.in_channels, self)
        # one call = one batch of independent sequences: every neuron is reset first (nn.reset_net), and a
        # call that raises gives them back their states
        with model_errors(type(self).__name__, x), atomic(self, reset=True):
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:  # static image, direct encoding: stem convs once, repeated over T
            y = self.stem(x)
            y = y.unsqueeze(0).expand((self.T,) + tuple(y.shape)).contiguous()
        else:
            y = seq_apply(self.stem, x)
        y = self.stem_bn(y) if self.stem_sn is None else bn_spike(self.stem_bn, self.stem_sn, y, self.compact)
        if self.maxpool is not None:
            y = maxpool_spikes(self.maxpool, y, self.compact)  # y: spikes of the stem's SN
        y = self.layer4(self.layer3(self.layer2(self.layer1(y))))
        if self.final_sn is not None:
            y = self.final_sn(y)
        y = y.mean(dim=(3, 4))  # global average pool -> [T, B, C]
        if self.dropout is not None:
            y = self.dropout(y)
        return self.fc(y)

    def extra_repr(self) -> str:
        return f"family={self.family!r}, T={self.T}" + (f", cnf={self.cnf!r}" if self.cnf else "")


# ------------------------------------------------------------------------------------------------
# the public constructors
# ------------------------------------------------------------------------------------------------
_DEPTHS = {
    18: ([2, 2, 2, 2], False),
    34: ([3, 4, 6, 3], False),
    50: ([3, 4, 6, 3], True),
    101: ([3, 4, 23, 3], True),
    152: ([3, 8, 36, 3], True),
}
_MS_DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 104: [3, 8, 32, 8]}

_COMMON_DOC = """

    Arguments: num_classes, T (steps for a static image input), neuron ("if" | "lif" | "plif" | a callable;
    default: the family's, IF for Spiking / SEW, LIF for MS; a neuron named for MS takes MS's threshold,
    surrogate and decay), neuron_kwargs (options of the neuron, replacing the family's defaults), backend
    ("spikeforge" | "reference"), norm_layer (None = family default, "bn", "tdbn", "tebn" or a callable(channels)),
    zero_init_residual (None = family default), width (channels of the first stage), in_channels, compact
    (None = on for spikeforge neurons: convolutions of spikes run spike_input_conv, saving their input as
    bits / uint8 for backward).
    Returns an nn.Module: x [B, C, H, W] or [T, B, C, H, W] -> logits [T, B, num_classes]."""


def _make(family: str, depth: int, imagenet: bool, name: str):
    if family == "ms":
        layers, bottleneck = _MS_DEPTHS[depth], False
    else:
        layers, bottleneck = _DEPTHS[depth]
    default_classes = 1000 if imagenet else 10
    extra = dict(ms_avgpool_shortcut=True, dropout=0.2) if family == "ms" and depth == 104 else {}

    def sew_fn(num_classes: int = default_classes, T: int = 4, cnf: str = "ADD", **kw) -> SpikingResNet:
        return SpikingResNet(
            family,
            layers,
            bottleneck=bottleneck,
            num_classes=num_classes,
            T=T,
            imagenet=imagenet,
            cnf=cnf,
            **{**extra, **kw},
        )

    def other_fn(num_classes: int = default_classes, T: int = 4, **kw) -> SpikingResNet:
        return SpikingResNet(
            family, layers, bottleneck=bottleneck, num_classes=num_classes, T=T, imagenet=imagenet, **{**extra, **kw}
        )

    fn: Callable[..., SpikingResNet] = sew_fn if family == "sew" else other_fn  # only SEW takes cnf
    title = {"spiking": "Spiking ResNet", "sew": "SEW ResNet (cnf ADD | AND | IAND)", "ms": "MS-ResNet"}[family]
    layout = "ImageNet layout (224x224 input)" if imagenet else "CIFAR layout (3x3 stem, stride 1, no max-pool)"
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{title}-{depth}, {layout}." + _COMMON_DOC
    return fn


MODELS = {}
for _fam, _depths in (("spiking", _DEPTHS), ("sew", _DEPTHS), ("ms", _MS_DEPTHS)):
    for _d in _depths:
        for _imagenet in (True, False):
            _name = (
                {"spiking": "spiking_resnet", "sew": "sew_resnet", "ms": "ms_resnet"}[_fam]
                + str(_d)
                + ("" if _imagenet else "_cifar")
            )
            MODELS[_name] = _make(_fam, _d, _imagenet, _name)
            globals()[_name] = MODELS[_name]
__all__ += sorted(MODELS)
