"""Training and evaluating each method of `reproduce` (the models and settings of settings.py).
Every setting is evaluated under PGD and under an AutoAttack-style suite: `standard` where the
setting is deterministic, `rand` (APGD-CE and APGD-DLR with EOT) where it draws noise; on a noisy
setting every adversarial point is scored on budget.draws fresh draws and counts as robust only
if the model is right on all of them. Every number comes with the evaluation's sanity checks and
is its headline (every image's worst over the same-eps runs of the checks). Each row also holds the
path's non-zero parameters, its MACs per image, its noise additions and the training time per
epoch of its model, measured in the same run; protocol="paper" adds the papers' own protocol
(paper_protocol.py) beside it."""

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import dataset_spec, load_dataset, to_unit_interval
from ..evaluate import evaluate, evaluation_passes
from ..train import TrainConfig, eval_mode, train
from ..train.float_at import CLEAN, NOISY
from ..train.macs import forward_macs
from ..train.parameter_counts import path_parameters
from ..train.runs import build_from_info, model_info, prepare_training_data
from .budgets import Budget, train_steps
from .paper_protocol import PAPER_SEEDS, BestTracker, mean_over_seeds
from .settings import LABELS, LAM_N, LAM_TH, METHODS, Entry, entries
from .train_seconds import recorded_train_seconds

__all__ = ["ATTACKS", "LAM_N", "LAM_TH", "METHODS", "PROTOCOLS", "reproduce", "work_units"]

ATTACKS = ("pgd", "autoattack")  # the suite: "standard", or "rand" on a randomised setting
PROTOCOLS = ("library", "paper")


def _config(budget: Budget, dataset: str, seed: int, steps: int) -> TrainConfig:
    return TrainConfig(
        epochs=None, max_steps=steps, batch_size=budget.batch_size, lr=budget.lr,
        momentum=0.9, weight_decay=5e-4, schedule="cosine", flip=dataset_spec(dataset).flip, seed=seed,
        log_every=max(steps // 10, 1),
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
    protocol: str = "library",
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Trains every method in `methods` (names from METHODS) at `budget`, evaluates it on the
    first budget.eval_images test images and returns {"settings", "rows"}; each row is one
    (method, lam) point with CA, RA under PGD and the AutoAttack-style suite, the path's non-zero parameters
    and noise additions, and the sanity checks. Training runs write their checkpoints under
    out/<model> (a re-run with the same settings resumes, or reuses a finished model). Models train
    and are evaluated on `device`. `smart` (to_smart_model's "stages" and "shared") sets SMART's
    masks, e.g. the ablations of its Table 1. protocol="paper" also trains PAPER_SEEDS - 1 more
    seeds of every model and adds the papers' own figures to each row (paper_protocol.py).
    `progress(n)` is called with the work units done: one per training step, one per attack run
    of the evaluations (each attack of a suite, each restart, each run of the sanity checks)."""
    tick = progress or (lambda _n: None)
    emit = log or (lambda _line: None)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    train_data, _ = prepare_training_data(dataset, data_dir, 0.0, 0)
    images, labels = load_dataset(dataset, "test", data_dir)
    test = (
        to_unit_interval(images[: budget.eval_images]).to(device),
        labels[: budget.eval_images].to(device),
    )
    info = model_info(budget.model, dataset, train_data[0])
    attack = {"eps": budget.eps, "step": budget.step, "steps": budget.attack_steps}
    smart = {"stages": None, "shared": 0.25, **(smart or {})}
    steps_per_epoch = len(train_data[1]) // budget.batch_size
    out = Path(out)
    rows = []

    def fit(entry: Entry, run_seed: int, tracker_for) -> tuple[torch.nn.Module, float, object]:
        """Trains a fresh model for `entry` (converted when it is once-for-all) with seed `run_seed`."""
        torch.manual_seed(run_seed)
        options = {"method_options": entry.options} if entry.options else {}
        described = {**info, "method": entry.convert, **options}
        model = build_from_info(described, run_seed).to(device)  # train() trains on the model's device
        run_dir = out / (entry.run_name if run_seed == seed else f"{entry.run_name}-seed{run_seed}")
        total = train_steps(budget, len(train_data[1]), entry.key)
        tracker = tracker_for(run_dir, total)
        trained = []

        def on_step(step: int) -> None:
            trained.append(step)
            tick(1)
            if tracker is not None:
                tracker(model, step)

        started = time.perf_counter()
        run_info = {"model": described, "dataset": {"name": dataset}, "reproduce": entry.run_name}
        config = _config(budget, dataset, run_seed, total)
        result = train(
            model, entry.training, train_data, config, run_dir, run_info=run_info, log=None, on_step=on_step
        )
        seconds = recorded_train_seconds(
            run_dir,
            time.perf_counter() - started,
            len(trained),
            result.total_steps,
            kept=result.train_seconds,
        )
        tick(total - len(trained))  # the steps a reused or resumed run did not train here
        emit(f"{run_dir.name} trained in {seconds:.1f} s")
        model.eval()
        if tracker is not None:
            tracker.score(model, result.total_steps)  # the last point, also for a reused model
        return model, seconds, tracker

    for entry in entries(methods, attack, smart):

        def tracker_for(run_dir, total, entry=entry):
            if protocol != "paper":
                return None
            return BestTracker(run_dir, entry.settings, test, budget.eps, budget.step, seed, total)

        model, seconds, tracker = fit(entry, seed, tracker_for)
        paper = None
        if protocol == "paper":
            others = [fit(entry, seed + i, tracker_for)[2] for i in range(1, PAPER_SEEDS)]
            paper = mean_over_seeds([tracker, *others])
        epochs = train_steps(budget, len(train_data[1]), entry.key) / max(steps_per_epoch, 1)
        for i, (fields, setting, randomized) in enumerate(entry.settings(model)):
            fields = {"width": 1.0, **fields}
            path = NOISY if fields["bn"] == "BN_A" else CLEAN
            with eval_mode(model), setting:
                counts = path_parameters(model, test[0][:1])
                macs = forward_macs(model, test[0][:1])
                result = _evaluate(model, test, budget, randomized, seed, tick)
            rows.append({"method": LABELS[entry.key], **fields, **({"variant": entry.variant} if entry.variant else {}),
                         **_counts(counts, path, fields["noise_scale"] > 0), "macs": macs,
                         "train_seconds": seconds, "epoch_seconds": seconds / epochs,
                         **(paper[i] if paper else {}), **result})  # fmt: skip
    settings = {"dataset": dataset, "budget": budget.__dict__, "seed": seed, "methods": list(methods), "smart": smart,
                "protocol": protocol, "train_size": len(train_data[1]), "steps_per_epoch": steps_per_epoch,
                "attacks": list(ATTACKS), "norm": "linf", "device": str(device)}  # fmt: skip
    return {"settings": settings, "rows": rows}


def work_units(methods, budget: Budget, train_size: int, protocol: str = "library") -> int:
    """The total `progress` units of a reproduce call: training steps and evaluation attack runs."""
    seeds = PAPER_SEEDS if protocol == "paper" else 1
    units = 0
    randomized_rows = []
    for entry in entries(methods, {}, {"stages": None, "shared": 0.25}):
        units += seeds * train_steps(budget, train_size, entry.key)
        randomized_rows += [randomized for _fields, _setting, randomized in entry.settings(None)]
    for randomized in randomized_rows:
        for attack in ("pgd", "autoattack"):
            units += evaluation_passes(budget.eval_images, attack=attack, restarts=budget.eval_restarts,
                                       version=_suite(randomized), randomized=randomized)  # fmt: skip
    return units
