"""``spikeforge train``: train a zoo model on the shipped digits or on your own arrays (spikeforge.train)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from ._common import (
    UsageError,
    check_device,
    check_output_path,
    seed,
    write_text_atomic,
    non_negative_float,
    positive_float,
    positive_int,
    thread_count,
    unknown_name,
)

HELP = "train a zoo model on the shipped digits or on your arrays (no downloads)"
DESCRIPTION = """\
Train a spiking network from the model zoo with surrogate gradients (BPTT) on the 8x8 handwritten digits
that ship with spikeforge (1797 images, fixed 80/20 split) or on arrays from an .npz file. The default run
(sew_resnet18_cifar, width 32, T=2, 6 epochs) reaches about 98% test accuracy in 1-2 minutes on one CPU core.
Same seed and thread count, same result; a run resumed from its checkpoint equals the uninterrupted one."""
EPILOG = """\
examples:
  spikeforge train                                    the default run on the shipped digits
  spikeforge train --checkpoint run.pt                also save model + optimizer after every epoch to run.pt
  spikeforge train --checkpoint run.pt --resume       continue that run where its last epoch ended
  spikeforge train --model ms_resnet18_cifar --loss tet --T 4 --epochs 20
  spikeforge train --model spikformer_4_384_cifar --image-size 32 --dim 64 --depth 2 --heads 4
  spikeforge train --dataset my_arrays.npz            arrays x [N, C, H, W], y [N] (+ x_test, y_test)
  spikeforge energy --checkpoint run.pt               energy / SOPs of the trained model"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..train import TrainConfig

    d = TrainConfig()
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default=d.model,
        metavar="NAME",
        help="a zoo model: a residual net (sew_/spiking_/ms_resnet*) or a spiking transformer "
        "(spikformer_*, sdt_*, qkformer_*, ...); names in spikeforge.models.MODELS "
        "(default: %(default)s)",
    )
    m.add_argument("--T", type=positive_int, default=d.T, help="time steps per sample (default: %(default)s)")
    m.add_argument(
        "--neuron",
        choices=("if", "lif", "plif"),
        default=None,
        help="neuron of every layer (default: the family's own: IF for spiking/SEW nets, LIF for MS "
        "and the transformers)",
    )
    m.add_argument(
        "--cnf",
        choices=("ADD", "AND", "IAND"),
        default=None,
        help=f"SEW connect function (SEW ResNets only; default: {d.cnf})",
    )
    m.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="residual nets: channels of the first stage; the papers' nets use 64, the digits need "
        f"less (default: {d.width})",
    )
    m.add_argument(
        "--dim",
        type=positive_int,
        default=None,
        help="transformers: embedding width (default: the named model's, e.g. 384)",
    )
    m.add_argument(
        "--depth", type=positive_int, default=None, help="transformers: number of blocks (default: the named model's)"
    )
    m.add_argument(
        "--heads", type=positive_int, default=None, help="transformers: attention heads (default: the named model's)"
    )

    dgrp = p.add_argument_group("data")
    dgrp.add_argument(
        "--dataset",
        default=d.dataset,
        metavar="digits|PATH.npz",
        help="'digits' (shipped) or an .npz file with arrays x [N, C, H, W] and integer labels y "
        "[N], optionally x_test, y_test; uint8 images are scaled by 1/255 (default: %(default)s)",
    )
    dgrp.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        metavar="S",
        help="resize the images to S x S (bilinear) first, e.g. 32 for the CIFAR-sized "
        "transformers on the 8x8 digits (default: as stored)",
    )
    dgrp.add_argument(
        "--encoding",
        choices=("direct", "poisson"),
        default=d.encoding,
        help="direct: the image at every step; poisson: random spikes with the pixel "
        "intensity as probability (default: %(default)s)",
    )

    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--epochs", type=positive_int, default=d.epochs, help="passes over the training set (default: %(default)s)"
    )
    o.add_argument(
        "--batch-size", type=positive_int, default=d.batch_size, help="samples per step (default: %(default)s)"
    )
    o.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=d.optimizer, help="(default: %(default)s)")
    o.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate (default: %(default)s)")
    o.add_argument(
        "--momentum",
        type=non_negative_float,
        default=None,
        help=f"SGD momentum in [0, 1), Nesterov (--optimizer sgd only; default: {d.momentum})",
    )
    o.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=d.weight_decay,
        help="on weights only, not on BN / neuron parameters or biases (default: %(default)s)",
    )
    o.add_argument(
        "--schedule",
        choices=("cosine", "step", "none"),
        default=d.schedule,
        help="learning-rate schedule: cosine (per step), step (x0.1 at 50%% and 75%% of training) "
        "or none (default: %(default)s)",
    )
    o.add_argument(
        "--warmup-epochs",
        type=non_negative_float,
        default=d.warmup_epochs,
        help="linear warm-up before the schedule (default: %(default)s)",
    )
    o.add_argument(
        "--loss",
        choices=("ce", "tet"),
        default=d.loss,
        help="ce: cross-entropy of the time-averaged logits; tet: TET (Deng et al. 2022) on every "
        "step (default: %(default)s)",
    )
    o.add_argument(
        "--tet-lambda",
        type=non_negative_float,
        default=None,
        help=f"TET's MSE weight in [0, 1] (--loss tet only; default: {d.tet_lambda})",
    )
    o.add_argument(
        "--seed",
        type=seed,
        default=d.seed,
        help="initial weights, shuffling, Poisson spikes, dropout (default: %(default)s)",
    )

    r = p.add_argument_group("run")
    r.add_argument("--device", default=d.device, help="cpu or cuda (default: %(default)s)")
    r.add_argument(
        "--threads",
        type=thread_count,
        default=d.threads,
        help="torch.set_num_threads: the 8x8 digits' convolutions are too small to gain much from a "
        "second thread, and on a busy CPU two threads can run slower than one (default: %(default)s)",
    )
    r.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="write model, optimizer, schedule and RNG state to PATH after every epoch (default: no checkpoint)",
    )
    r.add_argument(
        "--resume", action="store_true", help="continue the run saved in --checkpoint (same model options required)"
    )
    r.add_argument(
        "--eval-every",
        type=positive_int,
        default=d.eval_every,
        help="epochs between test-set evaluations; the last epoch is always evaluated (default: %(default)s)",
    )
    r.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write config, per-epoch history and final accuracy as JSON (default: none)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")


