"""Attacks (robustkernels.api.attacks): FGSM, PGD, APGD, DeepFool-L2, AutoAttack-style suites, EOT,
transfer tricks (DI, SGM) and DVERGE's feature distillation, and the one scoring rule of
every evaluation (`score`, `WorstCase`: right on every one of k draws).

Every attack step is one `robustkernels.functional.pgd_step`. Attacks leave the model's
train/eval mode and its parameters' requires_grad as they found them and write no
parameter gradients; models may normalise their inputs inside (attacks work in the
[lo, hi] = [0, 1] input space).
"""

from .apgd import apgd
from .deepfool import deepfool
from .distillation import feature_distillation, feature_mse
from .eot import EOT, loss_gradient, predict
from .guard import untouched
from .losses import LOSSES, attack_loss
from .pgd import fgsm, pgd
from .scoring import DRAWS, Scores, WorstCase, score
from .suites import SQUARE_QUERIES, autoattack, suite_attacks
from .transfer import input_diversity, residual_relus, skip_gradient

__all__ = [
    "DRAWS",
    "EOT",
    "LOSSES",
    "SQUARE_QUERIES",
    "Scores",
    "WorstCase",
    "apgd",
    "attack_loss",
    "autoattack",
    "deepfool",
    "feature_distillation",
    "feature_mse",
    "fgsm",
    "input_diversity",
    "loss_gradient",
    "pgd",
    "predict",
    "residual_relus",
    "score",
    "skip_gradient",
    "suite_attacks",
    "untouched",
]
