"""Multi-step spiking neurons in plain PyTorch: the ground truth for spikeforge.ops.neuron.

Time loops written the way docs/neurons.md states the equations and the way the peers compute them
(SpikingJelly's torch backend for lif / if / plif / ilif / ternary, snnTorch 1.0's per-step code for
leaky / synaptic / alpha_neuron, Norse 1.1's lif_feed_forward_step for norse_lif), operation for
operation; autograd gives BPTT and spike_fn the surrogate gradient. alif follows Bellec et al. 2018 in the
same style.
"""

from __future__ import annotations

import math

import torch

from ..surrogate import NORSE_SURROGATES, SNNTORCH_SURROGATES, spike_fn

_EMPTY = None


def _stack(seq, x_seq, fill):
    return torch.stack(seq) if seq else torch.empty_like(x_seq) if fill is None else fill


class _CountSTE(torch.autograd.Function):
    """round(clamp(u, 0, D)) forward; gradient passed where 0 <= u <= D (SpikingJelly's MultiLevelSpikeCount).
    The backward is a torch expression, so it is itself differentiable (its derivative is 0)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(u, D):
        return torch.round(torch.clamp(u, 0, D))

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, D = inputs
        ctx.save_for_backward(u)
        ctx.D = D

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * ((u >= 0) & (u <= ctx.D)).to(grad.dtype), None


def _sj_multi_step(
    x_seq,
    v_init,
    b_init,
    *,
    model="lif",
    k=None,
    tau=0.0,
    v_threshold=1.0,
    v_reset=0.0,
    decay_input=True,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=None,
    beta_sg=None,
    beta_a=1.8,
    rho=0.9,
    levels=4,
    two_sided=False,
    return_v="last",
    return_states="last",
):
    """The SpikingJelly family: charge (k: PLIF's coefficient tensor, else 1/tau by division; IF when
    neither), fire by `model`, reset. -> (spike_seq, v (seq or last), b (seq or last; alif) or None)."""
    hard = v_reset is not None and model != "ilif"
    vr = v_reset if v_reset is not None else 0.0
    vr_c = vr if hard else 0.0
    leak = k is not None or tau != 0.0
    T = x_seq.shape[0]
    v = v_init if v_init is not None else (torch.full_like(x_seq[0], vr if hard else 0.0) if T > 0 else None)
    b = b_init if b_init is not None else (torch.zeros_like(x_seq[0]) if T > 0 else None)
    spikes, vs, bs = [], [], []
    for t in range(T):
        x = x_seq[t]
        if not leak:
            h = v + x
        elif model == "ilif" and not decay_input and k is None:
            h = (1.0 - 1.0 / tau) * v + x  # SpikingJelly's multi-step ILIFNode, in its rounding
        elif decay_input:
            d = x - (v - vr_c)
            h = v + (d * k if k is not None else d / tau)
        else:
            d = v - vr_c
            h = v - (d * k if k is not None else d / tau) + x
        theta = v_threshold + beta_a * b if model == "alif" else v_threshold
        if model == "ilif":
            s = _CountSTE.apply(h / v_threshold, levels)
            event = s
        elif model == "ternary":
            if two_sided:
                pos = spike_fn(h - v_threshold, surrogate, alpha, beta_sg)
                neg = spike_fn(-h - v_threshold, surrogate, alpha, beta_sg)
                s = pos - neg
                event = pos + neg if hard else s
            else:
                mag = spike_fn(h.abs() - v_threshold, surrogate, alpha, beta_sg)
                s = torch.sign(h) * mag
                event = mag if hard else s
        else:
            s = spike_fn(h - theta, surrogate, alpha, beta_sg)
            event = s
        ev = event.detach() if detach_reset else event
        if hard:
            v = ev * vr + (1 - ev) * h
        else:
            v = h - ev * theta
        if model == "alif":
            b = rho * b + (1 - rho) * s
        spikes.append(s)
        vs.append(v)
        bs.append(b)
    if T == 0:
        v_last = v_init if v_init is not None else x_seq.new_full(x_seq.shape[1:], vr if hard else 0.0)
        b_last = b_init if b_init is not None else x_seq.new_zeros(x_seq.shape[1:])
        return (
            torch.empty_like(x_seq),
            (torch.empty_like(x_seq) if return_v == "seq" else v_last),
            (torch.empty_like(x_seq) if return_states == "seq" else b_last),
        )
    return (
        torch.stack(spikes),
        (torch.stack(vs) if return_v == "seq" else v),
        (torch.stack(bs) if return_states == "seq" else b),
    )


def lif(
    x_seq,
    v_init=None,
    *,
    tau=2.0,
    v_threshold=1.0,
    v_reset=0.0,
    decay_input=True,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=None,
    return_v="last",
):
    """Reference multi-step LIF -> (spike_seq, v)."""
    s, v, _ = _sj_multi_step(
        x_seq,
        v_init,
        None,
        tau=tau,
        v_threshold=v_threshold,
        v_reset=v_reset,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=alpha,
        return_v=return_v,
    )
    return s, v


def if_neuron(
    x_seq,
    v_init=None,
    *,
    v_threshold=1.0,
    v_reset=0.0,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=None,
    return_v="last",
):
    """Reference multi-step IF -> (spike_seq, v)."""
    s, v, _ = _sj_multi_step(
        x_seq,
        v_init,
        None,
        tau=0.0,
        v_threshold=v_threshold,
        v_reset=v_reset,
        decay_input=False,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=alpha,
        return_v=return_v,
    )
    return s, v


def _plif_k(w, x_seq):
    # sigmoid in w's dtype, then in the computation's (float32 for 16-bit input): SpikingJelly's w.sigmoid() of a
    # float32 w meeting float64 input is float32's sigmoid
    k = torch.sigmoid(w)
    if x_seq.is_floating_point():
        k = k.to(torch.float32 if x_seq.dtype in (torch.float16, torch.bfloat16) else x_seq.dtype)
    if k.dim() == 1 and k.numel() != 1:  # per channel, C = 0 included (an empty channel dim)
        return k.view([-1] + [1] * (x_seq.dim() - 3))
    return k.reshape(())


def plif(
    x_seq,
    w,
    v_init=None,
    *,
    decay_input=True,
    v_threshold=1.0,
    v_reset=0.0,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=None,
    return_v="last",
):
    """Reference multi-step parametric LIF, 1/tau = sigmoid(w); w scalar or per channel (x_seq dim 2)."""
    s, v, _ = _sj_multi_step(
        x_seq,
        v_init,
        None,
        k=_plif_k(w, x_seq),
        v_threshold=v_threshold,
        v_reset=v_reset,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=alpha,
        return_v=return_v,
    )
    return s, v


def alif(
    x_seq,
    v_init=None,
    b_init=None,
    *,
    tau=2.0,
    v_threshold=1.0,
    v_reset=None,
    beta_a=1.8,
    rho=0.9,
    decay_input=True,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=None,
    return_v="last",
    return_states="last",
):
    """Reference adaptive-threshold LIF -> (spike_seq, v, b)."""
    return _sj_multi_step(
        x_seq,
        v_init,
        b_init,
        model="alif",
        tau=tau,
        v_threshold=v_threshold,
        v_reset=v_reset,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=alpha,
        beta_a=beta_a,
        rho=rho,
        return_v=return_v,
        return_states=return_states,
    )


def ilif(x_seq, v_init=None, *, D=4, tau=2.0, v_threshold=1.0, decay_input=True, detach_reset=False, return_v="last"):
    """Reference integer-spike LIF -> (spike_seq, v)."""
    s, v, _ = _sj_multi_step(
        x_seq,
        v_init,
        None,
        model="ilif",
        tau=0.0 if tau is None else tau,
        v_threshold=v_threshold,
        v_reset=None,
        decay_input=decay_input and tau is not None,
        detach_reset=detach_reset,
        levels=D,
        return_v=return_v,
    )
    return s, v


def ternary_lif(
    x_seq,
    v_init=None,
    *,
    tau=2.0,
    v_threshold=1.0,
    v_reset=0.0,
    decay_input=True,
    detach_reset=False,
    surrogate="sigmoid",
    alpha=None,
    two_sided=False,
    return_v="last",
):
    """Reference ternary-spike LIF -> (spike_seq, v)."""
    s, v, _ = _sj_multi_step(
        x_seq,
        v_init,
        None,
        model="ternary",
        tau=0.0 if tau is None else tau,
        v_threshold=v_threshold,
        v_reset=v_reset,
        decay_input=decay_input and tau is not None,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=alpha,
        two_sided=two_sided,
        return_v=return_v,
    )
    return s, v


# --------------------------------------------------------------------------------------------
# snnTorch family: snnTorch 1.0's Leaky / Synaptic / Alpha forward, step for step
# --------------------------------------------------------------------------------------------
def _fire(mem, thr, surrogate, alpha, beta_sg):
    return spike_fn(mem - thr, surrogate, alpha, beta_sg, strict=True)


def _snn_multi_step(
    x_seq,
    inits,
    *,
    model,
    beta,
    thr,
    third,
    tau_a=None,
    reset_mechanism="subtract",
    reset_delay=True,
    surrogate="atan",
    alpha=None,
    beta_sg=None,
    return_mem="last",
    return_states="last",
):
    """beta / third (leaky: graded factor; synaptic / alpha: the synaptic decay) already clamped.
    -> (spikes, mem (seq or last), second state, third state (each seq or last by return_states))."""
    T = x_seq.shape[0]
    zeros = (lambda: torch.zeros_like(x_seq[0])) if T > 0 else (lambda: x_seq.new_zeros(x_seq.shape[1:]))
    mem = inits[0] if inits[0] is not None else zeros()
    syn = inits[1] if inits[1] is not None else zeros()  # synaptic: I; alpha: E
    inh = inits[2] if len(inits) > 2 and inits[2] is not None else zeros()  # alpha: I
    sub, zero = reset_mechanism == "subtract", reset_mechanism == "zero"
    if alpha is None and surrogate in SNNTORCH_SURROGATES:  # snnTorch's defaults (its sigmoid's slope is 25)
        alpha = SNNTORCH_SURROGATES[surrogate].alpha
    spikes, mems, syns, inhs = [], [], [], []
    gsf = third if model == "leaky" else 1.0
    for t in range(T):
        x = x_seq[t]
        reset = _fire(mem, thr, surrogate, alpha, beta_sg).detach()
        if model == "leaky":
            if sub:
                mem = beta * mem + x - reset * thr
            elif zero:
                mem = (1 - reset) * mem
                mem = beta * mem + x
            else:
                mem = beta * mem + x
        elif model == "synaptic":
            syn = third * syn + x
            mem = beta * mem + syn
            if sub:
                mem = mem - reset * thr
            elif zero:
                mem = mem - mem * reset
        else:  # alpha
            inh_prev = inh
            e = third * syn + x
            i = beta * inh - x
            m = tau_a * (e + i)
            if sub:
                e = e - thr * reset
                i = i - i * reset
                m = m - (-inh_prev) * reset
            elif zero:
                e = e - e * reset
                i = i - i * reset
                m = m - m * reset
            syn, inh, mem = e, i, m
        spk = _fire(mem, thr, surrogate, alpha, beta_sg) * gsf
        if model != "alpha" and not reset_delay:
            do_reset = spk / gsf - reset
            if sub:
                mem = mem - do_reset * thr
            elif zero:
                mem = mem - do_reset * mem
        spikes.append(spk)
        mems.append(mem)
        syns.append(syn)
        inhs.append(inh)
    spike_seq = torch.stack(spikes) if T > 0 else torch.empty_like(x_seq)
    mem_out = (torch.stack(mems) if T > 0 else torch.empty_like(x_seq)) if return_mem == "seq" else mem
    if return_states == "seq":
        syn = torch.stack(syns) if T > 0 else torch.empty_like(x_seq)
        inh = torch.stack(inhs) if T > 0 else torch.empty_like(x_seq)
    return spike_seq, mem_out, syn, inh


def leaky(
    x_seq,
    mem_init=None,
    *,
    beta,
    threshold=1.0,
    reset_mechanism="subtract",
    reset_delay=True,
    graded_spikes_factor=1.0,
    surrogate="atan",
    surrogate_alpha=None,
    surrogate_beta=None,
    return_mem="last",
):
    """Reference snnTorch Leaky -> (spikes, mem)."""
    b = beta.clamp(0, 1) if isinstance(beta, torch.Tensor) else min(max(float(beta), 0.0), 1.0)
    s, m, _, _ = _snn_multi_step(
        x_seq,
        (mem_init, None),
        model="leaky",
        beta=b,
        thr=threshold,
        third=graded_spikes_factor,
        reset_mechanism=reset_mechanism,
        reset_delay=reset_delay,
        surrogate=surrogate,
        alpha=surrogate_alpha,
        beta_sg=surrogate_beta,
        return_mem=return_mem,
    )
    return s, m


def synaptic(
    x_seq,
    syn_init=None,
    mem_init=None,
    *,
    alpha,
    beta,
    threshold=1.0,
    reset_mechanism="subtract",
    reset_delay=True,
    surrogate="atan",
    surrogate_alpha=None,
    surrogate_beta=None,
    return_mem="last",
    return_states="last",
):
    """Reference snnTorch Synaptic -> (spikes, syn, mem)."""
    clamp = lambda v: v.clamp(0, 1) if isinstance(v, torch.Tensor) else min(max(float(v), 0.0), 1.0)  # noqa: E731
    s, m, i, _ = _snn_multi_step(
        x_seq,
        (mem_init, syn_init),
        model="synaptic",
        beta=clamp(beta),
        thr=threshold,
        third=clamp(alpha),
        reset_mechanism=reset_mechanism,
        reset_delay=reset_delay,
        surrogate=surrogate,
        alpha=surrogate_alpha,
        beta_sg=surrogate_beta,
        return_mem=return_mem,
        return_states=return_states,
    )
    return s, i, m


def alpha_neuron(
    x_seq,
    syn_exc_init=None,
    syn_inh_init=None,
    mem_init=None,
    *,
    alpha,
    beta,
    threshold=1.0,
    reset_mechanism="zero",
    surrogate="atan",
    surrogate_alpha=None,
    surrogate_beta=None,
    return_mem="last",
    return_states="last",
):
    """Reference snnTorch Alpha -> (spikes, syn_exc, syn_inh, mem)."""
    a = (alpha if isinstance(alpha, torch.Tensor) else torch.tensor(float(alpha))).clamp(0, 1)
    b = (beta if isinstance(beta, torch.Tensor) else torch.tensor(float(beta))).clamp(0, 1)
    tau_a = torch.log(a) / (torch.log(b) - torch.log(a)) + 1
    dev = x_seq.device
    s, m, e, i = _snn_multi_step(
        x_seq,
        (mem_init, syn_exc_init, syn_inh_init),
        model="alpha",
        beta=b.to(dev),
        thr=threshold,
        third=a.to(dev),
        tau_a=tau_a.to(dev),
        reset_mechanism=reset_mechanism,
        surrogate=surrogate,
        alpha=surrogate_alpha,
        beta_sg=surrogate_beta,
        return_mem=return_mem,
        return_states=return_states,
    )
    return s, e, i, m


# --------------------------------------------------------------------------------------------
# Norse 1.1's current-based LIF (norse.torch.functional.lif.lif_feed_forward_step), step for step
# --------------------------------------------------------------------------------------------
def _norse_multi_step(
    x_seq,
    v_init,
    i_init,
    *,
    a_m,
    a_s,
    v_leak,
    v_th,
    v_reset,
    detach_reset,
    surrogate,
    alpha,
    return_v,
    return_states="last",
):
    """a_m = dt tau_mem_inv and a_s = dt tau_syn_inv already formed (as Norse forms them); v_init given.
    -> (spikes, v (seq or last), i (seq or last by return_states))."""
    T = x_seq.shape[0]
    v = v_init
    i = i_init if i_init is not None else x_seq.new_zeros(x_seq.shape[1:])
    spikes, vs, cur = [], [], []
    for t in range(T):
        i_new = i + x_seq[t]
        v_dec = v + a_m * ((v_leak - v) + i_new)
        i = i_new + (-a_s) * i_new
        z = spike_fn(v_dec - v_th, surrogate, alpha, strict=True)  # Norse's heaviside: 0 at 0
        zr = z.detach() if detach_reset else z
        v = (1 - zr) * v_dec + zr * v_reset
        spikes.append(z)
        vs.append(v)
        cur.append(i)
    spike_seq = torch.stack(spikes) if T > 0 else torch.empty_like(x_seq)
    v_out = (torch.stack(vs) if T > 0 else torch.empty_like(x_seq)) if return_v == "seq" else v
    if return_states == "seq":
        i = torch.stack(cur) if T > 0 else torch.empty_like(x_seq)
    return spike_seq, v_out, i


def _norse_tensor(value, x_seq):
    return (
        value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=x_seq.dtype, device=x_seq.device)
    )


class NorseDefault(float):
    """A rate of Norse's LIFParameters() left at its default: Norse holds it as torch.as_tensor(value), a float32
    tensor, so its dt * p.tau_mem_inv is formed in float32 (then widened for float64 input). A number the
    caller gives is a Python float there, and dt times it a double product."""

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


NORSE_TAU_SYN_INV, NORSE_TAU_MEM_INV = NorseDefault(200.0), NorseDefault(100.0)


def norse_rate(dt: float, value, dtype: torch.dtype, device) -> torch.Tensor:
    """dt * a LIFParameters rate (tau_syn_inv, tau_mem_inv) as Norse forms it, before the step: a tensor times
    dt with torch (its dtype; a default: float32), a number times dt in double, rounded once into dtype."""
    if isinstance(value, torch.Tensor):
        return dt * value
    if type(value) is NorseDefault:
        return dt * torch.tensor(float(value), dtype=torch.float32, device=device)
    return torch.tensor(dt * float(value), dtype=dtype, device=device)


def norse_lif(
    x_seq,
    v_init=None,
    i_init=None,
    *,
    dt=0.001,
    tau_syn_inv=NORSE_TAU_SYN_INV,
    tau_mem_inv=NORSE_TAU_MEM_INV,
    v_leak=0.0,
    v_th=1.0,
    v_reset=0.0,
    detach_reset=False,
    surrogate="fast_sigmoid",
    surrogate_alpha=None,
    return_v="last",
    return_states="last",
):
    """Reference Norse LIF (feed-forward) -> (spikes, v, i). V[-1] = v_leak (detached), I[-1] = 0."""
    vl = _norse_tensor(v_leak, x_seq)
    a_m = norse_rate(dt, tau_mem_inv, x_seq.dtype, x_seq.device)  # Norse's dt * p.tau_mem_inv, formed first
    a_s = norse_rate(dt, tau_syn_inv, x_seq.dtype, x_seq.device)
    if v_init is None:
        v_init = torch.broadcast_to(vl.detach().to(x_seq.dtype), x_seq.shape[1:]).clone()
    if surrogate_alpha is None and surrogate in NORSE_SURROGATES:
        surrogate_alpha = NORSE_SURROGATES[surrogate].alpha
    return _norse_multi_step(
        x_seq,
        v_init,
        i_init,
        a_m=a_m,
        a_s=a_s,
        v_leak=vl,
        v_th=v_th,
        v_reset=v_reset,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=surrogate_alpha,
        return_v=return_v,
        return_states=return_states,
    )


def lif_step(x, v=None, **kw):
    s, v = lif(x.unsqueeze(0), v, **kw)
    return s[0], v


def if_step(x, v=None, **kw):
    s, v = if_neuron(x.unsqueeze(0), v, **kw)
    return s[0], v


def plif_step(x, w, v=None, **kw):
    s, v = plif(x.unsqueeze(0), w, v, **kw)
    return s[0], v


# --------------------------------------------------------------------------------------------
# the fused op's options -> the reference (fallback without native kernels, double backward)
# --------------------------------------------------------------------------------------------
_MODEL_NAMES = ("lif", "alif", "ilif", "ternary", "leaky", "synaptic", "alpha", "norse_lif")
_RESET_NAMES = ("subtract", "zero", "none")


def _per_neuron(slot, run, x_seq):
    """A coefficient slot ([C], neuron i reads (i // run) % C) as a tensor of one step's shape."""
    if slot is None:
        return None
    state = tuple(x_seq.shape[1:])
    N = math.prod(state)
    C = slot.numel()
    if C == 1:
        return slot.reshape(()).to(x_seq.dtype)
    reps = N // (C * run) if C * run > 0 else 0
    return slot.repeat_interleave(run).repeat(reps).view(state).to(x_seq.dtype)


def neuron_from_options(x_seq, inits, slots, opts):
    """The reference of spikeforge.ops.neuron's fused op for its NeuronOptions ->
    (spike_seq, state0 (seq or last), state1 and state2 (seq or last, or empty where the model lacks them))."""
    from ..surrogate import SURROGATES

    name = _MODEL_NAMES[opts.model]
    surrogate = next(n for n, spec in SURROGATES.items() if spec.id == opts.surrogate)
    runs = (opts.run0, opts.run1, opts.run2, opts.run3)
    sl = [_per_neuron(s, r, x_seq) for s, r in zip(slots, runs)]
    ret = "seq" if opts.v_seq else "last"
    ret_states = "seq" if opts.states_seq else "last"
    empty = x_seq.new_empty(0)
    if opts.model < 4:
        s, v, b = _sj_multi_step(
            x_seq,
            inits[0],
            inits[1],
            model=name,
            k=sl[0],
            tau=opts.tau,
            v_threshold=opts.v_threshold,
            v_reset=opts.v_reset if opts.hard_reset else None,
            decay_input=opts.decay_input,
            detach_reset=opts.detach_reset,
            surrogate=surrogate,
            alpha=opts.alpha,
            beta_sg=opts.beta_sg,
            beta_a=opts.beta_a,
            rho=opts.rho,
            levels=opts.levels,
            two_sided=opts.two_sided,
            return_v=ret,
            return_states=ret_states,
        )
        return s, v, (b if name == "alif" else empty), empty
    if name == "norse_lif":
        s, v, i = _norse_multi_step(
            x_seq,
            inits[0],
            inits[1],
            a_m=sl[0],
            a_s=sl[1],
            v_leak=sl[2],
            v_th=sl[3],
            v_reset=opts.v_reset,
            detach_reset=opts.detach_reset,
            surrogate=surrogate,
            alpha=opts.alpha,
            return_v=ret,
            return_states=ret_states,
        )
        return s, v, i, empty
    s, m, second, third = _snn_multi_step(
        x_seq,
        inits,
        model=name,
        beta=sl[0],
        thr=sl[1],
        third=sl[2],
        tau_a=sl[3],
        reset_mechanism=_RESET_NAMES[opts.reset],
        reset_delay=opts.reset_delay,
        surrogate=surrogate,
        alpha=opts.alpha,
        beta_sg=opts.beta_sg,
        return_mem=ret,
        return_states=ret_states,
    )
    return s, m, (second if name in ("synaptic", "alpha") else empty), (third if name == "alpha" else empty)
