"""DistributedDataParallel (and FSDP2) with spikeforge models: 2 processes, gloo on CPU, each on half the batch.

- A model without BatchNorm (conv -> LIF -> linear): DDP's averaged gradients equal one process's gradients
  on the whole batch (mean loss over equal halves), over two optimizer steps with reset_net between them.
- A zoo model (sew_resnet18_cifar) in training mode: BN normalises each rank's half with that half's
  statistics, so the whole-batch gradient is not the reference; DDP's is the mean of the two half-batch
  gradients, computed here in one process. This runs the models' fused BN + neuron path under DDP.
- The same zoo model sharded with FSDP2 (torch.distributed.fsdp.fully_shard, one unit per residual stage):
  the same averaged gradients.

Neuron membrane state is a plain attribute (not a registered buffer), so DDP never broadcasts it; it is
per rank and reset by reset_net (the zoo models reset in every forward).
"""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import spikeforge as sf
from spikeforge import models

WORLD = 2
B = 8  # whole batch; each rank gets B / WORLD


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        sf.nn.MultiStep(nn.Conv2d(1, 4, 3, padding=1)),
        sf.nn.LIF(tau=2.0, surrogate="atan"),
        sf.nn.MultiStep(nn.Flatten(), nn.Linear(4 * 6 * 6, 3)),
    )


def _tiny_data(step):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.rand(B, 1, 6, 6, generator=g) * 2.0
    return sf.nn.direct_encode(x, 2).contiguous(), torch.randint(0, 3, (B,), generator=g)


def _zoo(seed=0):
    torch.manual_seed(seed)
    return models.sew_resnet18_cifar(width=4, T=2, num_classes=3)


def _zoo_data():
    g = torch.Generator().manual_seed(7)
    return torch.rand(B, 3, 8, 8, generator=g), torch.randint(0, 3, (B,), generator=g)


def _tiny_steps(model, rows, step_fn=None):
    """Two SGD steps of CE(mean over T) on the given rows of each step's batch; returns the grads of both."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    grads = []
    for step in range(2):
        x, y = _tiny_data(step)
        sf.nn.reset_net(model)  # the tiny net does not reset itself: a new batch is a new sequence
        loss = F.cross_entropy(model(x[:, rows]).mean(0), y[rows])
        opt.zero_grad()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        opt.step()
    return grads


def _zoo_grads(model, rows):
    x, y = _zoo_data()
    model.train()
    loss = F.cross_entropy(model(x[rows]).mean(0), y[rows])
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _strip(grads):  # DDP's module is the plain model: same parameter names
    return {n.removeprefix("module."): g for n, g in grads.items()}


def _fsdp_grads(rows):
    """FSDP2 (fully_shard): each residual stage is one sharded unit, then the root; full gradients back."""
    from torch.distributed.fsdp import fully_shard

    model = _zoo()
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        fully_shard(stage)
    fully_shard(model)
    grads = _zoo_grads(model, rows)
    return {n: g.full_tensor() for n, g in grads.items()}


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        tiny = nn.parallel.DistributedDataParallel(_tiny())
        out = {"tiny": [_strip(g) for g in _tiny_steps(tiny, rows)]}
        zoo = nn.parallel.DistributedDataParallel(_zoo())
        out["zoo"] = _strip(_zoo_grads(zoo, rows))
        out["buffers"] = sorted(n for n, _ in zoo.module.named_buffers())
        out["fsdp"] = _fsdp_grads(rows)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_two_processes_match_one_process(tmp_path):
    torch.set_num_threads(1)
    ctx = mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 180  # a hung collective must fail the test, not stall the suite
    while not ctx.join(timeout=1):  # raises when a worker failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail("the 2 DDP workers did not finish within 180 s")
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    # neuron state is no buffer: DDP broadcasts only BN statistics
    assert res[0]["buffers"] and not any(n.endswith(".v") or n == "v" for n in res[0]["buffers"])

    # no BN: the averaged gradients of two halves are the whole batch's, at both steps
    want = _tiny_steps(_tiny(), slice(0, B))
    for step in range(2):
        for name, g in want[step].items():
            for r in range(WORLD):
                torch.testing.assert_close(res[r]["tiny"][step][name], g, rtol=1e-4, atol=1e-6)
    assert any(float(g.abs().sum()) > 0 for g in want[1].values())  # spikes flowed: a non-trivial check

    # with BN (per-rank statistics): DDP = the mean of the half-batch gradients
    halves = [_zoo_grads(_zoo(), slice(r * B // WORLD, (r + 1) * B // WORLD)) for r in range(WORLD)]
    for name in halves[0]:
        mean = (halves[0][name] + halves[1][name]) / WORLD
        for r in range(WORLD):
            torch.testing.assert_close(res[r]["zoo"][name], mean, rtol=1e-4, atol=1e-6)
    assert float(res[0]["zoo"]["stem.0.weight"].abs().sum()) > 0
    # FSDP2 on the same model: sharded parameters, the same averaged gradients
    for name in halves[0]:
        torch.testing.assert_close(
            res[0]["fsdp"][name], (halves[0][name] + halves[1][name]) / WORLD, rtol=1e-4, atol=1e-6
        )
