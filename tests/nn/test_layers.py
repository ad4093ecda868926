"""Sequence layers: BN over T*B (plain, tdBN, TEBN), the multi-step wrapper, encoders, TET loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikeforge as sf


def test_seq_batchnorm_is_bn_over_t_times_b():
    x = torch.randn(3, 4, 5, 6, 6) * 2 + 1
    a, b = sf.nn.SeqBatchNorm2d(5), nn.BatchNorm2d(5)
    torch.testing.assert_close(a(x), b(x.flatten(0, 1)).view(x.shape))
    torch.testing.assert_close(a.running_mean, b.running_mean)
    torch.testing.assert_close(a.running_var, b.running_var)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x.flatten(0, 1)).view(x.shape))
    assert a(x[0]).shape == x[0].shape  # plain [N, C, H, W] works too
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        a(torch.randn(2, 5, 3))


def test_tdbn_scales_by_alpha_vth():
    x = torch.randn(2, 3, 4, 5, 5) * 3 - 1
    td = sf.nn.TdBatchNorm2d(4, alpha=1 / math.sqrt(2), v_threshold=0.5)
    with torch.no_grad():
        td.weight.uniform_(0.5, 1.5)
        td.bias.uniform_(-1, 1)
    xf = x.flatten(0, 1)
    mean = xf.mean((0, 2, 3), keepdim=True)
    var = xf.var((0, 2, 3), unbiased=False, keepdim=True)
    expect = td.weight.view(1, -1, 1, 1) * (0.5 / math.sqrt(2)) * (xf - mean) / torch.sqrt(var + 1e-5) + td.bias.view(
        1, -1, 1, 1
    )
    torch.testing.assert_close(td(x), expect.view(x.shape), rtol=1e-5, atol=1e-5)
    assert int(td.num_batches_tracked) == 1
    torch.testing.assert_close(td.running_mean, 0.1 * mean.flatten())
    td.eval()
    ev = td(x)
    expect_eval = td.weight.view(1, -1, 1, 1) * (0.5 / math.sqrt(2)) * (
        xf - td.running_mean.view(1, -1, 1, 1)
    ) / torch.sqrt(td.running_var.view(1, -1, 1, 1) + 1e-5) + td.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(ev, expect_eval.view(x.shape), rtol=1e-5, atol=1e-5)
    # gradient w.r.t. lambda (weight) carries the alpha*V_th factor
    td.train()
    td.weight.grad = None
    td(x).sum().backward()
    assert td.weight.grad is not None


def test_tebn_per_step_scale():
    T = 3
    x = torch.randn(T, 2, 4, 3, 3)
    m = sf.nn.TEBN(4, T)
    with torch.no_grad():
        m.p.copy_(torch.tensor([0.5, 1.0, 2.0]).view(T, 1, 1, 1, 1))
    ref = nn.BatchNorm2d(4)(x.flatten(0, 1)).view(x.shape) * torch.tensor([0.5, 1.0, 2.0]).view(T, 1, 1, 1, 1)
    torch.testing.assert_close(m(x), ref)
    m(x).sum().backward()
    assert m.p.grad.shape == (T, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="T=3"):
        m(torch.randn(2, 2, 4, 3, 3))


def test_multistep_wrapper_equals_loop():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    pool = nn.AvgPool2d(2)
    ms = sf.nn.MultiStep(conv, pool, nn.Flatten())
    x = torch.randn(4, 2, 3, 6, 6)
    loop = torch.stack([pool(conv(x[t])).flatten(1) for t in range(4)])
    torch.testing.assert_close(ms(x), loop)
    assert ms(x).shape == (4, 2, 4 * 9)
    assert "0.weight" in ms.state_dict()


def test_encoders():
    x = torch.rand(5, 7)
    d = sf.nn.direct_encode(x, 3)
    assert d.shape == (3, 5, 7) and all(torch.equal(d[t], x) for t in range(3))
    g = torch.Generator().manual_seed(0)
    p = sf.nn.poisson_encode(torch.full((20000,), 0.3), 4, generator=g)
    assert set(p.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(p.mean()) - 0.3) < 0.01
    assert float(sf.nn.poisson_encode(torch.zeros(10), 5).sum()) == 0
    assert float(sf.nn.poisson_encode(torch.ones(10), 5).mean()) == 1
    assert sf.nn.PoissonEncoder(2)(torch.rand(3, 4)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sf.nn.poisson_encode(torch.full((3,), 2.0), 2)
    with pytest.raises(ValueError, match="T"):
        sf.nn.DirectEncoder(0)


def test_tet_loss_matches_paper_formula():
    out = torch.randn(4, 6, 10, requires_grad=True)
    y = torch.randint(0, 10, (6,))
    lamb, means = 0.05, 1.0
    per_step = sum(F.cross_entropy(out[t], y) for t in range(4)) / 4
    mse = F.mse_loss(out, torch.full_like(out, means))
    expect = (1 - lamb) * per_step + lamb * mse
    torch.testing.assert_close(sf.nn.tet_loss(out, y, lamb=lamb, means=means), expect)
    torch.testing.assert_close(sf.nn.TETLoss(lamb=0.0)(out, y), per_step)
    with pytest.raises(ValueError, match=r"\[T, B, classes\]"):
        sf.nn.tet_loss(out[0], y)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_maxpool_spikes_gradient_goes_where_max_pool2ds_does(kernel, stride, padding):
    """The compact max-pool (uint8 input kept, indices recomputed in backward) routes each gradient to the input
    nn.MaxPool2d picks, ties of spikes included, and gives its values."""
    from spikeforge.nn.fused import maxpool_spikes

    torch.manual_seed(0)
    pool = nn.MaxPool2d(kernel, stride, padding)
    s = (torch.rand(2, 3, 4, 9, 9) < 0.3).float()  # [T, B, C, H, W]: many ties of 0 and of 1
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    y = maxpool_spikes(pool, a, compact=True)
    want = pool(b.flatten(0, 1))
    torch.testing.assert_close(y.flatten(0, 1), want, rtol=0, atol=0)
    g = torch.randn(want.shape)
    y.flatten(0, 1).backward(g)
    want.backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


def test_maxpool_spikes_takes_any_pool_as_max_pool2d_does():
    """Tuple kernels / strides crashed the compact backward, dilation and ceil_mode were ignored (other output
    shapes), a 4-D input gave torch's channels_last error: each now equals nn.MaxPool2d on spikes."""
    from spikeforge.nn.fused import maxpool_spikes

    g = torch.Generator().manual_seed(0)
    s = (torch.rand(2, 3, 4, 9, 9, generator=g) < 0.3).float()
    for pool in (
        nn.MaxPool2d((3, 3), (1, 2), 1),
        nn.MaxPool2d(3, 2, 1, dilation=2),
        nn.MaxPool2d(2, 2, ceil_mode=True),
    ):
        a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
        y = maxpool_spikes(pool, a, compact=True)
        want = pool(b.flatten(0, 1)).view((2, 3) + tuple(pool(b.flatten(0, 1)).shape[1:]))
        assert torch.equal(y, want)
        up = torch.randn(y.shape, generator=g)
        (y * up).sum().backward()
        (want * up).sum().backward()
        assert torch.equal(a.grad, b.grad), pool
    with pytest.raises(ValueError, match=r"maxpool_spikes: x must be a spike sequence"):
        maxpool_spikes(nn.MaxPool2d(2), s[0], compact=True)


