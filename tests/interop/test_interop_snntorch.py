"""spikeforge.interop.snntorch: patched snnTorch neurons and models against snnTorch's own modules, called the
tutorials' way (one step per call) and a whole sequence per call.

Spikes, states, the stored reset and dtypes are compared bit for bit; gradients with a tolerance (the loop path
applies beta's clamp once per sequence; the fused kernels evaluate the same surrogate functions with their own
rounding and accumulate BPTT in their order). Sequences are long and random, with membranes crossing the
threshold often. Model-level cases use dyadic weights and inputs so that folding time into the batch of a
convolution or linear layer is exact too. Skipped when snnTorch is absent.
"""

import copy

import pytest
import torch
from torch import nn

from spikeforge.testing import dyadic

snn = pytest.importorskip("snntorch")
from snntorch import surrogate, utils  # noqa: E402

from spikeforge import ops  # noqa: E402
from spikeforge.interop import snntorch as sfs  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def _close(got, want, rtol=RTOL, atol=ATOL, msg=None):
    """Gradients: BPTT sums many terms, in another order on each path (and the surrogate rounds differently), so
    the absolute tolerance scales with the largest gradient."""
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol * scale, msg=msg)


_FUSED_OPS = ("leaky", "synaptic", "alpha_neuron")


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the fused op calls (a fused path that silently fell back to the loop would not count)."""
    calls = []
    for name in _FUSED_OPS:
        real = getattr(ops, name)

        def spy(*a, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(sfs.ops, name, spy)
    return calls


def _per_step(nrn, x):
    """snnTorch's own convention: one call per step -> the per-step outputs stacked over time."""
    outs = [nrn(x[t]) for t in range(x.shape[0])]
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(o) for o in zip(*outs))
    return (torch.stack(outs),)


_STATE_NAMES = {"Leaky": ("mem",), "Synaptic": ("syn", "mem"), "Alpha": ("syn_exc", "syn_inh", "mem")}


def _model(nrn):
    return next(name for name in ("Alpha", "Synaptic", "Leaky") if isinstance(nrn, getattr(snn, name)))


def _states(nrn):
    return [getattr(nrn, n) for n in _STATE_NAMES[_model(nrn)]] + [nrn.reset]


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        assert torch.equal(g, w), (g != w).sum()


def _check_sequence_call(nrn, x, *, path, calls=None, rtol=RTOL, atol=ATOL, backend="auto"):
    """nrn in step_mode "m" on x [T, B, ...] == T snnTorch calls: outputs, final states (and the stored reset),
    dtypes bit for bit, gradients of x and of every parameter close. path: the path this call must take."""
    ref = copy.deepcopy(nrn)
    same, report = sfs.patch(nrn, step_mode="m", backend=backend)
    assert same is nrn and nrn.step_mode == "m" and report.neurons[0][0] == "<model>"
    if x.dtype == torch.float32:
        assert nrn.path == path, nrn.fused_blocker()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    n_calls = len(calls) if calls is not None else 0
    want = _per_step(ref, x1)
    got = nrn(x2)
    got = got if isinstance(got, tuple) else (got,)
    if calls is not None:
        assert len(calls) - n_calls == (1 if path == "fused" else 0), nrn.fused_blocker(x2, tuple(_states(ref)[:-1]))
    assert 0.05 < (want[0] != 0).float().mean() < 0.95, "the case must fire often and not always"
    _assert_same(got, want)
    _assert_same(_states(nrn), _states(ref))
    if not any(o.requires_grad for o in want):  # surrogate_disable: no gradient at all, on either side
        assert not any(o.requires_grad for o in got)
        return nrn, ref
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(w.shape, generator=gen).to(w.dtype) for w in want]
    sum((w * o).sum() for w, o in zip(weights, want) if o.requires_grad).backward()
    sum((w * o).sum() for w, o in zip(weights, got) if o.requires_grad).backward()
    if x1.grad is not None:
        _close(x2.grad, x1.grad, rtol, atol)
    for (name, p1), (_, p2) in zip(ref.named_parameters(), nrn.named_parameters()):
        _close(p2.grad, p1.grad, rtol, atol, msg=name)
    return nrn, ref


