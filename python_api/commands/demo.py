"""`robustkernels demo`: a short end-to-end run of a noisy-convolution SmallCNN on the digits.

    robustkernels demo [--steps N] [--lam F] [--seed S] [--batch-size B] [--out DIR]

The model's convolutions except the first (which FLOAT keeps noise-free) become NoisyConv2d
layers; it trains with the shared trainer that `robustkernels train` runs (clean cross-entropy,
SGD with Nesterov momentum, a cosine schedule, no weight decay on alpha) at noise scale --lam, then
reports test accuracy with the noise off (lam=0) and on (lam=1), the learned alpha values and
the backend the noisy-weight op ran with. --seed seeds the model's initialisation and the
trainer's seed chain, so a run repeats exactly. Without --out the run's checkpoint and metrics go
to a temporary directory, removed afterwards; with it they stay, and a re-run resumes there.
"""

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import robustkernels

from ..data import load_digits
from ..models import SmallCNN
from ..train import METRICS_NAME, StandardTraining, TrainConfig, accuracy, derived_seed, train
from . import arguments
from .errors import reports_errors

__all__ = ["DemoResult", "add_arguments", "run_demo", "run_from_args"]

DEFAULT_STEPS = 300
DEFAULT_LAM = 1.0
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 0.05


@dataclass
class DemoResult:
    """What run_demo measured; accuracies are fractions in [0, 1]."""

    steps: int
    lam: float
    seed: int
    backend: str
    final_loss: float
    accuracy_noise_off: float
    accuracy_noise_on: float
    alphas: dict[str, float]
    seconds: float


def _alphas(model: nn.Module) -> dict[str, float]:
    """The learned alpha of each noisy layer (its mean, for per-channel or per-element alpha)."""
    noisy = (robustkernels.nn.NoisyConv2d, robustkernels.nn.NoisyLinear)
    return {name: float(m.alpha.detach().mean()) for name, m in model.named_modules() if isinstance(m, noisy)}


def _train_lines(metrics_path: Path) -> list[dict]:
    if not metrics_path.exists():
        return []
    entries = (json.loads(line) for line in metrics_path.read_text().splitlines() if line)
    return [entry for entry in entries if entry["event"] == "train"]


def run_demo(
    steps: int = DEFAULT_STEPS,
    lam: float = DEFAULT_LAM,
    seed: int = DEFAULT_SEED,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    lr: float = DEFAULT_LR,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> DemoResult:
    """Trains the noisy SmallCNN for `steps` optimizer steps at noise scale `lam` with the shared
    trainer (its files in `out`, or a temporary directory when None) and evaluates it. Progress
    (the trainer's metrics, once per epoch and at the last step) goes to `log`; log=None: silence.

    Trained on clean data only, the noise can only raise the loss, so the learned alpha
    shrinks towards 0 (as PNI reports without adversarial training) and the noise-on
    accuracy ends close to the noise-off one; at lam=0 alpha gets no gradient at all.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    emit = log if log is not None else (lambda _line: None)
    start = time.perf_counter()
    train_data, test_data = load_digits("train"), load_digits("test")
    steps_per_epoch = len(train_data[1]) // max(batch_size, 1)
    config = TrainConfig(
        epochs=None, max_steps=steps, batch_size=batch_size, lr=lr, nesterov=True, schedule="cosine",
        augment=False, seed=seed, log_every=max(steps_per_epoch, 1),
    )  # fmt: skip

    torch.manual_seed(seed)
    model = SmallCNN()
    robustkernels.nn.convert(model, skip=(SmallCNN.FIRST_CONV,), lam=lam)
    backend = robustkernels.ops.select("noisy_weight", torch.device("cpu"))
    emit(
        f"robustkernels demo: {len(train_data[1])} train / {len(test_data[1])} test digits, SmallCNN with noisy "
        f"convs (first conv noise-free), {steps} steps of batch {batch_size} at lam={lam:g}, seed {seed}, "
        f"backend {backend!r}"
    )
    with tempfile.TemporaryDirectory(prefix="robustkernels-demo-") as scratch:
        run_dir = Path(out) if out is not None else Path(scratch)
        metrics_path = run_dir / METRICS_NAME
        shown_up_to = None  # the last step whose metrics line was shown

        def show_new_metrics(step: int) -> None:
            nonlocal shown_up_to
            if shown_up_to is None:  # a resumed run's earlier lines were shown by the run before
                shown_up_to = step - 1
            for entry in _train_lines(metrics_path):
                if entry["step"] > shown_up_to:
                    emit(
                        f"epoch {entry['epoch']:6.2f}  step {entry['step']:4d}/{steps}  "
                        f"loss {entry['loss']:.4f}  train acc {entry['accuracy']:.3f}  "
                        f"({time.perf_counter() - start:.1f}s)"
                    )
                    shown_up_to = entry["step"]

        run_info = {"demo": {"model": "small-cnn", "lam": float(lam)}}
        train(model, StandardTraining(), train_data, config, run_dir, run_info=run_info, log=emit,
              on_step=show_new_metrics)  # fmt: skip
        final_loss = _train_lines(metrics_path)[-1]["loss"]

    robustkernels.nn.set_noise_seed(model, derived_seed(seed, "demo-eval"))
    robustkernels.nn.set_noise_scale(model, 0.0)
    acc_off = accuracy(model, *test_data)
    robustkernels.nn.set_noise_scale(model, 1.0)
    acc_on = accuracy(model, *test_data)
    robustkernels.nn.set_noise_scale(model, lam)
    alphas = _alphas(model)
    seconds = time.perf_counter() - start

    emit(f"test accuracy, noise off (lam=0): {acc_off:.4f}")
    emit(f"test accuracy, noise on  (lam=1): {acc_on:.4f}")
    emit("learned alpha: " + ", ".join(f"{name}={value:.4f}" for name, value in alphas.items()))
    emit(f"noisy_weight backend on cpu: {backend}")
    emit(f"total time: {seconds:.1f}s")
    return DemoResult(
        steps=steps,
        lam=float(lam),
        seed=seed,
        backend=backend,
        final_loss=final_loss,
        accuracy_noise_off=acc_off,
        accuracy_noise_on=acc_on,
        alphas=alphas,
        seconds=seconds,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--steps",
        type=arguments.positive_int,
        default=DEFAULT_STEPS,
        help="optimizer steps (default: %(default)s)",
    )
    parser.add_argument(
        "--lam",
        type=arguments.non_negative_float,
        default=DEFAULT_LAM,
        help="noise scale while training (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=arguments.seed,
        default=DEFAULT_SEED,
        help="seed of the initialisation and of the trainer's seed chain (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=arguments.positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="training batch size (default: %(default)s)",
    )
    parser.add_argument(
        "--out", help="keep the run's checkpoint and metrics here (default: a temporary directory)"
    )


@reports_errors("demo")
def run_from_args(args: argparse.Namespace) -> int:
    run_demo(steps=args.steps, lam=args.lam, seed=args.seed, batch_size=args.batch_size, out=args.out)
    return 0
