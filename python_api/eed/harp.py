"""Stage 2 of EED: robust pruning in the HARP style (Zhao & Wressnegger 2023; spec B.1, Eqs.
23-25). The pre-trained weights stay frozen; each prunable layer gets a learnable score per
weight S (initialised from a criterion) and a learnable rate logit r, its mask keeps the top
a = a_min + (1 - a_min) * sigmoid(r) fraction of |S| with straight-through gradients, and the
adversarial loss is minimised plus gamma_e * L_c, the compression loss, with gamma_e growing
per epoch. learn_rates=False keeps every layer at the target density: HYDRA (Sehwag et al.
2020), which learns the scores only."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..attacks import pgd
from ..train.eval_mode import eval_mode
from .criteria import prunable_layers
from .loop import LoopConfig, run_loop

__all__ = [
    "HarpMask",
    "attach_harp",
    "compression_loss",
    "detach_harp",
    "final_fractions",
    "harp_prune",
    "top_fraction",
]


class _TopFraction(torch.autograd.Function):
    """1 on the round(a * n) largest entries of `magnitude`, 0 elsewhere; straight-through to
    the magnitudes, and d/da = sum of the incoming gradient (HARP's GetSubnet)."""

    @staticmethod
    def forward(ctx, magnitude, fraction):
        n = magnitude.numel()
        keep = min(n, max(1, round(float(fraction) * n)))
        mask = torch.zeros(n, dtype=magnitude.dtype, device=magnitude.device)
        mask[magnitude.flatten().topk(keep).indices] = 1
        return mask.reshape(magnitude.shape)

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.sum()


def top_fraction(magnitude: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """The straight-through top-`fraction` mask of `magnitude` (float 0/1, its shape)."""
    return _TopFraction.apply(magnitude, fraction)


class HarpMask(nn.Module):
    """The parametrisation weight -> weight * top_a(|S|) of one layer."""

    def __init__(self, score: torch.Tensor, density: float, min_share: float = 0.1, learn_rate: bool = True):
        super().__init__()
        self.score = nn.Parameter(score.detach().clone().float())
        self.min_fraction = min_share * density  # HARP's k_min = k * alpha: no layer keeps less
        # r such that a = density at the start (HARP's rate_init)
        start = (density - self.min_fraction) / (1 - self.min_fraction)
        start = min(max(start, 1e-6), 1 - 1e-6)
        self.rate_logit = nn.Parameter(torch.tensor(math.log(start / (1 - start))), requires_grad=learn_rate)

    def fraction(self) -> torch.Tensor:
        return self.min_fraction + (1 - self.min_fraction) * torch.sigmoid(self.rate_logit)

    def mask(self) -> torch.Tensor:
        return top_fraction(self.score.abs(), self.fraction())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask()


def _initial_score(score: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A criterion's scores rescaled per layer to HYDRA's scale sqrt(6 / fan_in) * s / max s:
    the ranking within the layer is the criterion's, and one learning rate suits every
    criterion. [I: the spec leaves the scale of non-ERM initial scores open.]"""
    return math.sqrt(6 / weight[0].numel()) * score / score.max().clamp_min(1e-30)


def attach_harp(
    model: nn.Module, scores: dict, density: float, *, min_share: float = 0.1, learn_rates: bool = True
) -> dict[str, HarpMask]:
    """Freezes the model's parameters and parametrises every scored layer's weight by a
    HarpMask initialised from `scores` at `density`. Returns {layer name: HarpMask}."""
    if not 0 < density <= 1:
        raise ValueError(f"density must lie in (0, 1], got {density!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    layers = prunable_layers(model)
    harp = {}
    for name, score in scores.items():
        layer = layers[name]
        mask = HarpMask(
            _initial_score(score, layer.weight).to(layer.weight.device), density, min_share, learn_rates
        )
        parametrize.register_parametrization(layer, "weight", mask)
        harp[name] = mask
    return harp


def compression_loss(harp: dict[str, HarpMask], density: float) -> torch.Tensor:
    """L_c = max(0, (sum_l a_l n_l / sum_l n_l) / density - 1) (HARP's hw_loss)."""
    sizes = [m.score.numel() for m in harp.values()]
    kept = sum(m.fraction() * n for m, n in zip(harp.values(), sizes, strict=True))
    return F.relu(kept / sum(sizes) / density - 1)


@torch.no_grad()
def final_fractions(harp: dict[str, HarpMask], density: float) -> dict[str, float]:
    """Each layer's learned fraction, all scaled down together (not below a_min) when their total
    exceeds `density`: the compression loss is soft, and at short budgets (few "epochs" of the
    growing weight) the learned rates ended up to 60 % above the target; scaling keeps HARP's
    allocation across layers and makes the sub-model meet its budget. [I: a deviation from HARP,
    which reports whatever density the loss reached.]"""
    fractions = {name: float(m.fraction()) for name, m in harp.items()}
    sizes = {name: m.score.numel() for name, m in harp.items()}
    total = sum(fractions[n] * sizes[n] for n in harp) / sum(sizes.values())
    if total <= density:
        return fractions
    return {n: max(fractions[n] * density / total, harp[n].min_fraction) for n in harp}


@torch.no_grad()
def detach_harp(
    model: nn.Module, harp: dict[str, HarpMask], density: float | None = None
) -> dict[str, torch.Tensor]:
    """The hard bool masks (at `final_fractions` when a density is given), with the
    parametrisations removed (the original weights back, requires_grad on again for fine-tuning)."""
    fractions = (
        {n: float(m.fraction()) for n, m in harp.items()}
        if density is None
        else final_fractions(harp, density)
    )
    masks = {
        name: top_fraction(m.score.abs(), torch.tensor(fractions[name])).bool() for name, m in harp.items()
    }
    layers = prunable_layers(model)
    for name in harp:
        parametrize.remove_parametrizations(layers[name], "weight", leave_parametrized=False)
    for p in model.parameters():
        p.requires_grad_(True)
    return masks


def harp_prune(
    model: nn.Module,
    scores: dict,
    density: float,
    data: tuple[torch.Tensor, torch.Tensor],
    config: LoopConfig,
    *,
    eps: float,
    step: float,
    attack_steps: int,
    gamma: float = 0.01,
    epochs: int = 20,
    learn_rates: bool = True,
    min_share: float = 0.1,
    name: str = "harp",
    device="cpu",
    on_step=None,
) -> dict[str, torch.Tensor]:
    """Learns masks at `density` for the frozen `model` on `data` (HARP; HYDRA with
    learn_rates=False): CE on PGD examples (attack in eval mode, training forward in train
    mode: batch norm re-estimates its statistics, its affine parameters stay frozen) plus
    (e + 1) * gamma * L_c in epoch e of `epochs` spread over config.steps. Returns the bool masks,
    whose total density does not exceed `density` (final_fractions)."""
    harp = attach_harp(model, scores, density, min_share=min_share, learn_rates=learn_rates)
    model.to(device).train()
    params = [p for m in harp.values() for p in m.parameters() if p.requires_grad]

    def loss_fn(x, y, index, generator):
        with eval_mode(model):
            x_adv = pgd(model, x, y, eps=eps, step=step, steps=attack_steps, generator=generator)
        epoch = math.floor(epochs * index / config.steps)
        loss = F.cross_entropy(model(x_adv), y)
        if learn_rates:
            loss = loss + (epoch + 1) * gamma * compression_loss(harp, density)
        return loss

    run_loop(params, data, config, loss_fn, name=name, models=[model], device=device, on_step=on_step)
    return detach_harp(model, harp, density)