def _inputs(T=96, B=3, N=16, scale=0.6, shift=0.25, dtype=torch.float32, seed=0):
    """Random drive around the threshold: membranes cross it often in both directions."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, B, N, generator=g) * scale + shift).to(dtype)


# ------------------------------------------------------------------------------------------------------
# one neuron, a sequence per call == one step per call, bit for bit: every configuration the fused ops
# compute runs fused
# ------------------------------------------------------------------------------------------------------
SURROGATES = {
    "atan": None,
    "atan3": lambda: surrogate.atan(alpha=3.0),
    "fast_sigmoid25": lambda: surrogate.fast_sigmoid(25),
    "fast_sigmoid4": lambda: surrogate.fast_sigmoid(4),
    "sigmoid5": lambda: surrogate.sigmoid(slope=5),
    "triangular": lambda: surrogate.triangular(),
    "triangular05": lambda: surrogate.triangular(threshold=0.5),
    "ste": lambda: surrogate.straight_through_estimator(),
    "spike_rate_escape": lambda: surrogate.spike_rate_escape(),
    "spike_rate_escape2": lambda: surrogate.spike_rate_escape(beta=2, slope=10),
    "heaviside": lambda: surrogate.heaviside(),
}
N = 16
PARAM_CASES = {
    "plain": {},
    "learn_beta_threshold": dict(learn_beta=True, learn_threshold=True),
    "per_neuron_beta": dict(beta=torch.linspace(0.5, 1.0, N)),
    "per_neuron_learn": dict(
        beta=torch.linspace(0.6, 0.95, N), threshold=torch.linspace(0.5, 1.0, N), learn_beta=True, learn_threshold=True
    ),
    "graded": dict(graded_spikes_factor=2.0),
    "learn_graded": dict(graded_spikes_factor=1.5, learn_graded_spikes_factor=True),
    "surrogate_disable": dict(surrogate_disable=True),
    "surrogate_disable_learn_graded": dict(
        surrogate_disable=True, graded_spikes_factor=1.5, learn_graded_spikes_factor=True
    ),
}


def _leaky(reset, reset_delay, params="plain", spike_grad=None, **kw):
    args = dict(beta=0.9, threshold=0.8, reset_mechanism=reset, reset_delay=reset_delay)
    args.update(PARAM_CASES[params])
    if spike_grad is not None:
        args["spike_grad"] = SURROGATES[spike_grad]()
    args.update(kw)
    return snn.Leaky(**args)


@pytest.mark.parametrize("spike_grad", sorted(SURROGATES))
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_leaky_every_snntorch_surrogate_runs_fused(spike_grad, reset, fused_calls):
    nrn = _leaky(reset, True, spike_grad=None if spike_grad == "atan" else spike_grad, init_hidden=True, output=True)
    _check_sequence_call(nrn, _inputs(), path="fused", calls=fused_calls)


def test_surrogate_of_reads_each_closure_once_and_forgets_it():
    import gc

    sg = surrogate.fast_sigmoid(slope=7)
    assert sfs.surrogate_of(sg) == ("fast_sigmoid", 7.0, None)
    assert sg in sfs._TWIN_OF  # cached: a sequence call asks twice (blocker, then the run)
    assert sfs.surrogate_of(sg) == ("fast_sigmoid", 7.0, None)
    assert sfs.surrogate_of(surrogate.fast_sigmoid(slope=3)) == ("fast_sigmoid", 3.0, None)  # per closure
    assert sfs.surrogate_of(surrogate.atan(alpha=-1.0)) is None  # a parameter the op refuses, cached as such
    n = len(sfs._TWIN_OF)
    del sg
    gc.collect()
    assert len(sfs._TWIN_OF) < n  # the closure gone, its entry too


@pytest.mark.parametrize(
    "shape,step",
    [
        ((), (2, 3)),
        ((3,), (2, 3)),
        ((1, 3), (2, 3)),
        ((2, 1), (2, 3)),
        ((2, 3), (2, 3)),
        ((4,), (2, 3)),
        ((2,), (2, 3)),
        ((1, 2, 3), (2, 3)),
        ((3, 2, 3), (2, 3)),
        ((0,), (2, 0)),
        ((1,), (2, 0)),
        ((2,), (2, 0)),
    ],
)
def test_parameter_shape_rule_is_torch_broadcasting(shape, step):
    try:
        expected = tuple(torch.broadcast_shapes(shape, step)) == step
    except RuntimeError:
        expected = False
    assert sfs._broadcasts_to(shape, step) == expected


@pytest.mark.parametrize("params", sorted(PARAM_CASES))
@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_leaky_every_option_runs_fused(reset, reset_delay, params, fused_calls):
    nrn = _leaky(reset, reset_delay, params, init_hidden=True, output=True)
    _check_sequence_call(nrn, _inputs(shift=0.1 if reset == "none" else 0.25), path="fused", calls=fused_calls)


@pytest.mark.parametrize("init_hidden,output", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("model", ["Leaky", "Synaptic", "Alpha"])
def test_calling_conventions_fused(model, init_hidden, output, fused_calls):
    """init_hidden / output decide what a call returns; the per-step states (Synaptic's syn, Alpha's syn_exc
    and syn_inh) come out bitwise too, with their gradients."""
    nrn = {
        "Leaky": lambda: snn.Leaky(beta=0.9, threshold=0.8, init_hidden=init_hidden, output=output),
        "Synaptic": lambda: snn.Synaptic(alpha=0.9, beta=0.8, init_hidden=init_hidden, output=output),
        "Alpha": lambda: snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5, init_hidden=init_hidden, output=output),
    }[model]()
    x = _inputs(scale=0.4, shift=0.12) if model == "Synaptic" else _inputs()
    _check_sequence_call(nrn, x, path="fused", calls=fused_calls)


SYNAPTIC_CASES = {
    "plain": {},
    "learn": dict(learn_alpha=True, learn_beta=True, learn_threshold=True),
    "per_neuron": dict(alpha=torch.linspace(0.5, 0.95, N), beta=torch.linspace(0.6, 0.9, N)),
    "fast_sigmoid": dict(spike_grad=surrogate.fast_sigmoid(10)),
    "surrogate_disable": dict(surrogate_disable=True),
}


@pytest.mark.parametrize("case", sorted(SYNAPTIC_CASES))
@pytest.mark.parametrize("reset_delay", [True, False])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_synaptic_runs_fused(reset, reset_delay, case, fused_calls):
    kw = dict(alpha=0.8, beta=0.7, threshold=0.75, reset_mechanism=reset, reset_delay=reset_delay)
    kw.update(copy.deepcopy(SYNAPTIC_CASES[case]))
    nrn = snn.Synaptic(**kw)
    _check_sequence_call(
        nrn, _inputs(scale=0.5, shift=0.1 if reset != "none" else 0.03), path="fused", calls=fused_calls
    )


# (snnTorch 1.0's Alpha(learn_alpha=True) fails in its __init__; a learnable alpha is assigned afterwards)
ALPHA_CASES = {
    "plain": {},
    "learn": dict(learn_beta=True, learn_threshold=True),
    "per_neuron": dict(alpha=torch.linspace(0.85, 0.95, N), beta=torch.linspace(0.6, 0.8, N)),
    "fast_sigmoid": dict(spike_grad=surrogate.fast_sigmoid(10)),
    "surrogate_disable": dict(surrogate_disable=True),
}


@pytest.mark.parametrize("case", sorted(ALPHA_CASES))
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_alpha_runs_fused(reset, case, fused_calls):
    kw = dict(alpha=0.9, beta=0.8, threshold=0.5, reset_mechanism=reset)
    kw.update(copy.deepcopy(ALPHA_CASES[case]))
    nrn = snn.Alpha(**kw)
    if case == "learn":
        nrn.alpha = nn.Parameter(nrn.alpha.clone())
    _check_sequence_call(nrn, _inputs(scale=0.5, shift=0.1), path="fused", calls=fused_calls)


def test_graded_spikes_factor_of_synaptic_and_alpha():
    """snnTorch's fire() scales every model's spikes by graded_spikes_factor (a buffer of Synaptic / Alpha too)."""
    for nrn in (
        snn.Synaptic(alpha=0.8, beta=0.7, threshold=0.75, reset_delay=False),
        snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5),
    ):
        nrn.graded_spikes_factor = torch.tensor(3.0)
        _check_sequence_call(nrn, _inputs(scale=0.5, shift=0.1), path="fused")


# ------------------------------------------------------------------------------------------------------
# what keeps snnTorch's own arithmetic (the loop), and says why
# ------------------------------------------------------------------------------------------------------
def _custom_fast_sigmoid(input_, grad_input, spikes):
    return grad_input / (25 * torch.abs(input_) + 1.0) ** 2


def _alpha_beta_overtaken():
    """A beta set (or learnt) past alpha after construction: snnTorch computes it, ops.alpha_neuron refuses it."""
    nrn = snn.Alpha(alpha=0.9, beta=0.8, threshold=0.1)
    nrn.beta = torch.tensor(0.95)
    return nrn


LOOP_CASES = {
    "alpha_beta_overtaken": (_alpha_beta_overtaken, "alpha <= beta"),
    "custom_surrogate": (
        lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.custom_surrogate(_custom_fast_sigmoid)),
        "no spikeforge twin",
    ),
    "sfs": (lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.SFS(slope=25, B=-1.0)), "no spikeforge twin"),
    "python_function": (
        lambda: snn.Synaptic(alpha=0.8, beta=0.7, spike_grad=lambda u: (u > 0).float()),
        "no spikeforge twin",
    ),
    "inhibition": (lambda: snn.Leaky(beta=0.9, inhibition=True), "inhibition"),
    "state_quant": (lambda: snn.Leaky(beta=0.9, state_quant=lambda u: torch.round(u * 8) / 8), "state_quant"),
    "alpha_state_quant": (
        lambda: snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5, state_quant=lambda u: torch.round(u * 8) / 8),
        "state_quant",
    ),
    "triangular_negative": (
        lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.triangular(threshold=-1.0)),
        "no spikeforge twin",
    ),
    "float64_per_neuron_beta": (
        lambda: snn.Leaky(beta=torch.linspace(0.5, 1.0, N, dtype=torch.float64)),
        "torch.float64",
    ),
}


@pytest.mark.parametrize("case", sorted(LOOP_CASES))
def test_what_runs_the_loop_and_why(case, fused_calls):
    make, why = LOOP_CASES[case]
    with pytest.warns(UserWarning) if case == "inhibition" else _nothing():
        nrn = make()
    _, report = sfs.patch(copy.deepcopy(nrn), step_mode="m")
    assert report.neurons[0][2].startswith("loop: ") and why in report.neurons[0][2], report
    x = _inputs(T=48, scale=0.5, shift=0.1 if _model(nrn) != "Leaky" else 0.25)
    _check_sequence_call(nrn, x, path="loop", calls=fused_calls, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["Leaky", "Synaptic"])
def test_coefficient_that_grows_the_state_restarts_it_every_step(model, fused_calls):
    """snnTorch zeroes a state whose shape is not the step's at the start of every step. A threshold of shape
    [1, B, N] for steps [B, N] makes every step's state [1, B, N]: such a neuron restarts at every step, on the
    loop path too (the fused ops refuse coefficients that do not broadcast to one step)."""
    x = _inputs(T=12, scale=0.5, shift=0.4)
    thr = torch.linspace(0.2, 0.6, x[0].numel()).reshape((1,) + tuple(x.shape[1:]))
    make = {
        "Leaky": lambda: snn.Leaky(beta=0.9, threshold=thr, learn_beta=True),
        "Synaptic": lambda: snn.Synaptic(alpha=0.8, beta=0.9, threshold=thr, learn_beta=True),
    }[model]
    nrn, ref = make(), make()
    sfs.patch(nrn, step_mode="m")
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    want, got = _per_step(ref, x1), nrn(x2)
    assert fused_calls == []
    _assert_same(got, want)
    _assert_same(_states(nrn), _states(ref))
    assert got[-1].shape[1:] == thr.shape
    sum(o.sum() for o in want).backward()
    sum(o.sum() for o in got).backward()
    _close(x2.grad, x1.grad)
    _close(nrn.beta.grad, ref.beta.grad)


@pytest.mark.parametrize("gsf", [0.0, float("inf")])
@pytest.mark.parametrize("model", ["Leaky", "Synaptic"])
def test_late_reset_with_a_factor_it_cannot_divide_by_runs_the_loop(model, gsf, fused_calls):
    """reset_delay=False resets by spk / graded_spikes_factor - R: with a factor of 0 or inf that is NaN (0/0,
    inf/inf) and so is snnTorch's membrane from the first spike on. The fused kernels reset by the 0/1 spike,
    so such a neuron runs the loop, with snnTorch's NaNs."""
    kw = dict(beta=0.9, threshold=0.5, reset_delay=False, learn_beta=True)
    make = {"Leaky": lambda: snn.Leaky(**kw), "Synaptic": lambda: snn.Synaptic(alpha=0.8, **kw)}[model]
    nrn, ref = make(), make()
    for m in (nrn, ref):  # (Synaptic takes no factor when built; the attribute is read on every step)
        m.graded_spikes_factor = torch.tensor(gsf)
    _, report = sfs.patch(nrn, step_mode="m")
    assert "graded_spikes_factor 0 or not finite" in report.neurons[0][2]
    x = _inputs(T=6, scale=0.5, shift=0.4)
    want, got = _per_step(ref, x), nrn(x)
    assert fused_calls == []
    assert want[-1].isnan().any()
    for g, w in zip(list(got) + _states(nrn), list(want) + _states(ref)):
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)


