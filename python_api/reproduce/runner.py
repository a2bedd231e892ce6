"""Training and evaluating each method of `reproduce`: FLOAT over its lam_n sweep for both
lam_th, FLOAT-Slim over the sweep at each width (lam_th 0.5), SMART over the sweep (lam_n 0 its
clean path, lam_n > 0 its adversarial path with the noise scaled by lam_n),
and one PGD-AT model per lam of the sweep. Every setting is evaluated under PGD and under an
AutoAttack-style suite: `standard` where the setting is deterministic, `rand` (APGD-CE and
APGD-DLR with EOT) where it draws noise; on a noisy setting every adversarial point is scored on
budget.draws fresh draws and counts as robust only if the model is right on all of them. Every
number comes with the evaluation's sanity checks and is its headline (the lowest any same-eps
run of the checks found)."""

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..commands.runs import build_from_info, model_info, prepare_training_data
from ..data import dataset_spec, load_dataset, to_unit_interval
from ..evaluate import evaluate, evaluation_passes
from ..train import TrainConfig, eval_mode, train
from ..train.float_at import CLEAN, NOISY, float_inference, inference_setting
from ..train.float_slim import floats_inference
from ..train.once_for_all import WIDTHS, training_method
from ..train.parameter_counts import path_parameters
from ..train.smart import smart_inference, smart_variant
from ..train.weighted_at import WeightedAdversarialTraining
from .budgets import Budget

__all__ = ["ATTACKS", "FLOATS_LAM_TH", "LAM_N", "LAM_TH", "METHODS", "reproduce", "work_units"]

LAM_N = (0.0, 0.2, 0.7, 1.0)
LAM_TH = (0.0, 0.5)
METHODS = ("float", "floats", "smart", "pgd-at")
FLOATS_LAM_TH = 0.5
ATTACKS = ("pgd", "autoattack")  # the suite: "standard", or "rand" on a randomised setting
_BN = {CLEAN: "BN_C", NOISY: "BN_A"}


