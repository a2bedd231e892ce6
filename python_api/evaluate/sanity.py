"""Sanity checks that flag an evaluation which cannot be trusted, after Carlini et al.,
"On Evaluating Adversarial Robustness" (2019) and Athalye et al., "Obfuscated
Gradients Give a False Sense of Security" (2018):

- eps_zero: robust accuracy at eps = 0 equals the clean accuracy on every draw;
- monotone_in_eps: accuracy does not rise with eps (eps/4, eps/2, eps);
- large_eps: an eps that covers the whole input box drives accuracy near zero
  (at most NEAR_ZERO); if not, gradients are likely masked;
- more_steps, more_restarts, more_eot_draws: four times the steps, two more restarts
  and (randomised models) four times the EOT draws do not raise accuracy; a rise means
  the attack is broken;
- converged: none of those stronger attacks lowers accuracy by more than two binomial
  standard errors, sqrt(p (1 - p) / n) at the evaluated accuracy p; if one does, the
  evaluation had not converged (the headline is then the lower number, see `headline`);
- eot_for_randomness: a randomised model (two forward passes on the same inputs
  differ, or randomized=True) is attacked with EOT (eot_draws > 1);
- draw_gap (randomised models): the accuracy averaged over draws exceeds the worst case
  over draws by at most two standard errors; more means the model is robust only on
  some draws, and the mean overstates what it withstands;
- twin_transfer (randomised models): the same attack crafted on the model's deterministic
  twin (`deterministic_twin`: noise off, random routes fixed) and transferred does not beat
  the white-box attack by more than two standard errors; if it does, the randomness masks
  the model's gradients. Skipped (and said so) when no twin can be derived or given.

Rises allow `tolerance`: by default one sample's worth (1/n) for a deterministic model, and
three standard errors of a proportion at its widest, 1.5/sqrt(n), for a randomised one, whose
scores are themselves random draws. Each same-eps check also carries the accuracy its run found.
"""

import itertools
import math
from collections.abc import Callable

from ..attacks import DRAWS, SQUARE_QUERIES
from .accuracy import Data, attack_passes, batches, looks_randomized, robust_accuracy, transfer_accuracy
from .twin import deterministic_twin

NEAR_ZERO = 0.05
# the stronger settings of the same evaluation, as check names and what they change
STRONGER = {"more_steps": "4x steps", "more_restarts": "2 more restarts", "more_eot_draws": "4x EOT draws"}


def large_eps(norm: str, data: Data, lo: float = 0.0, hi: float = 1.0) -> float:
    """The radius that covers the whole [lo, hi] box from any point in it."""
    if norm == "linf":
        return hi - lo
    x, _ = next(iter(batches(data, 1)))
    return (hi - lo) * math.sqrt(x[0].numel())


