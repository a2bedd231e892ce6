"""`reproduce eio` and `reproduce dverge`: train the defences and score them under DVERGE's protocol.

Trained (under out/<name>, a re-run with the same settings reuses every finished model):
- the surrogates: standard-trained ensembles of `surrogate_sizes` members, seeds disjoint from
  every defence's;
- `baseline`: one standard-trained model of the architecture;
- `eio`: the random gated network pre-trained on one uniform path per batch, then diversified
  (p paths, ε_d), a path drawn uniformly and derived as a plain model, fine-tuned with clean CE at
  lr 0.001; rows EIO (derived, fine-tuned), EIO (no fine-tune) and EIO-RGN (every input through
  random gates: a randomised model, attacked with EOT and scored worst-of-k);
- `dverge`: DVERGE-K for every K of `dverge_sizes`; with match_wall_clock, DVERGE-3 takes as many
  steps as cost what EIO's pre-training and diversification cost, seconds per step measured on
  probes of all three run side by side (matched_steps.py).
Evaluated on `eval_images` test images drawn with a fixed seed: black-box accuracy on the transfer
set of each eps (built once, stored, shared by every defence), white-box PGD with step eps / 5 and
restarts, all-or-nothing; at check_eps with the evaluation's sanity checks (every image's worst
over their runs is the headline there). Each row is stored under out/rows as it finishes, so a stopped call's
re-run scores only the rows it lacks (scored_rows.py).
"""

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from .. import attacks
from .. import evaluate as evaluate_package
from ..attacks import pgd
from ..data import dataset_spec, load_dataset, to_unit_interval
from ..evaluate import clean_accuracy, evaluate, robust_accuracy
from ..evaluate.accuracy import own_noise
from ..evaluate.transfer_set import TransferSetConfig, load_or_build, transfer_set_accuracy
from ..models import AveragedEnsemble
from ..train import StandardTraining, TrainConfig, derived_generator, derived_seed, eio_model, train
from ..train.dverge import DVERGETraining
from ..train.eio import EIODiversification, EIOPretraining
from ..train.eio_model import (
    derive_eio,
    eio_blocks,
    feature_taps,
    min_distinct_layer,
    random_gates,
    to_eio_model,
)
from ..train.runs import build_from_info, model_info, prepare_training_data
from .ensemble_budgets import EnsembleBudget
from .matched_steps import matched_steps, middle_layers, seconds_per_step
from .scored_rows import ScoredRows
from .train_seconds import recorded_train_seconds

__all__ = ["ENSEMBLE_METHODS", "pgd_step_fifth", "reproduce_ensembles"]

ENSEMBLE_METHODS = ("eio", "dverge")
_MATCHED = "matched_steps.json"


def pgd_step_fifth(model, x, y, *, eps, norm, steps, eot_draws, generator):
    """DVERGE's white-box PGD: uniform random start, `steps` sign steps of eps / 5, CE."""
    return pgd(model, x, y, eps=eps, step=eps / 5, steps=steps, norm=norm, eot_draws=eot_draws,
               generator=generator)  # fmt: skip


