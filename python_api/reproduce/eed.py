"""`robustkernels reproduce eed`: EED end to end against a single HYDRA and a single HARP model
at the same total non-zero parameters and against the dense PGD-AT base (spec B.4, B.7).

Per team sparsity kappa: the pool (criteria x data parts, HARP-pruned to (1 - kappa) / 4 and
fine-tuned), the RD team under the (1 - kappa) cap, ensemble learning, dynamic inference; then
HYDRA (ERM scores learned at a fixed per-layer density) and HARP (learned rates too) pruned from
the same base to the team's density and fine-tuned as long as a pool member. Every predictor is
scored per image under clean, PGD, the AutoAttack standard suite, CW-margin PGD and DeepFool-L2;
EED's deployed predictor (dynamic inference) is attacked through the full-team average and
through its own dynamic forward, an image robust only if it survives both."""

import copy
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..attacks import pgd
from ..data import dataset_spec, load_dataset, to_unit_interval
from ..eed.criteria import erm_scores
from ..eed.dynamic import DynamicEnsemble
from ..eed.ensemble import EnsembleWeights
from ..eed.evaluation import ATTACKS, AttackBudget, robust_correct
from ..eed.flops import dense_flops, sparse_flops, team_flops
from ..eed.masks import nonzero_parameters
from ..eed.pipeline import EEDConfig, build_pool, learn_team, member_order, prune_and_finetune, select
from ..eed.team import TeamNetwork
from ..evaluate import evaluate
from ..train import TrainConfig, train
from ..train.pgd_at import PGDAdversarialTraining
from ..train.runs import build_from_info, model_info, prepare_training_data
from .eed_budgets import EEDBudget

__all__ = ["TAU_C_SWEEP", "eed_work_units", "reproduce_eed"]

TAU_C_SWEEP = (0.0, 0.3, 0.5, 0.7, 0.9, 2.0)  # 2.0: nobody stops early (c <= 1)


def _config(budget: EEDBudget, dataset: str, sparsity: float, seed: int) -> EEDConfig:
    return EEDConfig(
        eps=budget.eps, step=budget.step, attack_steps=budget.attack_steps, batch_size=budget.batch_size,
        subsets=budget.subsets, sparsity=sparsity, prune_steps=budget.prune_steps, prune_epochs=budget.prune_epochs,
        finetune_steps=budget.finetune_steps, ensemble_steps=budget.ensemble_steps,
        weights=EnsembleWeights(distill_steps=budget.distill_steps), score_images=budget.score_images,
        flip=dataset_spec(dataset).flip, seed=seed,
    )  # fmt: skip


def _attack_budget(budget: EEDBudget) -> AttackBudget:
    return AttackBudget(eps=budget.eps, step=budget.step, pgd_steps=budget.pgd_steps, cw_steps=budget.cw_steps,
                        autoattack_steps=budget.autoattack_steps, target_classes=budget.target_classes,
                        square_queries=budget.square_queries, deepfool_steps=budget.deepfool_steps)  # fmt: skip


@torch.no_grad()
def _wall_clock(predictors: dict, x: torch.Tensor, rounds: int = 3) -> dict:
    """Median seconds per image of each predictor over the batch x, in interleaved rounds."""
    times = {name: [] for name in predictors}
    for fn in predictors.values():
        fn(x)  # warm-up
    for _ in range(rounds):
        for name, fn in predictors.items():
            started = time.perf_counter()
            fn(x)
            times[name].append((time.perf_counter() - started) / len(x))
    return {name: statistics.median(values) for name, values in times.items()}


def _scores(correct: dict) -> dict:
    fields = {"clean_accuracy": float(correct["clean"].float().mean())}
    for attack in ATTACKS:
        fields[f"{attack}_accuracy"] = float(correct[attack].float().mean())
    fields["per_target"] = {k: float(v.float().mean()) for k, v in correct.items() if "@" in k}
    return fields


