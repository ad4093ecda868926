"""Bad and edge inputs of spikeforge.nn's modules and the zoo models (docs/bad_inputs.md, "Modules and
models"): every TypeError / ValueError names the module and the argument the user passed, no torch message
from inside (a dtype mismatch in a convolution, a reshape, .item() on a meta tensor) reaches the user, an
empty batch or sequence gives an empty output in train and eval mode as the reference build does, and
meta-device inputs give shapes."""

from __future__ import annotations

import pytest
import torch

import spikeforge as sf
from spikeforge import models

# small members of every family (CIFAR layouts, narrow widths)
MODELS = [
    pytest.param("sew_resnet18_cifar", dict(width=8), id="sew_resnet18"),
    pytest.param("ms_resnet18_cifar", dict(width=8), id="ms_resnet18"),
    pytest.param("spikformer", dict(depth=1, dim=32, num_heads=4, imagenet=False), id="spikformer"),
    pytest.param("sdt", dict(depth=1, dim=32, num_heads=4, imagenet=False), id="sdt"),
    pytest.param("qkformer_hst", dict(depth=4, dim=64, num_heads=4, imagenet=False), id="qkformer"),
]


def _model(name, kw, **more):
    torch.manual_seed(0)
    return getattr(models, name)(T=2, num_classes=5, **kw, **more)


@pytest.mark.parametrize("name,kw", MODELS)
@pytest.mark.parametrize("backend", ["spikeforge", "reference"])
@pytest.mark.parametrize("train", [True, False])
def test_empty_batch_and_empty_sequence_give_empty_outputs(name, kw, backend, train):
    m = _model(name, kw, backend=backend).train(train)
    for x, shape in (
        (torch.rand(0, 3, 16, 16), (2, 0, 5)),
        (torch.rand(0, 2, 3, 16, 16), (0, 2, 5)),
        (torch.rand(2, 0, 3, 16, 16), (2, 0, 5)),
    ):
        x.requires_grad_()
        out = m(x)
        assert out.shape == shape
        out.sum().backward()  # the empty output backpropagates too


