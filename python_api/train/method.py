"""What a training method provides to the trainer, and plain (clean) training."""

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StandardTraining", "TrainingMethod"]


class TrainingMethod(Protocol):
    """A method's loss on one batch. The trainer handles the optimizer, data, logging and checkpoints.

    `model` is the module to train (wrapped for data parallelism in a distributed run; it is
    in train mode), `attack_model` the same network unwrapped, for inner maximisations that
    must not trigger gradient synchronisation. `generator` (on the batch's device) is
    the only source of randomness, derived from the run's seed and the step, which keeps
    resumed runs exact. Returns (loss to minimise, logits whose accuracy is reported).
    A method may also define `start_step(step, epoch)`, which the trainer calls before each loss
    (a draw made once per epoch, such as DVERGE's distillation layer, derives from the epoch).
    """

    name: str

    def settings(self) -> dict: ...

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        attack_model: nn.Module,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class StandardTraining:
    """Cross-entropy on the clean batch."""

    name = "standard"

    def settings(self) -> dict:
        return {}

    def loss(self, model, x, y, *, attack_model, generator):
        logits = model(x)
        return F.cross_entropy(logits, y), logits
