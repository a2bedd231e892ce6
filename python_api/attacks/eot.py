"""Expectation over Transformation (Athalye et al., 2018): the loss gradient averaged
over draws of the model's randomness (noisy weights, random gates, random
resolutions) and of any random input transform. Every attack in this package takes
its gradients from `loss_gradient`, so `eot_draws` works with each of them."""

from collections.abc import Callable

import torch

from .losses import attack_loss


def loss_gradient(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    *,
    target: torch.Tensor | None = None,
    draws: int = 1,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d loss / d x [like x], loss [B], logits [B, C]), each the mean over `draws` forward
    passes; transform (e.g. input diversity) is applied to x anew in every draw. Only x
    gets a gradient; the per-sample losses are summed, so samples do not interact."""
    grad_sum = torch.zeros_like(x)
    loss_sum = logits_sum = None
    with torch.enable_grad():
        for _ in range(draws):
            x_in = x.detach().requires_grad_(True)
            logits = model(transform(x_in) if transform is not None else x_in)
            values = attack_loss(loss, logits, y, target)
            # a model that cuts the graph to its input (masked gradients) gives no gradient, not
            # an error, so evaluations of it run and their sanity checks can flag it
            grad = (
                torch.autograd.grad(values.sum(), x_in, allow_unused=True)[0]
                if values.requires_grad
                else None
            )
            if grad is not None:
                grad_sum += grad
            loss_sum = values.detach() if loss_sum is None else loss_sum + values.detach()
            logits_sum = logits.detach() if logits_sum is None else logits_sum + logits.detach()
    return grad_sum / draws, loss_sum / draws, logits_sum / draws


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, draws: int = 1) -> torch.Tensor:
    """Labels from the logits averaged over `draws` forward passes."""
    logits = model(x)
    for _ in range(draws - 1):
        logits = logits + model(x)
    return logits.argmax(dim=1)


class EOT(torch.nn.Module):
    """A model wrapper for attacks that take no `eot_draws` (e.g. torchattacks'): its
    logits are the mean over `draws` forward passes, so any gradient of them is the
    mean of the per-draw gradients of the logits. (Our attacks average the gradients of
    the loss instead, through `eot_draws`, which is exact for non-linear losses.)"""

    def __init__(self, model: torch.nn.Module, draws: int):
        super().__init__()
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws must be an int >= 1, got {draws!r}")
        self.model, self.draws = model, draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.draws)]).mean(dim=0)
