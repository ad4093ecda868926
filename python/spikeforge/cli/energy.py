"""``spikeforge energy``: per-layer firing rates, SOPs, MACs and energy of a zoo model (spikeforge.tools.energy)."""

from __future__ import annotations

import argparse
import inspect
import json
import sys

from ._common import (
    UsageError,
    check_device,
    check_output_path,
    positive_int,
    seed,
    unknown_name,
    write_text_atomic,
)

HELP = "per-layer firing rates, SOPs, MACs and energy (mJ) of a zoo model or a trained checkpoint"
DESCRIPTION = """\
Energy estimate of a zoo model, the convention of the spiking-transformer papers: E_MAC = 4.6 pJ, E_AC = 0.9 pJ
(45 nm); a synaptic layer fed with spikes costs SOPs = input firing rate x T x MACs accumulates, a layer whose
input is not binary is charged MACs. Beside it the energy of the same network as an ANN (E_MAC x MACs).
All numbers are per image: the batch's totals divided by the batch size.

The estimate is only as meaningful as the firing rates: a randomly initialised model in eval mode (BN with
its initial running statistics) barely fires. Use a trained --checkpoint, or --train-mode (BN normalises
with the batch's statistics) for plausible rates of an untrained network."""
EPILOG = """\
examples:
  spikeforge energy --checkpoint run.pt            a model trained by `spikeforge train --checkpoint run.pt`
  spikeforge energy --model spikformer_8_384 --train-mode --batch 2
  spikeforge energy --model sew_resnet18_cifar --json report.json"""
NEAR_ZERO = 0.01  # mean neuron firing rate below which the report warns


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="a zoo model name, spikeforge.models.MODELS (default: sew_resnet18_cifar, or the checkpoint's model)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="weights from `spikeforge train --checkpoint PATH`; model, T, width and input shape "
        "come from the checkpoint (default: random weights)",
    )
    p.add_argument("--T", type=positive_int, default=None, help="time steps (default: 4, or the checkpoint's)")
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        metavar="S",
        help="input height = width (default: the checkpoint's; 8 for --input digits; 32 for *_cifar "
        "models; 224 otherwise)",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=4,
        help="images run at once; the numbers are per image (default: %(default)s)",
    )
    p.add_argument(
        "--input",
        choices=("random", "digits"),
        default=None,
        help="random: uniform [0, 1) images; digits: the shipped 8x8 digits (1 channel), resized to "
        "--image-size when given (default: digits for a checkpoint trained on them, else random)",
    )
    p.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        help="classifier outputs (default: the checkpoint's; 10 for *_cifar models and digits; 1000 otherwise)",
    )
    p.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="residual nets: channels of the first stage (default: the model's; a checkpoint's model "
        "is built with its own options)",
    )
    p.add_argument("--seed", type=seed, default=0, help="initial weights and random input (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument(
        "--train-mode",
        action="store_true",
        help="run in training mode: BN normalises with the batch's statistics (plausible firing rates "
        "for random weights); default: eval mode, the papers' setting for a trained model",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the report as JSON to PATH (to stdout without PATH) instead of the table",
    )


def _build(args, in_channels: int, num_classes: int):
    from ..models import MODELS

    from ..models import TRANSFORMER_MODELS

    fn = MODELS[args.model]
    width = args.width
    if args.model in TRANSFORMER_MODELS:  # (its **kw took width and failed with a TypeError)
        if getattr(args, "width_given", False):
            raise UsageError(
                f"--width {args.width}: {args.model} is a transformer, sized by its name; --width is the residual "
                "nets' option"
            )
        width = None
    params = inspect.signature(fn).parameters
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw = {"T": args.T, "num_classes": num_classes}
    optional = {"in_channels": in_channels if in_channels != 3 else None, "width": width}
    for key in ("img_size", "image_size"):  # transformer families size their position embeddings by it
        if key in params:
            optional[key] = args.image_size
    for key, value in optional.items():
        if value is None:
            continue
        if key not in params and not open_kw:
            raise UsageError(f"{args.model} takes no {key!r} argument")
        kw[key] = value
    try:
        return fn(**kw)
    except ValueError as e:
        raise UsageError(f"{args.model}: {e}") from None


