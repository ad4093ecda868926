"""spikeforge.interop.snntorch: patched snnTorch neurons and models against snnTorch's own modules, called the
tutorials' way (one step per call) and a whole sequence per call.

Spikes, states and dtypes are compared bit for bit; gradients with a tolerance (the loop path applies beta's
clamp once per sequence, the fused path evaluates the surrogate one ulp away). Model-level cases use dyadic
weights and inputs so that folding time into the batch of a convolution or linear layer is exact too.
Skipped when snnTorch is absent.
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


@pytest.fixture
def lif_calls(monkeypatch):
    """Counts the fused kernel calls (a fused path that silently fell back to the loop would not count)."""
    calls = []
    for name in ("lif", "if_neuron"):
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


def _states(nrn):
    model = next(name for name in _STATE_NAMES if isinstance(nrn, getattr(snn, name)))
    return [getattr(nrn, n) for n in _STATE_NAMES[model]]


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g, w)


def _check_sequence_call(nrn, x, *, fused=False, calls=None):
    """nrn in step_mode "m" on x [T, B, ...] == T snnTorch calls: outputs, final states, dtypes, gradients."""
    ref = copy.deepcopy(nrn)
    same, report = sfs.patch(nrn, step_mode="m")
    assert same is nrn and nrn.step_mode == "m" and report.neurons[0][0] == "<model>"
    assert nrn.path == ("fused" if fused else "loop"), nrn.fused_blocker()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    n_calls = len(calls) if calls is not None else 0
    want = _per_step(ref, x1)
    got = nrn(x2)
    got = got if isinstance(got, tuple) else (got,)
    if calls is not None:
        assert len(calls) - n_calls == (1 if fused and x.dtype in (torch.float32, torch.float64) else 0)
    assert 0 < want[0].sum() < want[0].numel(), "the case must exercise both firing and not firing"
    _assert_same(got, want)
    _assert_same(_states(nrn), _states(ref))
    if not any(o.requires_grad for o in want):  # surrogate_disable: no gradient at all, on either side
        assert not any(o.requires_grad for o in got)
        return nrn
    weights = [torch.randn(w.shape, dtype=w.dtype) for w in want]
    sum((w * o).sum() for w, o in zip(weights, want) if o.requires_grad).backward()
    sum((w * o).sum() for w, o in zip(weights, got) if o.requires_grad).backward()
    if x1.grad is not None:
        torch.testing.assert_close(x2.grad, x1.grad, rtol=RTOL, atol=ATOL)
    for (name, p1), (_, p2) in zip(ref.named_parameters(), nrn.named_parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=RTOL, atol=ATOL, msg=name)
    return nrn


# ------------------------------------------------------------------------------------------------------
# one neuron, a sequence per call == one step per call, bit for bit
# ------------------------------------------------------------------------------------------------------
LEAKY_CASES = {
    "subtract": dict(beta=0.9), "subtract_beta1": dict(beta=1.0), "zero_beta09": dict(beta=0.9, reset_mechanism="zero"),
    "none": dict(beta=0.9, reset_mechanism="none"), "no_reset_delay": dict(beta=0.9, reset_delay=False),
    "zero_no_reset_delay": dict(beta=0.8, reset_mechanism="zero", reset_delay=False),
    "learn_beta_threshold": dict(beta=0.9, learn_beta=True, learn_threshold=True),
    "per_neuron_beta": dict(beta=torch.linspace(0.5, 1.0, 8)), "graded": dict(beta=0.9, graded_spikes_factor=2.0),
    "fast_sigmoid25": dict(beta=0.9, spike_grad=surrogate.fast_sigmoid(25)),
    "surrogate_disable": dict(beta=0.9, surrogate_disable=True),
    "inhibition": dict(beta=0.9, inhibition=True),
    "state_quant": dict(beta=0.9, state_quant=lambda u: torch.round(u * 8) / 8),
}


@pytest.mark.parametrize("case", sorted(LEAKY_CASES))
@pytest.mark.parametrize("init_hidden,output", [(True, False), (True, True), (False, False)])
def test_leaky_loop_path_is_snntorch_bit_for_bit(case, init_hidden, output, lif_calls):
    kw = dict(threshold=0.75, init_hidden=init_hidden, output=output)
    kw.update(LEAKY_CASES[case])
    with pytest.warns(UserWarning) if case == "inhibition" else _nothing():
        nrn = snn.Leaky(**kw)
    _check_sequence_call(nrn, torch.rand(10, 3, 8) * 0.7, calls=lif_calls)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


SYNAPTIC_CASES = {"subtract": {}, "zero": dict(reset_mechanism="zero"), "none": dict(reset_mechanism="none"),
                  "no_reset_delay": dict(reset_delay=False), "learn": dict(learn_alpha=True, learn_beta=True)}


@pytest.mark.parametrize("case", sorted(SYNAPTIC_CASES))
@pytest.mark.parametrize("init_hidden,output", [(True, False), (True, True), (False, False)])
def test_synaptic_loop_path_is_snntorch_bit_for_bit(case, init_hidden, output):
    nrn = snn.Synaptic(alpha=0.8, beta=0.7, threshold=0.75, init_hidden=init_hidden, output=output,
                       **SYNAPTIC_CASES[case])
    _check_sequence_call(nrn, torch.rand(10, 3, 8) * 0.5)


@pytest.mark.parametrize("reset_mechanism", ["zero", "subtract", "none"])
@pytest.mark.parametrize("init_hidden,output", [(True, False), (True, True), (False, False)])
def test_alpha_loop_path_is_snntorch_bit_for_bit(reset_mechanism, init_hidden, output):
    nrn = snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5, init_hidden=init_hidden, output=output,
                    reset_mechanism=reset_mechanism)
    _check_sequence_call(nrn, torch.rand(10, 3, 8) * 0.6)


@pytest.mark.parametrize("model", ["Leaky", "Leaky_zero", "Synaptic", "Alpha"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_rules_are_snntorchs(model, dtype):
    """snnTorch's spikes are float32 whatever the input dtype; its states promote as its operations do."""
    nrn = {"Leaky": lambda: snn.Leaky(beta=0.9, init_hidden=True, output=True),
           "Leaky_zero": lambda: snn.Leaky(beta=0.75, reset_mechanism="zero", init_hidden=True, output=True),
           "Synaptic": lambda: snn.Synaptic(alpha=0.8, beta=0.7, init_hidden=True, output=True),
           "Alpha": lambda: snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True, output=True)}[model]()
    x = (torch.rand(8, 3, 8) * 1.5).to(dtype)
    got = _check_sequence_call(nrn, x, fused=model == "Leaky_zero")
    assert nrn(x)[0].dtype == torch.float32 and got.mem.dtype in (torch.float32, dtype)