def _checks(predictor, test, budget: EEDBudget, seed: int) -> dict:
    """The library's sanity checks on a deterministic predictor under PGD (flagged names, or empty)."""
    if not budget.checks:
        return {"flagged": None, "checked_pgd_accuracy": None}
    result = evaluate(predictor, *test, attack="pgd", eps=budget.eps, steps=budget.pgd_steps, randomized=False,
                      seed=seed)  # fmt: skip
    return {"flagged": result["flagged"], "checked_pgd_accuracy": result["robust_accuracy"]}


def _die_sweep(members, test, budget: EEDBudget, seed: int) -> list[dict]:
    """Accuracy and members used over tau_c: clean, and on PGD crafted once against the full-team
    average (a transfer to each setting, cheaper than a white-box attack per point)."""
    full = DynamicEnsemble(members, dynamic=False)
    x, y = test
    generator = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = pgd(full, x, y, eps=budget.eps, step=budget.step, steps=budget.pgd_steps, generator=generator)
    points = []
    with torch.no_grad():
        for tau_c in TAU_C_SWEEP:
            model = DynamicEnsemble(members, tau_c=tau_c)
            clean = float((model(x).argmax(dim=1) == y).float().mean())
            used = float(model.members_used.float().mean())
            adversarial = float((model(x_adv).argmax(dim=1) == y).float().mean())
            # an attack that keeps members unsure makes the early exit run more of the team
            used_adversarial = float(model.members_used.float().mean())
            points.append({"tau_c": tau_c, "members_used": used, "clean_accuracy": clean,
                           "pgd_transfer_accuracy": adversarial,
                           "members_used_adversarial": used_adversarial})  # fmt: skip
    return points