def _disabled_pair(model, **options):
    """(patched, reference) of one snnTorch model with surrogate_disable=True and a learnable beta, init_hidden
    and output on, and options."""
    kw = dict(beta=0.8, surrogate_disable=True, learn_beta=True, init_hidden=True, output=True, **options)
    make = {
        "Leaky": lambda: snn.Leaky(**kw),
        "Synaptic": lambda: snn.Synaptic(alpha=0.9, **kw),
        "Alpha": lambda: snn.Alpha(alpha=0.9, **kw),
    }[model]
    nrn, ref = make(), make()
    sfs.patch(nrn, step_mode="m")
    return nrn, ref


@pytest.mark.parametrize("model", ["Leaky", "Synaptic", "Alpha"])
def test_surrogate_disable_spikes_have_no_graph(model, fused_calls):
    """surrogate_disable: snnTorch's spike is a comparison (no graph: a loss over it reaches no state), and the
    fused path's spikes are the same. A NaN in one chunk's input then reaches no gradient through the spikes;
    a learnable graded_spikes_factor keeps its own graph."""
    nrn, ref = _disabled_pair(model, threshold=0.5)
    x1 = _inputs(T=6, scale=0.5, shift=0.4)
    x1[1, 0, 2] = float("nan")
    x2 = _inputs(T=6, scale=0.5, shift=0.4, seed=1)
    losses = []
    for m, per_step in ((ref, True), (nrn, False)):
        total = 0
        for x in (x1, x2):
            out = _per_step(m, x) if per_step else m(x)
            assert not out[0].requires_grad
            total = total + out[0].sum() + (out[-1].sum() if x is x2 else 0)
            m.reset_mem()
        total.backward()
        losses.append(total)
    assert len(fused_calls) == 2
    assert torch.isfinite(ref.beta.grad) and torch.isfinite(nrn.beta.grad)
    _close(nrn.beta.grad, ref.beta.grad)


