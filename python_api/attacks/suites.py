"""AutoAttack-style suites (Croce & Hein, 2020): attacks run one after another, each
on the samples every earlier attack failed on; a sample is robust only if all fail.

- "standard": APGD-CE, APGD-T (targeted DLR over the n_target_classes = 9 most likely wrong
  classes), then FAB-T (`steps` steps, as many target classes) and Square (`square_queries` queries) through the optional
  `torchattacks` package; without it those two are skipped and `info["skipped"]` says so.
- "rand", for randomised defences: APGD-CE and APGD-DLR, every gradient averaged over
  20 draws (EOT).

Every point an attack returns is scored by `scoring.score` over `draws` forward passes and kept
per sample by `scoring.WorstCase`: the suite returns, per sample, the point that fooled the model
(wrong on some draw) or else its highest-loss point, never the clean input of a sample no attack
fooled, and `info["scores"]` are that point's scores, which the evaluation takes as they are.
"""

from collections.abc import Callable

import torch

from .apgd import apgd
from .arguments import check_batch, check_count, check_nonnegative, check_norm
from .guard import untouched
from .scoring import DRAWS, Scores, WorstCase

VERSIONS = ("standard", "rand")
RAND_EOT_DRAWS = 20
SQUARE_QUERIES = 5000  # AutoAttack's own; budgets pass fewer
EXTERNAL = ("fab-t", "square")


def _torchattacks():
    """The torchattacks module, or (None, why it cannot be used)."""
    try:
        import torchattacks
    except ImportError as exc:
        return None, f"torchattacks is not installed ({exc})"
    return torchattacks, None


def suite_attacks(version: str) -> list[str]:
    """The attacks `autoattack(version=...)` runs here, in order (external ones only when installed)."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if version == "rand":
        return ["apgd-ce", "apgd-dlr"]
    return ["apgd-ce", "apgd-t", *(EXTERNAL if _torchattacks()[0] is not None else ())]


def skipped_attacks(version: str) -> dict[str, str]:
    """{attack: why it is skipped} for the external attacks of `version` that cannot run here."""
    names = suite_attacks(version)
    reason = _torchattacks()[1]
    return {name: reason for name in EXTERNAL if version == "standard" and name not in names}


def _external(name: str, model, *, eps, norm, num_classes, steps, square_queries, n_target_classes, seed):
    torchattacks, _ = _torchattacks()
    norm_name = {"linf": "Linf", "l2": "L2"}[norm]
    if name == "fab-t":
        fab = torchattacks.FAB(
            model, norm=norm_name, eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
            n_classes=num_classes, seed=seed,
        )  # fmt: skip
        # as AutoAttack sets it: the n most likely wrong classes, not every class
        fab.n_target_classes = min(n_target_classes, num_classes - 1)
        return fab
    return torchattacks.Square(
        model, norm=norm_name, eps=eps, n_queries=square_queries, n_restarts=1, seed=seed
    )


def autoattack(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    steps: int = 100,
    n_target_classes: int = 9,
    eot_draws: int | None = None,
    draws: int | None = None,
    square_queries: int = SQUARE_QUERIES,
    generator: torch.Generator | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    clean: Scores | None = None,
    robust_only: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Runs the suite; returns (x_adv, info). x_adv holds, per sample, the point of the first
    attack that fooled the model on some of `draws` passes, else the highest-loss point of all
    attacks (x itself only where the model was wrong on every draw of it). info: version, eps,
    norm, eot_draws, draws, attacks (those run), skipped ({attack: reason}), clean_accuracy
    (averaged over draws), robust_accuracy (right on every draw), robust_accuracy_mean_over_draws,
    robust_accuracy_after (per attack, cumulative) and scores (x_adv's per-sample `Scores`).
    eot_draws defaults to 1 ("standard") or 20 ("rand"), draws to 1 ("standard") or 10
    ("rand"). seed seeds the torchattacks attacks (our own draw from `generator`);
    progress(1) is called after each attack. clean: x's scores when the caller has drawn them
    (so the suite and its caller score the clean input alike). robust_only: each attack runs on
    the samples still right on every draw only, not on all the model is right on at some draw:
    the robust accuracy needs no more (a sample once wrong on a draw stays counted wrong), so this
    is faster, and info then has no robust_accuracy_mean_over_draws."""
    check_batch(x, y)
    check_norm(norm)
    check_nonnegative("eps", eps)
    check_count("square_queries", square_queries)
    names = suite_attacks(version)
    eot_draws = eot_draws if eot_draws is not None else (RAND_EOT_DRAWS if version == "rand" else 1)
    draws = draws if draws is not None else (DRAWS if version == "rand" else 1)
    check_count("eot_draws", eot_draws)
    check_count("draws", draws)
    x = x.detach()
    info = {"version": version, "eps": eps, "norm": norm, "eot_draws": eot_draws, "draws": draws,
            "attacks": [], "skipped": {}, "robust_accuracy_after": {}}  # fmt: skip
    info["skipped"] = skipped_attacks(version)
    with untouched(model):
        worst = WorstCase(model, x, y, draws, clean=clean)
        info["clean_accuracy"] = worst.clean.correct_fraction.mean().item()
        common = {"eps": eps, "norm": norm, "steps": steps, "eot_draws": eot_draws, "generator": generator}
        plan = {
            "apgd-ce": lambda xs, ys: apgd(model, xs, ys, loss="ce", **common),
            "apgd-dlr": lambda xs, ys: apgd(model, xs, ys, loss="dlr", **common),
            "apgd-t": lambda xs, ys: apgd(model, xs, ys, loss="dlr-targeted", n_target_classes=n_target_classes, **common),
        }  # fmt: skip
        for name in names:
            info["attacks"].append(name)
            idx = worst.still_robust() if robust_only else worst.attackable()
            if idx.numel() > 0:
                if name in EXTERNAL:
                    with torch.no_grad():
                        num_classes = model(x[:1]).shape[1]
                    attack = _external(name, model, eps=eps, norm=norm, num_classes=num_classes, steps=steps,
                                       square_queries=square_queries, n_target_classes=n_target_classes,
                                       seed=seed)  # fmt: skip
                else:
                    attack = plan[name]
                worst.update(idx, attack(x[idx], y[idx]).detach())
            info["robust_accuracy_after"][name] = worst.robust.float().mean().item()
            if progress is not None:
                progress(1)
        scores = worst.scores()
        info["robust_accuracy"] = scores.robust.float().mean().item()
        if not robust_only:
            info["robust_accuracy_mean_over_draws"] = scores.correct_fraction.mean().item()
        info["scores"] = scores
    return worst.x, info
