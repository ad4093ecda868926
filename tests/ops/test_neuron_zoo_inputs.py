"""The newer neuron ops and modules with bad inputs (a clear TypeError / ValueError naming the public argument,
nothing changed), determinism (thread counts, repeated runs), and the modules nn.ALIF / nn.ILIF /
nn.TernaryLIF against the ops (step modes, chunked sequences, state)."""

import re

import pytest
import torch

import spikeforge.nn as snn
from zoo_helpers import SJ_MODELS, SNN_MODELS, SPECS, assert_same_forward, ops, reference, run, upstream_grads

X = torch.randn(4, 2, 3)
NAN, INF = float("nan"), float("inf")

# (op, positional args after x, keyword args, exception, the argument the message must name)
BAD = [
    ("alif", (), dict(tau=0.0), ValueError, "tau"),
    ("alif", (), dict(tau=True), TypeError, "tau"),
    ("alif", (), dict(rho=1.5), ValueError, "rho"),
    ("alif", (), dict(rho=NAN), ValueError, "rho"),
    ("alif", (), dict(beta_a=INF), ValueError, "beta_a"),
    ("alif", (), dict(beta_a="1"), TypeError, "beta_a"),
    ("alif", (None, torch.zeros(3)), {}, ValueError, "b_init"),
    ("alif", (None, torch.zeros(2, 3, dtype=torch.int64)), {}, TypeError, "b_init"),
    ("alif", (torch.zeros(2, 3, 1),), {}, ValueError, "v_init"),
    ("alif", (), dict(v_threshold=NAN), ValueError, "v_threshold"),
    ("alif", (), dict(v_reset="0"), TypeError, "v_reset"),
    ("alif", (), dict(surrogate="fast_sigmoid"), ValueError, "surrogate"),
    ("alif", (), dict(surrogate=3), TypeError, "surrogate"),
    ("alif", (), dict(alpha=-1.0), ValueError, "alpha"),
    ("alif", (), dict(return_v="all"), ValueError, "return_v"),
    ("alif", (), dict(decay_input=1), TypeError, "decay_input"),
    ("alif", (), dict(detach_reset="no"), TypeError, "detach_reset"),
    ("ilif", (), dict(D=0), ValueError, "D"),
    ("ilif", (), dict(D=2.0), TypeError, "D"),
    ("ilif", (), dict(D=True), TypeError, "D"),
    ("ilif", (), dict(D=1 << 23), ValueError, "D"),
    ("ilif", (), dict(v_threshold=0.0), ValueError, "v_threshold"),
    ("ilif", (), dict(v_threshold=-1.0), ValueError, "v_threshold"),  # SpikingJelly refuses it too
    ("ternary_lif", (), dict(v_reset=1.0), ValueError, "v_reset"),  # outside (-v_th, v_th), as SpikingJelly
    ("ternary_lif", (), dict(v_reset=-2.0), ValueError, "v_reset"),
    ("ilif", (), dict(tau=-1.0), ValueError, "tau"),
    ("ilif", (), dict(tau="2"), TypeError, "tau"),
    ("ilif", (), dict(detach_reset=None), TypeError, "detach_reset"),
    ("ilif", (), dict(decay_input="yes"), TypeError, "decay_input"),  # regression: was accepted
    ("ilif", (), dict(tau=None, decay_input="yes"), TypeError, "decay_input"),
    ("ilif", (), dict(return_v="every"), ValueError, "return_v"),
    ("ilif", (torch.zeros(2),), {}, ValueError, "v_init"),
    ("ternary_lif", (), dict(v_threshold=0.0), ValueError, "v_threshold"),
    # > 0 but 0 in float32, the kernels' compute type: |H| >= 0 would fire at H = 0 (the native check refuses it too)
    ("ternary_lif", (), dict(v_threshold=1e-46), ValueError, "v_threshold"),
    ("ternary_lif", (), dict(two_sided=1), TypeError, "two_sided"),
    ("ternary_lif", (), dict(tau=0.0), ValueError, "tau"),
    ("ternary_lif", (), dict(v_reset=INF), ValueError, "v_reset"),
    ("ternary_lif", (), dict(decay_input="y"), TypeError, "decay_input"),  # regression: was accepted
    ("ternary_lif", (), dict(tau=None, decay_input="y"), TypeError, "decay_input"),
    ("ternary_lif", (), dict(surrogate="heaviside"), ValueError, "surrogate"),
    ("ternary_lif", (torch.zeros(3, 2),), {}, ValueError, "v_init"),
    ("leaky", (), dict(beta="a"), TypeError, "beta"),
    ("leaky", (), dict(beta=NAN), ValueError, "beta"),
    ("leaky", (), dict(beta=torch.tensor([1, 0, 1])), TypeError, "beta"),
    ("leaky", (), dict(beta=torch.rand(4)), ValueError, "beta"),
    ("leaky", (), dict(beta=torch.rand(1, 1, 2, 3)), ValueError, "beta"),
    ("leaky", (), dict(beta=0.9, threshold=NAN), ValueError, "threshold"),
    ("leaky", (), dict(beta=0.9, threshold="1"), TypeError, "threshold"),
    ("leaky", (), dict(beta=0.9, threshold=torch.rand(5)), ValueError, "threshold"),
    ("leaky", (), dict(beta=0.9, threshold=torch.tensor(1)), TypeError, "threshold"),
    ("leaky", (), dict(beta=0.9, graded_spikes_factor=torch.rand(7)), ValueError, "graded_spikes_factor"),
    ("leaky", (), dict(beta=0.9, graded_spikes_factor="x"), TypeError, "graded_spikes_factor"),
    ("leaky", (), dict(beta=0.9, graded_spikes_factor=INF), ValueError, "graded_spikes_factor"),
    ("leaky", (), dict(beta=0.9, reset_mechanism="sub"), ValueError, "reset_mechanism"),
    ("leaky", (), dict(beta=0.9, reset_mechanism=0), TypeError, "reset_mechanism"),
    ("leaky", (), dict(beta=0.9, reset_delay=0), TypeError, "reset_delay"),
    ("leaky", (), dict(beta=0.9, surrogate="rect"), ValueError, "surrogate"),  # regression: a native error
    ("leaky", (), dict(beta=0.9, surrogate=None), TypeError, "surrogate"),
    ("leaky", (), dict(beta=0.9, surrogate_alpha=0.0), ValueError, "surrogate_alpha"),  # regression: said alpha
    ("leaky", (), dict(beta=0.9, surrogate="spike_rate_escape", surrogate_beta=NAN), ValueError, "surrogate_beta"),
    ("leaky", (), dict(beta=0.9, surrogate="spike_rate_escape", surrogate_beta="1"), TypeError, "surrogate_beta"),
    ("leaky", (), dict(beta=0.9, return_mem="last "), ValueError, "return_mem"),
    ("leaky", (torch.zeros(3),), dict(beta=0.9), ValueError, "mem_init"),
    ("leaky", ([0.0],), dict(beta=0.9), TypeError, "mem_init"),
    ("synaptic", (), dict(alpha="a", beta=0.9), TypeError, "alpha"),
    ("synaptic", (), dict(alpha=torch.rand(2, 2), beta=0.9), ValueError, "alpha"),
    ("synaptic", (), dict(alpha=0.5, beta=torch.rand(3, 1)), ValueError, "beta"),
    ("synaptic", (torch.zeros(1),), dict(alpha=0.5, beta=0.9), ValueError, "syn_init"),
    ("synaptic", (None, torch.zeros(1)), dict(alpha=0.5, beta=0.9), ValueError, "mem_init"),
    ("synaptic", (), dict(alpha=0.5, beta=0.9, surrogate_alpha=-2.0), ValueError, "surrogate_alpha"),
    ("alpha_neuron", (), dict(alpha=0.8, beta=0.9), ValueError, "alpha"),
    ("alpha_neuron", (), dict(alpha=0.8, beta=0.8), ValueError, "alpha"),
    ("alpha_neuron", (), dict(alpha=1.0, beta=1.0), ValueError, "beta"),
    ("alpha_neuron", (), dict(alpha="0.9", beta=0.8), TypeError, "alpha"),
    ("alpha_neuron", (), dict(alpha=torch.rand(5) + 1, beta=0.1), ValueError, "alpha"),
    ("alpha_neuron", (), dict(alpha=torch.tensor(1), beta=0.1), TypeError, "alpha"),
    ("alpha_neuron", (), dict(alpha=torch.tensor([0.9, 0.5]), beta=torch.tensor([0.8, 0.6])), ValueError, "alpha"),
    ("alpha_neuron", (), dict(alpha=torch.tensor(0.9), beta=torch.tensor(1.0)), ValueError, "beta"),
    ("alpha_neuron", (), dict(alpha=0.9, beta=0.8, reset_mechanism="hard"), ValueError, "reset_mechanism"),
    ("alpha_neuron", (torch.zeros(1),), dict(alpha=0.9, beta=0.8), ValueError, "syn_exc_init"),
    ("alpha_neuron", (None, torch.zeros(1)), dict(alpha=0.9, beta=0.8), ValueError, "syn_inh_init"),
    ("alpha_neuron", (None, None, torch.zeros(1)), dict(alpha=0.9, beta=0.8), ValueError, "mem_init"),
]
# x_seq itself, for every op
for _name in SJ_MODELS + SNN_MODELS:
    _kw = {
        "leaky": dict(beta=0.9),
        "synaptic": dict(alpha=0.5, beta=0.9),
        "alpha_neuron": dict(alpha=0.9, beta=0.8),
    }.get(_name, {})
    BAD += [
        (_name, "int", _kw, TypeError, "x_seq"),
        (_name, "0-dim", _kw, ValueError, "x_seq"),
        (_name, "list", _kw, TypeError, "x_seq"),
    ]