@pytest.mark.parametrize("grad", ["atan2", "sigmoid5", "fast_sigmoid1", "fast_sigmoid2"])
@pytest.mark.parametrize("beta", [0.5, 0.75, 0.875, 1.0])
def test_zero_reset_runs_fused_with_snntorchs_spikes_and_membranes(grad, beta, lif_calls):
    spike_grad = {"atan2": surrogate.atan(alpha=2.0), "sigmoid5": surrogate.sigmoid(slope=5),
                  "fast_sigmoid1": surrogate.fast_sigmoid(slope=1), "fast_sigmoid2": surrogate.fast_sigmoid(slope=2)}
    nrn = snn.Leaky(beta=beta, threshold=0.75, reset_mechanism="zero", spike_grad=spike_grad[grad],
                    init_hidden=True, output=True)
    _check_sequence_call(nrn, torch.rand(16, 4, 32) * 0.8, fused=True, calls=lif_calls)


def test_fused_firing_test_is_strict_like_snntorch(lif_calls):
    """U exactly on the threshold does not fire in snnTorch (Heaviside(0) = 0); the fused path agrees."""
    nrn = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero", init_hidden=True)
    x = torch.tensor([[1.0, 1.5], [0.5, 0.0], [1.0, 2.0]]).unsqueeze(1)  # U: [1, 1.5] -> [1, 0] -> [1.5, 2]
    ref = copy.deepcopy(nrn)
    sfs.patch(nrn, step_mode="s")
    nrn.step_mode = "m"
    assert torch.equal(nrn(x), _per_step(ref, x)[0]) and lif_calls == ["lif"]
    assert nrn(x.new_zeros(0, 1, 2)).shape == (0, 1, 2)  # an empty sequence: no step, state unchanged


def test_non_power_of_two_beta_runs_the_loop():
    nrn = snn.Leaky(beta=0.9, reset_mechanism="zero")
    sfs.patch(nrn)
    assert nrn.path == "loop" and "power of two" in nrn.fused_blocker()


