"""Run-time instruction-set dispatch of the CPU kernels (docs/install.md "Build options"): a portable build
compiles the spike propagation, attention and PSN kernels for the baseline and x86-64-v3 and runs the best
the CPU has, or the one SPIKEFORGE_CPU_ISA names. Every variant this build and CPU can run must give
the reference's results: bitwise where the inputs make every sum exact (dyadic values, spikes), else to the
tolerances of test_spike.py / test_attention.py / test_psn.py. A native build has one variant ("native").
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import spikeforge as sf
from spikeforge import ops
from spikeforge import reference as R
from spikeforge.ops import attention as attention_mod
from spikeforge.ops import spike as S
from spikeforge.testing import dyadic, grads

native = sf._native.native if sf._native.native is not None else None
pytestmark = pytest.mark.skipif(
    native is None or not hasattr(native, "cpu_isa_variants"), reason="no native module with ISA dispatch"
)
VARIANTS = native.cpu_isa_variants() if native is not None and hasattr(native, "cpu_isa_variants") else []


@pytest.fixture
def forced():
    """Forces a variant for one test, then lets the dispatcher pick again."""
    yield native._set_cpu_isa
    native._set_cpu_isa("")


def spikes(shape, rate, kind="binary", dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    on = (torch.rand(tuple(shape), generator=gen) < rate).to(dtype)
    if kind == "binary":
        return on
    if kind == "ternary":
        return on * (torch.randint(0, 2, tuple(shape), generator=gen).to(dtype) * 2 - 1)
    return on * dyadic(shape, -16, 16, 8, dtype, generator=gen)  # "float": zeros kept at the same rate


def close(a, b):  # test_spike.py's tolerance: a few ulps of the largest magnitude
    scale = max(float(b.detach().abs().max()) if b.numel() else 0.0, 1.0)
    torch.testing.assert_close(a, b, rtol=0, atol=4e-7 * scale if a.dtype == torch.float32 else 1e-12 * scale)


def spike_results(dtype):
    """Values and gradients of the spike propagation kernels on shapes that reach every code path of a
    variant: full and partial 16-feature tiles, K with and without a remainder of 8, rows with more and
    fewer than 4 events, the conv list (groups 1) and scatter (groups 2) kernels, the masked grad_input."""
    out = {}
    gen = torch.Generator().manual_seed(1)
    for kind in ("binary", "ternary", "float"):
        s = spikes((6, 300), 0.3, kind, dtype)
        bits, info = S.spike_pack(s)
        classes = {"binary": 0, "ternary": S.CLASS_NEG_ONE, "float": S.CLASS_NEG_ONE | S.CLASS_OTHER}[kind]
        out[f"pack {kind} bits"] = (bits, R.pack_bits((s != 0).to(dtype)))
        out[f"pack {kind} info"] = (info, torch.tensor([int(s.count_nonzero()), classes]))
        out[f"unpack {kind}"] = (S.spike_unpack(bits, 300, dtype), (s != 0).to(dtype))
        for K in (200, 203):
            s = spikes((37, K), 0.1, kind, dtype, seed=K)
            w = dyadic((40, K), -16, 16, 16, dtype, generator=gen)
            b = dyadic((40,), -16, 16, 16, dtype, generator=gen)
            gy = dyadic((37, 40), -16, 16, 16, dtype, generator=gen)
            mask = torch.rand(37, K, generator=gen) < 0.2
            y, g = grads(lambda s_, w_, b_: ops.spike_linear(s_, w_, b_, mode="sparse", grad_mask=mask), [s, w, b], gy)
            y0, g0 = grads(lambda s_, w_, b_: R.spike_linear(s_, w_, b_, grad_mask=mask), [s, w, b], gy)
            for name, a, r in zip(("y", "grad_s", "grad_w", "grad_b"), [y] + g, [y0] + g0):
                out[f"linear {kind} K={K} {name}"] = (a, r)
    for groups, stride in ((1, 1), (1, 2), (2, 1)):
        s = spikes((3, 4, 9, 9), 0.3, "binary", dtype, seed=groups * 10 + stride)
        w = dyadic((24, 4 // groups, 3, 3), -16, 16, 16, dtype, generator=gen)
        ho = (9 + 2 - 3) // stride + 1
        gy = dyadic((3, 24, ho, ho), -16, 16, 16, dtype, generator=gen)
        y, g = grads(lambda s_, w_: ops.spike_conv2d(s_, w_, None, stride, 1, 1, groups, mode="sparse"), [s, w], gy)
        y0, g0 = grads(lambda s_, w_: R.spike_conv2d(s_, w_, None, stride, 1, 1, groups), [s, w], gy)
        for name, a, r in zip(("y", "grad_s", "grad_w"), [y] + g, [y0] + g0):
            out[f"conv groups={groups} stride={stride} {name}"] = (a, r)
    return out


def attention_results():
    """SSA on spikes (event-driven products, 32 + 8 columns) and on a float q (the dense 4 x 16 register
    tiles), the QK attentions through the CPU reduce kernels; values and gradients."""
    out = {}
    gen = torch.Generator().manual_seed(2)
    shape = (3, 2, 22, 40)
    q, k, v = (spikes(shape, 0.3, seed=20 + i) for i in range(3))
    qf = torch.rand(shape, generator=gen) * 0.5
    g = torch.randn(shape, generator=gen)
    for name, fn, inputs in (
        ("ssa", lambda m, a, b, c: m.ssa(a, b, c, 0.125), [q, k, v]),
        ("ssa float q", lambda m, a, b, c: m.ssa(a, b, c, 0.125), [qf, k, v]),
        ("qk_token", lambda m, a, b: m.qk_token_attention(a, b), [q, k]),
        ("qk_channel", lambda m, a, b: m.qk_channel_attention(a, b), [q, k]),
    ):
        y, gs = grads(lambda *t, f=fn: f(ops, *t), inputs, g)
        y0, gs0 = grads(lambda *t, f=fn: f(R, *t), inputs, g)
        out[f"{name} out"] = (y, y0)
        for i, (a, r) in enumerate(zip(gs, gs0)):
            out[f"{name} grad {i}"] = (a, r)
    return out


def psn_results():
    """PSN on dyadic inputs (every H exact: spikes bitwise), 1000 neurons (chunks of 256 and a tail)."""
    gen = torch.Generator().manual_seed(3)
    x = dyadic((8, 1000), -16, 16, 8, generator=gen)
    w = dyadic((8, 8), -16, 16, 16, generator=gen)
    b = dyadic((8,), -16, 8, 16, generator=gen)
    g = torch.randn(8, 1000, generator=gen)
    y, gs = grads(lambda *t: ops.psn(*t), [x, w, b], g)
    y0, gs0 = grads(lambda *t: R.psn(*t), [x, w, b], g)
    return {"psn out": (y, y0), **{f"psn grad {n}": (a, r) for n, a, r in zip(("x", "w", "b"), gs, gs0)}}


def test_variants_listed_and_active_is_best():
    assert VARIANTS, "a build always has at least one variant"
    assert native.cpu_isa() in VARIANTS
    assert VARIANTS in (["native"], ["baseline"], ["x86-64-v3", "baseline"])
    if os.environ.get("SPIKEFORGE_CPU_ISA", "") == "":
        assert native.cpu_isa() == VARIANTS[0]
    line = native.cpu_kernel_path()
    assert native.cpu_isa() in line or "native" in line


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_spike_kernels_every_variant(forced, variant, dtype):
    forced(variant)
    assert native.cpu_isa() == variant
    results = spike_results(dtype)
    for name, (a, r) in results.items():
        assert a.dtype == r.dtype and a.shape == r.shape, name
        if name.startswith(("pack", "unpack")):
            assert torch.equal(a, r), name
        else:  # dyadic values: every sum exact in any order, so the tolerance is only for the dense reference
            close(a, r)
    if variant != VARIANTS[0]:  # and bitwise equal across the variants
        forced(VARIANTS[0])
        for name, (a, _) in spike_results(dtype).items():
            assert torch.equal(a, results[name][0]), f"{name}: {variant} differs from {VARIANTS[0]}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_kernels_every_variant(forced, monkeypatch, variant):
    monkeypatch.setattr(attention_mod, "REDUCE_KERNEL_DEVICES", ("cpu", "cuda"))
    monkeypatch.setattr(attention_mod, "SSA_CPU_BACKWARD", "fused")  # the native backward
    forced(variant)
    for name, (a, r) in attention_results().items():
        if name in ("ssa out", "qk_token out", "qk_channel out"):
            assert torch.equal(a, r), name  # spike inputs: integer sums times powers of two
        elif name == "ssa float q out":
            assert (a != r).float().mean().item() < 0.01, name  # flips only within rounding of the threshold
        else:
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_psn_kernels_every_variant(forced, variant):
    forced(variant)
    for name, (a, r) in psn_results().items():
        if name == "psn out":
            assert torch.equal(a, r), name
        else:  # test_psn.py: rtol 1e-5 with a slack of a small fraction of the largest magnitude
            slack = 1e-5 * float(r.abs().max())
            torch.testing.assert_close(a, r, rtol=1e-5, atol=slack, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("bad", ["avx9", "", "X86-64-V3", "x86-64-v4"])
def test_bad_variant_is_refused_and_changes_nothing(forced, bad):
    before = native.cpu_isa()
    if bad == "":  # "" is not a variant: it means "pick again"
        forced(bad)
        assert native.cpu_isa() == before
        return
    with pytest.raises(ValueError, match="isa: got '.*'; this build and CPU run"):
        forced(bad)
    assert native.cpu_isa() == before


def test_variant_a_build_does_not_have_is_refused(forced):
    missing = [v for v in ("native", "baseline", "x86-64-v3") if v not in VARIANTS]
    if not missing:
        pytest.skip("this build and CPU run every variant name")
    with pytest.raises(ValueError, match="does not have"):
        forced(missing[0])


def _run(code, env_isa):
    env = dict(os.environ, SPIKEFORGE_CPU_ISA=env_isa)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_environment_override():
    """SPIKEFORGE_CPU_ISA picks the variant at the first call; a bad value makes the dispatched ops raise a
    ValueError that names the variable (no crash), and `spikeforge info` says so without a traceback."""
    last = VARIANTS[-1]
    r = _run("from spikeforge._native import native; print(native.cpu_isa())", last)
    assert r.returncode == 0 and r.stdout.strip() == last, r.stderr
    code = (
        "import torch, spikeforge as sf\n"
        "try:\n"
        "    sf.ops.spike_linear(torch.ones(2, 3), torch.ones(4, 3), mode='sparse')\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    r = _run(code, "avx9")
    assert r.returncode == 0, r.stderr
    assert "ValueError: environment variable SPIKEFORGE_CPU_ISA: got 'avx9'" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "spikeforge", "info"],
        capture_output=True,
        text=True,
        env=dict(os.environ, SPIKEFORGE_CPU_ISA="avx9"),
        timeout=300,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr + r.stdout
    (line,) = [ln for ln in r.stdout.splitlines() if "CPU kernels:" in ln]
    assert "SPIKEFORGE_CPU_ISA" in line and "avx9" in line
