"""Loading a user's local backbone weights for `reproduce eee --weights` (never downloaded)."""

from pathlib import Path

import torch
from torch import nn

from ..train import load_checkpoint

__all__ = ["load_matching"]


def load_matching(model: nn.Module, path: str | Path) -> str:
    """Loads into `model` every tensor of the state dict at `path` (a torch.save'd state dict,
    read with weights_only, or a training run's checkpoint directory) whose name and shape match;
    the others (e.g. a classifier for another number of classes) keep their fresh values.
    Returns a one-line account. Raises ValueError when nothing matches."""
    path = Path(path)
    if path.is_dir() or path.name.endswith(".json"):
        state = load_checkpoint(path).model_state
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ValueError(f"no tensor of {path} matches {type(model).__name__}'s names and shapes")
    model.load_state_dict(matching, strict=False)
    skipped = sorted(set(own) - set(matching))
    return f"{len(matching)} tensors loaded, {len(skipped)} kept fresh" + (
        f" ({', '.join(skipped[:6])}...)" if skipped else ""
    )
