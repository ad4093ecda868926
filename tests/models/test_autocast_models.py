"""Mixed precision (torch.autocast, as under FSDP / AMP training) through the zoo models' compact path: the
uint8-saving convolution runs its backward in the forward's compute dtype, so a bfloat16 autocast step gives
exactly the gradients of the plain (compact=False) model."""

import torch

from spikeforge import models


def test_autocast_bf16_compact_equals_plain():
    torch.set_num_threads(1)
    x = torch.rand(2, 3, 16, 16) * 3
    res = {}
    for compact in (True, False):
        torch.manual_seed(0)
        m = models.sew_resnet18_cifar(width=4, T=2, compact=compact, zero_init_residual=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x)
        out.float().sum().backward()
        res[compact] = (out, {n: p.grad for n, p in m.named_parameters()})
    out, grads = res[True]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, res[False][0], rtol=0, atol=0)
    for name, g in grads.items():
        assert g.dtype == torch.float32  # parameters stay float32, so do their gradients
        torch.testing.assert_close(g, res[False][1][name], rtol=0, atol=0)
    assert all(float(g.abs().sum()) > 0 for g in grads.values())


def test_autocast_bf16_compact_conv_with_bias_keeps_the_dtype():
    """SpikeCountConv2d's compact path adds its bias after the convolution: in the activation dtype, as
    nn.Conv2d under autocast (a float32 bias would promote the output and double its memory)."""
    import spikeforge as sf

    torch.manual_seed(0)
    conv = sf.nn.SpikeCountConv2d(4, 6, 1, compact=True)
    plain = torch.nn.Conv2d(4, 6, 1)
    plain.load_state_dict(conv.state_dict())
    x = (torch.rand(2, 4, 5, 5) < 0.3).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_plain = conv(x), plain(x)
    assert y.dtype == y_plain.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_plain.float(), rtol=0, atol=2**-6)  # bf16 rounding of y + b
    y.float().sum().backward()
    assert conv.bias.grad.dtype == torch.float32
