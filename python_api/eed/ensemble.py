"""Stage 5 of EED: ensemble learning of the selected team with its masks fixed (spec B.1,
Eqs. 14-19): L = CE(h_E(x_adv), y) + beta * L_div + lambda_mis * L_mis + lambda_w * L_w +
lambda_a * L_a, with h_E the average combiner (log of the mean softmax), x_adv PGD against
h_E, L_div DVERGE's cross-distillation loss, L_mis the iGAT-style misclassification term on
x_adv, L_w the L1 norm of the surviving weights and L_a the mean post-ReLU activation (the
L1 surrogate of the paper's count of non-zero activations)."""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import feature_distillation, pgd
from ..models.features import feature_extractor
from ..train.eval_mode import eval_mode
from .diversity import PoolAverage
from .loop import LoopConfig, run_loop
from .masks import masked_weights

__all__ = [
    "EnsembleWeights",
    "activation_l1",
    "distillation_layers",
    "dverge_loss",
    "misclassification_loss",
    "train_team",
    "weight_l1",
]


@dataclass(frozen=True)
class EnsembleWeights:
    """The loss weights (spec B.3: beta 0.3 and lambda_mis 10 are the most plausible reading
    of App. B.7's damaged symbols; lambda_w, lambda_a are unstated) and DVERGE's distillation."""

    beta: float = 0.3
    lambda_mis: float = 10.0
    lambda_w: float = 1e-5
    lambda_a: float = 1e-3
    distill_eps: float = 0.07
    distill_steps: int = 10


def misclassification_loss(logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """sum_i e_i(x) * max_{c != y} p_i(c | x), e_i = 1 where member i misclassifies x; mean over x."""
    total = 0
    for member_logits in logits:
        probs = member_logits.softmax(dim=1)
        wrong = (member_logits.argmax(dim=1) != y).to(probs.dtype)
        best_other = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), 0).amax(dim=1)
        total = total + wrong * best_other
    return total.mean()


def weight_l1(members) -> torch.Tensor:
    """sum over members and layers of ||W * M||_1."""
    return sum(w.abs().sum() for m in members for w in masked_weights(m).values())


@contextlib.contextmanager
def activation_l1(members):
    """Collects, while the block runs, mean(relu(.)) of every batch norm's output of the members
    (the post-ReLU maps, also where the ReLU is a functional call after a residual sum: a
    surrogate there [I]). Yields a list; sum it for L_a."""
    collected: list[torch.Tensor] = []

    def hook(module, inputs, output):
        collected.append(F.relu(output).mean())

    handles = [
        module.register_forward_hook(hook)
        for member in members
        for module in member.modules()
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d)
    ]
    try:
        yield collected
    finally:
        for handle in handles:
            handle.remove()


def distillation_layers(model: nn.Module) -> list[str]:
    """The layers DVERGE draws its feature layer from: the model's top-level stages (children
    holding convolutions), e.g. SmallCNN's block1..3 or a ResNet's layer1..layerN."""
    names = [
        name
        for name, child in model.named_children()
        if isinstance(child, nn.Sequential) and any(isinstance(m, nn.Conv2d) for m in child.modules())
    ]
    if not names:
        raise ValueError(f"{type(model).__name__} has no top-level stage to distil features from")
    return names


def dverge_loss(members, x, y, *, layer: str, eps: float, steps: int, generator) -> torch.Tensor:
    """DVERGE's cross-distillation loss: for each member j, x'_j has x's look (within eps) and
    member j's `layer` features of a shuffled partner image; every other member i is trained
    to classify x'_j as x's label: sum_j sum_{i != j} CE(h_i(x'_j), y), over M (M - 1) pairs."""
    partner = x[torch.randperm(len(y), generator=generator, device=generator.device).to(x.device)]
    total, pairs = 0, 0
    for j, member in enumerate(members):
        with eval_mode(member):
            distilled = feature_distillation(
                feature_extractor(member, layer), x, partner, eps=eps, steps=steps
            )
        for i, other in enumerate(members):
            if i != j:
                total = total + F.cross_entropy(other(distilled), y)
                pairs += 1
    return total / max(pairs, 1)


def train_team(
    members,
    data: tuple[torch.Tensor, torch.Tensor],
    config: LoopConfig,
    *,
    eps: float,
    step: float,
    attack_steps: int,
    weights: EnsembleWeights = EnsembleWeights(),
    name: str = "ensemble",
    device="cpu",
    on_step=None,
) -> list[float]:
    """Ensemble learning of the members (masked models; masks stay fixed, the weights under
    them, biases and batch norms train). Returns the loss per step."""
    members = [m.to(device).train() for m in members]
    team = PoolAverage(members)
    params = [p for m in members for p in m.parameters() if p.requires_grad]
    layers = distillation_layers(members[0])

    def loss_fn(x, y, index, generator):
        with eval_mode(team):
            x_adv = pgd(team, x, y, eps=eps, step=step, steps=attack_steps, generator=generator)
        with activation_l1(members) as activations:
            logits = [m(x_adv) for m in members]
        probs = torch.stack([z.softmax(dim=1) for z in logits]).mean(dim=0)
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), y)
        loss = loss + weights.lambda_mis * misclassification_loss(logits, y)
        loss = loss + weights.lambda_w * weight_l1(members) + weights.lambda_a * sum(activations)
        if weights.beta > 0 and len(members) > 1:
            layer = layers[int(torch.randint(len(layers), (), generator=generator, device=generator.device))]
            diversity = dverge_loss(
                members,
                x,
                y,
                layer=layer,
                eps=weights.distill_eps,
                steps=weights.distill_steps,
                generator=generator,
            )
            loss = loss + weights.beta * diversity
        return loss

    return run_loop(params, data, config, loss_fn, name=name, models=members, device=device, on_step=on_step)