@pytest.mark.parametrize("name,kw", MODELS)
def test_model_input_errors_name_the_problem(name, kw):
    m = _model(name, kw)
    cls = type(m).__name__
    cases = [
        (torch.rand(3, 2, 3, 16, 16), ValueError, "built for T=2 steps but the sequence x has 3"),
        (torch.rand(1, 2, 3, 16, 16), ValueError, "built for T=2"),
        (
            torch.rand(2, 3, 16, 16, dtype=torch.float64),
            TypeError,
            "x is torch.float64 but the model's parameters are torch.float32",
        ),
        (torch.rand(2, 3, 16, 16, dtype=torch.float16), TypeError, "torch.float16"),
        (torch.ones(2, 3, 16, 16, dtype=torch.uint8), TypeError, "floating-point"),
        (torch.rand(2, 1, 16, 16), ValueError, "3 input channels but x has 1"),
        (torch.rand(2, 3, 0, 16), ValueError, "empty images"),
        (torch.rand(3, 16, 16), ValueError, r"\[B, C, H, W\]"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ]
    neurons = [n for n in m.modules() if isinstance(n, sf.nn.LIF) or isinstance(n, sf.nn.IF)]
    m(torch.rand(2, 3, 16, 16))
    before = [n.v for n in neurons]
    for x, err, msg in cases:
        with pytest.raises(err, match=msg) as info:
            m(x)
        assert str(info.value).startswith(cls)
        assert [n.v for n in neurons] == before  # a rejected call resets nothing
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast runs a float32 model on lower precision
        assert m(torch.rand(2, 3, 16, 16, dtype=torch.bfloat16)).shape == (2, 2, 5)


def test_model_constructor_arguments():
    for bad in (0, -1, 1.5, "64", True):
        with pytest.raises(ValueError, match="width"):
            models.sew_resnet18_cifar(width=bad)
    for bad in (0, "10", 2.0):
        with pytest.raises(ValueError, match="num_classes"):
            models.spiking_resnet18_cifar(num_classes=bad)
        with pytest.raises(ValueError, match="num_classes"):
            models.spikformer(1, 32, num_heads=4, num_classes=bad)
    with pytest.raises(ValueError, match="in_channels"):
        models.ms_resnet18_cifar(in_channels=0)
    with pytest.raises(ValueError, match="dropout"):
        models.ms_resnet18_cifar(dropout=1.0)
    with pytest.raises(ValueError, match="layers"):
        models.SpikingResNet("sew", [2, 2, 2])
    with pytest.raises(ValueError, match="T"):
        models.sdt(1, 32, num_heads=4, T=0)


def test_too_small_training_input_is_named():
    m = models.ms_resnet18_cifar(T=1, width=8)
    with pytest.raises(ValueError, match=r"SpikingResNet: x of shape \(1, 3, 2, 2\) is too small to train on"):
        m(torch.rand(1, 3, 2, 2))
    assert m.eval()(torch.rand(1, 3, 2, 2)).shape == (1, 1, 10)


@pytest.mark.parametrize("name,kw", MODELS)
def test_meta_device_models_give_shapes(name, kw):
    m = _model(name, kw).to("meta")
    assert m(torch.empty(4, 3, 16, 16, device="meta")).shape == (2, 4, 5)
    assert m.eval()(torch.empty(2, 4, 3, 16, 16, device="meta")).shape == (2, 4, 5)
    with pytest.raises(ValueError, match="x is on cpu but the model's parameters are on meta"):
        m(torch.rand(4, 3, 16, 16))


def test_meta_device_modules_give_shapes():
    meta = torch.device("meta")
    x = torch.empty(4, 2, 16, 3, 3, device=meta)
    for mod in (
        sf.nn.LIF(),
        sf.nn.IF(step_mode="s"),
        sf.nn.PLIF(num_channels=16),
        sf.nn.PSN(4),
        sf.nn.MaskedPSN(2, 4),
        sf.nn.SlidingPSN(3),
        sf.nn.SlidingPSN(3, step_mode="s"),
        sf.nn.SSA(16, 4),
        sf.nn.SDSA(16, 4, pre_activation=True),
        sf.nn.QKTokenAttention(16, 4, compact=True),
        sf.nn.QKChannelAttention(16, 4),
        sf.nn.SpikingMLP(16),
        sf.nn.SeqBatchNorm2d(16),
        sf.nn.TdBatchNorm2d(16),
        sf.nn.TEBN(16, 4),
    ):
        mod = mod.to(meta)
        inp = x[0] if getattr(mod, "step_mode", "m") == "s" else x
        assert mod(inp).shape == inp.shape, type(mod).__name__
    assert sf.nn.SPS(3, 16, pooling="0011").to(meta)(torch.empty(2, 1, 3, 8, 8, device=meta)).shape == (2, 1, 16, 2, 2)
    assert sf.nn.SpikeLinear(3, 5).to(meta)(torch.empty(4, 2, 3, device=meta)).shape == (4, 2, 5)
    assert sf.nn.SpikeConv2d(3, 5, 3).to(meta)(torch.empty(2, 3, 6, 6, device=meta)).shape == (2, 5, 4, 4)
    assert sf.nn.PoissonEncoder(4)(torch.empty(2, 3, device=meta)).shape == (4, 2, 3)  # no .item() on meta


def test_module_messages_name_the_argument():
    """The module and the argument the user passed (x_seq of a multi-step call, x of a step, s of a spike
    layer), never an op's internal name (v_init, x_window, w_row) or a torch message."""
    cases = [
        (sf.nn.LIF(), torch.ones(3, 2, dtype=torch.int64), TypeError, "LIF: x_seq must be float32"),
        (sf.nn.LIF(step_mode="s"), torch.ones(2, dtype=torch.int64), TypeError, "LIF: x must be float32"),
        (sf.nn.IF(), torch.tensor(1.0), ValueError, "IF in step_mode 'm' expects x_seq of shape"),
        (sf.nn.PLIF(num_channels=4), torch.randn(3, 2, 5), ValueError, r"PLIF\(num_channels=4\) expects x_seq"),
        (sf.nn.PLIF(num_channels=4, step_mode="s"), torch.randn(2, 5), ValueError, "expects x of shape"),
        (sf.nn.PLIF(), torch.randn(3, 2, device="meta"), ValueError, "PLIF: x_seq is on meta but the parameter w"),
        (sf.nn.PSN(4), torch.randn(3, 2), ValueError, "PSN was built for T=4 steps but x_seq has 3"),
        (sf.nn.MaskedPSN(2, 4), torch.randn(5, 2), ValueError, "MaskedPSN was built for T=4"),
        (sf.nn.SlidingPSN(2, step_mode="s"), torch.randn(2, device="meta"), ValueError, "SlidingPSN: x is on meta"),
        (
            sf.nn.SpikeLinear(3, 2),
            torch.ones(2, 3, dtype=torch.float64),
            TypeError,
            "SpikeLinear: s is torch.float64 but the layer's weight is torch.float32",
        ),
        (sf.nn.SpikeConv2d(3, 2, 1), [0.0], TypeError, "SpikeConv2d: s must be a torch.Tensor"),
        (sf.nn.SpikeLinear(16, 8), torch.ones(4, 2, 15), ValueError, r"SpikeLinear\(16, 8\): s must end in in_f"),
        (sf.nn.SpikeLinear(16, 8), torch.tensor(1.0), ValueError, r"SpikeLinear\(16, 8\): .*got shape \[\]"),
        (sf.nn.SpikeConv2d(3, 8, 3), torch.ones(4, 2, 4, 8, 8), ValueError, r"SpikeConv2d\(3, 8\): s must be \[N"),
        (sf.nn.SpikeConv2d(3, 8, 3), torch.ones(2, 3, 8), ValueError, r"SpikeConv2d\(3, 8\).*got shape \[2, 3, 8\]"),
        (
            sf.nn.SSA(16, 4),
            torch.rand(2, 1, 16, 2, 2, dtype=torch.float64),
            TypeError,
            "SSA: x is torch.float64 but the module's parameters are torch.float32",
        ),
        (sf.nn.SpikingMLP(16), torch.rand(2, 1, 16, 2, 2, dtype=torch.float16), TypeError, "SpikingMLP: x is"),
        (sf.nn.SPS(3, 16), torch.ones(2, 1, 3, 8, 8, dtype=torch.uint8), TypeError, "SPS: x must be a floating"),
        (sf.nn.SPS(3, 16), torch.rand(2, 1, 3, 0, 8), ValueError, "SPS: x has empty feature maps"),
        (sf.nn.QKChannelAttention(16, 4), torch.rand(2, 1, 16, 2, 0), ValueError, "empty feature maps"),
        (sf.nn.SeqBatchNorm2d(4), torch.rand(2, 2, 3, 2, 2), ValueError, "SeqBatchNorm2d was built for 4 channels"),
        (sf.nn.SeqBatchNorm2d(4), torch.rand(2, 2, 4, 2, 2, dtype=torch.float64), TypeError, "float64"),
        (sf.nn.TdBatchNorm2d(4), torch.rand(2, 2, 3, 2, 2), ValueError, "TdBatchNorm2d was built for 4"),
        (sf.nn.PoissonEncoder(3), torch.ones(2, dtype=torch.int64), TypeError, "poisson_encode: x must be float32"),
    ]
    for mod, x, err, msg in cases:
        with pytest.raises(err, match=msg):
            mod(x)
    with pytest.raises(TypeError, match="target must be an integer tensor"):
        sf.nn.TETLoss()(torch.rand(2, 3, 4), torch.rand(3))
    with pytest.raises(ValueError, match=r"target must have shape \[B\]"):
        sf.nn.tet_loss(torch.rand(2, 3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="model"):
        sf.nn.reset_net(None)
