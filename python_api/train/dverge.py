"""DVERGE (Yang et al., "DVERGE: Diversifying Vulnerabilities for Enhancing Robust Generation of
Ensembles", NeurIPS 2020): K separate models trained to classify each other's distilled
non-robust features as the source label.

Per batch, every member k distils the source images against its own layer-l features of the
target images (`feature_distillation`: eps 0.07, 10 sign steps of eps / 10, momentum on
L1-normalised gradients, no random start); member i then minimises
sum_{j != i} CE(f_i(x'_j), y_s) (plus CE(f_i(PGD_i(x_s)), y_s) with plus_adv, "DVERGE + AdvT").
The layer l is drawn once per epoch (DVERGE's schedule: 200 draws in its 200 epochs), or every
`redraw_every` steps (a short run, where per epoch would leave a handful of layers), uniformly over
the members' L main-branch layers (`eio_model.feature_taps`, the same pre-ReLU taps as EIO's).

The trainer steps one SGD over the ensemble's parameters on the sum of the members' losses. That
is K separate optimisers exactly: member i's loss reaches only member i's weights (the distilled
inputs are constants), and SGD's momentum and weight decay are per parameter, so each member's
update is the one its own optimiser would make. The ensemble predicts with the log of the mean
softmax (`models.AveragedEnsemble`).
"""

import torch
import torch.nn.functional as F

from ..attacks import feature_distillation, pgd, untouched
from ..models import AveragedEnsemble
from .eio_model import feature_taps, layer_features
from .seeds import derived_generator

__all__ = ["DVERGETraining"]


class DVERGETraining:
    """DVERGE's cross-training loss on an AveragedEnsemble (module docstring). seed: the stream of
    the layer draws, one per epoch or per `redraw_every` steps; layer: a fixed distillation layer
    instead (ablations, timing)."""

    name = "dverge"

    def __init__(self, eps: float = 0.07, steps: int = 10, *, plus_adv: bool = False,
                 adv_eps: float = 8 / 255, adv_step: float = 2 / 255, adv_steps: int = 10, seed: int = 0,
                 layer: int | None = None, redraw_every: int | None = None):  # fmt: skip
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        self.eps, self.steps, self.plus_adv, self.seed = eps, steps, plus_adv, seed
        self.adv = {"eps": adv_eps, "step": adv_step, "steps": adv_steps}
        if redraw_every is not None and (
            isinstance(redraw_every, bool) or not isinstance(redraw_every, int) or redraw_every < 1
        ):
            raise ValueError(f"redraw_every must be a positive int or None, got {redraw_every!r}")
        self.fixed_layer, self.redraw_every = layer, redraw_every
        self.draw: int | None = None
        self.layer: int | None = None

    def settings(self) -> dict:
        return {"eps": self.eps, "steps": self.steps, "plus_adv": self.plus_adv, "adv": self.adv,
                "layer": self.fixed_layer, "redraw_every": self.redraw_every}  # fmt: skip

    def start_step(self, step: int, epoch: int) -> None:
        self.draw = epoch if self.redraw_every is None else step // self.redraw_every

    def _layer(self, ensemble: AveragedEnsemble) -> int:
        layers = len(feature_taps(ensemble.members[0]))
        if self.fixed_layer is not None:
            if not 1 <= self.fixed_layer <= layers:
                raise ValueError(f"layer must lie in [1, {layers}], got {self.fixed_layer}")
            return self.fixed_layer
        draw = 0 if self.draw is None else self.draw
        return int(
            torch.randint(1, layers + 1, (), generator=derived_generator(self.seed, "dverge-layer", draw))
        )

    def loss(self, model, x, y, *, attack_model, generator):
        if not isinstance(attack_model, AveragedEnsemble) or len(attack_model.members) < 2:
            raise ValueError("DVERGE trains an AveragedEnsemble of at least 2 members")
        members = attack_model.members
        self.layer = self._layer(attack_model)
        x_target = x[torch.randperm(len(x), generator=generator, device=generator.device).to(x.device)]
        with untouched(attack_model):  # only the inputs are differentiated (as in EIO's distillation)
            distilled = [
                feature_distillation(
                    layer_features(m, self.layer), x, x_target, eps=self.eps, steps=self.steps
                )
                for m in members
            ]
        trained = model.module.members if hasattr(model, "module") else model.members
        total, shown = 0.0, None
        for i, member in enumerate(trained):
            for j, x_j in enumerate(distilled):
                if i != j:
                    logits = member(x_j)
                    total = total + F.cross_entropy(logits, y)
                    shown = logits if shown is None else shown
            if self.plus_adv:
                x_adv = pgd(members[i], x, y, generator=generator, **self.adv)
                total = total + F.cross_entropy(member(x_adv), y)
        return total, shown
