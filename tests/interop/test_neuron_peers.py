"""The newer neuron ops against the peers' own code, bit for bit: snnTorch 1.0's Leaky, Synaptic and Alpha
(their per-step forward run over T steps) -> ops.leaky / synaptic / alpha_neuron; SpikingJelly 2.0's
ILIFNode, TernaryLIFNode and TernaryIFNode in multi-step mode -> ops.ilif / ternary_lif(two_sided=True).

Inputs are random (not dyadic) and long (T >= 40), with membranes crossing the threshold in a large share of
the steps: a last-bit difference in any operation shows up in the membranes (compared bitwise) and, over
the run, in the spikes. Gradients of the input, the initial states and every learnable parameter are
compared with a tolerance relative to their scale (sums over time in another order).
"""

import itertools

import pytest
import torch

from zoo_helpers import ops

snn = pytest.importorskip("snntorch")
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
from snntorch import surrogate as snn_sg  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_sg  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5
T, SHAPE = 48, (4, 24)


def _close(a, b, what, rtol=RTOL, atol=ATOL):
    assert a is not None and b is not None, what
    assert torch.isfinite(b).all(), f"{what}: the peer's gradient is not finite (the case is ill-conditioned)"
    scale = max(1.0, b.abs().max().item())
    torch.testing.assert_close(a.to(b.dtype), b, rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}")


def _equal(a, b, what):
    if not torch.equal(a.to(b.dtype), b):
        bad = a.to(b.dtype) != b
        idx = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {b.numel()} differ, first at {idx}: "
            f"{a[tuple(idx)].item()!r} vs the peer's {b[tuple(idx)].item()!r}"
        )


# ------------------------------------------------------------------------------------------------
# snnTorch
# ------------------------------------------------------------------------------------------------
# snntorch.surrogate factories -> (spikeforge surrogate, surrogate_alpha, surrogate_beta). "wild" ones have
# g' * threshold > 2 somewhere: with reset_delay=False (the same-step reset differentiates the spike) the
# membrane's BPTT factor 1 - thr g' then grows without bound over T steps and the gradients are noise in
# every implementation, so those run with reset_delay=True only.
SNN_SURROGATES = {
    "atan": (lambda: snn_sg.atan(), ("atan", None, None), False),
    "atan1.5": (lambda: snn_sg.atan(alpha=1.5), ("atan", 1.5, None), False),
    "fast_sigmoid": (lambda: snn_sg.fast_sigmoid(), ("fast_sigmoid", None, None), False),
    "fast_sigmoid5": (lambda: snn_sg.fast_sigmoid(slope=5), ("fast_sigmoid", 5.0, None), False),
    "sigmoid": (lambda: snn_sg.sigmoid(), ("sigmoid", None, None), True),  # snnTorch's default slope 25
    "sigmoid3": (lambda: snn_sg.sigmoid(slope=3), ("sigmoid", 3.0, None), False),
    "triangular": (lambda: snn_sg.triangular(), ("snntorch_triangular", None, None), True),
    "triangular0.5": (lambda: snn_sg.triangular(threshold=0.5), ("snntorch_triangular", 0.5, None), False),
    "ste": (lambda: snn_sg.straight_through_estimator(), ("straight_through", None, None), False),
    "spike_rate_escape": (lambda: snn_sg.spike_rate_escape(), ("spike_rate_escape", None, None), True),
    "spike_rate_escape_b2s1": (
        lambda: snn_sg.spike_rate_escape(beta=2, slope=1),
        ("spike_rate_escape", 1.0, 2.0),
        False,
    ),
    "heaviside": (lambda: snn_sg.heaviside(), ("heaviside", None, None), False),
    "surrogate_disable": (None, ("disabled", None, None), False),  # the neuron's surrogate_disable=True
}


def _snn_module(cls_name, sg_key, reset, delay, *, beta, threshold, alpha=None, gsf=None, learn=False):
    make_sg = SNN_SURROGATES[sg_key][0]
    kw = dict(
        beta=beta.clone(), threshold=threshold.clone(), reset_mechanism=reset, learn_beta=learn, learn_threshold=learn
    )
    if make_sg is None:
        kw["surrogate_disable"] = True
    else:
        kw["spike_grad"] = make_sg()
    if cls_name == "Leaky":
        kw.update(reset_delay=delay, graded_spikes_factor=gsf.clone(), learn_graded_spikes_factor=learn)
        return snn.Leaky(**kw)
    if cls_name == "Synaptic":
        return snn.Synaptic(alpha=alpha.clone(), reset_delay=delay, learn_alpha=learn, **kw)
    return snn.Alpha(alpha=alpha.clone(), **kw)


