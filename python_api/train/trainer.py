"""The trainer shared by all methods: SGD with momentum, a step-wise learning-rate schedule,
metrics as JSON lines, atomic checkpoints and exact resume, optionally data-parallel.

Exact resume: every random draw of step s (the epoch's shuffle, the augmentation, the
method's own randomness such as PGD's random start, and the noise and random routes of
robustkernels.nn's layers, whose streams restart at every step) comes from a seed derived
from (seed, purpose, epoch or step, rank), and the learning rate is a function of the step.
Nothing reads torch's global generator. A checkpoint therefore needs only the model (its
batch-norm statistics and masks are state_dict buffers), the optimizer and the step, and a
run resumed from it ends with the same weights as one that never stopped.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from robustkernels.nn import set_noise_seed

from ..data.augment import random_crop_flip
from ..data.stats import to_unit_interval
from ..optional import require
from .checkpoint import RECORD_NAME, load_checkpoint, save_checkpoint
from .distributed import DistributedContext, all_reduce_sum, wrap_model
from .method import TrainingMethod
from .optimizer import DEFAULT_NO_WEIGHT_DECAY, build_sgd
from .schedules import LRSchedule
from .seeds import derived_generator, derived_seed

__all__ = ["METRICS_NAME", "TrainConfig", "TrainResult", "accuracy", "train"]

METRICS_NAME = "metrics.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run. The run lasts `epochs` passes over the data, capped at
    `max_steps` optimizer steps when that is set (either may be None, not both)."""

    epochs: int | None = 1
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_weight_decay: tuple[str, ...] = DEFAULT_NO_WEIGHT_DECAY
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True  # mirror half the images (False for data a mirror changes, e.g. digits)
    seed: int = 0
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: only at epoch ends
    log_every: int = 50
    eval_batch_size: int = 500

    def __post_init__(self):
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give epochs, max_steps or both")
        for name in ("batch_size", "log_every", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every!r}")
        if not (0.0 <= self.momentum < 1.0 and self.weight_decay >= 0.0):
            raise ValueError("momentum must lie in [0, 1) and weight_decay be >= 0")


