"""Evaluation of EED and its baselines (spec B.4, B.5 #4 and #9, D): clean accuracy, PGD (CE),
the AutoAttack standard suite, CW-margin PGD and DeepFool-L2, each scored per image.

A deployed predictor is attacked through every model in `targets` (for EED: the full-team
average and the dynamic forward itself, gradients through the members it ran) and an image
counts as robust only if the predictor is right at its clean input and at every adversarial
version: the lower accuracy per image, never the better of the two attacks on average."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..attacks import autoattack, deepfool, pgd

__all__ = ["AttackBudget", "robust_correct"]


@dataclass(frozen=True)
class AttackBudget:
    eps: float  # L-inf
    step: float
    pgd_steps: int = 20
    cw_steps: int = 30
    autoattack_steps: int = 100
    target_classes: int = 9
    square_queries: int = 5000
    deepfool_steps: int = 50
    deepfool_eps: float = 0.5  # the standard L2 budget; the paper's literal eps is the L-inf value
    batch_size: int = 256


def _versions(name: str, model, x, y, budget: AttackBudget, generator) -> list[torch.Tensor]:
    if name == "pgd":
        return [
            pgd(model, x, y, eps=budget.eps, step=budget.step, steps=budget.pgd_steps, generator=generator)
        ]
    if name == "cw":
        return [
            pgd(
                model,
                x,
                y,
                eps=budget.eps,
                step=budget.step,
                steps=budget.cw_steps,
                loss="cw",
                generator=generator,
            )
        ]
    if name == "autoattack":
        seed = int(torch.randint(2**31, (), generator=generator, device=generator.device))
        x_adv, _ = autoattack(model, x, y, eps=budget.eps, version="standard", steps=budget.autoattack_steps,
                              n_target_classes=budget.target_classes, square_queries=budget.square_queries,
                              generator=generator, seed=seed)  # fmt: skip
        return [x_adv]
    if name == "deepfool":
        return [deepfool(model, x, y, eps=budget.deepfool_eps, steps=budget.deepfool_steps)]
    if name == "deepfool_literal":
        return [deepfool(model, x, y, eps=budget.eps, steps=budget.deepfool_steps)]
    raise ValueError(f"unknown attack {name!r}")


ATTACKS = ("pgd", "autoattack", "cw", "deepfool", "deepfool_literal")


@torch.no_grad()
def _right(predictor, x, y) -> torch.Tensor:
    return predictor(x).argmax(dim=1) == y


def robust_correct(
    predictor: Callable,
    targets: dict[str, Callable],
    x: torch.Tensor,
    y: torch.Tensor,
    budget: AttackBudget,
    *,
    attacks=ATTACKS,
    seed: int = 0,
    tick: Callable[[int], None] | None = None,
) -> dict:
    """{"clean": [N] bool, attack: [N] bool (right at the clean input and at every version
    crafted against every target), f"{attack}@{target}": [N] bool per target}."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    result = {"clean": torch.cat([_right(predictor, xb, yb) for xb, yb in _batches(x, y, budget.batch_size)])}
    for attack in attacks:
        combined = result["clean"].clone()
        for target_name, target in targets.items():
            right = []
            for xb, yb in _batches(x, y, budget.batch_size):
                versions = _versions(attack, target, xb, yb, budget, generator)
                ok = _right(predictor, xb, yb)
                for x_adv in versions:
                    ok &= _right(predictor, x_adv, yb)
                right.append(ok)
            result[f"{attack}@{target_name}"] = torch.cat(right)
            combined &= result[f"{attack}@{target_name}"]
            if tick is not None:
                tick(1)
        result[attack] = combined
    return result


def _batches(x, y, size):
    for start in range(0, len(y), size):
        yield x[start : start + size], y[start : start + size]
