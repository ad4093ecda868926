"""A training loop for the model zoo (the library behind ``spikeforge train``, spikeforge/cli/train.py).

    spikeforge train                                  sew_resnet18_cifar on the shipped 8x8 digits
    spikeforge train --model ms_resnet18_cifar --loss tet --epochs 20 --T 4 --checkpoint run.pt
    spikeforge train --model spikformer_4_384_cifar --image-size 32 --dim 64 --depth 2 --heads 4
                                                      a spiking transformer on the digits upsampled to 32x32
    spikeforge train --dataset my_arrays.npz ...      any arrays x [N, C, H, W], y [N] (+ x_test, y_test)
    spikeforge train --checkpoint run.pt --resume     continue a run where its last epoch ended

Reproducible: the seed fixes the initial weights, the shuffling (a generator per epoch derived from the
seed, so a resumed run shuffles as the uninterrupted one would), Poisson encoding and dropout (the torch
RNG state is saved in the checkpoint). Same seed, same threads, same result.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .nn.layers import poisson_encode, tet_loss

__all__ = [
    "TrainConfig",
    "fit",
    "evaluate",
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "check_resume",
    "CheckpointError",
    "MODEL_FIELDS",
]

# the config fields that fix a model's architecture: a checkpoint's weights fit a run only if these match
MODEL_FIELDS = ("model", "T", "neuron", "cnf", "width", "dim", "depth", "heads", "image_size")
# the fields that fix the rest of a run: a resumed run continues exactly only with the same values (the
# restored optimizer and schedule would keep the old learning rate under a new --lr, a longer --epochs
# restarts a finished cosine schedule, a new --batch-size shifts it); threads, device, checkpoint path and
# evaluation frequency may change
TRAINING_FIELDS = (
    "dataset",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "loss",
    "tet_lambda",
    "encoding",
    "seed",
)


@dataclass
class TrainConfig:
    model: str = "sew_resnet18_cifar"
    dataset: str = "digits"
    epochs: int = 6
    T: int = 2
    batch_size: int = 32
    optimizer: str = "adamw"  # sgd | adam | adamw
    lr: float = 2e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | step | none (per iteration for cosine)
    warmup_epochs: float = 0.0
    loss: str = "ce"  # ce (on the mean over T) | tet
    tet_lambda: float = 1e-3
    encoding: str = "direct"  # direct | poisson (static images only)
    neuron: Optional[str] = None  # None: the model family's default (IF for spiking/SEW, LIF for MS)
    cnf: str = "ADD"  # SEW models
    width: int = 32  # channels of the first stage (the CIFAR models' 64 halved: digits are 8x8)
    dim: Optional[int] = None  # transformers: embedding width (None: the named configuration's)
    depth: Optional[int] = None  # transformers: number of blocks (None: the named configuration's)
    heads: Optional[int] = None  # transformers: attention heads (None: the named configuration's)
    image_size: Optional[int] = None  # resize the images (bilinear) to image_size x image_size first
    seed: int = 0
    threads: Optional[int] = 1  # see add_arguments: small convs gain little from more on a shared CPU
    device: str = "cpu"
    checkpoint: Optional[str] = None
    eval_every: int = 1
    history: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, in_channels: int, num_classes: int) -> nn.Module:
    from .models import MODELS, TRANSFORMER_MODELS

    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; one of: {', '.join(sorted(MODELS))}")
    kw = dict(num_classes=num_classes, T=cfg.T, in_channels=in_channels)
    if cfg.model in TRANSFORMER_MODELS:
        # width/cnf are residual-net options; a transformer takes its size as dim, depth and heads
        if cfg.model.startswith("meta_spikformer"):
            if cfg.dim is not None or cfg.depth is not None:
                raise ValueError(
                    "meta_spikformer models have fixed stage widths and depths: --dim/--depth do not "
                    "apply (use another transformer for a custom size)"
                )
        else:
            kw.update({k: v for k, v in (("dim", cfg.dim), ("depth", cfg.depth)) if v is not None})
        if cfg.heads is not None:
            kw["num_heads"] = cfg.heads
    else:
        if (cfg.dim, cfg.depth, cfg.heads) != (None, None, None):
            raise ValueError(
                f"--dim/--depth/--heads are transformer options; {cfg.model} is a residual net "
                "(its size option is --width)"
            )
        kw["width"] = cfg.width
    if cfg.model.startswith("sew_"):
        kw["cnf"] = cfg.cnf
    if cfg.neuron is not None:
        kw["neuron"] = cfg.neuron
        kw["neuron_kwargs"] = (
            dict(surrogate="atan", detach_reset=True)
            if cfg.neuron != "lif"
            else dict(tau=2.0, surrogate="atan", detach_reset=True)
        )
    return MODELS[cfg.model](**kw)


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    # no weight decay on BN / neuron parameters and biases (1-d tensors), the usual ResNet recipe
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"optimizer must be sgd, adam or adamw, got {cfg.optimizer!r}")


def make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    name = cfg.schedule.lower()
    if name not in ("cosine", "step", "none"):
        raise ValueError(f"schedule must be cosine, step or none, got {cfg.schedule!r}")

    def factor(it: int) -> float:  # stepped once per iteration
        if it < warm:
            return (it + 1) / warm
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (it - warm) / max(1, total - warm))))
        if name == "step":  # x0.1 at 50% and 75% of training
            return 0.1 ** ((it >= total // 2) + (it >= (3 * total) // 4))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _inputs(x: torch.Tensor, cfg: TrainConfig, training: bool) -> torch.Tensor:
    if x.dim() == 5:  # a sequence dataset stores [N, T, ...]; the models are time-first
        return x.transpose(0, 1)
    if cfg.encoding == "poisson":
        return poisson_encode(x.clamp(0, 1), cfg.T)
    return x  # direct encoding: the model repeats its stem output over T


def _loss(out_seq: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    if cfg.loss == "tet":
        return tet_loss(out_seq, y, lamb=cfg.tet_lambda)
    if cfg.loss == "ce":
        return F.cross_entropy(out_seq.mean(0), y)
    raise ValueError(f"loss must be ce or tet, got {cfg.loss!r}")


@torch.no_grad()
def evaluate(model: nn.Module, dataset, cfg: TrainConfig, batch_size: int = 256) -> dict:
    """Accuracy and mean CE of the time-averaged logits over a dataset (model in eval mode)."""
    was_training = model.training
    model.eval()
    x_all, y_all = dataset.tensors
    correct, loss_sum = 0, 0.0
    for i in range(0, len(y_all), batch_size):
        x = _inputs(x_all[i : i + batch_size].to(cfg.device), cfg, False)
        y = y_all[i : i + batch_size].to(cfg.device)
        logits = model(x).mean(0)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    n = max(1, len(y_all))
    return {"acc": correct / n, "loss": loss_sum / n}


class Progress:
    """A one-line progress bar on a terminal (stderr); one summary line per epoch otherwise."""

    def __init__(self, total: int, prefix: str, enabled: bool, stream=None):
        self.total, self.prefix, self.stream = total, prefix, stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, **stats) -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last < 0.1:
            return
        self.last = now
        w = 24
        fill = int(w * done / max(1, self.total))
        rate = done / max(1e-9, now - self.t0)
        s = " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        self.stream.write(f"\r{self.prefix} [{'#' * fill}{'.' * (w - fill)}] {done}/{self.total} {rate:.1f} it/s {s}")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def save_checkpoint(path: str, model, opt, sched, epoch: int, cfg: TrainConfig, extra: Optional[dict] = None):
    """Everything to continue exactly: weights + BN buffers, optimizer, schedule, torch RNG, config, history."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "schedule": sched.state_dict(),
        "epoch": epoch,
        "config": asdict(cfg),
        "rng": torch.get_rng_state(),
        "format": 1,
    }
    if str(cfg.device).startswith("cuda") and torch.cuda.is_available():
        # Poisson encoding and dropout draw from the CUDA generator on a CUDA run
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    if extra:
        state.update(extra)
    tmp = f"{path}.tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # never leave a half-written checkpoint behind
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)  # (a full disk or a file size limit: no partial .tmp left either)
        raise


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same file where both exist (links included), else the same
    absolute path."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def weights_mismatch(model: nn.Module, state: dict) -> str:
    """Why a state dict does not load into model, in a line: how many weights are missing, unexpected or of
    another shape, with an example of each (torch's message was cut to its first line, which names none)."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a state dict"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} where the model has {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    parts = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
        if keys
    ]
    return "; ".join(parts) or "the values do not load"


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite, or the gradients' norm did: the run stops before the update that
    would spread it into the weights (a diverged run went on to report a chance accuracy as a result)."""


