"""Evaluation (robustkernels.api.evaluate): clean, robust (all-or-nothing over restarts)
and transfer accuracy, eps sweeps, sanity checks that flag untrustworthy evaluations,
results as plain dicts, JSON and a printable report."""

import torch

from .accuracy import ATTACKS, batches, clean_accuracy, eps_sweep, robust_accuracy, transfer_accuracy
from .report import format_report, to_json
from .sanity import NEAR_ZERO, large_eps, looks_randomized, sanity_checks


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
    randomized: bool = False,
    batch_size: int = 256,
    version: str = "standard",
    seed: int = 0,
    checks: bool = True,
) -> dict:
    """robust_accuracy's dict for one attack setting plus, with checks=True, the sanity
    checks ("sanity_checks": list of {name, passed, detail}; "flagged": names that
    failed). randomized=True declares the model randomised (it is also detected)."""
    result = robust_accuracy(
        model, (x, y), attack=attack, eps=eps, norm=norm, steps=steps, restarts=restarts,
        eot_draws=eot_draws, version=version, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    if checks:
        result["sanity_checks"] = sanity_checks(
            model, (x, y), eps=eps, attack=attack, norm=norm, steps=steps, restarts=restarts,
            eot_draws=eot_draws, randomized=True if randomized else None, batch_size=batch_size,
            seed=seed, baseline=result,
        )  # fmt: skip
        result["flagged"] = [c["name"] for c in result["sanity_checks"] if not c["passed"]]
    return result


__all__ = [
    "ATTACKS",
    "NEAR_ZERO",
    "batches",
    "clean_accuracy",
    "eps_sweep",
    "evaluate",
    "format_report",
    "large_eps",
    "looks_randomized",
    "robust_accuracy",
    "sanity_checks",
    "to_json",
    "transfer_accuracy",
]
