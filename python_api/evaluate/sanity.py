"""Sanity checks that flag an evaluation which cannot be trusted, after Carlini et al.,
"On Evaluating Adversarial Robustness" (2019) and Athalye et al., "Obfuscated
Gradients Give a False Sense of Security" (2018):

- eps_zero: robust accuracy at eps = 0 equals clean accuracy;
- monotone_in_eps: accuracy does not rise with eps (eps/4, eps/2, eps);
- large_eps: an eps that covers the whole input box drives accuracy near zero
  (at most NEAR_ZERO); if not, gradients are likely masked;
- more_steps: four times the steps do not raise accuracy;
- more_restarts: two more restarts do not raise accuracy;
- eot_for_randomness: a randomised model (two forward passes on the same inputs
  differ, or randomized=True) is attacked with EOT (eot_draws > 1).

Comparisons allow `tolerance`: by default one sample's worth (1/n) for a deterministic
model, and three standard errors of a proportion at its widest, 1.5/sqrt(n), for a
randomised one, whose predictions are themselves random draws.
"""

import itertools
import math
from collections.abc import Callable

import torch

from .accuracy import Data, batches, robust_accuracy

NEAR_ZERO = 0.05


def looks_randomized(model, data: Data, batch_size: int = 256) -> bool:
    """Two forward passes on the same batch differ."""
    x, _ = next(iter(batches(data, batch_size)))
    with torch.no_grad():
        return not torch.equal(model(x), model(x))


def large_eps(norm: str, data: Data, lo: float = 0.0, hi: float = 1.0) -> float:
    """The radius that covers the whole [lo, hi] box from any point in it."""
    if norm == "linf":
        return hi - lo
    x, _ = next(iter(batches(data, 1)))
    return (hi - lo) * math.sqrt(x[0].numel())


def _check(name: str, passed: bool, detail: str) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail}


def sanity_checks(
    model,
    data: Data,
    *,
    eps: float,
    attack="pgd",
    norm: str = "linf",
    steps: int = 10,
    restarts: int = 1,
    eot_draws: int = 1,
    randomized: bool | None = None,
    batch_size: int = 256,
    seed: int = 0,
    tolerance: float | None = None,
    baseline: dict | None = None,
    evaluator: Callable[..., dict] = robust_accuracy,
) -> list[dict]:
    """Runs the checks; each is {"name", "passed", "detail"}. evaluator is the evaluation
    under test (robust_accuracy's signature and dict); baseline its dict for these
    settings when already computed (else it is computed here)."""
    settings = {
        "attack": attack,
        "norm": norm,
        "eot_draws": eot_draws,
        "batch_size": batch_size,
        "seed": seed,
    }

    def accuracy(e, s=steps, r=restarts) -> float:
        return evaluator(model, data, eps=e, steps=s, restarts=r, **settings)["robust_accuracy"]

    base = baseline or evaluator(model, data, eps=eps, steps=steps, restarts=restarts, **settings)
    clean, robust, n = base["clean_accuracy"], base["robust_accuracy"], max(base["n"], 1)
    is_random = looks_randomized(model, data, batch_size) if randomized is None else randomized
    tol = tolerance if tolerance is not None else (1.5 / math.sqrt(n) if is_random else 1.0 / n)
    checks = []

    at_zero = accuracy(0.0)
    checks.append(
        _check(
            "eps_zero", abs(at_zero - clean) <= tol, f"accuracy at eps=0 {at_zero:.4f} vs clean {clean:.4f}"
        )
    )

    sweep = [(0.0, at_zero), (eps / 4, accuracy(eps / 4)), (eps / 2, accuracy(eps / 2)), (eps, robust)]
    rises = [(a, b) for a, b in itertools.pairwise(sweep) if b[1] > a[1] + tol]
    curve = ", ".join(f"eps={e:.4g}: {acc:.4f}" for e, acc in sweep)
    checks.append(_check("monotone_in_eps", not rises, f"accuracy over eps: {curve}"))

    big = large_eps(norm, data)
    at_big = accuracy(big)
    checks.append(
        _check(
            "large_eps",
            at_big <= NEAR_ZERO + tol,
            f"accuracy at eps={big:.4g} (the whole input box) is {at_big:.4f}",
        )
    )

    more_steps = accuracy(eps, s=4 * steps)
    checks.append(
        _check(
            "more_steps",
            more_steps <= robust + tol,
            f"accuracy with {4 * steps} steps {more_steps:.4f} vs {steps} steps {robust:.4f}",
        )
    )

    more_restarts = accuracy(eps, r=restarts + 2)
    checks.append(
        _check(
            "more_restarts",
            more_restarts <= robust + tol,
            f"accuracy with {restarts + 2} restarts {more_restarts:.4f} vs {restarts} {robust:.4f}",
        )
    )

    checks.append(
        _check(
            "eot_for_randomness",
            not is_random or eot_draws > 1,
            f"model {'is' if is_random else 'is not'} randomised; attack gradients over {eot_draws} draw(s)",
        )
    )
    return checks
