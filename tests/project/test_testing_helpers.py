"""spikeforge.testing: the helpers the suite (and libraries built on spikeforge) use."""

import pytest
import torch

from spikeforge import ops, reference, testing
from spikeforge._native import native


def test_dyadic_values_are_exact_and_device_independent(device):
    g = torch.Generator().manual_seed(5)
    x = testing.dyadic((3, 4, 5), -8, 24, 8, torch.float16, device, generator=g)
    assert x.dtype == torch.float16 and x.device.type == device and x.shape == (3, 4, 5)
    k = x.double() * 8
    assert torch.equal(k, k.round()) and k.min() >= -8 and k.max() < 24
    same = testing.dyadic((3, 4, 5), -8, 24, 8, torch.float32, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x.cpu().float(), same)  # one seed, the same values whatever the dtype and device


def test_dyadic_inputs_give_bitwise_agreement_with_the_reference(device):
    x = testing.dyadic((6, 2, 9), device=device)
    got = ops.lif(x, tau=2.0)[0]
    want = reference.lif(x, tau=2.0)[0]
    assert torch.equal(got, want)


def test_grads_returns_output_and_each_inputs_gradient():
    w = torch.tensor([2.0, 3.0])
    y, (gx, gw, gi, gn) = testing.grads(
        lambda x, w, i, n: (x * w).sum(0) + i, [torch.ones(4, 2), w, torch.arange(2), None], torch.tensor([1.0, 10.0])
    )
    assert torch.equal(y, torch.tensor([8.0, 13.0]))
    assert torch.equal(gx, torch.tensor([[2.0, 30.0]] * 4)) and torch.equal(gw, torch.tensor([4.0, 40.0]))
    assert gi is None and gn is None  # an integer input and a missing one get no gradient
    assert w.grad is None  # computed on copies


def test_native_available_and_marks():
    assert testing.native_available() == (native is not None)
    assert testing.native_available("cuda") == (
        native is not None and bool(native.has_cuda()) and torch.cuda.is_available()
    )
    with pytest.raises(ValueError, match="feature must be"):
        testing.native_available("tpu")
    assert testing.needs_native.name == "skipif" and testing.needs_cuda.name == "skipif"
    with pytest.raises(AttributeError, match="no attribute 'needs_tpu'"):
        testing.needs_tpu  # noqa: B018