class CheckpointError(ValueError):
    """A file that is not a readable ``spikeforge train`` checkpoint, or one that does not fit the run."""


def read_checkpoint(path: str) -> dict:
    """Loads and checks a ``spikeforge train`` checkpoint (weights only: no code in the file is run).

    Raises FileNotFoundError for a missing file and CheckpointError (a ValueError) for an empty, corrupt or
    foreign file, each with a one-line message naming the path.
    """
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (an interrupted save?), not a spikeforge train checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt zip, pickle of another program, ...: one message for all
        # (torch's weights_only message is a page of advice on loading code from the file: not for this case)
        first = (str(e).strip().splitlines() or [""])[0][:120]
        what = (
            "it holds objects other than tensors"
            if isinstance(e, pickle.UnpicklingError)
            else "not a file written by torch.save"
            if isinstance(e, (KeyError, EOFError))
            else f"{type(e).__name__}: {first}"
        )
        raise CheckpointError(f"{path} is not a readable spikeforge train checkpoint ({what})") from None
    keys = {"model", "config"}
    if (
        not isinstance(state, dict)
        or not keys <= set(state)
        or not isinstance(state["config"], dict)
        or not isinstance(state["model"], dict)
        or not isinstance(state["config"].get("model"), str)
    ):
        found = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a spikeforge train checkpoint (expected the keys 'model' (weights) "
            f"and 'config' (naming the model), found {found})"
        )
    return state


