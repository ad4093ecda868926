"""Reliability of the neuron (IF/LIF/PLIF, single-step) and PSN (psn/masked_psn/sliding_psn) op families:
the bad-input contract at the native layer (docs/bad_inputs.md), Python validating before any native
call, determinism (run to run, across thread counts, under torch.use_deterministic_algorithms),
concurrent calls from Python threads (the bindings release the GIL), flat resident memory under
repeated forward/backward, and fp16 overflow / NaN / Inf behaviour (docs/bad_inputs.md, "Numerics")."""

from __future__ import annotations

import gc
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from spikeforge import ops, reference, testing
from spikeforge._native import native

from spikeforge.testing import needs_native

from neuron_helpers import call_native_forward, native_fwd_args

SANITIZED = native is not None and bool(getattr(native, "sanitizers", lambda: "")())


def dyadic(shape, lo=-8, hi=24, denom=8, dtype=torch.float32, device="cpu", seed=0):
    """spikeforge.testing.dyadic from its own generator: the same data whatever ran before in the test."""
    return testing.dyadic(shape, lo, hi, denom, dtype, device, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# 1. native layer: bad arguments raise (never crash) and write nothing
# ------------------------------------------------------------------------------------------------
BIG = 1 << 32


def _psn_fwd(**over):
    T, N = 4, 8
    a = dict(
        x=torch.randn(T, N),
        w=torch.randn(T, T),
        b=torch.randn(T),
        spike=torch.full((T, N), 7.0),
        h_out=None,
        T_out=T,
        T_in=T,
        N=N,
        band=0,
        surrogate=1,
        alpha=2.0,
        num_threads=1,
        stream=0,
    )
    a.update(over)
    return a


def _psn_bwd(**over):
    T, N = 4, 8
    a = dict(
        grad_spike=torch.randn(T, N),
        x=torch.randn(T, N),
        w=torch.randn(T, T),
        b=torch.randn(T),
        grad_x=torch.full((T, N), 7.0),
        partials=torch.zeros(1, T * (T + 1), dtype=torch.float64),
        grad_w=torch.full((T, T), 7.0),
        grad_b=torch.full((T,), 7.0),
        T_out=T,
        T_in=T,
        N=N,
        band=0,
        surrogate=1,
        alpha=2.0,
        num_threads=1,
        stream=0,
    )
    a.update(over)
    return a


# case -> (overrides, exception, message pattern)
NATIVE_NEURON_FWD = {
    # T * N = 2^64 + 2^32 wraps to 2^32 in int64: must be refused, not compared against numel
    "T_times_N_overflows": (dict(T=BIG, N=BIG + 1), ValueError, "overflows"),
    # C * S = 2^64 wrapped to 0 and the layout check divided by it (SIGFPE) before the fix
    "C_times_S_overflows": (dict(w=torch.zeros(1), C=BIG, S=BIG), ValueError, r"k \(PLIF"),
    "negative_T": (dict(T=-3), ValueError, "negative"),
    "x_meta": (dict(x=torch.empty(3, 8, device="meta")), ValueError, "x_seq"),
    "x_string": (dict(x="tensor"), ValueError, "x_seq"),
    "spike_readonly_shape": (dict(spike=torch.full((8, 3), 7.0).t()), ValueError, "spike_seq"),
    "x_9_dims": (dict(x=torch.randn(3, 8, *[1] * 7)), ValueError, "8 dimensions"),
    # the ops refuse alpha <= 0 by name; the raw op neuron_fwd reached the kernels with it (a gradient of the
    # wrong sign)
    "alpha_negative": (dict(alpha=-4.0), ValueError, "alpha"),
    "alpha_zero": (dict(alpha=0.0), ValueError, "alpha"),
    # a layout entry that is not an integer: std::bad_cast (a RuntimeError naming nothing) before
    "layout_float": (dict(C=1.5), ValueError, "layouts: expected integers"),
    "layout_string": (dict(S="1"), ValueError, "layouts: expected integers"),
}

NATIVE_PSN_FWD = {
    "weight_numel": (dict(w=torch.randn(4, 3)), ValueError, "weight"),
    "weight_dtype": (dict(w=torch.randn(4, 4, dtype=torch.float64)), ValueError, "weight"),
    "bias_numel": (dict(b=torch.randn(5)), ValueError, "bias"),
    "spike_numel": (dict(spike=torch.full((4, 7), 7.0)), ValueError, "spike_seq"),
    "spike_dtype": (dict(spike=torch.full((4, 8), 7.0, dtype=torch.float16)), ValueError, "spike_seq"),
    "x_noncontiguous": (dict(x=torch.randn(8, 4).t()), ValueError, "x_seq"),
    "x_int": (dict(x=torch.zeros(4, 8, dtype=torch.int64)), ValueError, "dtype"),
    "N_mismatch": (dict(N=9), ValueError, "x_seq"),
    "T_in_times_N_overflows": (dict(T_in=BIG, N=BIG + 1), ValueError, "overflows"),
    "T_in_max": (dict(T_in=(1 << 63) - 1, N=0), ValueError, "T_in"),
    "band_negative": (dict(band=-1), ValueError, "k"),
    "surrogate_id": (dict(surrogate=8), ValueError, "surrogate"),
    "alpha_nan": (dict(alpha=float("nan")), ValueError, "alpha"),
    "h_out_numel": (dict(h_out=torch.zeros(3, 8)), ValueError, "h_seq"),
}

NATIVE_PSN_BWD = {
    "partials_missing": (dict(partials=None), ValueError, "partials"),
    "partials_dtype": (dict(partials=torch.zeros(1, 20)), ValueError, "partials"),
    "partials_numel": (dict(partials=torch.zeros(1, 19, dtype=torch.float64)), ValueError, "partials"),
    "grad_x_numel": (dict(grad_x=torch.full((4, 7), 7.0)), ValueError, "grad_x"),
    "grad_weight_dtype": (dict(grad_w=torch.full((4, 4), 7.0, dtype=torch.float16)), ValueError, "grad_weight"),
    "grad_bias_numel": (dict(grad_b=torch.full((3,), 7.0)), ValueError, "grad_bias"),
    "grad_spike_dtype": (dict(grad_spike=torch.randn(4, 8, dtype=torch.float64)), ValueError, "grad_spike"),
    "surrogate_id": (dict(surrogate=-2), ValueError, "surrogate"),
}


def _untouched(a, names):
    for n in names:
        t = a.get(n)
        if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.is_floating_point():
            assert t.eq(7.0).all(), f"{n} was written before the error"


@needs_native
@pytest.mark.parametrize("case", list(NATIVE_NEURON_FWD))
def test_native_neuron_forward_rejects(case):
    over, exc, pattern = NATIVE_NEURON_FWD[case]
    a = native_fwd_args(**over)
    with pytest.raises(exc, match=pattern):
        call_native_forward(a)
    _untouched(a, ["spike", "v_out"])


@needs_native
@pytest.mark.parametrize("case", list(NATIVE_PSN_FWD))
def test_native_psn_forward_rejects(case):
    over, exc, pattern = NATIVE_PSN_FWD[case]
    a = _psn_fwd(**over)
    with pytest.raises(exc, match=pattern):
        native.psn_forward(*a.values())
    _untouched(a, ["spike"])


@needs_native
@pytest.mark.parametrize("case", list(NATIVE_PSN_BWD))
def test_native_psn_backward_rejects(case):
    over, exc, pattern = NATIVE_PSN_BWD[case]
    a = _psn_bwd(**over)
    with pytest.raises(exc, match=pattern):
        native.psn_backward(*a.values())
    _untouched(a, ["grad_x", "grad_w", "grad_b"])


@needs_native
def test_native_valid_calls_of_the_tables_work():
    """The tables' base arguments are valid: each rejection above is caused by its one override."""
    a = native_fwd_args()
    call_native_forward(a)
    s, v = reference.lif(a["x"])
    assert torch.equal(a["spike"], s) and torch.equal(a["v_out"], v)
    a = _psn_fwd()
    native.psn_forward(*a.values())
    assert torch.equal(a["spike"], reference.psn(a["x"], a["w"], a["b"]))
    a = _psn_bwd()
    native.psn_backward(*a.values())
    assert not a["grad_x"].eq(7.0).all() and not a["grad_b"].eq(7.0).all()


@needs_native
@pytest.mark.parametrize("num_threads", [-5, 0, 1, 100_000])
def test_native_thread_count_out_of_range(num_threads):
    """Any thread count is clamped (100000 crashed libgomp before); the result does not depend on it."""
    x = dyadic((3, 5000))
    a = native_fwd_args(x=x, spike=torch.empty(3, 5000), v_out=torch.empty(5000), N=5000, num_threads=num_threads)
    call_native_forward(a)
    s, v = reference.lif(x)
    assert torch.equal(a["spike"], s) and torch.equal(a["v_out"], v)


# ------------------------------------------------------------------------------------------------
# 2. Python validates before any native call
# ------------------------------------------------------------------------------------------------
class _NoNative:
    """Stands in for spikeforge._C: any use fails the test (a bad call must never get this far)."""

    def __getattr__(self, name):
        raise AssertionError(f"native.{name} reached with invalid arguments")


def test_python_validates_before_native(monkeypatch):
    import test_neuron_inputs as tni
    import test_psn as tp
    import importlib

    # the modules themselves (spikeforge.ops.psn as an attribute is the psn function)
    common, on, op = (importlib.import_module(f"spikeforge.ops.{m}") for m in ("_common", "neuron", "psn"))

    stub = _NoNative()
    monkeypatch.setattr(on, "native", stub)
    monkeypatch.setattr(op, "native", stub)
    monkeypatch.setattr(common, "native", stub)
    monkeypatch.setattr(common, "_has_native", lambda device: True)
    calls = [(c[0], c[1], c[2]) for c in tni._bad_calls()] + [(c[0], c[1], c[2]) for c in tp._bad_calls("cpu")]
    assert len(calls) > 80
    for _name, fn, exc in calls:
        with pytest.raises(exc):
            fn()


# ------------------------------------------------------------------------------------------------
# 3. determinism
# ------------------------------------------------------------------------------------------------
def _neuron_run(kind, x, w, g_s, g_v, dtype):
    xl = x.clone().requires_grad_()
    wl = None if w is None else w.clone().requires_grad_()
    if kind == "plif":
        s, v = ops.plif(xl, wl, return_v="seq")
    elif kind == "lif":
        s, v = ops.lif(xl, tau=3.0, v_reset=None, return_v="seq")
    else:
        s, v = ops.if_neuron(xl, return_v="seq")
    ((s.float() * g_s).sum() + (v.float() * g_v).sum()).backward()
    return [s, v, xl.grad] + ([wl.grad] if wl is not None else [])


def _psn_run(op, x, w, b, g):
    xl, wl, bl = (t.clone().requires_grad_() for t in (x, w, b))
    s = {
        "psn": lambda: ops.psn(xl, wl, bl),
        "masked": lambda: ops.masked_psn(xl, wl, bl, 3, 0.5),
        "masked1": lambda: ops.masked_psn(xl, wl, bl, 3),
        "sliding": lambda: ops.sliding_psn(xl, wl, bl),
    }[op]()
    (s.float() * g).sum().backward()
    return [s, xl.grad, wl.grad, bl.grad]


def _psn_inputs(op, T, N, device, dtype=torch.float32):
    x = torch.randn(T, N, device=device).to(dtype)
    if op == "sliding":
        return x, torch.randn(3, device=device), torch.randn((), device=device)
    return x, torch.randn(T, T, device=device) / T, torch.randn(T, device=device)


def _bits(t):
    return (
        t.contiguous().view(-1).view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    )


def _assert_bitwise(runs):
    """Every tensor of every run has the bits of the first run's (NaNs included)."""
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


@pytest.mark.parametrize("kind", ["plif", "plif_c", "lif", "if"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_neuron_bitwise_across_runs_and_threads(device, kind, dtype):
    """Outputs and all gradients (PLIF's w gradient is a reduction over every neuron) are bitwise equal
    run to run and for 1, 2 and 3 threads. N spans several CPU chunks with a ragged tail."""
    T, B, C, S = 6, 3, 5, 997  # N = 14955: four chunks at T = 6 (4096) plus a tail
    x = torch.randn(T, B, C, S, device=device).to(dtype)
    w = None
    if kind == "plif":
        w = torch.tensor(0.3, device=device)
    elif kind == "plif_c":
        w = torch.linspace(-1, 1, C, device=device)
    g_s, g_v = torch.randn(T, B, C, S, device=device), torch.randn(T, B, C, S, device=device)
    k = "plif" if kind.startswith("plif") else kind
    runs = []
    for threads in (1, 2, 3, 2) if device == "cpu" else (1, 1):
        torch.set_num_threads(threads)
        runs.append(_neuron_run(k, x, w, g_s, g_v, dtype))
    _assert_bitwise(runs)


@pytest.mark.parametrize("op", ["psn", "masked", "masked1", "sliding"])
def test_psn_bitwise_across_runs_and_threads(device, op):
    """Weight and bias gradients are reduced over 3 partitions of 2^14 neurons (float64 partials, fixed
    order): bitwise equal run to run and for any thread count."""
    T, N = 5, 2 * (1 << 14) + 1234
    x, w, b = _psn_inputs(op, T, N, device)
    g = torch.randn(T, N, device=device)
    runs = []
    for threads in (1, 2, 3, 1) if device == "cpu" else (1, 1):
        torch.set_num_threads(threads)
        runs.append(_psn_run(op, x, w, b, g))
    _assert_bitwise(runs)


@pytest.fixture
def deterministic_mode():
    prev = torch.are_deterministic_algorithms_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    # torch then fills every torch.empty with NaN: an output element a kernel failed to write shows up
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(prev)
    torch.utils.deterministic.fill_uninitialized_memory = prev_fill


@pytest.mark.parametrize("shape", [(4, 3, 1000), (1, 7), (5, 0), (0, 6), (3, 2, 4099)])
def test_deterministic_mode_neurons(device, deterministic_mode, shape):
    """Under torch.use_deterministic_algorithms(True) the ops run (nothing they use is nondeterministic),
    every output element is written (torch pre-fills empty tensors with NaN) and the results equal the
    normal mode's bit for bit."""
    x = dyadic(shape, device=device)
    w = torch.zeros(shape[2], device=device) if len(shape) == 3 else torch.tensor(0.0, device=device)
    v0 = dyadic(shape[1:], device=device, seed=1)
    g = torch.randn(shape, device=device)
    det = []
    for fn in (
        lambda a, v: ops.lif(a, v, return_v="seq"),
        lambda a, v: ops.plif(a, w, v),
        lambda a, v: ops.if_neuron(a, v, v_reset=None),
    ):
        xl, vl = x.clone().requires_grad_(), v0.clone().requires_grad_()
        s, v = fn(xl, vl)
        if s.numel():
            ((s * g).sum() + v.sum()).backward()
        else:
            v.sum().backward()
        det.append([s, v, xl.grad, vl.grad])
    for outs in det:
        for t in outs:
            assert not t.isnan().any()
    torch.use_deterministic_algorithms(False)
    x2 = x.clone().requires_grad_()
    s2, v2 = ops.lif(x2, v0, return_v="seq")
    assert torch.equal(s2, det[0][0]) and torch.equal(v2, det[0][1])


@pytest.mark.parametrize("op", ["psn", "masked", "masked1", "sliding"])
@pytest.mark.parametrize("N", [1, 300, 0])
def test_deterministic_mode_psn(device, deterministic_mode, op, N):
    T = 6
    x, w, b = _psn_inputs(op, T, N, device)
    g = torch.randn(T, N, device=device)
    outs = _psn_run(op, x, w, b, g)
    for t in outs:
        assert not t.isnan().any()
    torch.use_deterministic_algorithms(False)
    _assert_bitwise([outs, _psn_run(op, x, w, b, g)])


# ------------------------------------------------------------------------------------------------
# 4. concurrency: several Python threads at once
# ------------------------------------------------------------------------------------------------
@needs_native
def test_concurrent_calls_from_python_threads(device):
    """Eight tasks of every op family, forward and backward, run on four Python threads at once give
    exactly the single-threaded results."""
    tasks = []
    for i in range(8):
        if i % 2 == 0:
            x, w = torch.randn(6, 2, 4, 1500, device=device), torch.randn(4, device=device)
            g = torch.randn(6, 2, 4, 1500, device=device)
            tasks.append(lambda x=x, w=w, g=g: _neuron_run("plif", x, w, g, g, torch.float32))
        else:
            op = ("psn", "masked", "masked1", "sliding")[i // 2]
            x, w, b = _psn_inputs(op, 5, 40000, device)
            g = torch.randn(5, 40000, device=device)
            tasks.append(lambda op=op, x=x, w=w, b=b, g=g: _psn_run(op, x, w, b, g))
    expected = [t() for t in tasks]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda t: t(), tasks))
            for e, r in zip(expected, got):
                _assert_bitwise([e, r])


@needs_native
def test_forged_packed_bits_stay_in_bounds():
    """Packed spikes come from the ops' own packing, whose padding bits past the last column are zero; a caller
    of the raw ops (or of the native module) can pass any bits, and each set padding bit named a column (a
    row of the attention's D x D products) past the end: heap corruption in spike_bwd's weight gradient, the
    masked input gradient and ssa_bwd (found by a native-layer fuzz). The padding is now ignored (linear) or
    the slice's bits found again from the values (SSA): the results are those of the valid bits, and memory
    around the outputs is untouched."""
    from spikeforge._native import native as C

    M, N, K = 2, 16, 3
    gy, w, info = torch.ones(M, N), torch.ones(N, K), torch.tensor([M * K, 0])
    forged, real = torch.full((M, 1), -1, dtype=torch.int64), torch.full((M, 1), 7, dtype=torch.int64)
    args = (None, info, w, None, False, [], 1, 0, False, True, False)
    got = torch.ops.spikeforge.spike_bwd(gy, forged, *args)[1]
    assert torch.equal(got, torch.ops.spikeforge.spike_bwd(gy, real, *args)[1])
    for M in (4, 1):  # the by-row (M > K) and by-input tile paths
        gw = torch.zeros(N, 1)
        C.spike_linear_grad_weight(torch.full((M, 1), -1, dtype=torch.int64), None, torch.ones(M, N), gw, None, 1, 0)
        assert torch.equal(gw, torch.full((N, 1), float(M)))
    buf = torch.zeros(2 + 4096)
    C.spike_linear_grad_input_masked(
        torch.full((2, 1), -1, dtype=torch.int64), gy, torch.ones(N, 1), buf[:2].view(2, 1), None, 1, 0
    )
    assert torch.equal(buf[:2], torch.full((2,), 16.0)) and not buf[2:].any()
    T, B, Nt, D = 2, 1, 8, 4
    q = torch.zeros(T, B, Nt, D)
    words = 3 * T * B * (Nt * ((D + 63) // 64) + (Nt + 7) // 8)
    ssa = (0.125, 2.0, 1.0, 0.0, True, True, False, 0, 4.0, False, False, True)
    for _ in range(3):
        got = torch.ops.spikeforge.ssa_bwd(
            torch.ones_like(q), q, q, q, None, torch.full((words,), -1, dtype=torch.int64), *ssa
        )
        want = torch.ops.spikeforge.ssa_bwd(torch.ones_like(q), q, q, q, None, None, *ssa)
        assert all(torch.equal(a, b) for a, b in zip(got, want))


@needs_native
def test_conv_geometry_that_overflows_int64_is_refused():
    """A padding of 2^63 - 1 wrapped the native output-size check (signed overflow) into a match."""
    from spikeforge._native import native as C

    p = [2, 3, 5, 5, 4, 3, 3, 1, 5, 3, 1, 2**63 - 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="2\\^31 or more"):
        C.spike_conv2d_forward(
            torch.ones(2, 3, 5, 5), torch.ones(4, 3, 3, 3), None, torch.zeros(2, 4, 1, 5), None, None, p, 1, 0
        )


@needs_native
def test_op_inputs_leaves_other_threads_calls_alone():
    """op_inputs (the testing helper behind opcheck) swaps the op for a recorder while it runs: a call from
    another thread in that window got its own input back as the spikes (neuron ops) or an exception (spike
    layers); it now runs the real op."""
    from spikeforge.ops import neuron as N
    from spikeforge.ops import spike as S

    x = torch.randn(4, 100) * 3
    sp, w = (torch.rand(4, 10) < 0.3).float(), torch.randn(3, 10, requires_grad=True)
    cases = [
        (N.op_inputs, lambda: ops.lif(x)[0], (x,)),
        (S.op_inputs, lambda: ops.spike_linear(sp, w), (sp, w)),
    ]
    for op_inputs, call, args in cases:
        want, captured = call(), []
        inside, done = threading.Event(), threading.Event()

        def slow(*a, call=call):
            inside.set()
            assert done.wait(30)
            return call()

        th = threading.Thread(target=lambda: captured.append(op_inputs(slow, *args)))
        th.start()
        assert inside.wait(30)
        try:
            got = call()
        finally:
            done.set()
            th.join()
        assert torch.equal(got, want) and captured


@needs_native
def test_native_calls_release_the_gil():
    """While one thread is inside a long native call the main thread keeps running Python code: the
    bindings release the GIL (nb::gil_scoped_release). Were it held, no main-thread iteration could
    fall inside the call's interval."""
    T, N = 64, 1 << 18
    a = native_fwd_args(x=torch.randn(T, N), spike=torch.empty(T, N), v_out=torch.empty(N), T=T, N=N)
    span = {}
    started = threading.Event()

    def worker():
        started.set()
        t0 = time.perf_counter()
        for _ in range(3):
            call_native_forward(a)
        span["t"] = (t0, time.perf_counter())

    th = threading.Thread(target=worker)
    stamps = []
    th.start()
    started.wait()
    while th.is_alive():
        stamps.append(time.perf_counter())
    th.join()
    t0, t1 = span["t"]
    assert t1 - t0 > 0.01, "the native call was too short to tell"
    inside = [s for s in stamps if t0 + 0.2 * (t1 - t0) < s < t0 + 0.8 * (t1 - t0)]
    assert len(inside) > 10, f"main thread starved during {t1 - t0:.3f}s of native work: GIL held?"


# ------------------------------------------------------------------------------------------------
# 5. no leaks
# ------------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.skipif(SANITIZED, reason="ASan's quarantine holds freed memory: RSS is not flat by design")
def test_repeated_forward_backward_keeps_rss_flat():
    """Every [T, N] tensor here is 256 KiB: 200 iterations that leaked even one output, workspace or
    saved tensor per iteration would grow RSS by >= 50 MiB; the bound allows allocator noise only."""
    x = torch.randn(8, 2, 16, 256)
    w = torch.zeros(16, requires_grad=True)
    pw, pb = torch.randn(8, 8, requires_grad=True), torch.randn(8, requires_grad=True)

    def step():
        xl = x.clone().requires_grad_()
        s, v = ops.plif(xl, w, return_v="seq")
        s2, v2 = ops.lif_step(xl[0], v[0])
        p = ops.psn(xl, pw, pb) + ops.masked_psn(xl, pw, pb, 2)  # sliding_psn: the same native calls
        (s.sum() + v.sum() + s2.sum() + v2.sum() + p.sum()).backward()

    torch.set_num_threads(1)  # per-call overhead dominates at this size; the fixture restores it
    for _ in range(30):  # warm-up: allocator pools, autograd caches
        step()
    gc.collect()
    before = _rss_bytes()
    for _ in range(200):
        step()
    gc.collect()
    grown = _rss_bytes() - before
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 200 iterations"


# ------------------------------------------------------------------------------------------------
# 6. numerics: fp16 overflow, NaN and Inf propagation (docs/bad_inputs.md, "Numerics")
# ------------------------------------------------------------------------------------------------
def test_fp16_state_is_float32_and_outputs_saturate(device):
    """IF with soft reset integrating 30000 per step: the float32 state passes 65504 (fp16's max)
    without harm; the returned potential is rounded to fp16 once, so it reads inf exactly where the
    float32 value exceeds the fp16 range, and the spikes stay correct."""
    x = torch.full((4, 3), 30000.0, device=device)
    s16, v16 = ops.if_neuron(x.half(), v_reset=None, return_v="seq")
    s32, v32 = ops.if_neuron(x, v_reset=None, return_v="seq")
    assert torch.equal(s16.float(), s32) and s32.eq(1).all()
    assert torch.equal(v16, v32.half())
    assert torch.isinf(v16[2:]).all() and torch.isfinite(v16[:2]).all()


def test_fp16_psn_accumulates_in_float32(device):
    """H = W X + b in float32: 2*60000 - 2*60000 + 0.5 = 0.5 -> spike. An fp16 GEMM would overflow to
    inf - inf = NaN and not fire."""
    x = torch.tensor([[60000.0], [60000.0]], device=device).half()
    w = torch.tensor([[2.0, -2.0], [1.0, 0.0]], device=device)
    b = torch.tensor([0.5, -60001.0], device=device)
    s = ops.psn(x, w, b)
    assert s.dtype == torch.float16 and s.flatten().tolist() == [1.0, 0.0]


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_nan_stays_in_its_neuron(device, v_reset):
    """A NaN input never fires and, with no reset, keeps that neuron's V NaN for the rest of the
    sequence; its gradient is NaN up to that step. Every other neuron is bitwise unaffected."""
    x = dyadic((5, 2, 6), device=device)
    xn = x.clone()
    xn[2, 1, 3] = float("nan")
    w = torch.tensor([0.0, -1.0] * 3, device=device)  # per channel (x dim 2)
    for fn in (
        lambda a: ops.lif(a, v_reset=v_reset, return_v="seq"),
        lambda a: ops.if_neuron(a, v_reset=v_reset, return_v="seq"),
        lambda a: ops.plif(a, w, v_reset=v_reset, return_v="seq"),
    ):
        xl = xn.clone().requires_grad_()
        s, v = fn(xl)
        (s.sum() + v.nan_to_num(0.0).sum()).backward()
        s0, v0 = fn(x)
        other = torch.ones_like(x, dtype=torch.bool)
        other[:, 1, 3] = False
        assert torch.equal(s[other], s0[other]) and torch.equal(v[other], v0[other])
        assert s[2:, 1, 3].eq(0).all() and v[2:, 1, 3].isnan().all()
        assert torch.equal(s[:2, 1, 3], s0[:2, 1, 3])
        assert xl.grad[:3, 1, 3].isnan().all() and not xl.grad[other].isnan().any()


@pytest.mark.parametrize("op", ["lif", "if", "plif"])
def test_inf_soft_reset_matches_reference(device, op):
    """Soft reset with +-inf inputs: kernels and reference agree (inf fires and stays inf for IF;
    LIF's leak turns an infinite V into NaN at the next step: inf - inf)."""
    x = dyadic((4, 5), device=device)
    x[0, 0], x[1, 1], x[0, 2], x[2, 3] = float("inf"), float("inf"), float("-inf"), float("-inf")
    kw = dict(v_reset=None, return_v="seq")
    w = torch.tensor(0.0, device=device)
    call = {
        "lif": lambda m: m.lif(x, **kw),
        "if": lambda m: m.if_neuron(x, **kw),
        "plif": lambda m: m.plif(x, w, **kw),
    }[op]
    s, v = call(ops)
    sr, vr = call(reference)
    assert torch.equal(s, sr)
    assert torch.equal(v.isnan(), vr.isnan()) and torch.equal(v.nan_to_num(), vr.nan_to_num())


def test_inf_hard_reset_selects_v_reset(device):
    """Hard reset of an infinite H is V = v_reset (the kernels select: S ? v_reset : H). The reference's
    arithmetic form S*v_reset + (1-S)*H gives 0*inf = NaN there; finite H agrees exactly."""
    x = torch.tensor([[float("inf")], [0.5], [0.75]], device=device)
    for fn in (ops.lif, ops.if_neuron):
        s, v = fn(x, v_reset=-0.25, return_v="seq")
        assert s[0].item() == 1.0 and v[0].item() == -0.25
        s_ref, v_ref = (reference.lif if fn is ops.lif else reference.if_neuron)(
            x[1:], torch.full((1,), -0.25, device=device), v_reset=-0.25, return_v="seq"
        )
        assert torch.equal(s[1:], s_ref) and torch.equal(v[1:], v_ref)


def test_minus_inf_with_a_detached_hard_reset_has_the_references_finite_gradient(device):
    """An IF neuron driven by -inf never fires and its V stays -inf (a leak would turn it into NaN: -inf + inf).
    With detach_reset the reset's term (v_reset - H) g' of the gradient is cut: 0, as in the reference (and
    SpikingJelly), not inf * 0 = NaN."""
    x = dyadic((4, 2, 3), device=device)
    x[0, 0, 1] = float("-inf")
    g = dyadic((4, 2, 3), seed=1, device=device)
    grads = []
    for m in (ops, reference):
        xl = x.clone().requires_grad_(True)
        s, v = m.if_neuron(xl, v_reset=0.0, detach_reset=True, surrogate="atan")
        (gx,) = torch.autograd.grad((s * g).sum() + v.sum(), xl)
        grads.append(gx)
    assert torch.isfinite(grads[1]).all()  # the ground truth is finite
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["psn", "masked1", "sliding"])
def test_nan_input_psn_reaches_only_its_outputs(device, op):
    """PSN: a NaN in X[i] makes H[t] NaN (no spike) for every t that reads step i: all t for the dense
    psn (0 * NaN is NaN), only t in [i, i + k - 1] for the banded masked (lam = 1) and sliding PSN,
    whose kernels never read outside the causal band. Other neurons are unaffected."""
    T, k, i = 6, 3, 2
    x = dyadic((T, 4), device=device)
    xn = x.clone()
    xn[i, 1] = float("nan")
    w, b = dyadic((T, T), -4, 4, device=device, seed=3), torch.full((T,), -0.5, device=device)
    taps, tb = torch.tensor([0.25, 0.5, 1.0], device=device), torch.tensor(-0.5, device=device)
    f = {
        "psn": lambda a: ops.psn(a, w, b),
        "masked1": lambda a: ops.masked_psn(a, w, b, k),
        "sliding": lambda a: ops.sliding_psn(a, taps, tb),
    }[op]
    s, s0 = f(xn), f(x)
    hit = torch.zeros(T, dtype=torch.bool)
    hit[(slice(None) if op == "psn" else slice(i, i + k))] = True
    assert s[hit, 1].eq(0).all()
    assert torch.equal(s[~hit.to(s.device), 1], s0[~hit.to(s.device), 1])
    assert torch.equal(s[:, [0, 2, 3]], s0[:, [0, 2, 3]])