def _from_checkpoint(args) -> dict:
    """Reads --checkpoint and fills model, T, width, image size, classes and input from its config."""
    from ..train import CheckpointError, read_checkpoint

    try:
        state = read_checkpoint(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as e:
        raise UsageError(f"--checkpoint: {e}") from None
    cfg = state["config"]
    for option, key in (("--model", "model"), ("--T", "T"), ("--width", "width")):
        given, saved = getattr(args, key), cfg.get(key)
        if given is not None and saved is not None and given != saved:
            raise UsageError(
                f"--checkpoint {args.checkpoint} holds {cfg.get('model')} with {key}={saved}, but "
                f"{option} {given} was given; leave {option} out to use the checkpoint's"
            )
    args.model, args.T = cfg.get("model"), cfg.get("T")
    shape = state.get("input_shape")
    dataset = cfg.get("dataset", "digits")  # TrainConfig's default
    if shape is None and (dataset == "digits" or args.input == "digits"):
        shape = [1, 8, 8]  # checkpoints written before the input shape was saved
    if shape is None:
        raise UsageError(
            f"--checkpoint {args.checkpoint}: no input shape saved (written by an older spikeforge "
            "on a custom dataset); retrain, or use --model with --image-size"
        )
    if cfg.get("image_size"):
        shape = [shape[0], cfg["image_size"], cfg["image_size"]]
    if args.image_size is None:
        args.image_size = shape[-1]
    if args.input is None:
        args.input = "digits" if dataset == "digits" else "random"
    if state.get("sequence_input"):
        print(
            f"warning: {args.checkpoint} was trained on sequences [N, T, C, H, W] (e.g. events or spikes); the "
            "estimate feeds static images, repeated over T, so its first layer is charged as on analogue input "
            "(MACs), not as on the sequences it was trained on",
            file=sys.stderr,
        )
    return {"state": state, "config": cfg, "channels": shape[0], "num_classes": state.get("num_classes")}


def _inputs(args, channels: int):
    import torch

    from ..data import load_digits

    if args.input == "digits":
        if channels != 1:
            raise UsageError(f"--input digits are 1-channel images, but the model takes {channels} channels")
        data, _ = load_digits()
        x = torch.from_numpy(data[: args.batch]).float().reshape(-1, 1, 8, 8) / 16.0
        if args.image_size is not None and args.image_size != 8:
            x = torch.nn.functional.interpolate(
                x, size=(args.image_size, args.image_size), mode="bilinear", align_corners=False
            )
        return x
    size = args.image_size
    return torch.rand(args.batch, channels, size, size, generator=torch.Generator().manual_seed(args.seed))


def run(args) -> int:
    import torch

    from ..models import MODELS
    from ..tools.energy import energy

    check_device("--device", args.device)
    args.width_given = args.width is not None  # (a checkpoint fills args.width in: its config always has one)
    if args.json not in (None, "-"):
        check_output_path("--json", args.json, others=(("--checkpoint", args.checkpoint),))
    ck = None
    if args.checkpoint:
        ck = _from_checkpoint(args)
    else:
        args.model = args.model or "sew_resnet18_cifar"
        args.T = args.T or 4
        if args.input is None:
            args.input = "random"
    if args.model not in MODELS:
        raise unknown_name("model", str(args.model), MODELS)
    if args.image_size is None:
        args.image_size = 8 if args.input == "digits" else (32 if args.model.endswith("_cifar") else 224)
    channels = ck["channels"] if ck else (1 if args.input == "digits" else 3)
    if ck and ck["num_classes"]:
        num_classes = ck["num_classes"]
        if args.num_classes is not None and args.num_classes != num_classes:  # (it was ignored)
            raise UsageError(
                f"--checkpoint {args.checkpoint} holds a {num_classes}-class model, but --num-classes "
                f"{args.num_classes} was given; leave --num-classes out to use the checkpoint's"
            )
    elif ck:  # older checkpoints: the classifier's output rows
        mats = [v for v in ck["state"]["model"].values() if isinstance(v, torch.Tensor) and v.dim() == 2]
        num_classes = mats[-1].shape[0] if mats else 10
    else:
        num_classes = args.num_classes or (10 if args.model.endswith("_cifar") or args.input == "digits" else 1000)
    torch.manual_seed(args.seed)
    x = _inputs(args, channels)
    x_run = x
    if ck and ck["config"].get("encoding") == "poisson":
        # the run fed Poisson spikes [T, B, ...] (spikeforge train --encoding poisson): so does the estimate,
        # or the stem would be charged MACs on analogue pixels instead of SOPs on spikes (drawn right after
        # the seed, so the same --seed gives the same spikes)
        from ..nn.layers import poisson_encode

        x_run = poisson_encode(x.clamp(0, 1), args.T)
    if ck:  # exactly as `spikeforge train` built it
        from ..train import TrainConfig, build_model

        known = {k: v for k, v in ck["config"].items() if k in TrainConfig.__dataclass_fields__}
        try:
            model = build_model(TrainConfig(**known), x.shape[1], num_classes)
        except (TypeError, ValueError) as e:
            raise UsageError(f"--checkpoint {args.checkpoint}: cannot rebuild its model ({e})") from None
    else:
        model = _build(args, x.shape[1], num_classes)
    if ck:
        try:
            model.load_state_dict(ck["state"]["model"])
        except RuntimeError:
            from ..train import weights_mismatch

            raise UsageError(
                f"--checkpoint {args.checkpoint}: its weights do not fit {args.model}: "
                f"{weights_mismatch(model, ck['state']['model'])}"
            ) from None
    model.to(args.device)
    rep = energy(model, x_run.to(args.device), T=args.T, batch_size=x.shape[0], eval_mode=not args.train_mode)
    mode = "train" if args.train_mode else "eval"
    if args.json is not None:
        d = {
            "model": args.model,
            "input": args.input,
            "image_size": list(x.shape[2:]),
            "checkpoint": args.checkpoint,
            "mode": mode,
            "per": "image (batch totals / batch size)",
            **rep.as_dict(),
        }
        if args.json == "-":
            print(json.dumps(d, indent=2))
        else:
            write_text_atomic(args.json, json.dumps(d, indent=2) + "\n")
            print(f"wrote {args.json}")
        return 0
    src = "shipped digits" if args.input == "digits" else "uniform random images"
    print(
        f"spikeforge energy: {args.model}, T={args.T}, {x.shape[0]} x {tuple(x.shape[1:])} {src}"
        + (f", weights from {args.checkpoint}" if args.checkpoint else ", random weights")
        + (" (training mode: BN with batch statistics)" if args.train_mode else " (eval mode)")
    )
    print(rep.table())
    rate = "n/a" if rep.neuron_rate is None else format(rep.neuron_rate, ".4f")
    print(
        f"per image (mean over the batch of {x.shape[0]}): {rep.total_sops / 1e6:.3f} M SOPs, "
        f"{rep.total_mac_ops / 1e6:.3f} M MACs charged; the neurons fire at {rate} spikes per neuron per step"
    )
    if rep.neuron_rate is not None and rep.neuron_rate < NEAR_ZERO:
        hint = (
            "random weights in eval mode barely fire (BN still has its initial running statistics): try "
            "--train-mode or a trained --checkpoint"
            if not args.checkpoint and not args.train_mode
            else "a network this silent transmits little information"
        )
        print(
            f"warning: the neurons fire at {rate} spikes per neuron per step, near zero, so the energy and "
            f"the ANN / SNN ratio are not representative; {hint}",
            file=sys.stderr,
        )
    return 0