def _snn_steps(module, x, inits):
    """snnTorch's own per-step forward over x [T, ...] -> (spikes [T, ...], [each state [T, ...]])."""
    spk, states = [], []
    for t in range(x.shape[0]):
        out = module(x[t], *inits) if t == 0 and any(i is not None for i in inits) else module(x[t])
        spk.append(out[0])
        states.append(out[1:])
    return torch.stack(spk), [torch.stack([s[k] for s in states]) for k in range(len(states[0]))]


def _snn_case_ids():
    out = []
    for i, (reset, delay, sg) in enumerate(
        itertools.product(("subtract", "zero", "none"), (True, False), SNN_SURROGATES)
    ):
        if not delay and SNN_SURROGATES[sg][2]:
            continue
        per_neuron = i % 2 == 0
        learn = (i // 2) % 2 == 0
        given = (i // 3) % 2 == 0
        out.append(
            pytest.param(
                reset,
                delay,
                sg,
                per_neuron,
                learn,
                given,
                id=f"{reset}-{'delay' if delay else 'nodelay'}-{sg}-"
                f"{'perneuron' if per_neuron else 'scalar'}-{'learn' if learn else 'fixed'}-"
                f"{'init' if given else 'noinit'}",
            )
        )
    return out


def _coefs(cls_name, per_neuron, gen_shape):
    n = gen_shape[-1]
    size = (n,) if per_neuron else ()
    c = {"threshold": torch.empty(size).uniform_(0.8, 1.25)}
    if cls_name == "Alpha":
        c["alpha"] = torch.empty(size).uniform_(0.88, 0.95)
        c["beta"] = torch.empty(size).uniform_(0.65, 0.8)
    else:
        c["beta"] = torch.empty(size).uniform_(0.6, 0.95)
        c["alpha"] = torch.empty(size).uniform_(0.5, 0.85)
        c["gsf"] = torch.empty(size).uniform_(0.5, 2.0) if per_neuron else torch.tensor(1.0)
    return c


def _snn_x(cls_name, shape, dtype=torch.float32, sg=None):
    mean, std = {"Leaky": (0.3, 0.6), "Synaptic": (0.1, 0.35), "Alpha": (0.25, 0.8)}[cls_name]
    x = torch.randn(shape) * std + mean
    if sg == "sigmoid":
        # snnTorch's sigmoid(slope=25) computes exp(-25 (U - thr)), which overflows float32 below U - thr = -3.5
        # and gives NaN gradients there (inf / inf); non-negative inputs keep its membranes above that
        x = x.abs()
    return x.to(dtype)


def _compare_snn(cls_name, reset, delay, sg, per_neuron, learn, given, dtype=torch.float32, shape=SHAPE, steps=T):
    x = _snn_x(cls_name, (steps,) + shape, dtype, sg)
    c = _coefs(cls_name, per_neuron, shape)
    if dtype == torch.float64:  # snnTorch runs in the input's dtype when its buffers are float64 too
        c = {k: v.double() for k, v in c.items()}
    n_states = {"Leaky": 1, "Synaptic": 2, "Alpha": 3}[cls_name]
    inits = [(torch.randn(shape) * 0.5).to(dtype) if given else None for _ in range(n_states)]
    # the peer
    peer = _snn_module(
        cls_name,
        sg,
        reset,
        delay,
        beta=c["beta"],
        threshold=c["threshold"],
        alpha=c.get("alpha"),
        gsf=c.get("gsf"),
        learn=learn,
    )
    xp = x.clone().requires_grad_()
    ip = [None if i is None else i.clone().requires_grad_() for i in inits]
    spk_p, states_p = _snn_steps(peer, xp, ip)
    # spikeforge: the same values, as leaves
    xs = x.clone().requires_grad_()
    is_ = [None if i is None else i.clone().requires_grad_() for i in inits]
    leaf = {k: v.clone().requires_grad_(learn) for k, v in c.items()}
    name, sa, sb = SNN_SURROGATES[sg][1]
    kw = dict(
        threshold=leaf["threshold"],
        beta=leaf["beta"],
        reset_mechanism=reset,
        surrogate=name,
        surrogate_alpha=sa,
        surrogate_beta=sb,
        return_mem="seq",
    )
    if cls_name == "Leaky":
        spk_s, mem_s = ops.leaky(xs, is_[0], graded_spikes_factor=leaf["gsf"], reset_delay=delay, **kw)
        pairs = [(mem_s, states_p[0], "mem")]
    elif cls_name == "Synaptic":
        spk_s, syn_s, mem_s = ops.synaptic(xs, is_[0], is_[1], alpha=leaf["alpha"], reset_delay=delay, **kw)
        pairs = [(syn_s, states_p[0][-1], "syn"), (mem_s, states_p[1], "mem")]
    else:
        spk_s, e_s, i_s, mem_s = ops.alpha_neuron(xs, *is_, alpha=leaf["alpha"], **kw)
        pairs = [(e_s, states_p[0][-1], "syn_exc"), (i_s, states_p[1][-1], "syn_inh"), (mem_s, states_p[2], "mem")]
    # forward: bit for bit
    _equal(spk_s, spk_p, "spikes")
    for a, b, what in pairs:
        _equal(a, b, what)
    fired = (spk_p != 0).float().mean().item()
    assert 0.03 < fired < 0.97, f"firing rate {fired}: the case should cross the threshold often"
    # backward: the gradient of the same loss in both
    ups = [torch.randn_like(spk_s)] + [torch.randn_like(a) for a, _, _ in pairs]
    loss_p = (spk_p * ups[0]).sum() + sum((b * u).sum() for (_, b, _), u in zip(pairs, ups[1:]))
    loss_s = (spk_s * ups[0]).sum() + sum((a * u).sum() for (a, _, _), u in zip(pairs, ups[1:]))
    wrt_p = [xp] + [i for i in ip if i is not None]
    wrt_s = [xs] + [i for i in is_ if i is not None]
    names = ["x"] + [f"init{k}" for k, i in enumerate(ip) if i is not None]
    if learn:
        for key, attr in (
            ("beta", "beta"),
            ("threshold", "threshold"),
            ("gsf", "graded_spikes_factor"),
            ("alpha", "alpha"),
        ):
            if key in leaf and isinstance(getattr(peer, attr, None), torch.nn.Parameter):
                wrt_p.append(getattr(peer, attr))
                wrt_s.append(leaf[key])
                names.append(key)
    if not loss_p.requires_grad:  # surrogate_disable-like peers leave nothing to differentiate
        return
    gp = list(torch.autograd.grad(loss_p, wrt_p, allow_unused=True))
    gs = torch.autograd.grad(loss_s, wrt_s, allow_unused=True)
    if "gsf" in names and not delay and reset != "none":
        # snnTorch's same-step reset differentiates spk / gsf - R, whose gsf-derivative step / gsf - step gsf / gsf^2
        # is zero but rounds to noise times the membrane's gradient: the exact value is the spikes' term alone
        step = (spk_p != 0).to(ups[0].dtype)
        gp[names.index("gsf")] = (ups[0] * step).sum(tuple(range(step.dim() - leaf["gsf"].dim())))
    # snnTorch's spikes are float32 whatever the input's dtype, so its float64 gradients through them carry
    # float32 rounding
    tol = (1e-6, 1e-6) if dtype == torch.float64 else (RTOL, ATOL)
    for a, b, what in zip(gs, gp, names):
        b = torch.zeros_like(wrt_p[names.index(what)]) if b is None else b
        a = torch.zeros_like(b) if a is None else a
        _close(a, b, f"grad of {what}", *tol)


@pytest.mark.parametrize("reset,delay,sg,per_neuron,learn,given", _snn_case_ids())
def test_leaky_is_snntorch(reset, delay, sg, per_neuron, learn, given):
    _compare_snn("Leaky", reset, delay, sg, per_neuron, learn, given)


@pytest.mark.parametrize("reset,delay,sg,per_neuron,learn,given", _snn_case_ids())
def test_synaptic_is_snntorch(reset, delay, sg, per_neuron, learn, given):
    _compare_snn("Synaptic", reset, delay, sg, per_neuron, learn, given)


@pytest.mark.parametrize("reset,delay,sg,per_neuron,learn,given", [p for p in _snn_case_ids() if "-delay-" in p.id])
def test_alpha_is_snntorch(reset, delay, sg, per_neuron, learn, given):
    _compare_snn("Alpha", reset, delay, sg, per_neuron, learn, given)


@pytest.mark.parametrize("cls_name", ["Leaky", "Synaptic", "Alpha"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_snntorch_float64(cls_name, reset):
    """float64 inputs with float64 parameters: snnTorch's arithmetic in float64 (its spikes stay float32)."""
    _compare_snn(cls_name, reset, cls_name != "Alpha", "fast_sigmoid5", True, True, True, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_leaky_half_precision_is_snntorch(reset, dtype):
    """16-bit inputs: snnTorch's Leaky turns its membrane into float32 at the first step (its float32 spikes and
    reset enter the update), which is the kernels' float32 state: the same spikes, and its membranes rounded to
    the input's dtype are spikeforge's. (Where snnTorch keeps a 16-bit membrane, reset "none", Synaptic's
    in-place zero reset or Alpha, its numbers are 16-bit arithmetic and the fused ops' are not: not compared.)"""
    x = _snn_x("Leaky", (T,) + SHAPE).to(dtype)
    peer = snn.Leaky(beta=torch.tensor(0.875), threshold=torch.tensor(0.9), reset_mechanism=reset)
    spk_p, (mem_p,) = _snn_steps(peer, x, [None])
    assert mem_p.dtype == torch.float32
    spk_s, mem_s = ops.leaky(x, beta=0.875, threshold=0.9, reset_mechanism=reset, return_mem="seq")
    _equal(spk_s, spk_p, "spikes")
    _equal(mem_s, mem_p.to(dtype), "mem")


@pytest.mark.parametrize("cls_name", ["Leaky", "Synaptic"])
def test_snntorch_long_sequence_many_crossings(cls_name):
    """T = 256 with inputs near the threshold (membranes sit around it): any last-bit difference flips spikes."""
    _compare_snn(cls_name, "subtract", False, "atan", True, True, True, shape=(4, 40), steps=256)


def test_snntorch_surrogate_disable_is_not_heaviside():
    """Regression (spikeforge.surrogate said otherwise): snnTorch's surrogate_disable=True has no gradient through
    the spike (its _surrogate_bypass is a comparison), which is surrogate="disabled"; surrogate="heaviside" is
    snntorch.surrogate.heaviside(), whose gradient passes where the spike fired."""
    x = _snn_x("Leaky", (T,) + SHAPE).requires_grad_()
    peer = snn.Leaky(beta=0.9, surrogate_disable=True)
    spk, _ = _snn_steps(peer, x, [None])
    assert not spk.requires_grad
    s_dis, _ = ops.leaky(x, beta=0.9, surrogate="disabled")
    s_hv, _ = ops.leaky(x, beta=0.9, surrogate="heaviside")
    assert torch.equal(s_dis, spk) and torch.equal(s_hv, spk)
    (g_dis,) = torch.autograd.grad(s_dis.sum(), [x], allow_unused=True)
    (g_hv,) = torch.autograd.grad(s_hv.sum(), [x])
    assert g_dis is None or not g_dis.any()
    assert g_hv.any()


# ------------------------------------------------------------------------------------------------
# SpikingJelly
# ------------------------------------------------------------------------------------------------
def _sj_grads(out_p, out_s, x, xs, ups):
    lp = sum((a * u).sum() for a, u in zip(out_p, ups))
    ls = sum((a.to(u.dtype) * u).sum() for a, u in zip(out_s, ups))
    (gp,) = torch.autograd.grad(lp, [x])
    (gs,) = torch.autograd.grad(ls, [xs])
    _close(gs, gp, "grad of x")


def _ilif_cases():
    out = []
    for tau, D, vth, detach, seq in itertools.product(
        (4.0 / 3.0, 2.0, 1.5, 3.0), (4, 1, 2, 7), (1.0, 0.45), (False, True), (False, True)
    ):
        if (D + int(detach) + int(seq) + int(vth == 1.0)) % 2:  # a half of the product, every value of each option
            continue
        for dtype in (torch.float32, torch.float64) if (D + int(seq)) % 2 == 0 else (torch.float32,):
            out.append(
                pytest.param(
                    tau,
                    D,
                    vth,
                    detach,
                    seq,
                    dtype,
                    id=f"tau{tau:.3f}-D{D}-vth{vth}-{'detach' if detach else 'nodetach'}-"
                    f"{'seq' if seq else 'last'}-{str(dtype)[6:]}",
                )
            )
    return out


@pytest.mark.parametrize("tau,D,vth,detach,seq,dtype", _ilif_cases())
def test_ilif_is_spikingjelly_ilifnode(tau, D, vth, detach, seq, dtype):
    """SpikingJelly 2.0's ILIFNode (decay_input=False, soft reset, MultiLevelSpikeCount(D)) in multi-step
    mode is ops.ilif(decay_input=False): the same counts and membranes bit for bit, gradients close."""
    x = (torch.randn((64,) + SHAPE) * 1.2 * vth + 0.9 * vth).to(dtype)
    node = sj_neuron.ILIFNode(
        tau=tau,
        v_threshold=vth,
        surrogate_function=sj_sg.MultiLevelSpikeCount(D),
        detach_reset=detach,
        step_mode="m",
        store_v_seq=seq,
    )
    xp = x.clone().requires_grad_()
    sp = node(xp)
    vp = node.v_seq if seq else node.v
    xs = x.clone().requires_grad_()
    ss, vs = ops.ilif(
        xs, D=D, tau=tau, v_threshold=vth, decay_input=False, detach_reset=detach, return_v="seq" if seq else "last"
    )
    _equal(ss, sp, "spikes")
    _equal(vs, vp, "v")
    assert (sp > 1).any() or D == 1
    _sj_grads((sp, vp), (ss, vs), xp, xs, (torch.randn_like(sp), torch.randn_like(vp)))


SJ_SURROGATES = {
    "sigmoid": (lambda: sj_sg.Sigmoid(), "sigmoid", 4.0),
    "sigmoid2": (lambda: sj_sg.Sigmoid(alpha=2.0), "sigmoid", 2.0),
    "atan": (lambda: sj_sg.ATan(), "atan", 2.0),
    "erf": (lambda: sj_sg.Erf(alpha=1.5), "erf", 1.5),
    "piecewise_quadratic": (lambda: sj_sg.PiecewiseQuadratic(alpha=1.0), "piecewise_quadratic", 1.0),
    "soft_sign": (lambda: sj_sg.SoftSign(alpha=2.0), "soft_sign", 2.0),
    "piecewise_exp": (lambda: sj_sg.PiecewiseExp(alpha=2.0), "piecewise_exp", 2.0),
    "rect": (lambda: sj_sg.Rect(alpha=0.5), "rect", 0.5),
}


def _ternary_cases():
    out = []
    for i, (kind, v_reset, decay, detach) in enumerate(
        itertools.product(("lif", "if"), (0.0, -0.3, None), (True, False), (False, True))
    ):
        if kind == "if" and not decay:
            continue
        sg = list(SJ_SURROGATES)[i % len(SJ_SURROGATES)]
        tau = (2.0, 1.75, 4.0 / 3.0)[i % 3]
        out.append(
            pytest.param(
                kind,
                tau,
                v_reset,
                decay,
                detach,
                sg,
                id=f"{kind}-tau{tau:.3f}-vr{v_reset}-{'decay' if decay else 'nodecay'}-"
                f"{'detach' if detach else 'nodetach'}-{sg}",
            )
        )
    return out


@pytest.mark.parametrize("kind,tau,v_reset,decay,detach,sg", _ternary_cases())
def test_ternary_is_spikingjelly(kind, tau, v_reset, decay, detach, sg):
    """SpikingJelly 2.0's TernaryLIFNode / TernaryIFNode in multi-step mode are ops.ternary_lif with
    two_sided=True (its surrogate: g'(H - v_th) + g'(-H - v_th), hard reset on P + N): spikes and v bit for
    bit, gradients close."""
    make, name, alpha = SJ_SURROGATES[sg]
    x = (torch.randn((64,) + SHAPE) * 1.3).to(torch.float64 if detach and v_reset == 0.0 else torch.float32)
    if kind == "lif":
        node = sj_neuron.TernaryLIFNode(
            tau=tau,
            decay_input=decay,
            v_reset=v_reset,
            surrogate_function=make(),
            detach_reset=detach,
            step_mode="m",
            store_v_seq=True,
        )
    else:
        node = sj_neuron.TernaryIFNode(
            v_reset=v_reset, surrogate_function=make(), detach_reset=detach, step_mode="m", store_v_seq=True
        )
    xp = x.clone().requires_grad_()
    sp = node(xp)
    vp = node.v_seq
    xs = x.clone().requires_grad_()
    ss, vs = ops.ternary_lif(
        xs,
        tau=tau if kind == "lif" else None,
        decay_input=decay,
        v_reset=v_reset,
        detach_reset=detach,
        surrogate=name,
        alpha=alpha,
        two_sided=True,
        return_v="seq",
    )
    _equal(ss, sp, "spikes")
    _equal(vs, vp, "v")
    assert (sp == 1).any() and (sp == -1).any()
    _sj_grads((sp, vp), (ss, vs), xp, xs, (torch.randn_like(sp), torch.randn_like(vp)))
