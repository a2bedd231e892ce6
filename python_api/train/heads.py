"""Training the intermediate heads of a self-ensemble on its frozen backbone, one head at a time
in reverse layer order, as the public notebook of "Ensemble everything everywhere" does: only
the head's parameters are optimised (Adam, cross-entropy), each batch gets a fresh multires draw.

The notebook runs the backbone in train mode, so its BatchNorm statistics keep updating while
the heads train; `freeze_backbone_bn=True` runs it in eval mode instead (the backbone is then
left exactly as it was). Randomness (shuffles, the stack's draws) comes from the run seed.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustkernels.nn import set_noise_seed

from ..data.stats import to_unit_interval
from ..models.self_ensemble import SelfEnsemble
from .seeds import derived_generator, derived_seed

__all__ = ["train_heads"]


def train_heads(
    ensemble: SelfEnsemble,
    train_data: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 3.3e-5,
    freeze_backbone_bn: bool = False,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Trains each head of `ensemble` for `steps` Adam steps (the last tapped layer's first);
    returns each head's mean training loss over its last 10 steps, in tap order. The
    backbone's parameters never change (requires_grad is restored afterwards)."""
    images, labels = train_data
    backbone, heads = ensemble.backbone, ensemble.heads
    device = next(heads.parameters()).device
    trainable = [p.requires_grad for p in backbone.parameters()]
    for p in backbone.parameters():
        p.requires_grad_(False)
    was_training = ensemble.training
    backbone.train(not freeze_backbone_bn)
    heads.train()
    final_losses = [0.0] * len(ensemble.taps)
    try:
        for index in reversed(range(len(ensemble.taps))):
            parameters = [*heads.norms[index].parameters(), *heads.linears[index].parameters()]
            optimizer = torch.optim.Adam(parameters, lr=lr)
            recent = []
            for step in range(steps):
                order = torch.randperm(len(labels), generator=derived_generator(seed, "heads", index, step))
                batch = order[:batch_size]
                x = to_unit_interval(images[batch]).to(device)
                y = labels[batch].to(device)
                set_noise_seed(backbone, derived_seed(seed, "heads-noise", index, step))
                with torch.no_grad():
                    features, _ = ensemble.features(x)
                loss = F.cross_entropy(heads.head(index, features[index]), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                recent = [*recent[-9:], float(loss.detach())]
                if on_step is not None:
                    on_step(1)
            final_losses[index] = sum(recent) / len(recent)
    finally:
        for p, flag in zip(backbone.parameters(), trainable, strict=True):
            p.requires_grad_(flag)
        ensemble.train(was_training)
    return final_losses
