"""A whole training step on CUDA: captured into a CUDA graph and replayed, and under
torch.compile(fullgraph=True), each against the same steps run eagerly.

The net strings the op families together (Linear -> PLIF -> Linear -> PSN -> Linear) so the graph holds
every kind of native launch: the fused neuron forward/backward, PLIF's deterministic grad_w reduction,
the PSN forward/backward with its grad_W partials and their reduction. Capture works only if no op
allocates from a fresh pool mid-step or synchronises with the host. CUDA only: skipped elsewhere.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spikeforge import ops

from neuron_helpers import capture_cuda_graph

T, B, D_IN, D_HID, CLASSES = 8, 16, 24, 64, 5


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(D_IN, D_HID)
        self.plif_w = nn.Parameter(torch.full((D_HID,), -0.5))  # 1/tau = sigmoid(w), per channel
        self.fc2 = nn.Linear(D_HID, D_HID)
        self.psn_w = nn.Parameter(torch.randn(T, T) * 0.3)
        self.psn_b = nn.Parameter(torch.full((T,), -0.5))
        self.head = nn.Linear(D_HID, CLASSES)

    def forward(self, x):  # x [T, B, D_IN]
        s1, _ = ops.plif(self.fc1(x) * 2.0, self.plif_w, surrogate="atan")
        s2 = ops.psn(self.fc2(s1), self.psn_w, self.psn_b, surrogate="sigmoid")
        return self.head(s2).mean(0)


def _batches(n, device):
    gen = torch.Generator().manual_seed(7)
    return [
        (torch.randn(T, B, D_IN, generator=gen).to(device), torch.randint(0, CLASSES, (B,), generator=gen).to(device))
        for _ in range(n)
    ]


def _eager_steps(model, opt, batches):
    for x, y in batches:
        opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _assert_same_params(a, b, **tol):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=lambda m, n=name: f"{n}: {m}", **tol)


@pytest.fixture
def cuda_only(device):
    if device != "cuda":
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    return torch.device("cuda")


def test_training_step_cuda_graph_replay(cuda_only):
    dev = cuda_only
    model = _Net().to(dev)
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    warm, data = _batches(3, dev), _batches(4, dev)

    # the warm-up steps train on their own batches; then one full step is captured
    warm_iter = iter(warm)
    static_x, static_y = (t.clone() for t in data[0])

    def step():
        x, y = next(warm_iter, (static_x, static_y))
        opt.zero_grad(set_to_none=False)  # in place: the captured backward accumulates into these grads
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    graph, static_loss = capture_cuda_graph(step, warmup=len(warm))
    at_capture = copy.deepcopy(model)

    _eager_steps(twin, twin_opt, warm)
    for x, y in data:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        twin_opt.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(twin(x), y)
        loss.backward()
        twin_opt.step()
        torch.testing.assert_close(static_loss, loss.detach(), rtol=1e-5, atol=1e-6)
    torch.cuda.synchronize()
    _assert_same_params(model, twin, rtol=1e-5, atol=1e-6)
    # the replayed steps did train: every parameter moved from where the captured step first saw it
    for (name, p), q in zip(model.named_parameters(), at_capture.parameters()):
        assert not torch.equal(p, q), f"{name} did not change over the replays"


def test_training_step_compiled_fullgraph(cuda_only):
    dev = cuda_only
    model = _Net().to(dev)
    twin = copy.deepcopy(model)
    x, y = _batches(1, dev)[0]

    def loss_fn(m, x, y):
        return nn.functional.cross_entropy(m(x), y)

    compiled = torch.compile(loss_fn, fullgraph=True)
    loss_c = compiled(model, x, y)
    loss_c.backward()
    loss_e = loss_fn(twin, x, y)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"grad {n}: {m}")
