"""Training and evaluating each method of `reproduce`: FLOAT over its lam_n sweep for both
lam_th, and one PGD-AT model per lam of the sweep, every number with the evaluation's sanity
checks."""

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..commands.runs import model_info, prepare_training_data
from ..data import load_dataset, to_unit_interval
from ..evaluate import evaluate
from ..models import build_model
from ..train import TrainConfig, eval_mode, train
from ..train.float_at import FLOATTraining, float_inference, inference_setting, to_float_model
from ..train.weighted_at import WeightedAdversarialTraining
from .budgets import Budget

__all__ = ["LAM_N", "LAM_TH", "METHODS", "reproduce", "work_units"]

LAM_N = (0.0, 0.2, 0.7, 1.0)
LAM_TH = (0.0, 0.5)
METHODS = ("float", "pgd-at")


def _config(budget: Budget, seed: int) -> TrainConfig:
    return TrainConfig(
        epochs=None, max_steps=budget.train_steps, batch_size=budget.batch_size, lr=budget.lr,
        momentum=0.9, weight_decay=5e-4, schedule="cosine", seed=seed, log_every=max(budget.train_steps // 10, 1),
    )  # fmt: skip


def _evaluate(model, test, budget: Budget, randomized: bool, seed: int) -> dict:
    result = evaluate(
        model, *test, attack="pgd", eps=budget.eps, steps=budget.eval_steps,
        eot_draws=budget.eot_draws if randomized else 1, randomized=randomized, seed=seed,
    )  # fmt: skip
    keys = ("clean_accuracy", "robust_accuracy", "eot_draws", "n", "flagged", "sanity_checks")
    return {key: result[key] for key in keys}


def reproduce(
    methods,
    budget: Budget,
    out: str | Path,
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Trains every method in `methods` (names from METHODS) at `budget`, evaluates it on the
    first budget.eval_images test images and returns {"settings", "rows"}; each row is one
    (method, lam) point with CA, RA and the sanity checks. Training runs write their checkpoints
    under out/<model> (a re-run with the same settings resumes, or reuses a finished model).
    `progress(n)` is called with the work units done: one per training step, one per evaluation."""
    tick = progress or (lambda _n: None)
    emit = log or (lambda _line: None)
    train_data, _ = prepare_training_data(dataset, data_dir, 0.0, 0)
    images, labels = load_dataset(dataset, "test", data_dir)
    test = (to_unit_interval(images[: budget.eval_images]), labels[: budget.eval_images])
    info = model_info(budget.model, dataset, train_data[0])
    attack = {"eps": budget.eps, "alpha": budget.alpha, "steps": budget.attack_steps}
    out = Path(out)
    rows = []

    def fit(name: str, model, method) -> tuple[torch.nn.Module, float]:
        started = time.perf_counter()
        run_info = {"model": info, "dataset": {"name": dataset}, "reproduce": name}
        train(model, method, train_data, _config(budget, seed), out / name, run_info=run_info,
              log=None, on_step=lambda _step: tick(1))  # fmt: skip
        return model.eval(), time.perf_counter() - started

    def fresh_model():
        torch.manual_seed(seed)
        return build_model(info["name"], info["num_classes"], info["in_channels"], info["mean"], info["std"])

    if "float" in methods:
        model, seconds = fit("float", to_float_model(fresh_model()), FLOATTraining(**attack))
        emit(f"FLOAT trained in {seconds:.1f} s")
        for lam_th in LAM_TH:
            for lam_n in LAM_N:
                scale, bn_path = inference_setting(lam_n, lam_th)
                with eval_mode(model), float_inference(model, lam_n, lam_th):
                    result = _evaluate(model, test, budget, scale > 0, seed)
                rows.append({"method": "FLOAT", "lam_th": lam_th, "lam_n": lam_n, "noise_scale": scale,
                             "bn": "BN_A" if bn_path else "BN_C", "train_seconds": seconds, **result})  # fmt: skip
                tick(1)
    if "pgd-at" in methods:
        for lam in LAM_N:
            model, seconds = fit(
                f"pgd-at-lam{lam}", fresh_model(), WeightedAdversarialTraining(lam, **attack)
            )
            emit(f"PGD-AT (lam={lam}) trained in {seconds:.1f} s")
            rows.append({"method": "PGD-AT", "lam_th": None, "lam_n": lam, "noise_scale": 0.0, "bn": "BN",
                         "train_seconds": seconds, **_evaluate(model, test, budget, False, seed)})  # fmt: skip
            tick(1)
    settings = {"dataset": dataset, "budget": budget.__dict__, "seed": seed, "methods": list(methods),
                "attack": "pgd", "norm": "linf"}  # fmt: skip
    return {"settings": settings, "rows": rows}


def work_units(methods, budget: Budget) -> int:
    """The total `progress` units of a reproduce call."""
    units = 0
    if "float" in methods:
        units += budget.train_steps + len(LAM_N) * len(LAM_TH)
    if "pgd-at" in methods:
        units += len(LAM_N) * (budget.train_steps + 1)
    return units
