"""Multi-step IF / LIF / PLIF in plain PyTorch: the ground truth for spikeforge.ops.neuron.

A time loop written the way shared/SEMANTICS.md states the equations (and the way SpikingJelly's
torch backend computes them); autograd gives BPTT, spike_fn the surrogate gradient.
"""
from __future__ import annotations

import torch

from .surrogate import spike_fn


def _multi_step(x_seq, v_init, k, charge_decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha,
                return_v, is_if):
    hard = v_reset is not None
    vr = v_reset if hard else 0.0
    if v_init is None:
        v = torch.full_like(x_seq[0], vr) if x_seq.shape[0] > 0 else None
    else:
        v = v_init
    spikes, vs = [], []
    for t in range(x_seq.shape[0]):
        x = x_seq[t]
        if is_if:
            h = v + x
        elif charge_decay_input:
            h = v + (x - (v - vr)) * k
        else:
            h = v - (v - vr) * k + x
        s = spike_fn(h - v_threshold, surrogate, alpha)
        s_r = s.detach() if detach_reset else s
        if hard:
            v = s_r * v_reset + (1 - s_r) * h
        else:
            v = h - s_r * v_threshold
        spikes.append(s)
        vs.append(v)
    if x_seq.shape[0] == 0:
        spike_seq = torch.empty_like(x_seq)
        v_seq = torch.empty_like(x_seq)
        v_last = v_init if v_init is not None else x_seq.new_full(x_seq.shape[1:], vr)
        return spike_seq, (v_seq if return_v == "seq" else v_last)
    spike_seq = torch.stack(spikes)
    if return_v == "seq":
        return spike_seq, torch.stack(vs)
    return spike_seq, v


def lif(x_seq, v_init=None, *, tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False,
        surrogate="sigmoid", alpha=None, return_v="last"):
    """Reference multi-step LIF -> (spike_seq, v)."""
    return _multi_step(x_seq, v_init, 1.0 / tau, decay_input, v_threshold, v_reset, detach_reset, surrogate,
                       alpha, return_v, False)


def if_neuron(x_seq, v_init=None, *, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate="sigmoid",
              alpha=None, return_v="last"):
    """Reference multi-step IF -> (spike_seq, v)."""
    return _multi_step(x_seq, v_init, 0.0, False, v_threshold, v_reset, detach_reset, surrogate, alpha,
                       return_v, True)


def plif(x_seq, w, v_init=None, *, decay_input=True, v_threshold=1.0, v_reset=0.0, detach_reset=False,
         surrogate="sigmoid", alpha=None, return_v="last"):
    """Reference multi-step parametric LIF, 1/tau = sigmoid(w); w scalar or per channel (x_seq dim 2)."""
    k = torch.sigmoid(w)
    if k.dim() == 1 and k.numel() != 1:  # per channel, C = 0 included (an empty channel dim)
        k = k.view([-1] + [1] * (x_seq.dim() - 3))
    elif k.numel() == 1:
        k = k.reshape(())
    return _multi_step(x_seq, v_init, k, decay_input, v_threshold, v_reset, detach_reset, surrogate, alpha,
                       return_v, False)


def lif_step(x, v=None, **kw):
    s, v = lif(x.unsqueeze(0), v, **kw)
    return s[0], v


def if_step(x, v=None, **kw):
    s, v = if_neuron(x.unsqueeze(0), v, **kw)
    return s[0], v


def plif_step(x, w, v=None, **kw):
    s, v = plif(x.unsqueeze(0), w, v, **kw)
    return s[0], v