@pytest.mark.parametrize("reset", ["zero", "none", "subtract"])
@pytest.mark.parametrize("model", ["Leaky", "Synaptic", "Alpha"])
def test_surrogate_disable_threshold_gradient_is_snntorchs(model, reset, fused_calls):
    """surrogate_disable with a learnable threshold: a zero or no reset never reads the threshold, so snnTorch
    gives it no gradient (None) and an optimiser leaves it alone; the fused path did the same, not a zero that
    AdamW's weight decay moved. A subtract reset reads it: the same gradient on both sides."""
    nrn, ref = _disabled_pair(model, threshold=1.0, learn_threshold=True, reset_mechanism=reset)
    x = _inputs(T=6, scale=1.0, shift=0.6)
    for m, per_step in ((ref, True), (nrn, False)):
        out = _per_step(m, x) if per_step else m(x)
        (out[0].sum() + out[-1].pow(2).sum()).backward()
    assert len(fused_calls) == 1
    if reset == "subtract":
        _close(nrn.threshold.grad, ref.threshold.grad)
    else:
        assert ref.threshold.grad is None and nrn.threshold.grad is None, nrn.threshold.grad
    _close(nrn.beta.grad, ref.beta.grad)


def test_report_of_a_float64_neuron_is_for_its_float64_calls(fused_calls):
    """After model.double(), a per-neuron beta is float64 and so are the calls: the report and `path` say
    "fused" (they assumed a float32 call, which such a beta would promote: "loop"), and the call fuses."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), snn.Leaky(beta=torch.full((3,), 0.9), init_hidden=True))
    net, report = sfs.patch(net.double(), step_mode="m")
    assert report.neurons[0][2] == "fused" and net[1].path == "fused", report
    net(torch.rand(5, 2, 4, dtype=torch.float64))
    assert len(fused_calls) == 1
    nrn = sfs.patch(snn.Leaky(beta=torch.full((3,), 0.9, dtype=torch.float64)), step_mode="m")[0]
    assert nrn.path == "loop" and "torch.float64" in nrn.fused_blocker()  # float32 parameters elsewhere: float32


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_backend_loop_gives_the_same_numbers_as_fused(fused_calls):
    for make in (
        lambda: snn.Leaky(beta=0.9, threshold=0.8, reset_delay=False, learn_beta=True),
        lambda: snn.Synaptic(alpha=0.8, beta=0.7, threshold=0.75, learn_threshold=True),
        lambda: snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5, reset_mechanism="subtract"),
    ):
        _check_sequence_call(make(), _inputs(scale=0.5, shift=0.15), path="loop", calls=fused_calls, backend="loop")


def test_reset_mechanism_changed_after_construction_with_late_reset():
    """snnTorch picks its state function in __init__ and the late reset from reset_mechanism_val: two mechanisms,
    which no kernel has; the loop reproduces it. With reset_delay=True only the bound one matters: fused."""
    nrn = snn.Leaky(beta=0.9, threshold=0.5, reset_delay=False, init_hidden=True, output=True)
    nrn.reset_mechanism = "zero"
    _check_sequence_call(nrn, _inputs(T=48, scale=0.5), path="loop")
    assert "after construction" in nrn.fused_blocker()
    nrn = snn.Leaky(beta=0.9, threshold=0.5, init_hidden=True, output=True)
    nrn.reset_mechanism = "zero"
    _check_sequence_call(nrn, _inputs(T=48, scale=0.5), path="fused")


# ------------------------------------------------------------------------------------------------------
# dtypes: snnTorch's spikes are float32 whatever the input; its states promote as its operations do. The
# fused path runs where that promotion is a float32 / float64 computation of the same values.
# ------------------------------------------------------------------------------------------------------
DTYPE_MODELS = {
    "Leaky": lambda: snn.Leaky(beta=0.9, threshold=0.8, init_hidden=True, output=True),
    "Leaky_zero": lambda: snn.Leaky(beta=0.9, reset_mechanism="zero", threshold=0.8, init_hidden=True, output=True),
    "Leaky_late": lambda: snn.Leaky(beta=0.9, threshold=0.8, reset_delay=False, init_hidden=True, output=True),
    "Leaky_none": lambda: snn.Leaky(beta=0.9, reset_mechanism="none", threshold=0.8, init_hidden=True, output=True),
    "Synaptic": lambda: snn.Synaptic(alpha=0.8, beta=0.7, init_hidden=True, output=True),
    "Alpha": lambda: snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5, init_hidden=True, output=True),
}
# (model, dtype) pairs whose snnTorch arithmetic is a float32 computation the kernels reproduce
FUSED_HALF = {"Leaky", "Leaky_zero", "Leaky_late"}


@pytest.mark.parametrize("model", sorted(DTYPE_MODELS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_rules_are_snntorchs(model, dtype, fused_calls):
    nrn = DTYPE_MODELS[model]()
    fused = dtype == torch.float64 or model in FUSED_HALF
    x = _inputs(T=64, scale=0.5, shift=0.1 if model in ("Synaptic", "Leaky_none") else 0.25, dtype=dtype)
    got, ref = _check_sequence_call(nrn, x, path="fused" if fused else "loop", calls=fused_calls, rtol=1e-3, atol=1e-3)
    if not fused:
        assert str(dtype) in got.fused_blocker(x, tuple(_states(got)[:-1]))
    # a second chunk continues from the stored state (float32 after a fused half-precision chunk)
    x2 = _inputs(T=16, scale=0.5, seed=3, dtype=dtype)
    _assert_same(got(x2), _per_step(ref, x2))
    _assert_same(_states(got), _states(ref))


def test_half_precision_state_that_is_not_zero_runs_the_loop(fused_calls):
    """snnTorch's first step from a float16 membrane rounds in float16: only a zero one is exact fused."""
    nrn = snn.Leaky(beta=0.9, threshold=0.8)
    x = _inputs(T=32, dtype=torch.float16)
    for mem0, path in ((torch.zeros(3, N, dtype=torch.float16), "fused"), (torch.rand(3, N).half(), "loop")):
        ref = copy.deepcopy(nrn)
        m = copy.deepcopy(nrn)
        sfs.patch(m, step_mode="m")
        n_calls = len(fused_calls)
        spk, mem = m(x, mem0.clone())
        assert len(fused_calls) - n_calls == (path == "fused")
        mem_r, spikes, mems = mem0.clone(), [], []
        for t in range(x.shape[0]):
            s, mem_r = ref(x[t], mem_r)
            spikes.append(s)
            mems.append(mem_r)
        _assert_same((spk, mem), (torch.stack(spikes), torch.stack(mems)))