def standard_error(p: float, n: int) -> float:
    """The binomial standard error of an accuracy p measured on n samples."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def check_runs(
    *, eps: float, big: float, steps: int, restarts: int, eot_draws: int, randomized: bool
) -> dict[str, dict]:
    """The evaluations the checks run beyond the one under test: {name: the settings it changes}."""
    runs = {
        "eps_zero": {"eps": 0.0},
        "eps_quarter": {"eps": eps / 4},
        "eps_half": {"eps": eps / 2},
        "large_eps": {"eps": big},
        "more_steps": {"steps": 4 * steps},
        "more_restarts": {"restarts": restarts + 2},
    }
    if randomized:
        runs["more_eot_draws"] = {"eot_draws": 4 * eot_draws}
    return runs


def check_passes(attack, version: str, restarts: int, n_batches: int, randomized: bool, twin: bool) -> int:
    """The `progress` units sanity_checks reports (attack_passes of every run it makes)."""
    runs = check_runs(eps=1.0, big=1.0, steps=1, restarts=restarts, eot_draws=1, randomized=randomized)
    units = sum(
        attack_passes(attack, version, run.get("restarts", restarts), n_batches) for run in runs.values()
    )
    return units + (attack_passes(attack, version, restarts, n_batches) if randomized and twin else 0)


def _check(name: str, passed: bool, detail: str, **found) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail, **found}


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
    draws: int = DRAWS,
    randomized: bool | None = None,
    version: str = "standard",
    square_queries: int = SQUARE_QUERIES,
    n_target_classes: int = 9,
    batch_size: int = 256,
    seed: int = 0,
    tolerance: float | None = None,
    baseline: dict | None = None,
    evaluator: Callable[..., dict] = robust_accuracy,
    twin=None,
    progress: Callable[[int], None] | None = None,
    clean_scores: dict | None = None,
) -> list[dict]:
    """Runs the checks; each is {"name", "passed", "detail"} (same-eps checks also
    "robust_accuracy" and "robust_accuracy_mean_over_draws" of their run; a check that cannot
    run has "skipped": True). evaluator is the evaluation under test (robust_accuracy's
    signature and dict); baseline its dict for these settings when already computed (else it
    is computed here). twin: the model's deterministic twin for twin_transfer (default:
    `deterministic_twin(model)`). clean_scores: robust_accuracy's, shared by every run (default:
    a new dict, so the checks' runs score the clean input on the same draws)."""
    is_random = looks_randomized(model, data, batch_size) if randomized is None else randomized
    settings = {
        "attack": attack, "norm": norm, "eot_draws": eot_draws, "draws": draws, "randomized": is_random,
        "version": version, "square_queries": square_queries, "n_target_classes": n_target_classes, "batch_size": batch_size, "seed": seed,
        "progress": progress, "clean_scores": {} if clean_scores is None else clean_scores,
    }  # fmt: skip

    # the library's evaluator reports each image, so the headline can combine the runs per image
    per_image = {"per_image": True} if evaluator is robust_accuracy else {}

    def run(**changed) -> dict:
        return evaluator(
            model,
            data,
            **{"eps": eps, "steps": steps, "restarts": restarts, **settings, **per_image, **changed},
        )

    base = baseline or run()
    clean = base.get("clean_accuracy_every_draw", base["clean_accuracy"])
    robust, n = base["robust_accuracy"], max(base["n"], 1)
    tol = tolerance if tolerance is not None else (1.5 / math.sqrt(n) if is_random else 1.0 / n)
    big = large_eps(norm, data)
    found = {
        name: run(**changed)
        for name, changed in check_runs(
            eps=eps, big=big, steps=steps, restarts=restarts, eot_draws=eot_draws, randomized=is_random
        ).items()
    }
    accuracy = {name: result["robust_accuracy"] for name, result in found.items()}
    checks = [
        _check(
            "eps_zero",
            abs(accuracy["eps_zero"] - clean) <= tol,
            f"accuracy at eps=0 {accuracy['eps_zero']:.4f} vs clean {clean:.4f}",
        )
    ]

    sweep = [(0.0, accuracy["eps_zero"]), (eps / 4, accuracy["eps_quarter"]), (eps / 2, accuracy["eps_half"]),
             (eps, robust)]  # fmt: skip
    rises = [(a, b) for a, b in itertools.pairwise(sweep) if b[1] > a[1] + tol]
    curve = ", ".join(f"eps={e:.4g}: {acc:.4f}" for e, acc in sweep)
    checks.append(_check("monotone_in_eps", not rises, f"accuracy over eps: {curve}"))
    checks.append(
        _check(
            "large_eps",
            accuracy["large_eps"] <= NEAR_ZERO + tol,
            f"accuracy at eps={big:.4g} (the whole input box) is {accuracy['large_eps']:.4f}",
        )
    )

    margin = 2 * standard_error(robust, n)
    falls = []
    for name, stronger in STRONGER.items():
        if name not in found:
            continue
        result = found[name]
        if robust - result["robust_accuracy"] > margin:
            falls.append(f"{stronger} {result['robust_accuracy']:.4f}")
        checks.append(
            _check(
                name,
                result["robust_accuracy"] <= robust + tol,
                f"accuracy with {stronger} {result['robust_accuracy']:.4f} vs as run {robust:.4f}",
                robust_accuracy=result["robust_accuracy"],
                robust_accuracy_mean_over_draws=result.get("robust_accuracy_mean_over_draws"),
                per_image=result.get("per_image"),
            )
        )
    verdict = f"falls with {', '.join(falls)}" if falls else "no stronger attack falls"
    checks.append(
        _check(
            "converged",
            not falls,
            f"as run {robust:.4f}; {verdict} by more than 2 standard errors ({margin:.4f})",
        )
    )

    checks.append(
        _check(
            "eot_for_randomness",
            not is_random or eot_draws > 1,
            f"model {'is' if is_random else 'is not'} randomised; attack gradients over {eot_draws} draw(s)",
        )
    )
    if is_random:
        checks += _randomised_checks(model, data, base, settings, steps, restarts, twin, eps)
    return checks