def _bad_id(case):
    name, args, kw, exc, arg = case
    # a tensor is named by its shape, not its (random) values: ids stay the same from run to run
    what = (
        args
        if isinstance(args, str)
        else ",".join(
            (f"{k}=tensor{list(v.shape)}" if torch.is_tensor(v) else f"{k}={v!r}")[:24] for k, v in kw.items()
        )
    )
    return f"{name}-{arg}-{what}"


def _clone(v):
    return v.clone() if torch.is_tensor(v) else v


def _same(a, b):
    if torch.is_tensor(a):
        return torch.equal(a, b) or (a.isnan() == b.isnan()).all() and torch.equal(a.nan_to_num(), b.nan_to_num())
    return True


@pytest.mark.parametrize("case", BAD, ids=[_bad_id(c) for c in BAD])
def test_bad_argument_is_a_clear_error(case):
    """TypeError / ValueError whose message starts with (or names) the public argument; the inputs are untouched."""
    name, args, kw, exc, arg = case
    x = X.clone()
    if args == "int":
        x, args = torch.ones(3, 2, dtype=torch.int32), ()
    elif args == "0-dim":
        x, args = torch.tensor(1.0), ()
    elif args == "list":
        x, args = [1.0, 2.0], ()
    before = [_clone(a) for a in args], {k: _clone(v) for k, v in kw.items()}, _clone(x)
    with pytest.raises(exc) as info:
        getattr(ops, name)(x, *args, **kw)
    msg = str(info.value)
    assert re.search(rf"(^|\b|\(){re.escape(arg)}\b", msg), f"the message should name {arg!r}: {msg}"
    assert "Traceback" not in msg and "nanobind" not in msg and "incompatible function" not in msg
    for a, b in zip(args, before[0]):
        assert _same(a, b)
    for k in kw:
        assert _same(kw[k], before[1][k]), k
    assert _same(x, before[2])


