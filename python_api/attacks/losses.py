"""Per-sample attack losses, written so that the attack always maximises them.

- "ce": cross-entropy of the true class (targeted: minus the cross-entropy of the target);
- "cw": the Carlini-Wagner margin max_{j != y} z_j - z_y (targeted: z_t - max_{j != t} z_j);
- "dlr": the Difference of Logits Ratio of Croce & Hein (2020),
  -(z_y - max_{j != y} z_j) / (z_(1) - z_(3)), with z_(i) the i-th largest logit;
- "dlr-targeted": their targeted version, -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2).
The DLR losses are invariant to shifting and scaling the logits, so a model that
saturates its softmax cannot hide its margins from them.
"""

import torch
import torch.nn.functional as F

LOSSES = ("ce", "cw", "dlr", "dlr-targeted")
# keeps the DLR denominators away from zero when the top logits tie (the published value)
_DLR_FLOOR = 1e-12


def _best_other(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """max_{j != label} logits_j per sample."""
    masked = logits.masked_fill(F.one_hot(label, logits.shape[1]).bool(), float("-inf"))
    return masked.max(dim=1).values


def _true_logit(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, label.unsqueeze(1)).squeeze(1)


def attack_loss(
    name: str, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample loss [B] to maximise. y: true labels; target: target labels of a
    targeted attack (then "ce" and "cw" move towards target; "dlr-targeted" needs both)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
    if name == "dlr-targeted" and target is None:
        raise ValueError("loss 'dlr-targeted' needs target labels")
    if name == "dlr" and target is not None:
        raise ValueError("loss 'dlr' is untargeted; use 'dlr-targeted' with target labels")
    if logits.shape[1] < (4 if name == "dlr-targeted" else 3) and name.startswith("dlr"):
        raise ValueError(f"loss {name!r} needs at least {4 if name == 'dlr-targeted' else 3} classes")
    if name == "ce":
        if target is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, target, reduction="none")
    if name == "cw":
        if target is None:
            return _best_other(logits, y) - _true_logit(logits, y)
        return _true_logit(logits, target) - _best_other(logits, target)
    top = logits.sort(dim=1, descending=True).values
    if name == "dlr":
        margin = _true_logit(logits, y) - _best_other(logits, y)
        return -margin / (top[:, 0] - top[:, 2] + _DLR_FLOOR)
    margin = _true_logit(logits, y) - _true_logit(logits, target)
    return -margin / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_FLOOR)
