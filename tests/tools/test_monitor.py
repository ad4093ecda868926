"""spikeforge.tools.FiringRateMonitor: exact rates of hand-checkable neurons over several batches, per-step
rates, the zoo models' fused BN + neuron path under hooks, opt-ins, table and PNG."""

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import models
from spikeforge.tools import FiringRateMonitor


pytestmark = pytest.mark.usefixtures("one_thread")


class TwoIF(nn.Module):
    """Two IF layers fed constants: 0.6 fires at t = 1, 3 (H = 0.6, 1.2 -> reset, 0.6, 1.2); 2.0 every step."""

    def __init__(self):
        super().__init__()
        self.slow, self.fast = sf.nn.IF(), sf.nn.IF()

    def forward(self, x):  # x [T, B, N]
        sf.nn.reset_net(self)
        return self.slow(torch.full_like(x, 0.6)) + self.fast(torch.full_like(x, 2.0))


def test_exact_rates_over_batches_and_per_step(device):
    model = TwoIF()
    with FiringRateMonitor(model) as mon:
        model(torch.zeros(4, 2, 3, device=device))
        model(torch.zeros(4, 5, 3, device=device))  # a second batch of another size: rates over all neuron-steps
    model(torch.zeros(4, 1, 3, device=device))  # detached: not recorded
    summ = {s.name: s for s in mon.summary()}
    assert set(summ) == {"slow", "fast"}
    assert summ["slow"].rate == 0.5 and summ["slow"].per_step == [0.0, 1.0, 0.0, 1.0]
    assert summ["slow"].spikes == 2 * (2 + 5) * 3 and summ["slow"].elements == 4 * (2 + 5) * 3
    assert summ["fast"].rate == 1.0 and summ["fast"].calls == 2 and summ["fast"].type == "IF"
    assert mon.rates() == {"slow": 0.5, "fast": 1.0}
    table = mon.table()
    assert "slow" in table and "0.5000" in table and "t=3" in table
    mon.reset()
    assert mon.summary() == []


def test_single_step_neurons_and_psn():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = sf.nn.LIF(step_mode="s")
            self.psn = sf.nn.PSN(T=3)

        def forward(self, x):
            return self.psn(x), [self.lif(x[t]) for t in range(x.shape[0])]

    net = Net()
    x = torch.rand(3, 2, 4) * 3
    with FiringRateMonitor(net) as mon, torch.no_grad():
        psn_out, lif_steps = net(x)
    summ = {s.name: s for s in mon.summary()}
    assert summ["psn"].rate == pytest.approx(float(psn_out.mean()))
    assert summ["psn"].per_step == pytest.approx(psn_out.mean(dim=(1, 2)).tolist())
    assert summ["lif"].calls == 3 and summ["lif"].per_step is None  # single steps: no time axis in the output
    assert summ["lif"].rate == pytest.approx(float(torch.stack(lif_steps).mean()))


def test_zoo_model_training_step_fused_path_is_recorded():
    model = models.sew_resnet18_cifar(width=4, T=2)
    model.train()
    x = torch.rand(2, 3, 8, 8)
    torch.manual_seed(0)
    ref = model(x)
    neurons = [n for n, m in model.named_modules() if isinstance(m, sf.nn.IF)]
    with FiringRateMonitor(model) as mon:
        torch.manual_seed(0)
        out = model(x)
        out.sum().backward()  # the unfused path under hooks trains as the fused one
    # every neuron ran through its forward (the fused BN + neuron path is skipped while hooked)
    assert [s.name for s in mon.summary()] == neurons
    torch.testing.assert_close(out, ref)
    assert all(0.0 <= s.rate <= 1.0 for s in mon.summary())
    assert not any(m._forward_hooks for m in model.modules())  # detached on exit
    assert not any(hasattr(m, "run_unfused") for m in model.modules())  # the flag is gone too


def test_opt_in_and_types():
    class Custom(nn.Module):
        spikeforge_neuron = True

        def forward(self, x):
            return (x > 0).float()

    net = nn.Sequential(nn.Linear(3, 3), Custom(), sf.nn.LIF())
    x = torch.randn(2, 4, 3)
    with FiringRateMonitor(net) as mon:
        net(x)
    assert [s.name for s in mon.summary()] == ["1", "2"]
    with FiringRateMonitor(net, types=[Custom]) as mon:
        net(x)
    assert [s.name for s in mon.summary()] == ["1"]
    with pytest.raises(ValueError, match="no neuron modules"):
        FiringRateMonitor(nn.Linear(2, 2)).attach()
    with pytest.raises(TypeError, match="model must be"):
        FiringRateMonitor("net")
    with pytest.raises(TypeError, match="types must be"):
        FiringRateMonitor(net, types=[int])


def test_plot_png(tmp_path):
    pytest.importorskip("matplotlib")
    model = TwoIF()
    mon = FiringRateMonitor(model)
    with pytest.raises(ValueError, match="nothing recorded"):
        mon.plot(str(tmp_path / "x.png"))
    with mon:
        model(torch.zeros(4, 2, 3))
    path = mon.plot(str(tmp_path / "rates.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="path must be"):
        mon.plot("")