def test_counts_to_binary_bad_inputs():
    for s, D, exc, arg in [
        ([1], 2, TypeError, "s"),
        (torch.ones(3), 0, ValueError, "D"),
        (torch.ones(3), 2.0, TypeError, "D"),
        (torch.tensor([0.5]), 2, ValueError, "s"),
        (torch.tensor([-1.0]), 2, ValueError, "s"),
        (torch.tensor([3.0]), 2, ValueError, "s"),
        (torch.tensor([NAN]), 2, ValueError, "s"),
        (torch.tensor([3]), 2, ValueError, "s"),
    ]:
        with pytest.raises(exc, match=rf"^{arg}\b"):
            ops.counts_to_binary(s, D)


def test_counts_to_binary_takes_integer_and_bool_counts():
    """Regression: a bool tensor (counts 0 / 1) was a NotImplementedError from torch.round."""
    b = ops.counts_to_binary(torch.tensor([[True, False]]), 2)
    assert b.dtype == torch.float32 and b.tolist() == [[[1.0, 0.0]], [[0.0, 0.0]]]
    u = ops.counts_to_binary(torch.tensor([2, 0, 1], dtype=torch.uint8), 2)
    assert u.tolist() == [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


@pytest.mark.parametrize("name", SJ_MODELS + SNN_MODELS)
def test_inputs_are_not_modified(name):
    """A successful call (forward and backward) leaves x, the initial states and the coefficients as they were."""
    x = torch.randn(6, 2, 3) + 0.5
    inits = {n: torch.randn(2, 3).abs() for n in SPECS[name]["inits"]}
    kw = {
        "leaky": dict(
            beta=torch.rand(3) * 0.3 + 0.6, threshold=torch.rand(2, 1) + 0.5, graded_spikes_factor=torch.rand(3) + 0.5
        ),
        "synaptic": dict(alpha=torch.rand(3) * 0.3 + 0.5, beta=torch.rand(3) * 0.3 + 0.6),
        "alpha_neuron": dict(alpha=torch.rand(3) * 0.05 + 0.9, beta=torch.rand(3) * 0.2 + 0.6),
    }.get(name, {})
    before = x.clone(), {k: v.clone() for k, v in inits.items()}, {k: v.clone() for k, v in kw.items()}
    run(ops, name, x, inits, kw, upstream_grads(name, x, kw))
    assert torch.equal(x, before[0])
    for k in inits:
        assert torch.equal(inits[k], before[1][k])
    for k in kw:
        assert torch.equal(kw[k], before[2][k])


def _noncontiguous_case(name):
    x = (torch.randn(5, 4, 6) + 0.5).transpose(1, 2)  # [T, 6, 4], not contiguous
    inits = {n: torch.randn(4, 6).t().abs() for n in SPECS[name]["inits"]}
    kw = {
        "leaky": dict(
            beta=(torch.rand(4, 6) * 0.3 + 0.6).t(),
            threshold=(torch.rand(4) + 0.5).expand(6, 4),
            graded_spikes_factor=torch.rand(8)[::2] + 0.5,
            return_mem="seq",
        ),
        "synaptic": dict(
            alpha=(torch.rand(4, 6) * 0.3 + 0.5).t(), beta=torch.rand(6, 1).expand(6, 4) * 0.3 + 0.6, return_mem="seq"
        ),
        "alpha_neuron": dict(alpha=torch.rand(8)[::2] * 0.05 + 0.9, beta=(torch.rand(4, 6) * 0.2 + 0.6).t()),
        "alif": dict(return_v="seq"),
        "ilif": dict(D=2),
        "ternary_lif": dict(v_reset=None),
    }[name]
    return x, inits, kw


@pytest.mark.parametrize("name", SJ_MODELS + SNN_MODELS)
def test_non_contiguous_inputs(name):
    """Transposed x and initial states, strided and expanded coefficients: the same numbers as contiguous ones
    (and as the reference)."""
    x, inits, kw = _noncontiguous_case(name)
    grads = upstream_grads(name, x, kw)
    got = getattr(ops, name)(x, *[inits[n] for n in SPECS[name]["inits"]], **kw)
    want = getattr(ops, name)(
        x.contiguous(),
        *[inits[n].contiguous() for n in SPECS[name]["inits"]],
        **{k: (v.contiguous() if torch.is_tensor(v) else v) for k, v in kw.items()},
    )
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    g = run(ops, name, x, inits, kw, grads)
    r = run(reference, name, x, inits, kw, grads)
    assert_same_forward(g, r, name)
    for key in r:
        if key.startswith("g_"):
            torch.testing.assert_close(g[key], r[key], rtol=1e-5, atol=1e-5 * max(1.0, r[key].abs().max().item()))


@pytest.mark.parametrize("name", SJ_MODELS + SNN_MODELS)
def test_meta_tensors_get_shapes(name):
    """Meta tensors (shape inference) run the op's fake: outputs of the right shapes, no value is read."""
    x = torch.empty(6, 3, 5, device="meta")
    kw = {
        "leaky": dict(beta=torch.empty(5, device="meta"), threshold=torch.empty(3, 1, device="meta")),
        "synaptic": dict(alpha=torch.empty(5, device="meta"), beta=0.9),
        "alpha_neuron": dict(alpha=torch.empty(5, device="meta"), beta=torch.empty(5, device="meta")),
    }.get(name, {})
    kw[SPECS[name]["ret"]] = "seq"
    out = getattr(ops, name)(x, **kw)
    want = [tuple(x.shape)] + [
        tuple(x.shape) if k == SPECS[name]["seq"] else tuple(x.shape[1:]) for k in range(1, len(SPECS[name]["outs"]))
    ]
    assert [tuple(o.shape) for o in out] == want and all(o.is_meta for o in out)


def test_counts_to_binary_meta():
    """Regression: the value check called .item() on a meta tensor."""
    b = ops.counts_to_binary(torch.empty(3, 4, device="meta"), 2)
    assert b.shape == (2, 3, 4) and b.is_meta


@pytest.mark.parametrize("v_reset", [0.0, -0.25])
def test_ternary_hard_reset_of_an_infinite_membrane_selects_v_reset(v_reset):
    """As the LIF's (tests/ops/test_reliability.py): H = +-inf fires +-1 and the hard reset selects V = v_reset (the
    reference's arithmetic form S v_reset + (1 - S) H would give 0 * inf = NaN)."""
    x = torch.tensor([[float("inf"), -float("inf"), 0.5], [0.25, 0.25, 0.75]])
    s, v = ops.ternary_lif(x, tau=None, v_reset=v_reset, return_v="seq")
    assert s[0].tolist() == [1.0, -1.0, 0.0]
    assert v[0].tolist() == [v_reset, v_reset, v_reset + 0.5]  # V[-1] = v_reset
    assert v[1].tolist() == [v_reset + 0.25, v_reset + 0.25, v_reset]  # the third fires (H >= 1) and resets


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------
MODULES = {
    "ALIF": (snn.ALIF, "alif", dict(tau=1.5, beta_a=0.7, rho=0.8, surrogate="atan")),
    "ILIF": (snn.ILIF, "ilif", dict(D=3, tau=4.0 / 3.0, decay_input=False, v_threshold=0.7)),
    "TernaryLIF": (snn.TernaryLIF, "ternary_lif", dict(tau=1.75, v_reset=-0.2, two_sided=True, surrogate="erf")),
}


def _op_kw(mod_kw):
    return dict(mod_kw)


@pytest.mark.parametrize("mod", list(MODULES))
def test_module_matches_the_op(mod):
    cls, name, kw = MODULES[mod]
    x = torch.randn(8, 2, 3, 4) + 0.5
    node = cls(**kw)
    s = node(x)
    want = getattr(ops, name)(x, **kw)
    assert torch.equal(s, want[0])
    assert torch.equal(node.v, want[1])
    if mod == "ALIF":
        assert torch.equal(node.b, want[2])


@pytest.mark.parametrize("mod", list(MODULES))
def test_module_step_mode_s_equals_m_and_chunks_keep_the_graph(mod):
    """step_mode 's' over T steps, and 'm' over two chunks without a reset, equal one multi-step call: spikes,
    states and the gradients of the input (the state carries its graph between calls)."""
    cls, name, kw = MODULES[mod]
    x = torch.randn(8, 2, 3) + 0.5
    gs = torch.randn_like(x)
    gv = torch.randn(2, 3)

    def grads_of(f):
        xl = x.clone().requires_grad_()
        s, v = f(xl)
        (g,) = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), [xl])
        return s.detach(), v.detach(), g

    def one_call(xl):
        out = getattr(ops, name)(xl, **kw)
        return out[0], out[1]

    def stepped(xl):
        node = cls(step_mode="s", **kw)
        s = torch.stack([node(xl[t]) for t in range(xl.shape[0])])
        return s, node.v

    def chunked(xl):
        node = cls(**kw)
        s = torch.cat([node(xl[:3]), node(xl[3:])])
        return s, node.v

    want = grads_of(one_call)
    for f in (stepped, chunked):
        got = grads_of(f)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        torch.testing.assert_close(got[2], want[2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mod", list(MODULES))
def test_module_store_v_seq(mod):
    cls, name, kw = MODULES[mod]
    x = torch.randn(5, 2, 3) + 0.5
    node = cls(store_v_seq=True, **kw)
    node(x)
    want = getattr(ops, name)(x, **kw, return_v="seq")
    assert torch.equal(node.v_seq, want[1]) and torch.equal(node.v, want[1][-1])


BAD_MODULES = [
    ("ALIF", dict(rho=2.0), ValueError, "rho"),
    ("ALIF", dict(tau=-1.0), ValueError, "tau"),
    ("ALIF", dict(beta_a=NAN), ValueError, "beta_a"),
    ("ALIF", dict(surrogate="fast_sigmoid"), ValueError, "surrogate"),
    ("ILIF", dict(D=0), ValueError, "D"),
    ("ILIF", dict(v_threshold=0.0), ValueError, "v_threshold"),
    ("ILIF", dict(decay_input="no"), TypeError, "decay_input"),
    ("TernaryLIF", dict(v_threshold=-1.0), ValueError, "v_threshold"),
    ("TernaryLIF", dict(two_sided="yes"), TypeError, "two_sided"),
    ("TernaryLIF", dict(decay_input=None), TypeError, "decay_input"),
]


@pytest.mark.parametrize("mod,kw,exc,arg", BAD_MODULES, ids=[f"{m}-{a}" for m, _, _, a in BAD_MODULES])
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_module_bad_option_is_a_clear_error_and_changes_nothing(mod, kw, exc, arg, step_mode):
    """A module built with a bad option raises a clear error naming it on the call; its state stays as it was
    (here the state a good call left, restored by setting the option back)."""
    cls, name, good = MODULES[mod]
    node = cls(step_mode=step_mode, **good)
    x = torch.randn(4, 2, 3) + 0.5
    node(x if step_mode == "m" else x[0])
    state = {n: getattr(node, n) for n in node._state_names}
    for k, v in kw.items():
        setattr(node, k, v)
    with pytest.raises(exc, match=rf"\b{arg}\b"):
        node(x if step_mode == "m" else x[0])
    for n, v in state.items():
        assert getattr(node, n) is v, n


def test_ilif_module_refuses_options_integer_spikes_do_not_have():
    for kw in (dict(v_reset=0.0), dict(surrogate="atan"), dict(alpha=2.0)):
        with pytest.raises(TypeError, match=list(kw)[0]):
            snn.ILIF(**kw)


@pytest.mark.parametrize("mod", list(MODULES))
def test_module_input_of_another_shape_changes_nothing(mod):
    cls, name, kw = MODULES[mod]
    node = cls(**kw)
    node(torch.randn(4, 2, 3))
    state = {n: getattr(node, n) for n in node._state_names}
    with pytest.raises(ValueError, match="reset"):
        node(torch.randn(4, 2, 5))
    for n, v in state.items():
        assert getattr(node, n) is v, n


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------
def _det_case(name, layout):
    # more neurons than three chunks of the CPU kernel at T = 8 (chunk_for: 2048), not a multiple of it
    T, shape = 8, (3, 2109)
    x = torch.randn((T,) + shape) * 0.8 + 0.4
    inits = {n: torch.randn(shape).abs() * 0.5 for n in SPECS[name]["inits"]}
    per = (shape[1],) if layout == "per_neuron" else ()
    kw = {
        "alif": dict(tau=1.5, beta_a=0.7, rho=0.8, surrogate="atan", return_v="seq"),
        "ilif": dict(D=3, tau=1.5, decay_input=False, return_v="seq"),
        "ternary_lif": dict(tau=1.75, two_sided=True, return_v="seq"),
        "leaky": dict(
            beta=torch.rand(per) * 0.3 + 0.6,
            threshold=torch.rand(per) * 0.4 + 0.8,
            graded_spikes_factor=torch.rand(per) + 0.5,
            reset_delay=False,
            return_mem="seq",
        ),
        "synaptic": dict(
            alpha=torch.rand(per) * 0.3 + 0.5,
            beta=torch.rand(per) * 0.3 + 0.6,
            threshold=torch.rand(per) * 0.4 + 0.8,
            return_mem="seq",
        ),
        "alpha_neuron": dict(
            alpha=torch.rand(per) * 0.05 + 0.9,
            beta=torch.rand(per) * 0.2 + 0.6,
            threshold=torch.rand(per) * 0.4 + 0.8,
            reset_mechanism="subtract",
            return_mem="seq",
        ),
    }[name]
    return x, inits, kw


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "name,layout", [(n, "scalar") for n in SJ_MODELS + SNN_MODELS] + [(n, "per_neuron") for n in SNN_MODELS]
)
def test_bitwise_across_thread_counts_and_runs(name, layout, dtype):
    """Chunking depends on N only and coefficient gradients are reduced in a fixed order: 1, 2 and 3 threads,
    and a repeated run, give bitwise-identical outputs and gradients (coefficients included)."""
    x, inits, kw = _det_case(name, layout)
    x = x.to(dtype)
    inits = {k: v.to(dtype) for k, v in inits.items()}
    grads = upstream_grads(name, x, kw)
    results = []
    for n in (1, 2, 3, 3):
        torch.set_num_threads(n)
        results.append(run(ops, name, x, inits, kw, grads))
    for r in results[1:]:
        assert set(r) == set(results[0])
        assert_same_forward(r, results[0], name)
        for key in r:
            if key.startswith("g_"):
                assert torch.equal(r[key], results[0][key]), key
