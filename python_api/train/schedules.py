"""Learning-rate schedules as pure functions of the step, so a resumed run needs no scheduler state."""

import math
from dataclasses import dataclass

__all__ = ["SCHEDULES", "LRSchedule"]

SCHEDULES = ("cosine", "multistep", "constant")


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate at each optimizer step of a run of `total_steps` steps.

    cosine: base_lr * (1 + cos(pi * step / total_steps)) / 2, falling to 0.
    multistep: base_lr * gamma ** (number of milestones passed); milestones are fractions
    of the run (the Madry / TRADES recipes decay by 10x at 50% and 75%).
    constant: base_lr throughout.
    """

    base_lr: float
    total_steps: int
    kind: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.kind!r}")
        if not (math.isfinite(self.base_lr) and self.base_lr > 0):
            raise ValueError(f"learning rate must be a finite number > 0, got {self.base_lr!r}")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps!r}")
        if any(not 0.0 < m < 1.0 for m in self.milestones) or list(self.milestones) != sorted(
            self.milestones
        ):
            raise ValueError(f"milestones must be increasing fractions in (0, 1), got {self.milestones!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in (0, 1], got {self.gamma!r}")

    def lr_at(self, step: int) -> float:
        if self.kind == "cosine":
            return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))
        if self.kind == "multistep":
            passed = sum(step >= round(m * self.total_steps) for m in self.milestones)
            return self.base_lr * self.gamma**passed
        return self.base_lr
