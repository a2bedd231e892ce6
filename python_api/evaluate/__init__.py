"""Evaluation (robustkernels.api.evaluate): clean, robust and transfer accuracy, all-or-nothing
over restarts and, on a randomised model, over k draws (right on every one); eps sweeps; sanity
checks that flag untrustworthy evaluations; results as plain dicts, JSON and a printable report."""

import math

import torch

from ..attacks import DRAWS, SQUARE_QUERIES
from .accuracy import (
    ATTACKS,
    attack_passes,
    batches,
    clean_accuracy,
    eps_sweep,
    looks_randomized,
    robust_accuracy,
    transfer_accuracy,
)
from .adaptive import ADAPTIVE_ATTACKS, adaptive_evaluation
from .report import format_report, to_json
from .sanity import NEAR_ZERO, check_passes, headline, large_eps, sanity_checks, standard_error
from .twin import deterministic_twin


def evaluate(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack="pgd",
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    restarts: int = 1,
    eot_draws: int = 1,
    draws: int = DRAWS,
    randomized: bool | None = None,
    batch_size: int = 256,
    version: str = "standard",
    square_queries: int = SQUARE_QUERIES,
    n_target_classes: int = 9,
    seed: int = 0,
    checks: bool = True,
    twin=None,
    progress=None,
) -> dict:
    """robust_accuracy's dict for one attack setting plus, with checks=True, the sanity
    checks ("sanity_checks": list of {name, passed, detail}; "flagged": names that failed).
    With checks, "robust_accuracy" (and its mean over draws) is the headline: every image's worst
    over the evaluation and the checks' same-eps runs (sanity.headline; "robust_accuracy_from"
    names them; "robust_accuracy_as_run" keeps the evaluation's own). randomized=None detects a randomised model (two passes differ);
    draws is k, the passes every point is scored on there. twin: see sanity_checks. progress(n)
    reports the work done, `evaluation_passes` units in all."""
    randomized = looks_randomized(model, (x, y), batch_size) if randomized is None else randomized
    settings = {
        "attack": attack, "eps": eps, "norm": norm, "steps": steps, "restarts": restarts,
        "eot_draws": eot_draws, "draws": draws, "randomized": randomized, "version": version,
        "square_queries": square_queries, "n_target_classes": n_target_classes, "batch_size": batch_size, "seed": seed, "progress": progress,
    }  # fmt: skip
    # one set of clean draws per batch for the evaluation and all its checks' runs
    clean_scores = {}
    result = robust_accuracy(model, (x, y), **settings, clean_scores=clean_scores, per_image=checks)
    if checks:
        result["sanity_checks"] = sanity_checks(
            model, (x, y), **settings, baseline=result, twin=twin, clean_scores=clean_scores
        )
        result["flagged"] = [c["name"] for c in result["sanity_checks"] if not c["passed"]]
        best = headline(result, result["sanity_checks"])
        result["robust_accuracy_as_run"] = result["robust_accuracy"]
        result["robust_accuracy"] = best["robust_accuracy"]
        result["robust_accuracy_mean_over_draws"] = best["robust_accuracy_mean_over_draws"]
        result["robust_accuracy_from"] = best["from"]
        for run in (result, *result["sanity_checks"]):  # used up: the dict stays small and printable
            run.pop("per_image", None)
    return result


def evaluation_passes(
    n: int, *, attack="pgd", restarts: int = 1, version: str = "standard", batch_size: int = 256,
    randomized: bool = False, twin: bool = True, checks: bool = True,
) -> int:  # fmt: skip
    """The `progress` units of evaluate on n samples (twin: whether the model has a deterministic twin)."""
    n_batches = math.ceil(n / batch_size)
    units = attack_passes(attack, version, restarts, n_batches)
    return units + (check_passes(attack, version, restarts, n_batches, randomized, twin) if checks else 0)


__all__ = [
    "ADAPTIVE_ATTACKS",
    "ATTACKS",
    "NEAR_ZERO",
    "adaptive_evaluation",
    "batches",
    "clean_accuracy",
    "deterministic_twin",
    "eps_sweep",
    "evaluate",
    "evaluation_passes",
    "format_report",
    "headline",
    "large_eps",
    "looks_randomized",
    "robust_accuracy",
    "sanity_checks",
    "standard_error",
    "to_json",
    "transfer_accuracy",
]
