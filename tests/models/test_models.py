"""Residual model zoo: parameter counts against the papers, forward/backward of every model, encoding,
state reset between batches, spikeforge vs reference neurons, zero-init identities."""

import pytest
import torch

import spikeforge as sf
from spikeforge import models
from spikeforge.models.resnet import MSBasicBlock, SEWBasicBlock


pytestmark = pytest.mark.usefixtures("one_thread")


# torchvision's ResNets (ImageNet, 1000 classes); the SEW paper's table has the same numbers (11.69M ...)
RESNET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# MS-ResNet (Hu et al.), ImageNet table, in millions
MS_PARAMS_M = {18: 11.69, 34: 21.80, 104: 77.28}


def _count(fn, **kw):
    with torch.device("meta"):  # parameter counting only: no memory, no init cost
        m = fn(**kw)
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("depth", sorted(RESNET_PARAMS))
@pytest.mark.parametrize("family", ["spiking_resnet", "sew_resnet"])
def test_parameter_counts_imagenet(family, depth):
    assert _count(models.MODELS[f"{family}{depth}"]) == RESNET_PARAMS[depth]


@pytest.mark.parametrize("cnf", ["ADD", "AND", "IAND"])
def test_sew_cnf_has_no_parameters(cnf):
    assert _count(models.sew_resnet34, cnf=cnf) == RESNET_PARAMS[34]


@pytest.mark.parametrize("depth", sorted(MS_PARAMS_M))
def test_parameter_counts_ms_resnet(depth):
    assert round(_count(models.MODELS[f"ms_resnet{depth}"]) / 1e6, 2) == MS_PARAMS_M[depth]


def test_parameter_counts_cifar_and_classes():
    # the CIFAR ResNet-18 (3x3 stem, no max-pool), 10 classes: 11,173,962 as in the usual CIFAR code
    assert _count(models.sew_resnet18_cifar) == 11_173_962
    assert _count(models.spiking_resnet18_cifar) == 11_173_962
    assert _count(models.sew_resnet18, num_classes=10) == RESNET_PARAMS[18] - 990 * 513
    # PLIF adds one learnable w per neuron layer
    plain = _count(models.sew_resnet18_cifar)
    plif = _count(models.sew_resnet18_cifar, neuron="plif", neuron_kwargs={})
    assert (
        plif - plain
        == sum(
            isinstance(m, sf.nn.PLIF)
            for m in models.sew_resnet18_cifar(neuron="plif", neuron_kwargs={}, width=2).modules()
        )
        > 0
    )


# -------------------------------------------------------------------------------------------------
# every model runs forward and backward (tiny width, tiny input, T=2)
# -------------------------------------------------------------------------------------------------
def _small(name, **kw):
    imagenet = not name.endswith("_cifar")
    return models.MODELS[name](num_classes=5, T=2, width=2, **kw), (16 if imagenet else 4)


@pytest.mark.parametrize("name", sorted(models.RESNET_MODELS))  # transformers: test_transformers.py
def test_forward_backward_every_model(name):
    m, size = _small(name)
    x = torch.rand(2, 3, size, size)
    out = m(x)
    assert out.shape == (2, 2, 5) and torch.isfinite(out).all()
    out.mean(0).logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]}"