def _config(budget: Budget, dataset: str, seed: int) -> TrainConfig:
    return TrainConfig(
        epochs=None, max_steps=budget.train_steps, batch_size=budget.batch_size, lr=budget.lr,
        momentum=0.9, weight_decay=5e-4, schedule="cosine", flip=dataset_spec(dataset).flip, seed=seed,
        log_every=max(budget.train_steps // 10, 1),
    )  # fmt: skip


def _suite(randomized: bool) -> str:
    return "rand" if randomized else "standard"


def _evaluate(model, test, budget: Budget, randomized: bool, seed: int, tick) -> dict:
    """CA, RA under PGD ("robust_accuracy") and under the AutoAttack-style suite
    ("autoattack_robust_accuracy"), each right on every one of the draws and averaged over them
    ("..._mean_over_draws"), and the sanity checks of both ("flagged" names each failed check
    with its attack)."""
    common = {"eps": budget.eps, "steps": budget.eval_steps, "restarts": budget.eval_restarts,
              "draws": budget.draws, "randomized": randomized, "seed": seed, "progress": tick,
              "eot_draws": budget.eot_draws if randomized else 1, "square_queries": budget.square_queries,
              "n_target_classes": budget.target_classes}  # fmt: skip
    pgd = evaluate(model, *test, attack="pgd", **common)
    suite = evaluate(model, *test, attack="autoattack", version=_suite(randomized), **common)
    kept = (
        "robust_accuracy",
        "robust_accuracy_mean_over_draws",
        "robust_accuracy_as_run",
        "robust_accuracy_from",
    )
    return {
        "clean_accuracy": pgd["clean_accuracy"],
        **{key: pgd[key] for key in kept},
        **{f"autoattack_{key}": suite[key] for key in kept},
        "autoattack_version": _suite(randomized),
        "autoattack_attacks": suite["suite_attacks"],
        "eot_draws": pgd["eot_draws"],
        "draws": pgd["draws"],
        "n": pgd["n"],
        "flagged": [f"{name} (pgd)" for name in pgd["flagged"]]
        + [f"{name} (autoattack)" for name in suite["flagged"]],
        "sanity_checks": {"pgd": pgd["sanity_checks"], "autoattack": suite["sanity_checks"]},
    }


def _float_settings(model) -> Iterator[tuple[dict, contextlib.AbstractContextManager, bool]]:
    for lam_th in LAM_TH:
        for lam_n in LAM_N:
            scale, bn_path = inference_setting(lam_n, lam_th)
            fields = {"lam_th": lam_th, "lam_n": lam_n, "noise_scale": scale, "bn": _BN[bn_path]}
            yield fields, float_inference(model, lam_n, lam_th), scale > 0


def _floats_settings(model, width: float) -> Iterator[tuple[dict, contextlib.AbstractContextManager, bool]]:
    for lam_n in LAM_N:
        scale, bn_path = inference_setting(lam_n, FLOATS_LAM_TH)
        fields = {
            "width": width,
            "lam_th": FLOATS_LAM_TH,
            "lam_n": lam_n,
            "noise_scale": scale,
            "bn": _BN[bn_path],
        }
        yield fields, floats_inference(model, width, lam_n, FLOATS_LAM_TH), scale > 0


def _smart_settings(model) -> Iterator[tuple[dict, contextlib.AbstractContextManager, bool]]:
    # lam_n 0 the clean path; lam_n > 0 the adversarial one, its noise scaled by lam_n, BN_A
    for lam_n in LAM_N:
        fields = {"lam_th": None, "lam_n": lam_n, "noise_scale": lam_n, "bn": _BN[NOISY if lam_n else CLEAN]}
        yield fields, smart_inference(model, lam_n), lam_n > 0


def _counts(counts: dict, path: int, noisy: bool) -> dict:
    """A path's non-zero parameters, the union of both paths' and its noise additions per inference."""
    name = ("clean_path", "adversarial_path")[path]
    return {"parameters": counts[name], "union_parameters": counts["union"],
            "noise_additions": counts["noise_additions"]["adversarial_path"] if noisy else 0}  # fmt: skip


def reproduce(
    methods,
    budget: Budget,
    out: str | Path,
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    smart: dict | None = None,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Trains every method in `methods` (names from METHODS) at `budget`, evaluates it on the
    first budget.eval_images test images and returns {"settings", "rows"}; each row is one
    (method, lam) point with CA, RA under PGD and the AutoAttack-style suite, the path's non-zero parameters
    and noise additions, and the sanity checks. Training runs write their checkpoints under
    out/<model> (a re-run with the same settings resumes, or reuses a finished model). Models train
    and are evaluated on `device`. `smart` (to_smart_model's "stages" and "shared") sets SMART's
    masks, e.g. the ablations of its Table 1.
    `progress(n)` is called with the work units done: one per training step, one per attack run
    of the evaluations (each attack of a suite, each restart, each run of the sanity checks)."""
    tick = progress or (lambda _n: None)
    emit = log or (lambda _line: None)
    train_data, _ = prepare_training_data(dataset, data_dir, 0.0, 0)
    images, labels = load_dataset(dataset, "test", data_dir)
    test = (
        to_unit_interval(images[: budget.eval_images]).to(device),
        labels[: budget.eval_images].to(device),
    )
    info = model_info(budget.model, dataset, train_data[0])
    attack = {"eps": budget.eps, "alpha": budget.alpha, "steps": budget.attack_steps}
    out = Path(out)
    rows = []

    smart = {"stages": None, "shared": 0.25, **(smart or {})}

    def fit(name: str, method, training, options=None) -> tuple[torch.nn.Module, float]:
        """Trains a fresh model (converted for `method` when it is once-for-all) with `training`."""
        torch.manual_seed(seed)
        described = {**info, "method": method, **({"method_options": options} if options else {})}
        model = build_from_info(described, seed).to(device)  # train() trains on the model's device
        started = time.perf_counter()
        run_info = {"model": described, "dataset": {"name": dataset}, "reproduce": name}
        train(model, training, train_data, _config(budget, dataset, seed), out / name, run_info=run_info,
              log=None, on_step=lambda _step: tick(1))  # fmt: skip
        seconds = time.perf_counter() - started
        emit(f"{name} trained in {seconds:.1f} s")
        return model.eval(), seconds

    def sweep(method: str, model, seconds: float, settings, counts: dict | None = None) -> None:
        counts = counts or path_parameters(model)
        for fields, inference, randomized in settings:
            fields = {"width": 1.0, **fields}
            path = NOISY if fields["bn"] == "BN_A" else CLEAN
            with eval_mode(model), inference:
                result = _evaluate(model, test, budget, randomized, seed, tick)
            rows.append({"method": method, **fields, **_counts(counts, path, fields["noise_scale"] > 0),
                         "train_seconds": seconds, **result})  # fmt: skip

    if "float" in methods:
        model, seconds = fit("float", "float", training_method("float", **attack))
        sweep("FLOAT", model, seconds, _float_settings(model))
    if "floats" in methods:
        model, seconds = fit("floats", "floats", training_method("floats", **attack))
        for width in sorted(WIDTHS, reverse=True):
            with eval_mode(model), floats_inference(model, width, 0.0):
                counts = path_parameters(model, test[0][:1])
            sweep("FLOAT-Slim", model, seconds, _floats_settings(model, width), counts)
    if "smart" in methods:
        variant = smart_variant(smart["stages"], smart["shared"])
        default = smart == {"stages": None, "shared": 0.25}
        name = "smart" if default else f"smart-{smart['stages'] or 'later'}-overlap{smart['shared']:g}"
        model, seconds = fit(name, "smart", training_method("smart", **attack), smart)
        rows_before = len(rows)
        sweep("SMART", model, seconds, _smart_settings(model))
        for row in rows[rows_before:]:
            row["variant"] = variant
    if "pgd-at" in methods:
        for lam in LAM_N:
            model, seconds = fit(f"pgd-at-lam{lam}", None, WeightedAdversarialTraining(lam, **attack))
            fields = {"lam_th": None, "lam_n": lam, "noise_scale": 0.0, "bn": "BN"}
            sweep("PGD-AT", model, seconds, [(fields, contextlib.nullcontext(), False)])
    settings = {"dataset": dataset, "budget": budget.__dict__, "seed": seed, "methods": list(methods), "smart": smart,
                "attacks": list(ATTACKS), "norm": "linf", "device": str(device)}  # fmt: skip
    return {"settings": settings, "rows": rows}


def _randomized_rows(methods) -> list[bool]:
    """Whether each row of a reproduce call draws noise, in row order (as the settings above)."""
    rows = []
    if "float" in methods:
        rows += [inference_setting(lam_n, lam_th)[0] > 0 for lam_th in LAM_TH for lam_n in LAM_N]
    if "floats" in methods:
        rows += [inference_setting(lam_n, FLOATS_LAM_TH)[0] > 0 for _ in WIDTHS for lam_n in LAM_N]
    if "smart" in methods:
        rows += [lam_n > 0 for lam_n in LAM_N]
    if "pgd-at" in methods:
        rows += [False] * len(LAM_N)
    return rows


def work_units(methods, budget: Budget) -> int:
    """The total `progress` units of a reproduce call: training steps and evaluation attack runs."""
    trained = sum(m in methods for m in ("float", "floats", "smart")) + ("pgd-at" in methods) * len(LAM_N)
    units = trained * budget.train_steps
    for randomized in _randomized_rows(methods):
        for attack in ("pgd", "autoattack"):
            units += evaluation_passes(budget.eval_images, attack=attack, restarts=budget.eval_restarts,
                                       version=_suite(randomized), randomized=randomized)  # fmt: skip
    return units