def reproduce_eed(budget: EEDBudget, out, *, dataset="digits", data_dir=None, seed=0, device="cpu",
                  progress=None, log=None) -> dict:  # fmt: skip
    """Runs EED and its baselines at `budget`; returns {"settings", "rows", "sweeps"}; each row
    one model (method EED, HYDRA, HARP or AT) at one sparsity."""
    tick = progress or (lambda _n: None)
    emit = log or (lambda _line: None)
    out = Path(out)
    train_data, val = prepare_training_data(dataset, data_dir, budget.val_fraction, seed)
    val = (to_unit_interval(val[0]).to(device), val[1].to(device))
    images, labels = load_dataset(dataset, "test", data_dir)
    test = (
        to_unit_interval(images[: budget.eval_images]).to(device),
        labels[: budget.eval_images].to(device),
    )
    info = model_info(budget.model, dataset, train_data[0])
    torch.manual_seed(seed)
    base = build_from_info(info, seed).to(device)
    pretrain = TrainConfig(epochs=None, max_steps=budget.pretrain_steps, batch_size=budget.batch_size, lr=budget.lr,
                           schedule="cosine", flip=dataset_spec(dataset).flip, seed=seed,
                           log_every=max(budget.pretrain_steps // 10, 1))  # fmt: skip
    started = time.perf_counter()
    train(base, PGDAdversarialTraining(budget.eps, step=budget.step, steps=budget.attack_steps), train_data, pretrain, out / "at",
          run_info={"model": info, "dataset": {"name": dataset}, "reproduce": "eed-at"}, log=None,
          on_step=lambda _s: tick(1))  # fmt: skip
    base.eval()
    emit(f"dense PGD-AT base trained in {time.perf_counter() - started:.1f} s")
    dense = nonzero_parameters(base)
    x_one = test[0][:1]
    base_flops = dense_flops(base, x_one)
    attack_budget = _attack_budget(budget)
    rows, sweeps = [], []

    def row(method, sparsity, predictor, targets, nonzeros, speedup, **extra):
        correct = robust_correct(predictor, targets, *test, attack_budget, seed=seed, tick=tick)
        rows.append({"method": method, "sparsity": sparsity, **_scores(correct), "nonzero_parameters": nonzeros,
                     "flop_speedup": speedup, **_checks(predictor, test, budget, seed), **extra})  # fmt: skip
        emit(
            f"{method} (sparsity {sparsity}): clean {rows[-1]['clean_accuracy']:.3f}, PGD {rows[-1]['pgd_accuracy']:.3f}"
        )

    row(
        "AT",
        0.0,
        base,
        {"self": base},
        dense,
        1.0,
        wall_clock_ms_per_image=1e3 * _wall_clock({"at": base}, test[0])["at"],
    )
    for sparsity in budget.sparsities:
        config = _config(budget, dataset, sparsity, seed)
        where = out / f"sparsity-{sparsity:g}"
        started = time.perf_counter()
        pool = build_pool(base, train_data, config, where / "pool", device=device, tick=tick)
        chosen = select(pool, val, config, dense, device=device)
        emit(
            f"pool of {len(pool)} in {time.perf_counter() - started:.1f} s; team {chosen['team']} (RD {chosen['rd']:.3f})"
        )
        members = [copy.deepcopy(pool[k]["model"]) for k in chosen["team"]]
        losses = learn_team(members, train_data, config, device=device, tick=tick)
        order, member_accuracy, rd_after = member_order(members, val, config, device=device)
        members = [members[k].eval() for k in order]
        dynamic = DynamicEnsemble(members)
        full = DynamicEnsemble(members, dynamic=False)
        team_nonzeros = sum(nonzero_parameters(m) for m in members)
        member_flops = [sparse_flops(m, x_one) for m in members]
        with torch.no_grad():
            dynamic(test[0])
        used = dynamic.members_used
        batched = TeamNetwork(members, x_one)
        clock = _wall_clock(
            {"dynamic": dynamic, "full_sequential": full, "team_batched": batched, "at": base}, test[0]
        )
        row("EED", sparsity, dynamic, {"full_team": full, "dynamic": dynamic}, team_nonzeros,
            base_flops / team_flops(member_flops, used),
            members_used=float(used.float().mean()), team_size=len(members),
            team=[f"{pool[chosen['team'][k]]['criterion']}-{pool[chosen['team'][k]]['part']}" for k in order],
            rd=chosen["rd"], rd_reached_threshold=chosen["reached_threshold"], rd_after_ensemble_learning=rd_after,
            teams_scored=chosen["teams_scored"], full_team_flop_speedup=base_flops / sum(member_flops),
            member_pgd_accuracy=[member_accuracy[k] for k in order], pool_size=len(pool),
            pool_robust_accuracy=chosen["pool_robust_accuracy"], ensemble_final_loss=losses[-1],
            wall_clock_ms_per_image={k: 1e3 * v for k, v in clock.items()})  # fmt: skip
        sweeps.append({"sparsity": sparsity, "points": _die_sweep(members, test, budget, seed)})
        density = team_nonzeros / dense
        for method, learn_rates in (("HYDRA", False), ("HARP", True)):
            model = prune_and_finetune(base, erm_scores(base), density, train_data, config, where / "baselines",
                                       name=method.lower(), learn_rates=learn_rates, device=device, tick=tick)  # fmt: skip
            row(method, sparsity, model, {"self": model}, nonzero_parameters(model),
                base_flops / sparse_flops(model, x_one),
                wall_clock_ms_per_image=1e3 * _wall_clock({"m": model}, test[0])["m"])  # fmt: skip
    settings = {"dataset": dataset, "budget": asdict(budget), "seed": seed, "device": str(device),
                "dense_nonzero_parameters": dense, "attacks": list(ATTACKS)}  # fmt: skip
    return {"settings": settings, "rows": rows, "sweeps": sweeps}


def eed_work_units(budget: EEDBudget) -> int:
    """The progress units of reproduce_eed: training steps and attack runs (per target)."""
    pool = len(EEDConfig(eps=0, step=0, attack_steps=1).criteria) * max(budget.subsets - 1, 1)
    per_sparsity = (pool + 2) * (budget.prune_steps + budget.finetune_steps) + budget.ensemble_steps
    attacks = len(ATTACKS)  # one unit per attack and target (EED: 2 targets; AT, HYDRA, HARP: 1)
    return budget.pretrain_steps + len(budget.sparsities) * (per_sparsity + 4 * attacks) + attacks