def test_poisson_encode_draws_in_float32_for_16_bit_intensities():
    """bfloat16 draws fired an intensity of 0.001 at 0.003; NaN intensities passed the range check."""
    torch.manual_seed(0)
    for dt in (torch.bfloat16, torch.float16):
        x = torch.full((200_000,), 0.001, dtype=dt)
        s = sf.nn.poisson_encode(x, 2)
        assert s.dtype == dt and abs(s.float().mean().item() - float(x[0])) < 3e-4
    with pytest.raises(ValueError, match="not NaN"):
        sf.nn.poisson_encode(torch.tensor([float("nan"), 0.5]), 2)


def test_small_contracts_of_layers_and_tools():
    """tet_loss: int32 targets (torch's cross_entropy wants int64), lamb outside [0, 1] or not a number, T = 0;
    seq_apply of a non-tensor; TEBN keeps a 16-bit input's dtype; FiringRateMonitor takes one class."""
    out = torch.randn(3, 4, 5)
    y = torch.randint(0, 5, (4,))
    assert torch.equal(sf.nn.tet_loss(out, y.int()), sf.nn.tet_loss(out, y))
    with pytest.raises(ValueError, match="lamb must be in"):
        sf.nn.tet_loss(out, y, lamb=2.0)
    with pytest.raises(TypeError, match="lamb must be a finite number"):
        sf.nn.tet_loss(out, y, lamb="0.1")
    with pytest.raises(ValueError, match="no time step"):
        sf.nn.tet_loss(out[:0], y)
    with pytest.raises(TypeError, match="seq_apply: x_seq must be a torch.Tensor"):
        sf.nn.seq_apply(nn.Identity(), [1.0, 2.0])
    tebn = sf.nn.TEBN(4, 2)
    assert tebn(torch.randn(2, 3, 4, 5, 5, dtype=torch.bfloat16)).dtype == torch.bfloat16
    model = nn.Sequential(sf.nn.LIF(), sf.nn.LIF())
    with sf.tools.FiringRateMonitor(model, types=sf.nn.LIF) as mon:
        model(torch.rand(2, 3, 4) * 2)
    assert len(mon.summary()) == 2


def test_batch_norm_constructors_name_bad_arguments():
    """A negative or float channel count gave torch's errors without the layer's name; TdBatchNorm2d with
    affine=False failed on a duplicate keyword."""
    for make, match in (
        (lambda: sf.nn.SeqBatchNorm2d(-1), r"SeqBatchNorm2d: num_features must be >= 1"),
        (lambda: sf.nn.TdBatchNorm2d(0), r"TdBatchNorm2d: num_features must be >= 1"),
        (lambda: sf.nn.TdBatchNorm2d(4, affine=False), r"TdBatchNorm2d: affine must be True"),
        (lambda: sf.nn.TEBN(-2, 3), r"TEBN: num_features must be >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(TypeError, match=r"TEBN: num_features must be an int"):
        sf.nn.TEBN(2.0, 3)
    bn = sf.nn.SeqBatchNorm2d(4, eps=1e-3, momentum=None, affine=False)
    assert bn.eps == 1e-3 and bn.momentum is None and bn.weight is None
