"""A short end-to-end run: train a noisy-convolution SmallCNN on the digits data.

    robustkernels demo [--steps N] [--lam F] [--seed S] [--batch-size B]
    python -m robustkernels.api.demo [same options]

The model's convolutions except the first (which FLOAT keeps noise-free) become
NoisyConv2d layers; it trains with SGD at noise scale --lam, then reports test accuracy
with the noise off (lam=0) and on (lam=1), the learned alpha values and the backend
the noisy-weight op ran with. torch.manual_seed(seed) makes a run repeatable.
"""

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import robustkernels

from .commands import arguments
from .data import iterate_batches, load_digits
from .models import SmallCNN

__all__ = ["DemoResult", "add_arguments", "evaluate", "main", "run_demo"]

DEFAULT_STEPS = 300
DEFAULT_LAM = 1.0
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


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


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` in eval mode (restoring its previous mode afterwards)."""
    was_training = model.training
    model.eval()
    correct = 0
    for x, y in iterate_batches(images, labels, batch_size):
        correct += int((model(x).argmax(dim=1) == y).sum())
    model.train(was_training)
    return correct / len(labels)


def _alphas(model: nn.Module) -> dict[str, float]:
    """The learned alpha of each noisy layer (its mean, for per-channel or per-element alpha)."""
    noisy = (robustkernels.nn.NoisyConv2d, robustkernels.nn.NoisyLinear)
    return {name: float(m.alpha.detach().mean()) for name, m in model.named_modules() if isinstance(m, noisy)}


def _decays(name: str, param: nn.Parameter) -> bool:
    """Weight decay goes to conv / linear weights only (not alpha, BatchNorm or biases)."""
    return param.dim() > 1 and name.rsplit(".", 1)[-1] != "alpha"


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def run_demo(
    steps: int = DEFAULT_STEPS,
    lam: float = DEFAULT_LAM,
    seed: int = DEFAULT_SEED,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    lr: float = DEFAULT_LR,
    log: Callable[[str], None] | None = print,
) -> DemoResult:
    """Trains the noisy SmallCNN for `steps` SGD steps at noise scale `lam` and evaluates it.

    SGD with momentum and a cosine learning-rate schedule; weight decay applies to the
    conv / linear weights but not to alpha, BatchNorm or biases. Progress lines (one
    per epoch and one for the last step) go to `log`; pass log=None for silence.

    Trained on clean data only, the noise can only raise the loss, so the learned alpha
    shrinks towards 0 (as PNI reports without adversarial training) and the noise-on
    accuracy ends close to the noise-off one; at lam=0 alpha gets no gradient at all.
    """
    _check_positive("steps", steps)
    _check_positive("batch_size", batch_size)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    emit = log if log is not None else (lambda _line: None)
    start = time.perf_counter()

    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")

    model = SmallCNN()
    robustkernels.nn.convert(model, skip=(SmallCNN.FIRST_CONV,), lam=lam)
    backend = robustkernels.ops.select("noisy_weight", torch.device("cpu"))

    params = list(model.named_parameters())
    decay = [p for n, p in params if _decays(n, p)]
    no_decay = [p for n, p in params if not _decays(n, p)]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=MOMENTUM,
        nesterov=True,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    steps_per_epoch = math.ceil(len(train_y) / batch_size)
    emit(
        f"robustkernels demo: {len(train_y)} train / {len(test_y)} test digits, SmallCNN with noisy convs "
        f"(first conv noise-free), {steps} steps of batch {batch_size} at lam={lam:g}, seed {seed}, "
        f"backend {backend!r}"
    )
    model.train()
    step, epoch, loss_sum, loss_count, correct, seen = 0, 0, 0.0, 0, 0, 0
    last_loss = float("nan")
    while step < steps:
        epoch += 1
        for x, y in iterate_batches(train_x, train_y, batch_size, shuffle=True, generator=shuffle):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            last_loss = loss.item()
            loss_sum, loss_count = loss_sum + last_loss, loss_count + 1
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += len(y)
            if step % steps_per_epoch == 0 or step == steps:
                emit(
                    f"epoch {epoch:3d}  step {step:4d}/{steps}  loss {loss_sum / loss_count:.4f}  "
                    f"train acc {correct / seen:.3f}  ({time.perf_counter() - start:.1f}s)"
                )
                loss_sum, loss_count, correct, seen = 0.0, 0, 0, 0
            if step == steps:
                break

    robustkernels.nn.set_noise_scale(model, 0.0)
    acc_off = evaluate(model, test_x, test_y)
    robustkernels.nn.set_noise_scale(model, 1.0)
    acc_on = evaluate(model, test_x, test_y)
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
        final_loss=last_loss,
        accuracy_noise_off=acc_off,
        accuracy_noise_on=acc_on,
        alphas=alphas,
        seconds=seconds,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, shared by `robustkernels demo` and `python -m robustkernels.api.demo`."""
    parser.add_argument(
        "--steps", type=arguments.positive_int, default=DEFAULT_STEPS, help="SGD steps (default: %(default)s)"
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
        help="torch.manual_seed value (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=arguments.positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="training batch size (default: %(default)s)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    run_demo(steps=args.steps, lam=args.lam, seed=args.seed, batch_size=args.batch_size)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m robustkernels.api.demo", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
