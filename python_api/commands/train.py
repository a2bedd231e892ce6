"""`robustkernels train METHOD`: train a model with a method on a data set, resumably.

    robustkernels train pgd-at --model resnet20 --dataset cifar10 --data-dir ~/data --epochs 10 --out runs/at
    robustkernels train trades --out runs/trades              # small CNN on the embedded digits
    torchrun --nproc-per-node 2 -m robustkernels.api.cli train pgd-at ...   # data parallel

Writes into --out: checkpoint.json + checkpoint-<step>.safetensors (the latest
checkpoint), metrics.jsonl (training and validation metrics, one JSON object per line),
summary.json (final metrics and clean test accuracy) and training.png. Running the same
command again after an interruption resumes from the checkpoint and ends with the same
weights as an uninterrupted run.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from ..data import DATASETS, dataset_spec, load_dataset
from ..models import MODELS
from ..optional import require
from ..plots import plot_training
from ..train import (
    DEFAULT_NO_WEIGHT_DECAY,
    METRICS_NAME,
    SCHEDULES,
    TrainConfig,
    accuracy,
    barrier,
    init_distributed,
    shutdown_distributed,
    train,
)
from ..train.checkpoint import RECORD_NAME
from ..train.once_for_all import ONCE_FOR_ALL
from ..train.runs import build_from_info, model_info, prepare_training_data
from . import arguments
from .errors import CommandError, reports_errors
from .methods import METHODS, build_method

__all__ = ["add_arguments", "run_from_args"]


def _milestones(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not 0 < v < 1 for v in values) or list(values) != sorted(values):
        raise argparse.ArgumentTypeError(
            f"must be increasing fractions in (0, 1) such as 0.5,0.75, got {text!r}"
        )
    return values


def _val_fraction(text: str) -> float:
    value = arguments.non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0].replace("`", "")
    parser.epilog = "\n".join(__doc__.strip().splitlines()[2:])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "method",
        choices=list(METHODS),
        help="; ".join(f"{name}: {text}" for name, text in METHODS.items()),
    )
    what = parser.add_argument_group("model and data")
    what.add_argument(
        "--model", choices=list(MODELS), default="small-cnn", help="architecture (default: %(default)s)"
    )
    what.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default="digits",
        help="data set (default: %(default)s, embedded)",
    )
    what.add_argument(
        "--data-dir", help="directory holding the data set's files (all but digits); never downloaded"
    )
    what.add_argument(
        "--val-fraction",
        type=_val_fraction,
        default=0.1,
        help="fraction of the training split held out for validation, per class (default: %(default)s)",
    )
    what.add_argument(
        "--split-seed",
        type=arguments.seed,
        default=0,
        help="seed of the validation split (default: %(default)s)",
    )
    budget = parser.add_argument_group("optimisation")
    budget.add_argument(
        "--epochs", type=arguments.positive_int, default=10, help="passes over the data (default: 10)"
    )
    budget.add_argument("--steps", type=arguments.positive_int, help="cap on optimizer steps (default: none)")
    budget.add_argument(
        "--batch-size", type=arguments.positive_int, default=128, help="global batch (default: 128)"
    )
    budget.add_argument(
        "--lr", type=arguments.positive_float, default=0.1, help="peak learning rate (default: 0.1)"
    )
    budget.add_argument("--momentum", type=arguments.non_negative_float, default=0.9, help="(default: 0.9)")
    budget.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    budget.add_argument(
        "--weight-decay", type=arguments.non_negative_float, default=5e-4, help="(default: 5e-4)"
    )
    budget.add_argument(
        "--no-weight-decay",
        action="append",
        metavar="PATTERN",
        help="parameter names (fnmatch patterns) without weight decay; repeatable "
        f"(default: {' '.join(DEFAULT_NO_WEIGHT_DECAY)}, the noise scales)",
    )
    budget.add_argument(
        "--schedule", choices=SCHEDULES, default="multistep", help="learning rate (default: multistep)"
    )
    budget.add_argument(
        "--milestones",
        type=_milestones,
        default=(0.5, 0.75),
        help="multistep decay points (default: 0.5,0.75)",
    )
    budget.add_argument(
        "--gamma", type=arguments.positive_float, default=0.1, help="multistep factor (default: 0.1)"
    )
    budget.add_argument(
        "--no-augment",
        action="store_true",
        help="no random crop (padding 4) and flip (no flip on digits and SVHN)",
    )
    attack = parser.add_argument_group("adversary of pgd-at and trades")
    attack.add_argument("--eps", type=arguments.epsilon, default=8 / 255, help="radius, e.g. 8/255 (default)")
    attack.add_argument(
        "--attack-step", type=arguments.epsilon, default=2 / 255, help="step size (default: 2/255)"
    )
    attack.add_argument("--attack-steps", type=arguments.positive_int, default=10, help="steps (default: 10)")
    attack.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model (default: linf)")
    attack.add_argument(
        "--beta", type=arguments.non_negative_float, default=6.0, help="TRADES beta (default: 6)"
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out", required=True, help="output directory (created; an existing run there is resumed)"
    )
    run.add_argument(
        "--overwrite", action="store_true", help="discard a run already in --out instead of resuming"
    )
    run.add_argument("--seed", type=arguments.seed, default=0, help="seed of everything random (default: 0)")
    run.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    run.add_argument(
        "--checkpoint-every",
        type=arguments.non_negative_int,
        default=0,
        help="steps (default: 0, epoch ends only)",
    )
    run.add_argument("--log-every", type=arguments.positive_int, default=50, help="steps per metrics line")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        nesterov=args.nesterov,
        weight_decay=args.weight_decay,
        no_weight_decay=tuple(args.no_weight_decay or DEFAULT_NO_WEIGHT_DECAY),
        schedule=args.schedule,
        milestones=args.milestones,
        gamma=args.gamma,
        augment=not args.no_augment,
        flip=dataset_spec(args.dataset).flip,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
    )


@reports_errors("train")
def run_from_args(args: argparse.Namespace) -> int:
    spec = dataset_spec(args.dataset)
    if spec.needs_data_dir and args.data_dir is None:
        raise CommandError(f"--dataset {args.dataset} needs --data-dir (the directory holding its files)")
    config = _config(args)
    method = build_method(args)
    out = Path(args.out)
    context = init_distributed(args.device)
    try:
        if args.overwrite and context.is_main and (out / RECORD_NAME).exists():
            shutil.rmtree(out)
        barrier(context)  # no process may look for a checkpoint before the old run is gone
        train_data, val_data = prepare_training_data(
            args.dataset, args.data_dir, args.val_fraction, args.split_seed
        )
        info = model_info(
            args.model, args.dataset, train_data[0], args.method if args.method in ONCE_FOR_ALL else None
        )
        torch.manual_seed(args.seed)
        model = build_from_info(info, args.seed)
        run_info = {
            "model": info,
            "dataset": {
                "name": args.dataset,
                "val_fraction": args.val_fraction,
                "split_seed": args.split_seed,
            },
            "world_size": context.world_size,
        }
        log = print if context.is_main else None
        if log:
            log(
                f"robustkernels train {method.name}: {args.model} on {args.dataset} "
                f"({len(train_data[1])} train / {0 if val_data is None else len(val_data[1])} validation images), "
                f"{context.world_size} process(es) on {context.device}, output in {out}"
            )
        result = train(
            model,
            method,
            train_data,
            config,
            out,
            val_data=val_data,
            context=context,
            run_info=run_info,
            progress=not args.no_progress and sys.stderr.isatty(),
            log=log,
        )
        if context.is_main:
            _finish(args, model, result, out)
    except BaseException:
        shutdown_distributed(wait=False)
        raise
    shutdown_distributed()
    return 0


def _finish(args: argparse.Namespace, model, result, out: Path) -> None:
    test_images, test_labels = load_dataset(args.dataset, "test", args.data_dir)
    summary = {
        "method": args.method,
        "model": args.model,
        "dataset": args.dataset,
        "steps": result.total_steps,
        "resumed_from_step": result.resumed_from,
        "final_train_metrics": result.last_metrics,
        "test_clean_accuracy": accuracy(model, test_images, test_labels),
        "checkpoint": str(out / RECORD_NAME),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"clean test accuracy: {summary['test_clean_accuracy']:.4f} ({len(test_labels)} images)")
    try:
        require("matplotlib", "plotting", "matplotlib")
    except ImportError as error:
        print(f"no training.png: {error}")
    else:
        plot_training(out / METRICS_NAME, out / "training.png")
    print(
        f"wrote {out / 'summary.json'}, {out / METRICS_NAME}, {out / RECORD_NAME} and the plot training.png"
    )
    print(f"evaluate with: robustkernels eval --checkpoint {out} --attack pgd --eps 8/255")