@dataclass
class TrainResult:
    """How a call to train ended."""

    steps: int
    total_steps: int
    resumed_from: int
    checkpoint: Path | None
    last_metrics: dict = field(default_factory=dict)
    # the seconds of the steps the model holds, summed over the calls that trained it (each
    # checkpoint keeps the sum; NaN for a checkpoint of a version that did not)
    train_seconds: float = math.nan


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Clean top-1 accuracy of `model` in eval mode (its mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = to_unit_interval(images[start : start + batch_size]).to(device)
        correct += int((model(x).argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(labels)


def _json_normal(value):
    return json.loads(json.dumps(value))


def _flatten(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    flat = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def _check_same_run(record: dict, settings: dict, directory: Path) -> None:
    saved = _flatten({key: record.get(key) for key in settings})
    wanted = _flatten(settings)
    differing = sorted(key for key in saved.keys() | wanted.keys() if saved.get(key) != wanted.get(key))
    if differing:
        raise ValueError(
            f"{directory / RECORD_NAME} belongs to a run with other settings ({', '.join(differing)} differ); "
            "resume with the same settings or write to a fresh output directory"
        )


def _complete_entry(line: str) -> dict | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:  # the torn last line of a killed run
        return None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops metric lines logged after `step` (by a run killed before its next checkpoint)."""
    if path.exists():
        kept = [
            line
            for line in path.read_text().splitlines()
            if (entry := _complete_entry(line)) and entry["step"] <= step
        ]
        path.write_text("".join(line + "\n" for line in kept))


def train(
    model: nn.Module,
    method: TrainingMethod,
    train_data: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    context: DistributedContext | None = None,
    run_info: dict | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Trains `model` in place with `method` on `train_data` (images uint8 or [0, 1] floats, labels).

    Writes `out_dir/metrics.jsonl` (one JSON object per line: "train" lines every
    `log_every` steps and at epoch ends, "val" lines with the clean validation accuracy at
    epoch ends when val_data is given) and checkpoints (see checkpoint.py) at epoch
    ends, every `checkpoint_every` steps and at the end. When `out_dir` already holds a
    checkpoint of a run with the same config, method and run_info, training resumes
    from it; other settings raise ValueError. `run_info` (JSON-serialisable, e.g. the model
    and data set names) is stored in each checkpoint. `on_step(step)` runs after each
    completed step (after its checkpoint). In a distributed run (`context`), every process
    calls train with the same arguments; each takes its share of every global batch of
    `batch_size` and process 0 writes the files.
    """
    context = context or DistributedContext(0, 1, next(model.parameters()).device)
    emit = log if (log is not None and context.is_main) else (lambda _line: None)
    images, labels = train_data
    if len(images) != len(labels):
        raise ValueError(f"train images and labels differ in length: {len(images)} vs {len(labels)}")
    if config.batch_size % context.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by the {context.world_size} processes"
        )
    steps_per_epoch = len(labels) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(labels)} training images")
    epoch_steps = config.epochs * steps_per_epoch if config.epochs is not None else math.inf
    total_steps = int(min(epoch_steps, config.max_steps if config.max_steps is not None else math.inf))
    schedule = LRSchedule(config.lr, total_steps, config.schedule, tuple(config.milestones), config.gamma)

    out_dir = Path(out_dir)
    settings = _json_normal(
        {
            "config": asdict(config),
            "method": {"name": method.name, **method.settings()},
            "run": run_info or {},
        }
    )
    model.to(context.device).train()
    optimizer = build_sgd(
        model, config.lr, config.momentum, config.weight_decay, config.no_weight_decay, config.nesterov
    )
    start_step = 0
    seconds_before = 0.0  # the training seconds of the steps in the checkpoint resumed from
    # Sums since the last "train" metrics line: loss * n, correct, n.
    window = torch.zeros(3, dtype=torch.float64)
    if (out_dir / RECORD_NAME).exists():
        checkpoint = load_checkpoint(out_dir)
        _check_same_run(checkpoint.record, settings, out_dir)
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        start_step = int(checkpoint.record["step"])
        seconds_before = checkpoint.record.get("train_seconds", math.nan)
        if context.is_main:  # the saved window already sums all processes
            window = torch.tensor(checkpoint.record["metrics_window"], dtype=torch.float64)
        emit(f"resuming from {checkpoint.path} at step {start_step}/{total_steps}")
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(out_dir / METRICS_NAME, start_step)
    trained = wrap_model(model, context)

    def write_metrics(entry: dict) -> None:
        if context.is_main:
            with open(out_dir / METRICS_NAME, "a") as f:
                f.write(json.dumps(entry) + "\n")

    kept = {"train_seconds": seconds_before}  # of the steps in the last checkpoint

    def save(step: int) -> Path | None:
        totals = all_reduce_sum(window.clone(), context)
        kept["train_seconds"] = seconds_before + time.perf_counter() - started
        if not context.is_main:
            return None
        record = {**settings, "step": step, "total_steps": total_steps, "metrics_window": totals.tolist(),
                  "train_seconds": kept["train_seconds"]}  # fmt: skip
        return save_checkpoint(out_dir, model, optimizer, record)

    bar = None
    if progress and context.is_main:
        bar = require("tqdm", "progress bars", "tqdm").tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True
        )
    started = time.perf_counter()
    last_metrics: dict = {}
    checkpoint_path = None
    order = None
    try:
        for step in range(start_step, total_steps):
            epoch, index = divmod(step, steps_per_epoch)
            if order is None or index == 0:
                order = torch.randperm(
                    len(labels), generator=derived_generator(config.seed, "shuffle", epoch)
                )
            batch = order[index * config.batch_size : (index + 1) * config.batch_size][
                context.rank :: context.world_size
            ]
            x = to_unit_interval(images[batch]).to(context.device, non_blocking=True)
            y = labels[batch].to(context.device, non_blocking=True)
            if config.augment:
                augment_generator = derived_generator(config.seed, "augment", step, context.rank)
                x = random_crop_flip(x, config.crop_padding, config.flip, generator=augment_generator)
            method_generator = derived_generator(
                config.seed, "method", step, context.rank, device=context.device
            )
            set_noise_seed(model, derived_seed(config.seed, "noise", step, context.rank))
            lr = schedule.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr

            if hasattr(method, "start_step"):  # methods with per-epoch draws (DVERGE's layer) see the epoch
                method.start_step(step, epoch)
            loss, logits = method.loss(trained, x, y, attack_model=model, generator=method_generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            window += torch.tensor(
                [loss.item() * len(y), int((logits.detach().argmax(dim=1) == y).sum()), len(y)],
                dtype=torch.float64,
            )
            done = step + 1
            epoch_end = done % steps_per_epoch == 0
            if done % config.log_every == 0 or epoch_end or done == total_steps:
                totals = all_reduce_sum(window.clone(), context)
                last_metrics = {
                    "event": "train",
                    "step": done,
                    "epoch": done / steps_per_epoch,
                    "lr": lr,
                    "loss": totals[0].item() / totals[2].item(),
                    "accuracy": totals[1].item() / totals[2].item(),
                    "seconds": time.perf_counter() - started,
                }
                write_metrics(last_metrics)
                window.zero_()
                if bar is not None:
                    bar.set_postfix(loss=f"{last_metrics['loss']:.4f}", acc=f"{last_metrics['accuracy']:.3f}")
            if epoch_end and val_data is not None and context.is_main:
                val_accuracy = accuracy(model, *val_data, batch_size=config.eval_batch_size)
                write_metrics(
                    {"event": "val", "step": done, "epoch": done / steps_per_epoch, "accuracy": val_accuracy}
                )
                emit(
                    f"epoch {done // steps_per_epoch}: train loss {last_metrics['loss']:.4f}, val accuracy {val_accuracy:.4f}"
                )
            if (
                epoch_end
                or done == total_steps
                or (config.checkpoint_every and done % config.checkpoint_every == 0)
            ):
                checkpoint_path = save(done)
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(done)
    finally:
        if bar is not None:
            bar.close()
    return TrainResult(
        steps=total_steps,
        total_steps=total_steps,
        resumed_from=start_step,
        checkpoint=checkpoint_path,
        last_metrics=last_metrics,
        train_seconds=kept["train_seconds"],
    )
