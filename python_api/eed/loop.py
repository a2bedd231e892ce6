"""The optimisation loop of EED's own stages (pruning scores, ensemble learning): SGD over the
given parameters, batches drawn from derived generators (the trainer's seed chain), the
standard augmentation, a step-wise learning-rate schedule."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from robustkernels.nn import set_noise_seed

from ..data.augment import random_crop_flip
from ..data.stats import to_unit_interval
from ..train.schedules import LRSchedule
from ..train.seeds import derived_generator, derived_seed

__all__ = ["LoopConfig", "run_loop"]


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5,)
    gamma: float = 0.2
    flip: bool = True
    seed: int = 0


def run_loop(
    params: Sequence[torch.nn.Parameter],
    data: tuple[torch.Tensor, torch.Tensor],
    config: LoopConfig,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor],
    *,
    name: str,
    models: Sequence[torch.nn.Module] = (),
    device: torch.device | str = "cpu",
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Runs config.steps SGD steps on loss_fn(x, y, step, generator) over batches of `data`
    (uint8 or [0, 1] images, labels); `name` keys the random streams, `models` are reseeded
    per step (their noise streams). Returns the loss of every step."""
    images, labels = data
    if config.batch_size > len(labels):
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(labels)} training images")
    optimizer = torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    schedule = LRSchedule(config.lr, config.steps, config.schedule, config.milestones, config.gamma)
    per_epoch = len(labels) // config.batch_size
    losses = []
    order = None
    for step in range(config.steps):
        epoch, index = divmod(step, per_epoch)
        if order is None or index == 0:
            order = torch.randperm(
                len(labels), generator=derived_generator(config.seed, name, "shuffle", epoch)
            )
        batch = order[index * config.batch_size : (index + 1) * config.batch_size]
        x = to_unit_interval(images[batch]).to(device)
        y = labels[batch].to(device)
        x = random_crop_flip(
            x, 4, config.flip, generator=derived_generator(config.seed, name, "augment", step)
        )
        for model in models:
            set_noise_seed(model, derived_seed(config.seed, name, "noise", step))
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        generator = derived_generator(config.seed, name, "method", step, device=device)
        loss = loss_fn(x, y, step, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1)
    return losses