# options that only some runs use: (whether this run does, what to say); their command-line default is None
_ONLY_WHERE = {
    "width": (lambda cfg, transformers: cfg.model not in transformers, "the residual nets (transformers: --dim)"),
    "cnf": (lambda cfg, transformers: cfg.model.startswith("sew_"), "the SEW ResNets (sew_*)"),
    "momentum": (lambda cfg, transformers: cfg.optimizer == "sgd", "--optimizer sgd"),
    "tet_lambda": (lambda cfg, transformers: cfg.loss == "tet", "--loss tet"),
}


def _check(args, cfg) -> None:
    """Every check that does not need the data or the model: before anything is loaded or trained."""
    from ..models import MODELS, TRANSFORMER_MODELS

    if cfg.model not in MODELS:
        raise unknown_name("model", cfg.model, MODELS)
    for key, (applies, where) in _ONLY_WHERE.items():  # (each was ignored where it does not apply)
        if getattr(args, key) is not None and not applies(cfg, TRANSFORMER_MODELS):
            option = "--" + key.replace("_", "-")
            raise UsageError(f"{option} {getattr(args, key)}: applies to {where} only; leave it out for this run")
    if cfg.momentum >= 1:
        raise UsageError(f"--momentum {cfg.momentum:g}: SGD's momentum is in [0, 1) (1 and above diverge)")
    if cfg.dataset != "digits":
        if not cfg.dataset.endswith(".npz"):
            raise UsageError(f"--dataset {cfg.dataset!r}: 'digits' or a path to an .npz file")
        if not os.path.isfile(cfg.dataset):
            raise UsageError(f"--dataset {cfg.dataset}: no such file")
    check_device("--device", cfg.device)
    if cfg.tet_lambda > 1:
        raise UsageError(f"--tet-lambda {cfg.tet_lambda:g}: TET's MSE weight is in [0, 1]")
    if cfg.warmup_epochs > cfg.epochs:
        raise UsageError(f"--warmup-epochs {cfg.warmup_epochs:g}: at most --epochs ({cfg.epochs})")
    if args.resume and not cfg.checkpoint:
        raise UsageError("--resume needs --checkpoint PATH (the run to continue)")
    dataset = ("--dataset", cfg.dataset if cfg.dataset != "digits" else None)
    if cfg.checkpoint:
        check_output_path("--checkpoint", cfg.checkpoint, others=(dataset,))
        if args.resume and not os.path.isfile(cfg.checkpoint):
            raise UsageError(f"--resume: no checkpoint at {cfg.checkpoint}")
    if args.json:
        check_output_path("--json", args.json, others=(dataset, ("--checkpoint", cfg.checkpoint)))


def run(args) -> int:
    from ..train import CheckpointError, DivergedError, TrainConfig, check_resume, fit, read_checkpoint

    fields = {f for f in TrainConfig.__dataclass_fields__ if f != "history"}
    # (an option of _ONLY_WHERE left out is None here: TrainConfig's default; given where it does not apply, it is
    # refused in _check rather than ignored)
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields and not (k in _ONLY_WHERE and v is None)})
    _check(args, cfg)
    if args.resume:
        try:
            check_resume(read_checkpoint(cfg.checkpoint), cfg, cfg.checkpoint)
        except (CheckpointError, FileNotFoundError) as e:
            raise UsageError(f"--resume: {e}") from None
    if cfg.checkpoint:
        replaces = (
            " (replacing the run there; --resume continues it)"
            if not args.resume and os.path.isfile(cfg.checkpoint)
            else ""
        )
        print(f"checkpoint: {os.path.abspath(cfg.checkpoint)} (written after every epoch){replaces}")
    try:
        res = fit(cfg, resume=args.resume, progress=not args.no_progress)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    except DivergedError as e:  # not a usage error: the run failed (exit status 1)
        print(f"spikeforge train: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # bad arrays in --dataset, options that do not fit the model
        raise UsageError(str(e)) from None
    acc = res["test_acc"]
    print(
        f"done: test accuracy {acc:.4f} after {cfg.epochs} epochs, {res['train_s']:.1f} s"
        if acc is not None
        else f"done in {res['train_s']:.1f} s"
    )
    if cfg.checkpoint:
        print(
            f"checkpoint: {os.path.abspath(cfg.checkpoint)} (spikeforge energy --checkpoint {cfg.checkpoint}; "
            f"spikeforge train ... --checkpoint {cfg.checkpoint} --resume)"
        )
    if args.json:
        import torch

        from .benchcore import run_record

        report = {
            "config": asdict(cfg),
            "history": res["history"],
            "test_acc": acc,
            "train_s": res["train_s"],
            "n_params": res["n_params"],
            "environment": {**run_record(), "threads": torch.get_num_threads(), "device": cfg.device},
        }
        write_text_atomic(args.json, json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0