@pytest.mark.parametrize("cnf", ["AND", "IAND"])
def test_sew_cnf_variants_train(cnf):
    m = models.sew_resnet18_cifar(num_classes=3, T=2, width=4, cnf=cnf)
    out = m(torch.rand(3, 3, 6, 6))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_big_imagenet_model_runs_once_at_small_resolution():
    m = models.sew_resnet50(num_classes=10, T=1, width=4)
    out = m(torch.rand(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (1, 2, 10) and m.fc.weight.grad is not None


# -------------------------------------------------------------------------------------------------
# semantics
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sew_resnet18_cifar", "spiking_resnet18", "ms_resnet18_cifar"])
def test_static_input_equals_repeated_sequence(name):
    """The stem conv computed once and repeated over T is exact: same logits as the explicit sequence."""
    m, size = _small(name)
    m = m.double().eval()
    x = torch.rand(3, 3, size, size, dtype=torch.float64) * 2
    a = m(x)
    b = m(x.unsqueeze(0).expand(2, *x.shape).contiguous())
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_no_state_leaks_between_batches():
    m = models.sew_resnet18_cifar(num_classes=4, T=3, width=4, neuron="lif", neuron_kwargs={"tau": 2.0}).eval()
    xa, xb = torch.rand(2, 3, 6, 6) * 3, torch.rand(2, 3, 6, 6) * 3
    first = m(xa)
    m(xb)  # a different batch in between
    torch.testing.assert_close(m(xa), first, rtol=0, atol=0)
    # in eval mode every sample is independent of the rest of its batch
    both = m(torch.cat([xa, xb]))
    torch.testing.assert_close(both[:, :2], first, rtol=1e-5, atol=1e-5)
    # and a neuron left with state from a batch of another size is reset, not an error
    m(torch.rand(5, 3, 6, 6))
    torch.testing.assert_close(m(xa), first, rtol=0, atol=0)


@pytest.mark.parametrize(
    "name,neuron",
    [
        ("sew_resnet18_cifar", "plif"),
        ("sew_resnet50_cifar", "if"),
        ("spiking_resnet18_cifar", "lif"),
        ("spiking_resnet50_cifar", "if"),
        ("ms_resnet18_cifar", None),
        ("sew_resnet18", "if"),
        ("ms_resnet104", None),
    ],
)
def test_spikeforge_model_equals_reference_model(name, neuron):
    """The spikeforge model (fused neurons, uint8-saved conv inputs, BN+SN saving one tensor) computes what
    the plain reference model computes: outputs, every gradient and the BN running statistics."""
    torch.manual_seed(0)
    kw = {} if neuron is None else dict(neuron=neuron, neuron_kwargs={"surrogate": "atan"})
    m = models.MODELS[name](num_classes=4, T=3, width=4, **kw).double()
    r = models.MODELS[name](num_classes=4, T=3, width=4, backend="reference", **kw).double()
    assert m.compact and not r.compact
    r.load_state_dict(m.state_dict())
    size = 6 if name.endswith("_cifar") else 16  # ImageNet layout: strided stem (+ max-pool / avgpool shortcut)
    x = torch.rand(2, 3, size, size, dtype=torch.float64) * 2
    for _ in range(2):  # twice: running statistics and the per-forward reset
        m.zero_grad(), r.zero_grad()
        torch.manual_seed(1)  # ms_resnet104 drops out before fc: the same mask for both
        om = m(x)
        torch.manual_seed(1)
        orf = r(x)
        torch.testing.assert_close(om, orf, rtol=1e-9, atol=1e-9)
        om.square().sum().backward()
        orf.square().sum().backward()
        for (n, p), q in zip(m.named_parameters(), r.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=n)
    for (n, b), c in zip(m.named_buffers(), r.buffers()):
        torch.testing.assert_close(b, c, rtol=1e-9, atol=1e-9, msg=n)


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_spike_input_convs_equal_reference_on_either_path(monkeypatch, spy_native, path):
    """The zoo's spike-input convolutions run spikeforge.ops.spike_conv2d on CPU: whichever path its crossover
    picks (forced here: every conv event-driven, or every conv dense), the model computes what the reference
    model computes, gradients included."""
    from spikeforge.ops import spike as S

    rate = 1.0 if path == "sparse" else None
    monkeypatch.setitem(S.CROSSOVER, "cpu", dict(S.CROSSOVER["cpu"], conv2d=rate, conv2d_1x1=rate))
    monkeypatch.setitem(S.CONV_CROSSOVER_SMALL_MAPS, "cpu", ())
    calls = spy_native(S)
    torch.manual_seed(0)
    m = models.sew_resnet18(num_classes=4, T=2, width=4).double()
    r = models.sew_resnet18(num_classes=4, T=2, width=4, backend="reference").double()
    r.load_state_dict(m.state_dict())
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2
    om, orf = m(x), r(x)
    torch.testing.assert_close(om, orf, rtol=1e-9, atol=1e-9)
    om.square().sum().backward()
    orf.square().sum().backward()
    for (n, p), q in zip(m.named_parameters(), r.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=n)
    assert ("spike_conv2d_forward" in calls) == (path == "sparse")
    assert "spike_pack" in calls  # either way the input is packed: 1 bit per spike kept for backward


def test_compact_mode_saves_less():
    from bench_helpers import bench_module

    saved_bytes_by_module = bench_module("models").saved_bytes_by_module

    torch.manual_seed(0)
    m = models.sew_resnet18_cifar(num_classes=4, T=2, width=8)
    r = models.sew_resnet18_cifar(num_classes=4, T=2, width=8, backend="reference")
    plain = models.sew_resnet18_cifar(num_classes=4, T=2, width=8, compact=False)
    x = torch.rand(4, 3, 8, 8)
    sm, sr, sp = (saved_bytes_by_module(k, x) for k in (m, r, plain))
    assert sr["params"] > 0 and sm["params"] >= sr["params"]  # the fused BN+SN also keeps the BN bias
    # uint8 conv inputs (all but the stem's image): a quarter of the float bytes; BN+SN keep one tensor
    assert sm["conv"] < sp["conv"] / 2
    assert sm["neuron"] < sp["neuron"] / 4
    assert sm["activations"] < 0.6 * sr["activations"]


def test_zero_init_blocks_start_as_identity():
    m = models.sew_resnet18_cifar(width=4, cnf="ADD")
    blk = m.layer1[0]
    assert isinstance(blk, SEWBasicBlock) and blk.downsample is None
    s = (torch.rand(2, 3, 4, 4, 4) > 0.5).float()
    torch.testing.assert_close(blk(s), s, rtol=0, atol=0)
    iand = models.sew_resnet18_cifar(width=4, cnf="IAND").layer1[0]
    torch.testing.assert_close(iand(s), s, rtol=0, atol=0)
    ms = models.ms_resnet18_cifar(width=4).layer1[0]
    assert isinstance(ms, MSBasicBlock)
    v = torch.randn(2, 3, 4, 4, 4)
    torch.testing.assert_close(ms(v), v, rtol=0, atol=0)
    # without zero-init the branch is not silent
    blk2 = models.sew_resnet18_cifar(width=4, zero_init_residual=False).layer1[0]
    assert not torch.equal(blk2(s * 3), s * 3)


def test_norm_layer_options():
    for norm, cls in (("tdbn", sf.nn.TdBatchNorm2d), ("tebn", sf.nn.TEBN), ("bn", sf.nn.SeqBatchNorm2d)):
        m = models.spiking_resnet18_cifar(num_classes=3, T=2, width=2, norm_layer=norm)
        assert isinstance(m.layer1[0].bn1, cls)
        m(torch.rand(2, 3, 4, 4)).sum().backward()
    with pytest.raises(ValueError, match="norm_layer"):
        models.sew_resnet18(norm_layer="layernorm")
    with pytest.raises(ValueError, match="cnf"):
        models.sew_resnet18(cnf="OR")
    with pytest.raises(ValueError, match="unknown model"):
        models.get_model("resnet9000")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        models.sew_resnet18_cifar(width=2)(torch.rand(3, 4, 4))


def test_bench_models_cli_smoke(tmp_path, capsys):
    from spikeforge import cli

    out = tmp_path / "m.json"
    rc = cli.main(
        [
            "bench",
            "models",
            "--no-thp",
            "--quick",
            "--T",
            "1",
            "--batch",
            "2",
            "--size",
            "16",
            "--reps",
            "1",
            "--threads",
            "1",
            "--num-classes",
            "10",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    import json

    case = json.loads(out.read_text())["cases"][0]
    assert case["saved_ratio"] < 1.0 and case["rows"][0]["median_ms"] > 0  # equality: float64 tests above
    assert "sew_resnet18 T=1" in capsys.readouterr().out


NEURON_CASES = [
    ("lif", dict(tau=2.0)),
    ("lif", dict(tau=3.0, decay_input=False, v_reset=None)),
    ("if", dict(detach_reset=True)),
    ("if", dict(v_reset=None, surrogate="atan")),
    ("plif", dict()),
    ("plif", dict(num_channels=5, v_reset=None, detach_reset=True)),
]


@pytest.mark.parametrize("kind,kw", NEURON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fused_bn_neuron_backward_matches_unfused(kind, kw, dtype):
    """models.resnet.bn_spike's fused BN + neuron runs the neuron's native backward straight from the
    recomputed BN output (_grad_from_input): gradients of the input, BN's affine parameters and PLIF's w
    equal those of the unfused sn(bn(y)), for soft / hard reset, detach_reset, per-channel w and in bf16
    (where PLIF's float32 w meets bf16 inputs)."""
    from spikeforge.models.resnet import bn_spike
    from spikeforge.nn import IF, LIF, PLIF
    from spikeforge.nn.layers import SeqBatchNorm2d

    make = {"lif": LIF, "if": IF, "plif": PLIF}[kind]
    torch.manual_seed(0)
    y = torch.randn(3, 2, 5, 4, 4) * 2
    g = torch.randn(3, 2, 5, 4, 4)
    out = []
    for fuse in (True, False):
        torch.manual_seed(0)
        bn, sn = SeqBatchNorm2d(5).to(dtype), make(**kw)
        if kind == "plif":
            with torch.no_grad():
                sn.w.add_(torch.linspace(-0.3, 0.3, sn.w.numel()).view(sn.w.shape))
        yy = y.to(dtype).requires_grad_(True)
        s = bn_spike(bn, sn, yy, fuse)
        (s.float() * g).sum().backward()
        out.append([s.detach(), yy.grad, bn.weight.grad, bn.bias.grad] + ([sn.w.grad] if kind == "plif" else []))
    tol = dict(rtol=0, atol=0) if dtype != torch.bfloat16 else dict(rtol=2e-2, atol=2e-2)
    for a, b in zip(*out):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a.float(), b.float(), **tol)


def test_ms_resnet_takes_a_named_neuron_with_its_options():
    """neuron="if" for an MS-ResNet built LIF neurons (the family default could not tell an explicit "if" from
    the signature's), and "plif" failed on LIF's tau: a named neuron gets MS's threshold, surrogate and
    decay in its own terms."""
    from spikeforge.nn import IF, LIF, PLIF

    def first_neuron(m):
        return next(x for x in m.modules() if isinstance(x, (IF, LIF, PLIF)))

    for name, cls in (("if", IF), ("lif", LIF), ("plif", PLIF), (None, LIF)):
        kw = {} if name is None else dict(neuron=name)
        sn = first_neuron(models.ms_resnet18_cifar(T=2, width=4, **kw))
        assert type(sn) is cls and sn.v_threshold == 0.5 and sn.surrogate == "rect" and sn.detach_reset
    assert type(first_neuron(models.sew_resnet18_cifar(T=2, width=4))) is IF


@pytest.mark.parametrize("name", ["sew_resnet18_cifar", "spikformer_4_256_cifar"])
def test_compact_models_compile_fullgraph(name):
    """torch.compile(model, fullgraph=True) of a compact model (the default with spikeforge's neurons): the
    fused BN + neuron node's backward calls torch.autograd.grad, which dynamo does not trace, so every compact
    model failed to compile; under compile the unfused layers run (outputs and gradients as eager)."""
    import copy

    torch._dynamo.reset()
    kw = dict(width=4) if name.startswith("sew") else dict(dim=32, depth=1, num_heads=2)
    torch.manual_seed(0)
    model = getattr(models, name)(num_classes=4, T=2, **kw)
    twin = copy.deepcopy(model)
    x = torch.rand(2, 3, 8, 8) if name.startswith("sew") else torch.rand(2, 3, 16, 16)
    out = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    out.square().sum().backward()
    ref = twin(x)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_recipe_of_the_docs_is_exact(reentrant):
    """docs/distributed.md: checkpointing a stage recomputes its forward from the state the first forward left
    (reentrant: silently wrong gradients, 0.31 off here); resetting the stage's neurons inside the checkpointed
    function gives the gradients of the plain model exactly."""
    import torch.nn.functional as F

    def grads(ckpt):
        torch.manual_seed(0)
        m = models.sew_resnet18_cifar(num_classes=10, T=2, width=4)
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(2, 3, 8, 8, generator=g) * 2, torch.randint(0, 10, (2,), generator=g)
        if ckpt:
            for name in ("layer1", "layer2", "layer3", "layer4"):
                setattr(m, name, _Checkpointed(getattr(m, name), reentrant))
        F.cross_entropy(m(x).mean(0), y).backward()
        return [p.grad for p in m.parameters()]

    plain, checkpointed = grads(False), grads(True)
    assert len(plain) == len(checkpointed)
    for a, b in zip(checkpointed, plain):
        assert torch.equal(a, b)


class _Checkpointed(torch.nn.Module):
    """docs/distributed.md's recipe as a module: the stage under torch.utils.checkpoint, reset first."""

    def __init__(self, stage, reentrant):
        super().__init__()
        self.stage, self.reentrant = stage, reentrant

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        def run_stage(stage, x):
            sf.nn.reset_net(stage)  # both the forward and its recomputation start from rest
            return stage(x)

        return checkpoint(run_stage, self.stage, x, use_reentrant=self.reentrant)