# ------------------------------------------------------------------------------------------------------
# the tutorials' calling convention and the state between calls
# ------------------------------------------------------------------------------------------------------
def _conv_net(neuron_kw=None, seed=0):
    torch.manual_seed(seed)
    kw = dict(beta=0.5, threshold=0.5, init_hidden=True)
    kw.update(neuron_kw or {})
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), snn.Leaky(**kw), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 16), snn.Leaky(**kw),
                        nn.Linear(16, 5), snn.Leaky(beta=0.75, init_hidden=True, output=True))
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
    net = nn.Sequential(nn.Linear(6, 8), snn.Synaptic(alpha=0.8, beta=0.7, init_hidden=True),
                        nn.Linear(8, 8), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
                        nn.Linear(8, 4), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.round(p * 16) / 16 * 2)
    patched, report = sfs.patch(copy.deepcopy(net), step_mode="m")
    assert [(n, c, p.split(":")[0]) for n, c, p in report.neurons] == [
        ("1", "Synaptic", "loop"), ("3", "Alpha", "loop"), ("5", "Leaky", "loop")]
    assert "no fused kernel for Synaptic" in str(report)
    x = dyadic((9, 5, 6), 0, 16)
    utils.reset(net)
    want = [net(x[t]) for t in range(9)]
    s, m = patched(x)
    assert torch.equal(s, torch.stack([w[0] for w in want])) and torch.equal(m, torch.stack([w[1] for w in want]))
    assert 0 < s.sum() < s.numel()


def test_batch_norm_in_training_runs_step_by_step_with_snntorchs_numbers():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), snn.Leaky(beta=0.5, init_hidden=True),
                        nn.Flatten(), nn.Linear(4 * 8 * 8, 5), nn.BatchNorm1d(5),
                        snn.Leaky(beta=0.5, init_hidden=True, output=True))
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
    net = nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.9, init_hidden=True),
                        nn.Linear(4, 4), snn.RLeaky(beta=0.9, linear_features=4, init_hidden=True))
    with pytest.raises(ValueError, match="RLeaky"):
        sfs.patch(net, step_mode="m")
    assert type(net[1]) is snn.Leaky and type(net) is nn.Sequential  # a refused patch changes nothing
    patched, report = sfs.patch(net)
    assert report.kept == [("3", "RLeaky", "no drop-in for this snnTorch neuron: runs snnTorch's own per-step "
                                          "code")]
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

    for bad, match in ((nn.SyncBatchNorm(4), "SyncBatchNorm"), (Block(), "Block"),
                       (nn.Softmax(dim=0), "batch dimension"), (nn.Flatten(0), "batch dimension")):
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


def test_backend_choice(lif_calls):
    with pytest.raises(ValueError, match="subtract"):
        sfs.patch(nn.Sequential(snn.Leaky(beta=0.9, init_hidden=True)), backend="fused")
    lif = snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True)
    sfs.patch(lif, backend="fused")
    lif.step_mode = "m"
    lif(torch.rand(4, 2, 8))
    assert lif_calls == ["lif"]
    utils.reset(lif)
    with pytest.raises(ValueError, match="float16"):
        lif(torch.rand(4, 2, 8).half())
    loop = snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True)
    _, report = sfs.patch(loop, backend="loop", step_mode="s")
    loop.step_mode = "m"
    loop(torch.rand(4, 2, 8))
    assert lif_calls == ["lif"] and loop.path == "loop" and "backend='loop'" in report.neurons[0][2]


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
    for nrn in (snn.Leaky(beta=0.5, init_hidden=True, spike_grad=surrogate.fast_sigmoid(25)),
                snn.Leaky(beta=0.5, reset_mechanism="zero", init_hidden=True),
                snn.Synaptic(alpha=0.8, beta=0.7, init_hidden=True), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True)):
        sfs.patch(nrn, step_mode="m")
        x = torch.rand(6, 2, 8)
        assert dynamo.explain(nrn)(x).graph_break_count == 0
        nrn.reset_mem()  # (snntorch.utils.reset(net) resets the neurons among net's children)
        want = nrn(x)
        nrn.reset_mem()
        dynamo.reset()
        torch.testing.assert_close(torch.compile(nrn, fullgraph=True, backend="eager")(x), want, rtol=0, atol=0)


def test_the_state_update_is_the_one_snntorch_bound_at_construction():
    """snnTorch picks its state function in __init__: a later reset_mechanism change only affects the
    reset_delay=False branch. The sequence path follows the same rule."""
    nrn = snn.Leaky(beta=0.9, threshold=0.5, reset_delay=False, init_hidden=True, output=True)
    nrn.reset_mechanism = "zero"
    _check_sequence_call(nrn, torch.rand(8, 3, 8) * 0.7)