def _describe(config: dict) -> str:
    extra = ", ".join(f"{k}={config.get(k)}" for k in MODEL_FIELDS[1:] if config.get(k) is not None)
    return f"{config.get('model')} ({extra})" if extra else str(config.get("model"))


def check_resume(state: dict, cfg: TrainConfig, path: str = "the checkpoint") -> None:
    """CheckpointError unless the checkpoint was written for the same model and architecture as cfg."""
    missing = [k for k in ("optimizer", "schedule", "epoch", "rng") if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} holds weights but no training state ({', '.join(missing)} missing): it cannot be resumed"
        )
    saved = state["config"]
    mine = asdict(cfg)
    diff = [k for k in MODEL_FIELDS if saved.get(k) != mine.get(k)]
    if diff:
        raise CheckpointError(
            f"{path} holds {_describe(saved)}, but this run builds {_describe(mine)} "
            f"(differs in {', '.join(diff)}); pass the checkpoint's options or another path"
        )

    def same(k) -> bool:
        a, b = saved.get(k), mine.get(k)
        if k == "dataset" and isinstance(a, str) and isinstance(b, str) and a.endswith(".npz") and b.endswith(".npz"):
            # one file under two spellings (./d.npz, d.npz, an absolute path; from another working folder the
            # relative path names another file, which is then refused)
            return same_file(a, b)
        return a == b

    diff = [k for k in TRAINING_FIELDS if k in saved and not same(k)]
    if diff:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
        now = ", ".join(f"{k}={mine.get(k)!r}" for k in diff)
        raise CheckpointError(
            f"{path} was trained with {was}, but this run asks for {now}: a resumed run continues that run "
            "exactly, so pass its options (or start a new run under another --checkpoint path)"
        )