def test_float64_threshold_that_float32_cannot_hold():
    """snnTorch's R (float32) * a 0-dim float64 threshold is float32: the subtract reset rounds the threshold."""
    nrn = snn.Leaky(beta=0.9, threshold=torch.tensor(0.3, dtype=torch.float64), init_hidden=True, output=True)
    _check_sequence_call(nrn, _inputs(T=48, scale=0.3, shift=0.05, dtype=torch.float64), path="loop")
    assert "float32 cannot hold" in nrn.fused_blocker(_inputs(dtype=torch.float64), (nrn.mem,))
    nrn = snn.Leaky(beta=0.9, threshold=torch.tensor(0.375, dtype=torch.float64), init_hidden=True, output=True)
    _check_sequence_call(nrn, _inputs(T=48, scale=0.3, shift=0.05, dtype=torch.float64), path="fused")


def test_sigmoid_surrogate_where_snntorch_overflows(fused_calls):
    """snnTorch's sigmoid backward computes e^{-slope x} / (e^{-slope x} + 1)^2, which is inf / inf = NaN once
    slope * (U - thr) < -88 in float32; the kernels' slope s (1 - s) is the same function without the overflow.
    Everywhere else the gradients agree."""
    nrn = snn.Leaky(beta=0.9, threshold=0.8, spike_grad=surrogate.sigmoid(slope=25), init_hidden=True)
    ref = copy.deepcopy(nrn)
    sfs.patch(nrn, step_mode="m")
    x = _inputs(T=32, scale=2.0, shift=-0.5)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    want, got = _per_step(ref, x1)[0], nrn(x2)
    assert torch.equal(got, want) and fused_calls == ["leaky"]
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(0))
    (want * g).sum().backward()
    (got * g).sum().backward()
    bad = torch.isnan(x1.grad)
    assert bad.any() and torch.isfinite(x2.grad).all()
    # the NaN propagates backwards through snnTorch's membrane; compare where it did not reach
    _close(x2.grad[~bad], x1.grad[~bad])


def test_fused_firing_test_is_strict_like_snntorch(fused_calls):
    """U exactly on the threshold does not fire in snnTorch (Heaviside(0) = 0); the fused path agrees."""
    nrn = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero", init_hidden=True)
    x = torch.tensor([[1.0, 1.5], [0.5, 0.0], [1.0, 2.0]]).unsqueeze(1)  # U: [1, 1.5] -> [1, 0] -> [1.5, 2]
    ref = copy.deepcopy(nrn)
    sfs.patch(nrn, step_mode="s")
    nrn.step_mode = "m"
    assert torch.equal(nrn(x), _per_step(ref, x)[0]) and fused_calls == ["leaky"]
    assert nrn(x.new_zeros(0, 1, 2)).shape == (0, 1, 2)  # an empty sequence: no step, state unchanged


@pytest.mark.parametrize("model", ["Leaky", "Synaptic", "Alpha"])
def test_fused_chunks_continue_the_state_and_its_graph(model, fused_calls):
    """Chunks without a reset == one sequence == snnTorch step by step: values bitwise, gradients of the input
    and the learnable parameters through every chunk."""
    make = {
        "Leaky": lambda: snn.Leaky(
            beta=0.9, threshold=0.8, learn_beta=True, learn_threshold=True, init_hidden=True, output=True
        ),
        "Synaptic": lambda: snn.Synaptic(
            alpha=0.8, beta=0.7, learn_alpha=True, learn_beta=True, init_hidden=True, output=True
        ),
        "Alpha": lambda: snn.Alpha(
            alpha=0.9, beta=0.8, threshold=0.5, learn_beta=True, learn_threshold=True, init_hidden=True, output=True
        ),
    }[model]
    nrn = make()
    if model == "Alpha":
        nrn.alpha = nn.Parameter(nrn.alpha.clone())
    ref = copy.deepcopy(nrn)
    sfs.patch(nrn, step_mode="m")
    x = _inputs(T=60, scale=0.5, shift=0.12)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = _per_step(ref, x1)
    chunks = [nrn(x2[a:b]) for a, b in ((0, 1), (1, 25), (25, 26), (26, 60))]
    got = tuple(torch.cat(parts) for parts in zip(*chunks))
    assert fused_calls == [{"Leaky": "leaky", "Synaptic": "synaptic", "Alpha": "alpha_neuron"}[model]] * 4
    _assert_same(got, want)
    _assert_same(_states(nrn), _states(ref))
    assert nrn.mem.grad_fn is not None
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(w.shape, generator=gen) for w in want]
    (sum((w * o).sum() for w, o in zip(weights, want)) + ref.mem.sum()).backward()
    (sum((w * o).sum() for w, o in zip(weights, got)) + nrn.mem.sum()).backward()
    _close(x2.grad, x1.grad)
    for (name, p1), (_, p2) in zip(ref.named_parameters(), nrn.named_parameters()):
        _close(p2.grad, p1.grad, msg=name)


def test_no_grad_calls_and_detach_hidden(fused_calls):
    nrn = snn.Leaky(beta=0.9, threshold=0.8, init_hidden=True)
    ref = copy.deepcopy(nrn)
    sfs.patch(nrn, step_mode="m")
    x = _inputs(T=40)
    with torch.no_grad():
        got = nrn(x)
        want = _per_step(ref, x)[0]
    assert torch.equal(got, want) and not got.requires_grad and fused_calls == ["leaky"]
    nrn(x.requires_grad_())
    nrn.mem.detach_()  # snnTorch's truncation (Leaky.detach_hidden): the stored membrane, in place
    assert nrn.mem.grad_fn is None