class _Runs:
    """Training runs of one reproduce call: their configs, directories and measured seconds."""

    def __init__(self, budget: EnsembleBudget, dataset: str, data_dir, out: Path, seed: int, device, log):
        self.budget, self.dataset, self.out, self.seed, self.device, self.log = (
            budget,
            dataset,
            out,
            seed,
            device,
            log,
        )
        self.train_data, _ = prepare_training_data(dataset, data_dir, 0.0, 0)
        self.info = model_info(budget.model, dataset, self.train_data[0])
        surrogate = budget.surrogate_model or budget.model
        self.surrogate_info = model_info(surrogate, dataset, self.train_data[0])

    def fresh(self, *parts, surrogate: bool = False) -> torch.nn.Module:
        torch.manual_seed(derived_seed(self.seed, "init", *parts))
        return build_from_info(self.surrogate_info if surrogate else self.info).to(self.device)

    def config(
        self, steps: int, *, lr: float | None = None, schedule: str = "multistep", tag: str = ""
    ) -> TrainConfig:
        return TrainConfig(
            epochs=None, max_steps=steps, batch_size=self.budget.batch_size, lr=lr or self.budget.lr,
            weight_decay=self.budget.weight_decay, schedule=schedule, flip=dataset_spec(self.dataset).flip,
            seed=derived_seed(self.seed, "train", tag), log_every=max(steps // 5, 1),
        )  # fmt: skip

    def fit(
        self,
        name: str,
        model,
        method,
        config: TrainConfig,
        directory: Path | None = None,
        surrogate: bool = False,
    ) -> float:
        """Trains (or resumes, or reloads) `model`; its training seconds over every call that trained
        it (NaN when a killed call's steps are missing: train_seconds.py)."""
        directory = directory or self.out / name
        info = self.surrogate_info if surrogate else self.info
        run_info = {"model": info, "dataset": {"name": self.dataset}, "reproduce": name}
        started = time.perf_counter()
        result = train(model, method, self.train_data, config, directory, run_info=run_info, log=None)
        trained = result.total_steps - result.resumed_from
        seconds = recorded_train_seconds(
            directory, time.perf_counter() - started, trained, result.total_steps, kept=result.train_seconds
        )
        if trained:
            self.log(f"{name}: {trained} of {result.total_steps} steps trained here; {seconds:.1f} s in all")
        return seconds


def _test_set(budget: EnsembleBudget, dataset: str, data_dir, device):
    """eval_images test images drawn without replacement with a fixed seed (DVERGE: 1000 random ones)."""
    images, labels = load_dataset(dataset, "test", data_dir)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[: budget.eval_images]
    return to_unit_interval(images[order]).to(device), labels[order].to(device)


def _gated(budget: EnsembleBudget, runs: _Runs, *parts) -> torch.nn.Module:
    """A fresh random gated network (its gates initialised from the run's seed)."""
    return to_eio_model(
        runs.fresh(*parts), budget.gates, gate_classifier=budget.gate_classifier,
        generator=derived_generator(runs.seed, "eio-gates"),
    )  # fmt: skip


def _dverge3_steps(budget: EnsembleBudget, runs: _Runs, build, dverge_seed: int) -> int:
    """DVERGE-3's steps for EIO's wall-clock time (matched_steps.py): probes of EIO's pre-training
    and diversification and of DVERGE-3, each distilling at the middle of its layers."""
    layers = len(feature_taps(_gated(budget, runs, "probe")))  # a gated classifier is no feature layer
    first = min_distinct_layer(budget.gates, budget.paths)
    distill = (budget.paths, budget.distill_eps, budget.distill_steps)
    probe_model = partial(_gated, budget, runs, "probe")
    reference = [
        (budget.pretrain_steps, [(probe_model, EIOPretraining())]),
        (budget.diversify_steps, [(probe_model, EIODiversification(*distill, layer=layer))
                                  for layer in middle_layers(first, layers)]),
    ]  # fmt: skip
    target = [
        (build, DVERGETraining(*distill[1:], seed=dverge_seed, layer=layer))
        for layer in middle_layers(1, len(feature_taps(runs.fresh("probe"))))
    ]
    probe_config = replace(runs.config(3), log_every=3)

    def measure(probes):
        return seconds_per_step(probes, runs.train_data, probe_config)

    return matched_steps(runs.out / "dverge-3" / _MATCHED, reference, target, measure, runs.log)


def _defences(
    methods, budget: EnsembleBudget, runs: _Runs
) -> list[tuple[str, torch.nn.Module, bool, float, int]]:
    """(row name, model, randomised, training seconds, training steps) of every defence, trained here."""
    defences = []
    baseline = runs.fresh("baseline")
    seconds = runs.fit(
        "baseline", baseline, StandardTraining(), runs.config(budget.baseline_steps, tag="baseline")
    )
    defences.append(("baseline", baseline.eval(), False, seconds, budget.baseline_steps))
    if "eio" in methods:
        rgn = _gated(budget, runs, "eio")
        pretrain = runs.fit(
            "eio-pretrain", rgn, EIOPretraining(), runs.config(budget.pretrain_steps, tag="eio-pre")
        )
        diversify = EIODiversification(budget.paths, budget.distill_eps, budget.distill_steps)
        eio_seconds = pretrain + runs.fit(
            "eio", rgn, diversify, runs.config(budget.diversify_steps, tag="eio")
        )
        path = torch.randint(
            budget.gates, (len(eio_blocks(rgn)),), generator=derived_generator(runs.seed, "derive")
        )
        runs.log(f"EIO derived path {''.join(map(str, path.tolist()))}")
        derived = derive_eio(rgn, path).eval()
        eio_steps = budget.pretrain_steps + budget.diversify_steps
        defences.append(("EIO (no fine-tune)", derived, False, eio_seconds, eio_steps))
        if budget.finetune_steps:
            tuned = derive_eio(rgn, path)
            finetune = runs.config(budget.finetune_steps, lr=0.001, schedule="constant", tag="eio-ft")
            seconds = runs.fit("eio-finetune", tuned, StandardTraining(), finetune)
            defences.append(
                ("EIO", tuned.eval(), False, eio_seconds + seconds, eio_steps + budget.finetune_steps)
            )
        defences.append(("EIO-RGN (random gates)", rgn.eval(), True, eio_seconds, eio_steps))
    if "dverge" in methods:
        for size in budget.dverge_sizes:

            def build(size=size):
                return AveragedEnsemble([runs.fresh("dverge", size, k) for k in range(size)])

            dverge_seed = derived_seed(runs.seed, "dverge", size)
            steps = budget.dverge_steps
            if budget.match_wall_clock and size == 3:  # whether or not this call trains EIO
                steps = _dverge3_steps(budget, runs, build, dverge_seed)
            draws = budget.dverge_layer_draws
            method = DVERGETraining(budget.distill_eps, budget.distill_steps, seed=dverge_seed,
                                    redraw_every=None if draws is None else max(steps // draws, 1))  # fmt: skip
            ensemble = build()
            seconds = runs.fit(f"dverge-{size}", ensemble, method, runs.config(steps, tag=f"dverge{size}"))
            defences.append((f"DVERGE-{size}", ensemble.eval(), False, seconds, steps))
    return defences


def _surrogates(budget: EnsembleBudget, runs: _Runs) -> dict[str, torch.nn.Module]:
    surrogates = {}
    for size in budget.surrogate_sizes:
        members = []
        for k in range(size):
            member = runs.fresh("surrogate", size, k, surrogate=True)
            config = runs.config(budget.surrogate_steps, tag=f"surrogate{size}-{k}")
            runs.fit(f"surrogate{size}-{k}", member, StandardTraining(), config, surrogate=True)
            members.append(member.eval())
        surrogates[f"baseline{size}"] = AveragedEnsemble(members).eval()
    return surrogates


def _score(
    name,
    model,
    randomized,
    seconds,
    steps,
    transfer_sets,
    test,
    budget: EnsembleBudget,
    seed: int,
    stored: ScoredRows,
) -> list[dict]:
    draws = budget.draws if randomized else 1
    eot = budget.eot_draws if randomized else 1
    common = {"attack": pgd_step_fifth, "steps": budget.whitebox_steps, "restarts": budget.whitebox_restarts,
              "eot_draws": eot, "draws": budget.draws, "randomized": randomized, "seed": seed}  # fmt: skip

    def row(eps, transfer_set) -> dict:
        with own_noise([model], seed):  # the same gate draws whatever ran before
            blackbox = transfer_set_accuracy(model, transfer_set, draws=draws)
        if eps == budget.check_eps:
            whitebox = evaluate(model, *test, eps=eps, checks=True, **common)
        else:
            whitebox = robust_accuracy(model, test, eps=eps, **common)
        return {
            "method": name, "eps": eps, "clean_accuracy": blackbox["clean_accuracy"],
            "blackbox_accuracy": blackbox["blackbox_accuracy"], "whitebox_accuracy": whitebox["robust_accuracy"],
            "blackbox_accuracy_mean_over_draws": blackbox["blackbox_accuracy_mean_over_draws"],
            "whitebox_accuracy_mean_over_draws": whitebox["robust_accuracy_mean_over_draws"],
            "randomized": randomized, "draws": draws, "eot_draws": eot, "n": blackbox["n"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "flagged": whitebox.get("flagged"), "whitebox_from": whitebox.get("robust_accuracy_from"),
            "blackbox_per_version": blackbox["per_version"],
        }  # fmt: skip

    rows = []
    with random_gates(model) if randomized else contextlib.nullcontext():
        for eps, transfer_set in transfer_sets.items():
            scored = stored.get_or_score(f"{name} eps {eps!r}", model, partial(row, eps, transfer_set))
            rows.append({**scored, "train_seconds": seconds, "train_steps": steps})
    return rows


def reproduce_ensembles(
    methods, budget: EnsembleBudget, out: str | Path, *, dataset: str = "digits", data_dir=None, seed: int = 0,
    device="cpu", log: Callable[[str], None] | None = None,
) -> dict:  # fmt: skip
    """Trains the surrogates, the baseline and every method in `methods` (ENSEMBLE_METHODS) at
    `budget`, builds (or reloads) the transfer set per eps and returns {"settings", "rows"}: one
    row per defence and eps with method, eps, clean_accuracy, blackbox_accuracy, whitebox_accuracy."""
    unknown = [m for m in methods if m not in ENSEMBLE_METHODS]
    if unknown:
        raise ValueError(f"methods must be among {ENSEMBLE_METHODS}, got {unknown}")
    out = Path(out)
    emit = log or (lambda _line: None)
    runs = _Runs(budget, dataset, data_dir, out, seed, device, emit)
    test = _test_set(budget, dataset, data_dir, device)
    surrogates = _surrogates(budget, runs)
    # weak surrogates make weak transfer and high black-box figures: their own accuracy goes in the results
    surrogate_accuracy = {name: clean_accuracy(model, test) for name, model in surrogates.items()}
    described = {"surrogates": sorted(surrogates), "budget": budget.name, "dataset": dataset, "seed": seed}
    transfer_sets, rates = {}, {}
    for eps in budget.eps_list:
        config = TransferSetConfig(eps, budget.transfer_steps, budget.transfer_starts, seed=seed)
        transfer_sets[eps] = load_or_build(out / "transfer", surrogates, *test, config, described)
        rates[eps] = transfer_sets[eps]["images_per_second"]
        emit(f"transfer set eps {eps:g}: {transfer_sets[eps]['versions'].shape[0]} versions, "
             f"{rates[eps]:.1f} adversarial images/s{' (stored)' if transfer_sets[eps]['reused'] else ''}")  # fmt: skip
    # a row reused from an earlier call of the same settings is not scored again (scored_rows.py)
    stored = ScoredRows(out / "rows", {"budget": budget.__dict__, "dataset": dataset, "seed": seed,
                                       "device": str(device)},
                        scored_by=(attacks, evaluate_package, eio_model, sys.modules[__name__]))  # fmt: skip
    rows = []
    for name, model, randomized, seconds, steps in _defences(methods, budget, runs):
        rows += _score(name, model, randomized, seconds, steps, transfer_sets, test, budget, seed, stored)
        emit(f"{name} evaluated")
    versions = transfer_sets[budget.eps_list[0]]["names"]
    settings = {"dataset": dataset, "budget": budget.__dict__, "seed": seed, "methods": list(methods),
                "device": str(device), "transfer_versions": versions,
                "transfer_images_per_second": rates, "surrogate_clean_accuracy": surrogate_accuracy}  # fmt: skip
    return {"settings": settings, "rows": rows}