def load_checkpoint(path: str, model=None, opt=None, sched=None) -> dict:
    """read_checkpoint(path), then the state loaded into whichever of model, opt, sched are given."""
    state = read_checkpoint(path)
    if model is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError:
            raise CheckpointError(
                f"{path}: its weights do not fit {type(model).__name__}: {weights_mismatch(model, state['model'])}"
            ) from None
    for what, target in (("optimizer", opt), ("schedule", sched)):
        if target is None:
            continue
        try:
            target.load_state_dict(state[what])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise CheckpointError(
                f"{path}: its {what} state does not fit this run's {type(target).__name__} ({type(e).__name__}: "
                f"{(str(e).splitlines() or [''])[0][:120]})"
            ) from None
    return state


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def _check_gradients(model: nn.Module, cfg: TrainConfig, epoch: int, it: int, image_hw: tuple) -> None:
    """Raises DivergedError before the update when the gradients' norm is not finite. A finite loss can have
    gradients whose squares overflow float32: the optimizer then stops moving those weights (Adam's second
    moment is infinite) or spreads NaN into them, and the run went on at chance accuracy with no error. Seen
    from the first step in a Meta-SpikeFormer on small images: its attention neurons are silent there, and each
    BatchNorm of an all-zero input multiplies the gradient by 1/sqrt(eps), about 316 (1e33 at the first layer
    on the 8x8 digits; finite from 64x64 on)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    if math.isfinite(norm):
        return
    hint = "a learning rate too high for this model, or non-finite data"
    if cfg.model.startswith("meta_spikformer") and min(image_hw) < 64:
        hint = (
            f"a Meta-SpikeFormer on {image_hw[0]} x {image_hw[1]} inputs: its attention neurons do not fire there "
            "and its BatchNorms of all-zero inputs blow the gradients up; use --image-size 64 "
            "(TrainConfig.image_size) or more"
        )
    raise DivergedError(
        f"the gradients are not finite (their norm is {norm}) at epoch {epoch + 1}, step {it + 1}, before the "
        f"update: the run diverged ({hint})"
        + ("; the checkpoint holds the last finished epoch" if cfg.checkpoint else "")
    )


def fit(
    cfg: TrainConfig,
    train_set=None,
    test_set=None,
    *,
    resume: bool = False,
    progress: bool = False,
    log=print,
    model: Optional[nn.Module] = None,
    stop_after: Optional[int] = None,
) -> dict:
    """Trains cfg.model on cfg.dataset (or the given TensorDatasets); returns a summary dict.

    With cfg.checkpoint set, a checkpoint is written after every epoch; resume=True continues from it.
    stop_after=k ends this call after k epochs (of cfg.epochs: the schedule still spans all of them), e.g.
    to split a run into time-boxed jobs.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if train_set is None:
        from .data import get_dataset

        train_set, test_set = get_dataset(cfg.dataset)
    if cfg.image_size is not None:
        from .data import resize_images

        train_set = resize_images(train_set, cfg.image_size)
        test_set = resize_images(test_set, cfg.image_size) if test_set is not None else None
    x0, y_train = train_set.tensors
    sample = x0[0] if x0.dim() == 4 else x0[0, 0]
    image_hw = tuple(int(v) for v in sample.shape[-2:])  # (the hint of _check_gradients)
    num_classes = int(max(int(y_train.max()), int(test_set.tensors[1].max()) if test_set is not None else 0)) + 1

    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg, in_channels=sample.shape[0], num_classes=num_classes)
    model.to(cfg.device)
    n = len(y_train)
    steps = math.ceil(n / cfg.batch_size)
    opt = make_optimizer(cfg, model)
    sched = make_schedule(cfg, opt, steps)
    start_epoch, history = 0, []
    if resume:
        if not cfg.checkpoint:
            raise ValueError("resume=True needs cfg.checkpoint (the path to continue from)")
        check_resume(read_checkpoint(cfg.checkpoint), cfg, cfg.checkpoint)
        state = load_checkpoint(cfg.checkpoint, model, opt, sched)
        start_epoch, history = state["epoch"], state.get("history", [])
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or not 0 <= start_epoch <= cfg.epochs:
            raise CheckpointError(f"{cfg.checkpoint}: its epoch {start_epoch!r} is not an epoch of this run")
        try:
            torch.set_rng_state(state["rng"])
        except (TypeError, RuntimeError) as e:
            raise CheckpointError(f"{cfg.checkpoint}: its rng state is not a torch RNG state ({e})") from None
        if "cuda_rng" in state and str(cfg.device).startswith("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        log(f"resumed from {cfg.checkpoint} after epoch {start_epoch}")
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"{cfg.model}: {n_params / 1e6:.3f}M parameters, T={cfg.T}, {n} training / "
        f"{len(test_set.tensors[1]) if test_set is not None else 0} test samples, loss {cfg.loss}, "
        f"{cfg.optimizer} lr {cfg.lr} ({cfg.schedule}), {torch.get_num_threads()} threads"
    )
    t_start = time.perf_counter()
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        t0 = time.perf_counter()
        # a generator per epoch: a resumed run shuffles exactly as the uninterrupted one
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        bar = Progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        loss_sum, correct, seen = 0.0, 0, 0
        for it in range(steps):
            idx = perm[it * cfg.batch_size : (it + 1) * cfg.batch_size]
            x = _inputs(x0[idx].to(cfg.device), cfg, True)
            y = y_train[idx].to(cfg.device)
            out = model(x)
            loss = _loss(out, y, cfg)
            loss_value = float(loss.detach())  # (the one host read of the step, before the update)
            if not math.isfinite(loss_value):
                raise DivergedError(
                    f"the training loss is {loss_value} at epoch {epoch + 1}, step {it + 1}: the run diverged "
                    "(a learning rate too high for this model, or non-finite data)"
                    + ("; the checkpoint holds the last finished epoch" if cfg.checkpoint else "")
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _check_gradients(model, cfg, epoch, it, image_hw)
            opt.step()
            sched.step()
            loss_sum += loss_value * len(idx)
            correct += int((out.detach().mean(0).argmax(1) == y).sum())
            seen += len(idx)
            bar.update(it + 1, loss=loss_sum / seen, acc=correct / seen)
        bar.close()
        rec = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "epoch_s": time.perf_counter() - t0,
            "lr": opt.param_groups[0]["lr"],
        }
        if test_set is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            ev = evaluate(model, test_set, cfg)
            rec.update(test_acc=ev["acc"], test_loss=ev["loss"])
            if not math.isfinite(ev["loss"]):
                raise DivergedError(
                    f"the test loss is {ev['loss']} after epoch {epoch + 1} (train loss {rec['train_loss']:.4g}): "
                    "the run diverged (a learning rate too high for this model, or non-finite data)"
                    + ("; the checkpoint holds the last finished epoch before it" if cfg.checkpoint else "")
                )
        history.append(rec)
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {rec['train_loss']:.4f} acc {rec['train_acc']:.4f}"
            + (f" | test loss {rec['test_loss']:.4f} acc {rec['test_acc']:.4f}" if "test_acc" in rec else "")
            + f" | {rec['epoch_s']:.1f} s"
        )
        if cfg.checkpoint:
            save_checkpoint(
                cfg.checkpoint,
                model,
                opt,
                sched,
                epoch + 1,
                cfg,
                {
                    "history": history,
                    "input_shape": list(sample.shape),  # one step's [C, H, W]
                    "sequence_input": x0.dim() == 5,  # the data were sequences [N, T, C, H, W] (spikeforge energy)
                    "num_classes": num_classes,
                },
            )
    wall = time.perf_counter() - t_start
    final = history[-1] if history else {}
    return {
        "model": model,
        "history": history,
        "train_s": wall,
        "test_acc": final.get("test_acc"),
        "n_params": n_params,
    }
