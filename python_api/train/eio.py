"""Ensemble-in-One's training (Algorithm 1) as trainer methods, on a `to_eio_model` network.

- `EIOPretraining`: one path drawn uniformly per batch (Eq. 1), clean cross-entropy on it.
- `EIODiversification`: vulnerability diversification. Per batch: the layer l and p paths that
  differ within their first l gates; per path P_i, the source images distilled against P_i's
  layer-l features of the target images (DVERGE's feature distillation: eps_d, 10 sign steps of
  eps_d / 10, momentum on L1-normalised gradients, no random start); the loss
  sum_i sum_{j != i} CE(f_{P_i}(x'_j), y_s), of which the trainer takes one optimiser step (the
  weights change only after every sampled path has contributed, Alg. 1 line 24).

The target images are the batch in a random order drawn from the step's generator (DVERGE draws
them from a second, independent shuffle of the loader; a permutation of the same batch keeps the
trainer's one-batch-per-step contract and exact resume). `cross_path_loss` is the loss alone, for
tests against a hand computation.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import feature_distillation, untouched
from .eio_model import diversification_paths, eio_blocks, feature_taps, layer_features, use_eio_path

__all__ = ["EIODiversification", "EIOPretraining", "cross_path_loss", "distill_against"]


def _num_gates(model: nn.Module) -> tuple[int, int]:
    blocks = eio_blocks(model)
    if not blocks:
        raise ValueError("the model has no gated blocks; convert it with to_eio_model first")
    return len(blocks), blocks[0].num_paths


class EIOPretraining:
    """Clean cross-entropy on one path per batch, drawn uniformly (each gate with probability 1/n)."""

    name = "eio-pretrain"

    def settings(self) -> dict:
        return {}

    def loss(self, model, x, y, *, attack_model, generator):
        blocks, n = _num_gates(attack_model)
        path = torch.randint(n, (blocks,), generator=generator, device=generator.device)
        with use_eio_path(attack_model, path.cpu()):
            logits = model(x)
        return F.cross_entropy(logits, y), logits


def distill_against(
    model: nn.Module, path, layer: int, x_source, x_target, *, eps: float, steps: int
) -> torch.Tensor:
    """x' within eps of x_source whose layer-`layer` features on `path` match x_target's (Eq. 2)."""
    # untouched: the weights stop requiring gradients, so no backward computes theirs (a custom op's
    # backward sees which inputs require gradients, not which ones autograd.grad asks for)
    with use_eio_path(model, path), untouched(model):
        return feature_distillation(
            layer_features(model, layer), x_source, x_target, eps=eps, steps=steps, momentum=1.0
        )


def cross_path_loss(
    model: nn.Module, paths: Sequence, distilled: Sequence[torch.Tensor], y_source: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_i sum_{j != i} CE(f_{P_i}(distilled[j]), y_source), the logits of P_0 on distilled[1]).
    Each term is a batch mean, one forward per (i, j) as DVERGE runs them (batch norm statistics
    per forward); the labels are the source images' (Eq. 3), never the targets'."""
    if len(paths) != len(distilled) or len(paths) < 2:
        raise ValueError(
            f"need one distilled batch per path and >= 2 paths, got {len(paths)} and {len(distilled)}"
        )
    total, shown = 0.0, None
    for i, path in enumerate(paths):
        with use_eio_path(model, path):
            for j, x_j in enumerate(distilled):
                if i == j:
                    continue
                logits = model(x_j)
                total = total + F.cross_entropy(logits, y_source)
                shown = logits if shown is None else shown
    return total, shown


class EIODiversification:
    """Vulnerability diversification with p paths per batch (module docstring). bn_eval_in_distillation
    runs the distillation with batch norm on running statistics (DVERGE and the default use train
    mode, which also updates them; spec A.5 #7). layer fixes the distillation layer (None: drawn
    per batch, as Alg. 1 does; a fixed one serves ablations and like-for-like timing)."""

    name = "eio"

    def __init__(self, p: int = 3, eps: float = 0.07, steps: int = 10, bn_eval_in_distillation: bool = False,
                 layer: int | None = None):  # fmt: skip
        if isinstance(p, bool) or not isinstance(p, int) or p < 2:
            raise ValueError(f"p must be an int >= 2 (paths per batch), got {p!r}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        self.p, self.eps, self.steps, self.bn_eval, self.layer = p, eps, steps, bn_eval_in_distillation, layer
        self.last_layer: int | None = None

    def settings(self) -> dict:
        return {"p": self.p, "eps": self.eps, "steps": self.steps, "bn_eval_in_distillation": self.bn_eval,
                "layer": self.layer}  # fmt: skip

    def loss(self, model, x, y, *, attack_model, generator):
        blocks, n = _num_gates(attack_model)
        cpu = torch.Generator().manual_seed(
            int(torch.randint(2**62, (), generator=generator, device=generator.device))
        )
        layer, paths = diversification_paths(
            blocks, n, self.p, cpu, layer=self.layer, max_layer=len(feature_taps(attack_model))
        )
        self.last_layer = layer
        x_target = x[torch.randperm(len(x), generator=cpu).to(x.device)]
        was_training = attack_model.training
        attack_model.train(not self.bn_eval)
        try:
            distilled = [
                distill_against(attack_model, path, layer, x, x_target, eps=self.eps, steps=self.steps)
                for path in paths
            ]
        finally:
            attack_model.train(was_training)
        return cross_path_loss(model, paths, distilled, y)