@pytest.mark.parametrize("init_hidden", [False, True])
@pytest.mark.parametrize("model", ["Leaky", "Synaptic", "Alpha"])
def test_stored_reset_is_a_tensor_of_its_own(model, init_hidden, fused_calls):
    """The fused path takes the stored reset from the spikes of step T-2: a copy, so that changing the returned
    spikes in place (or the spikes changing the reset) cannot make the two disagree with snnTorch."""
    kw = dict(alpha=0.9, beta=0.8) if model != "Leaky" else dict(beta=0.9)
    nrn = getattr(snn, model)(threshold=0.8, init_hidden=init_hidden, **kw)
    ref = copy.deepcopy(nrn)
    sfs.patch(nrn, step_mode="m")
    x = _inputs(T=12)
    with torch.no_grad():
        out = nrn(x)
        spk = out[0] if isinstance(out, tuple) else out
        _per_step(ref, x)
        want = ref.reset.clone()
        assert torch.equal(nrn.reset, want)
        assert nrn.reset.untyped_storage().data_ptr() != spk.untyped_storage().data_ptr()
        spk.fill_(7.0)
    assert torch.equal(nrn.reset, want) and fused_calls == [_FUSED_OP[model]]


_FUSED_OP = {"Leaky": "leaky", "Synaptic": "synaptic", "Alpha": "alpha_neuron"}


@pytest.mark.parametrize("init_hidden", [False, True])
@pytest.mark.parametrize("model", ["Leaky", "Synaptic", "Alpha"])
def test_stored_states_are_tensors_of_their_own(model, init_hidden, fused_calls):
    """The states a sequence call leaves in the module are written apart by the kernel: equal to the last step
    of the returned sequences, no view of them (snnTorch's detach_hidden detaches them in place), their graph
    kept; a loss on them gives the gradient snnTorch's loop gives."""
    kw = dict(alpha=0.9, beta=0.8) if model != "Leaky" else dict(beta=0.9)
    nrn = getattr(snn, model)(threshold=0.8, init_hidden=init_hidden, output=True, **kw)
    ref = copy.deepcopy(nrn)
    sfs.patch(nrn, step_mode="m")
    x1, x2 = _inputs(T=12).requires_grad_(), _inputs(T=12).requires_grad_()
    out = nrn(x1)
    want = _per_step(ref, x2)
    _assert_same(tuple(o.detach() for o in out), tuple(w.detach() for w in want))
    seqs = out[1:]
    stored = [getattr(nrn, n) for n in _STATE_NAMES[model]]
    for seq, st in zip(seqs, stored):
        assert torch.equal(st, seq[-1]) and st._base is None and st.grad_fn is not None
        assert st.untyped_storage().data_ptr() != seq.untyped_storage().data_ptr()
    _assert_same(stored, [getattr(ref, n) for n in _STATE_NAMES[model]])
    sum(((k + 1) * st).sum() for k, st in enumerate(stored)).backward()
    sum(((k + 1) * getattr(ref, n)).sum() for k, n in enumerate(_STATE_NAMES[model])).backward()
    _close(x1.grad, x2.grad)
    for st in stored:
        st.detach_()  # what detach_hidden() does to each stored state
        assert st.grad_fn is None
    assert fused_calls == [_FUSED_OP[model]]


# ------------------------------------------------------------------------------------------------------
# the tutorials' calling convention and the state between calls
# ------------------------------------------------------------------------------------------------------
def _conv_net(neuron_kw=None, seed=0):
    torch.manual_seed(seed)
    kw = dict(beta=0.5, threshold=0.5, init_hidden=True)
    kw.update(neuron_kw or {})
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.MaxPool2d(2),
        snn.Leaky(**kw),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16),
        snn.Leaky(**kw),
        nn.Linear(16, 5),
        snn.Leaky(beta=0.75, init_hidden=True, output=True),
    )
    with torch.no_grad():  # dyadic weights: every layer's output is exact whatever the summation order
        for p in net.parameters():
            p.copy_(torch.round(p * 16) / 16 * 2)
    return net


def test_patched_model_called_per_step_gives_snntorchs_numbers():
    net = _conv_net()  # built twice, not deep-copied: snnTorch's utils.reset only knows neurons built by __init__
    patched, report = sfs.patch(_conv_net())
    assert report.step_mode == "s" and len(report.neurons) == 3 and not report.layers
    x = dyadic((8, 10, 1, 8, 8), 0, 16)
    for model in (net, patched):  # the tutorial loop, twice, with a reset between
        utils.reset(model)
    for _ in range(2):
        utils.reset(net)
        utils.reset(patched)
        want = [net(x[t]) for t in range(8)]
        got = [patched(x[t]) for t in range(8)]
        for (s1, m1), (s2, m2) in zip(want, got):
            assert torch.equal(s2, s1) and torch.equal(m2, m1)
        assert torch.equal(patched[7].mem, net[7].mem)  # leaky.mem is updated
    spikes = torch.stack([s for s, _ in want])
    assert 0 < spikes.sum() < spikes.numel()


def test_explicit_mem_convention():
    lif = snn.Leaky(beta=0.9)
    ref = copy.deepcopy(lif)
    sfs.patch(lif)
    x = torch.rand(6, 3, 4)
    mem_a, mem_b = ref.init_leaky(), lif.init_leaky()
    for t in range(6):
        s1, mem_a = ref(x[t], mem_a)
        s2, mem_b = lif(x[t], mem_b)
        assert torch.equal(s2, s1) and torch.equal(mem_b, mem_a)
    lif.step_mode = "m"  # the sequence form of the same call: the state before the sequence is mem
    ref2 = copy.deepcopy(ref)
    mem0 = torch.rand(3, 4)
    want = _per_step_with_mem(ref2, x, mem0)
    got = lif(x, mem0)
    _assert_same(got, want)


