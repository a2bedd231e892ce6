"""SGD with momentum whose weight decay skips parameters by name (e.g. the noise scales)."""

from collections.abc import Sequence
from fnmatch import fnmatchcase

import torch
from torch import nn

__all__ = ["DEFAULT_NO_WEIGHT_DECAY", "build_sgd", "decays"]

# The noisy layers' learned noise scales (robustkernels.nn: "<layer>.alpha"), which weight
# decay would push to zero.
DEFAULT_NO_WEIGHT_DECAY = ("alpha", "*.alpha")


def decays(name: str, patterns: Sequence[str]) -> bool:
    """Whether parameter `name` gets weight decay: no when it matches any fnmatch pattern."""
    return not any(fnmatchcase(name, pattern) for pattern in patterns)


def build_sgd(
    model: nn.Module,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    no_weight_decay: Sequence[str] = DEFAULT_NO_WEIGHT_DECAY,
    nesterov: bool = False,
) -> torch.optim.SGD:
    """SGD over model's trainable parameters in two groups: with and without weight decay."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for name, p in named if decays(name, no_weight_decay)]
    no_decay = [p for name, p in named if not decays(name, no_weight_decay)]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
    )
