"""Helpers for testing code that runs on spikeforge, the ones spikeforge's own test suite uses.

A library that takes spikeforge's ops as its backend tests them the way spikeforge does: against
spikeforge.reference on exact inputs where results must agree bit for bit, with gradients compared
through one helper, and with native-kernel tests skipped cleanly where the native module (or its CUDA
kernels) is absent. Only the pytest marks need pytest, and they import it when first used.

    from spikeforge.testing import dyadic, grads, needs_native

    @needs_native
    def test_my_layer_matches_the_reference():
        x = dyadic((8, 4, 16))          # multiples of 1/8: the LIF arithmetic on them is exact
        y, (gx,) = grads(lambda x: my_layer(x), [x], torch.ones(8, 4, 16))
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ._native import native

# needs_native / needs_cuda come from __getattr__ below (built on first use, so that pytest stays optional)
__all__ = ["native_available", "needs_native", "needs_cuda", "dyadic", "grads"]  # noqa: F822


def native_available(feature: str | None = None) -> bool:
    """True when the native module is loaded; with feature "cuda" also its CUDA kernels (and a visible GPU),
    with "attention" its fused attention kernels."""
    if native is None:
        return False
    if feature is None:
        return True
    if feature == "cuda":
        return bool(native.has_cuda()) and torch.cuda.is_available()
    if feature == "attention":
        return hasattr(native, "attention_ssa_forward")
    raise ValueError(f"feature must be None, 'cuda' or 'attention', got {feature!r}")


def _mark(feature: str | None, reason: str):
    import pytest  # a test dependency, not a run-time one

    return pytest.mark.skipif(not native_available(feature), reason=reason)


def __getattr__(name: str) -> Any:
    # the marks are built on first use so that importing this module never needs pytest
    if name == "needs_native":
        return _mark(None, "spikeforge's native module (spikeforge._C) is not built")
    if name == "needs_cuda":
        return _mark("cuda", "needs torch.cuda and a spikeforge build with CUDA kernels")
    raise AttributeError(f"module 'spikeforge.testing' has no attribute {name!r}")


def dyadic(
    shape: Sequence[int],
    lo: int = -8,
    hi: int = 24,
    denom: int = 8,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random multiples of 1/denom in [lo/denom, hi/denom): exactly representable in every float type, and so
    are a few steps of IF/LIF arithmetic on them with decay 1/2 or 1/4 and dyadic thresholds and resets, so a
    fused kernel and the reference must agree bit for bit. Drawn on the CPU (from generator, else torch's
    global one) and then moved, so one seed gives the same values on every device."""
    k = torch.randint(lo, hi, tuple(shape), generator=generator)
    return (k.double() / denom).to(dtype=dtype, device=device)


def grads(
    fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor | None], upstream: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """(fn(*inputs) detached, the gradient of <fn(*inputs), upstream> with respect to each input). Inputs are
    copied to fresh leaves; None and non-floating inputs are passed through and get None."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    y = fn(*leaves)
    want = [t for t in leaves if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(y, want, upstream, allow_unused=True)) if want else iter(())
    return y.detach(), [next(got) if t is not None and t.requires_grad else None for t in leaves]