def _per_step_with_mem(nrn, x, mem):
    spikes, mems = [], []
    for t in range(x.shape[0]):
        s, mem = nrn(x[t], mem)
        spikes.append(s)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def test_sequence_model_chunks_keep_the_state_until_reset():
    net = _conv_net()
    patched, report = sfs.patch(_conv_net(), step_mode="m")
    assert [how for _, _, how in report.layers] == ["fold", "fold", "fold", "fold", "fold"]
    x = dyadic((8, 6, 1, 8, 8), 0, 16)
    utils.reset(net)
    want = [net(x[t]) for t in range(8)]
    s_ref = torch.stack([s for s, _ in want])
    m_ref = torch.stack([m for _, m in want])
    utils.reset(patched)
    s1, m1 = patched(x[:3])  # chunks: the second continues from the first's state
    s2, m2 = patched(x[3:])
    assert torch.equal(torch.cat([s1, s2]), s_ref) and torch.equal(torch.cat([m1, m2]), m_ref)
    assert 0 < s_ref.sum() < s_ref.numel()
    utils.reset(patched)  # until snntorch.utils.reset
    s, m = patched(x)
    assert torch.equal(s, s_ref) and torch.equal(m, m_ref)
    # a sequence call then per-step calls continue the same sequence
    utils.reset(patched)
    patched(x[:5])
    sfs.set_step_mode(patched, "s")
    assert type(patched) is nn.Sequential and patched[2].step_mode == "s"
    for t in range(5, 8):
        s_t, m_t = patched(x[t])
        assert torch.equal(s_t, s_ref[t]) and torch.equal(m_t, m_ref[t])


def test_chunks_backpropagate_through_each_other_until_reset():
    net = _conv_net(dict(spike_grad=surrogate.atan()))
    patched, _ = sfs.patch(_conv_net(dict(spike_grad=surrogate.atan())), step_mode="m")
    x = dyadic((8, 4, 1, 8, 8), 0, 16)
    g = torch.randn(8, 4, 5)
    utils.reset(net)
    x1 = x.clone().requires_grad_()
    want = torch.stack([net(x1[t])[1] for t in range(8)])
    (want * g).sum().backward()
    utils.reset(patched)
    x2 = x.clone().requires_grad_()
    got = torch.cat([patched(x2[:3])[1], patched(x2[3:])[1]])
    (got * g).sum().backward()
    assert torch.equal(got, want)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=RTOL, atol=ATOL)
    for (n, p1), (_, p2) in zip(net.named_parameters(), patched.named_parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-4, atol=1e-5, msg=n)
    assert patched[2].mem.grad_fn is not None  # the stored state keeps its graph
    utils.reset(patched)
    assert patched[2].mem.grad_fn is None and torch.all(patched[2].mem == 0)


def test_synaptic_and_alpha_in_a_patched_sequential_are_reported_and_exact():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Linear(6, 8),
        snn.Synaptic(alpha=0.8, beta=0.7, init_hidden=True),
        nn.Linear(8, 8),
        snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
        nn.Linear(8, 4),
        snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.round(p * 16) / 16 * 2)
    patched, report = sfs.patch(copy.deepcopy(net), step_mode="m")
    assert [(n, c, p.split(":")[0]) for n, c, p in report.neurons] == [
        ("1", "Synaptic", "fused"),
        ("3", "Alpha", "fused"),
        ("5", "Leaky", "fused"),
    ]
    assert "Synaptic -> spikeforge.interop.snntorch.Synaptic [fused]" in str(report)
    x = dyadic((9, 5, 6), 0, 16)
    utils.reset(net)
    want = [net(x[t]) for t in range(9)]
    s, m = patched(x)
    assert torch.equal(s, torch.stack([w[0] for w in want])) and torch.equal(m, torch.stack([w[1] for w in want]))
    assert 0 < s.sum() < s.numel()


def test_batch_norm_in_training_runs_step_by_step_with_snntorchs_numbers():
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        snn.Leaky(beta=0.5, init_hidden=True),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 5),
        nn.BatchNorm1d(5),
        snn.Leaky(beta=0.5, init_hidden=True, output=True),
    )
    patched, report = sfs.patch(copy.deepcopy(net), step_mode="m")
    assert dict((n, how) for n, _, how in report.layers)["1"] == "per step"
    x = torch.rand(6, 4, 1, 8, 8)
    utils.reset(net)
    want = [net(x[t]) for t in range(6)]
    s, m = patched(x)
    assert torch.equal(s, torch.stack([w[0] for w in want]))
    torch.testing.assert_close(m, torch.stack([w[1] for w in want]), rtol=1e-5, atol=1e-6)
    for name in ("1.running_mean", "1.running_var", "5.running_mean", "1.num_batches_tracked"):
        torch.testing.assert_close(patched.state_dict()[name], net.state_dict()[name], rtol=1e-5, atol=1e-6)
    net.eval()
    patched.eval()  # running statistics: T folded into the batch
    utils.reset(net)
    utils.reset(patched)
    want = torch.stack([net(x[t])[0] for t in range(6)])
    assert torch.equal(patched(x)[0], want)


# ------------------------------------------------------------------------------------------------------
# what is refused, loudly and before anything changes
# ------------------------------------------------------------------------------------------------------
def test_other_snntorch_neurons_are_kept_per_step_and_refused_for_sequences():
    net = nn.Sequential(
        nn.Linear(4, 4),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(4, 4),
        snn.RLeaky(beta=0.9, linear_features=4, init_hidden=True),
    )
    with pytest.raises(ValueError, match="RLeaky"):
        sfs.patch(net, step_mode="m")
    assert type(net[1]) is snn.Leaky and type(net) is nn.Sequential  # a refused patch changes nothing
    patched, report = sfs.patch(net)
    assert report.kept == [("3", "RLeaky", "no drop-in for this snnTorch neuron: runs snnTorch's own per-step code")]
    assert "RLeaky kept" in str(report)
    ref = copy.deepcopy(net)
    sfs.unpatch(ref)
    x = torch.rand(5, 2, 4)
    utils.reset(ref)
    utils.reset(patched)
    assert torch.equal(torch.stack([patched(x[t]) for t in range(5)]), torch.stack([ref(x[t]) for t in range(5)]))


def test_unknown_layers_and_custom_forwards_are_refused_at_patch_time():
    class Block(nn.Module):
        def forward(self, x):
            return x * 2

    for bad, match in (
        (nn.SyncBatchNorm(4), "SyncBatchNorm"),
        (Block(), "Block"),
        (nn.Softmax(dim=0), "batch dimension"),
        (nn.Flatten(0), "batch dimension"),
    ):
        net = nn.Sequential(nn.Linear(4, 4), bad, snn.Leaky(beta=0.9, init_hidden=True))
        with pytest.raises(ValueError, match=match):
            sfs.patch(net, step_mode="m")
        assert type(net[2]) is snn.Leaky

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(4, 4), snn.Leaky(beta=0.9)

        def forward(self, x):
            return self.lif(self.fc(x))

    with pytest.raises(ValueError, match="nn.Sequential"):
        sfs.patch(Net(), step_mode="m")
    net, _ = sfs.patch(Net())  # a custom forward: per step, or step_mode on the neurons it calls with sequences
    net.lif.step_mode = "m"
    spk, mem = net(torch.rand(5, 2, 4))
    assert spk.shape == mem.shape == (5, 2, 4)