def _randomised_checks(model, data, base, settings, steps, restarts, twin, eps) -> list[dict]:
    robust, n, k = base["robust_accuracy"], max(base["n"], 1), base.get("draws", 1)
    mean = base.get("robust_accuracy_mean_over_draws", robust)
    gap_margin = 2 * standard_error(mean, n)
    checks = [
        _check(
            "draw_gap",
            mean - robust <= gap_margin,
            f"right on every one of {k} draws {robust:.4f} vs averaged over draws {mean:.4f} "
            f"(gap {mean - robust:.4f}, 2 standard errors {gap_margin:.4f})",
        )
    ]
    twin = twin if twin is not None else deterministic_twin(model)
    if twin is None:
        checks.append(
            _check(
                "twin_transfer",
                True,
                "skipped: no noise or random route to turn off; pass twin=",
                skipped=True,
            )
        )
        return checks
    transfer_settings = {key: settings[key] for key in ("attack", "norm", "draws", "randomized", "version",
                                                        "square_queries", "n_target_classes", "batch_size", "seed", "progress",
                                                        "clean_scores")}  # fmt: skip
    transferred = transfer_accuracy(model, {"twin": twin}, data, eps=eps, steps=steps, restarts=restarts,
                                    eot_draws=1, per_image=True, **transfer_settings)  # fmt: skip
    margin = 2 * standard_error(robust, n)
    checks.append(
        _check(
            "twin_transfer",
            transferred["transfer_accuracy"] >= robust - margin,
            f"crafted on the deterministic twin {transferred['transfer_accuracy']:.4f} vs white-box {robust:.4f} "
            f"(2 standard errors {margin:.4f}); lower means the randomness masks the gradients",
            robust_accuracy=transferred["transfer_accuracy"],
            robust_accuracy_mean_over_draws=transferred["transfer_accuracy_mean_over_draws"],
            per_image=transferred["per_image"],
        )
    )
    return checks


def headline(result: dict, checks: list[dict]) -> dict:
    """The robust accuracy of all runs at the evaluated eps together (the evaluation as run, its
    stronger variants, the twin transfer): {"robust_accuracy", "robust_accuracy_mean_over_draws",
    "from"}. Each is an attack on the same images of the same model, so where every run reports
    its images ("per_image") an image counts only if it survived them all (the minimum per image,
    at most the lowest run); else the lowest run's figures."""
    runs = [result, *(c for c in checks if c.get("robust_accuracy") is not None)]
    if all(run.get("per_image") is not None for run in runs):
        robust = [all(flags) for flags in zip(*(run["per_image"]["robust"] for run in runs), strict=True)]
        fraction = [
            min(values)
            for values in zip(*(run["per_image"]["correct_fraction"] for run in runs), strict=True)
        ]
        n = max(len(robust), 1)
        named = ", ".join(["as run", *(c["name"] for c in runs[1:])])
        return {"robust_accuracy": sum(robust) / n, "robust_accuracy_mean_over_draws": sum(fraction) / n,
                "from": f"every image's worst over: {named}"}  # fmt: skip
    best = {
        "robust_accuracy": result["robust_accuracy"],
        "robust_accuracy_mean_over_draws": result.get("robust_accuracy_mean_over_draws"),
        "from": "as run",
    }
    for check in checks:
        if check.get("robust_accuracy") is not None and check["robust_accuracy"] < best["robust_accuracy"]:
            best = {
                "robust_accuracy": check["robust_accuracy"],
                "robust_accuracy_mean_over_draws": check["robust_accuracy_mean_over_draws"],
                "from": check["name"],
            }
    return best