def test_bad_calls_in_sequence_mode():
    lif = snn.Leaky(beta=0.9, init_hidden=True)
    sfs.patch(lif)
    lif.step_mode = "m"
    with pytest.raises(ValueError, match="at least 3 dims"):
        lif(torch.rand(4, 8))
    lif(torch.rand(4, 2, 3, 8))  # stores a state [2, 3, 8]
    with pytest.raises(ValueError, match="one step"):  # the shape of that state: one step, not a sequence
        lif(torch.rand(2, 3, 8))
    with pytest.raises(TypeError, match="init_hidden"):
        lif(torch.rand(4, 2, 8), torch.zeros(2, 8))
    free = snn.Leaky(beta=0.9)
    sfs.patch(free)
    free.step_mode = "m"
    with pytest.raises(TypeError, match="mem"):
        free(torch.rand(4, 2, 8), [0.0])
    spk, mem = free(torch.rand(4, 2, 8), free.init_leaky())  # snnTorch's empty initial state: zeros
    net = nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.9, init_hidden=True))
    sfs.patch(net, step_mode="m")
    with pytest.raises(ValueError, match="one step given to a sequence call"):
        net(torch.rand(2, 1, 5, 5))
    net[1].step_mode = "s"  # a neuron switched by hand inside a sequence-mode model would see x_seq as one step
    with pytest.raises(ValueError, match="set_step_mode"):
        net(torch.rand(4, 2, 1, 5, 5))
    sfs.set_step_mode(net, "m")
    with pytest.raises(ValueError, match="step_mode"):
        sfs.patch(net, step_mode="x")
    with pytest.raises(ValueError, match="backend"):
        sfs.patch(net, backend="cuda")
    with pytest.raises(TypeError, match="model"):
        sfs.patch(3)
    with pytest.raises(ValueError, match="patch"):
        sfs.set_step_mode(nn.Sequential(snn.Leaky(beta=0.5, init_hidden=True)), "m")
    with pytest.raises(ValueError, match="step_mode"):
        sfs.set_step_mode(net, "q")


def test_backend_choice(fused_calls):
    custom = surrogate.custom_surrogate(_custom_fast_sigmoid)
    net = nn.Sequential(snn.Leaky(beta=0.9, init_hidden=True), snn.Leaky(beta=0.9, spike_grad=custom, init_hidden=True))
    with pytest.raises(ValueError, match="no spikeforge twin"):
        sfs.patch(net, backend="fused")
    assert type(net[0]) is snn.Leaky  # nothing changed
    lif = snn.Leaky(beta=0.9, init_hidden=True)
    sfs.patch(lif, backend="fused")
    lif.step_mode = "m"
    lif(torch.rand(4, 2, 8))
    assert fused_calls == ["leaky"]
    syn = snn.Synaptic(alpha=0.8, beta=0.7, init_hidden=True)
    sfs.patch(syn, backend="fused", step_mode="m")
    with pytest.raises(ValueError, match="float16"):  # snnTorch keeps Synaptic's current in float16
        syn(torch.rand(4, 2, 8).half())
    loop = snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True)
    _, report = sfs.patch(loop, backend="loop", step_mode="s")
    loop.step_mode = "m"
    loop(torch.rand(4, 2, 8))
    assert fused_calls == ["leaky"] and loop.path == "loop" and "backend='loop'" in report.neurons[0][2]


def test_state_dict_and_unpatch():
    net = _conv_net()
    sd = copy.deepcopy(net.state_dict())
    patched, _ = sfs.patch(copy.deepcopy(net), step_mode="m")
    assert set(patched.state_dict()) == set(sd)
    patched.load_state_dict(sd)
    back = _conv_net(seed=5)
    back.load_state_dict(patched.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in sd.items())
    assert sfs.unpatch(patched) is patched
    assert type(patched) is nn.Sequential and type(patched[2]) is snn.Leaky
    assert "step_mode" not in patched[2].__dict__


def test_sequence_call_compiles_without_graph_breaks():
    import torch._dynamo as dynamo

    for nrn in (
        snn.Leaky(beta=0.5, init_hidden=True, spike_grad=surrogate.fast_sigmoid(25)),
        snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True),
        snn.Synaptic(alpha=0.8, beta=0.7, init_hidden=True),
        snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
    ):
        sfs.patch(nrn, step_mode="m")
        x = torch.rand(6, 2, 8)
        assert dynamo.explain(nrn)(x).graph_break_count == 0
        nrn.reset_mem()  # (snntorch.utils.reset(net) resets the neurons among net's children)
        want = (nrn(x), nrn(x + 0.1))  # two chunks: the second continues the stored states
        want_states = [getattr(nrn, n).clone() for n in _STATE_NAMES[_model(nrn)]]
        nrn.reset_mem()
        dynamo.reset()
        compiled = torch.compile(nrn, fullgraph=True, backend="eager")
        got = (compiled(x), compiled(x + 0.1))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        # the states the module keeps come through the custom op too (as tensors, not its empty placeholders)
        torch.testing.assert_close([getattr(nrn, n) for n in _STATE_NAMES[_model(nrn)]], want_states, rtol=0, atol=0)


def test_custom_surrogate_runs_fused_without_gradients(fused_calls):
    """A custom surrogate only shapes the gradient; snnTorch's custom_surrogate fires on x > 0 like every other, so
    inference (no graph) runs fused and training runs the loop."""
    nrn = snn.Synaptic(
        alpha=0.8, beta=0.7, spike_grad=surrogate.custom_surrogate(_custom_fast_sigmoid), init_hidden=True, output=True
    )
    ref = copy.deepcopy(nrn)
    sfs.patch(nrn, step_mode="m")
    assert "torch.no_grad" in nrn.fused_blocker()
    x = _inputs(T=40, scale=0.5, shift=0.1)
    with torch.no_grad():
        got, want = nrn(x), _per_step(ref, x)
    assert fused_calls == ["synaptic"]
    _assert_same(got, want)
    _assert_same(_states(nrn), _states(ref))
    got = nrn(x.requires_grad_())
    assert fused_calls == ["synaptic"] and got[0].requires_grad
