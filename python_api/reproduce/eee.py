"""`robustkernels reproduce eee`: the multi-resolution self-ensemble with CrossMax ("Ensemble
everything everywhere", Fort & Lakshminarayanan) trained and evaluated end to end, the paper's
protocol beside the adaptive evaluation (python_api/evaluate/adaptive.py).

What is trained (spec part C, small-scale plan C.7): a backbone from scratch (or from a local
weights file the user points at; nothing is downloaded) on fresh multires draws every forward,
cross-entropy, no other augmentation (optionally the notebook's FGSM light AT); flattened
BN1d + Linear heads at every block of the last two stages and at the pooled features, one at a
time on the frozen backbone; and, for the paper's model-ensemble study (Fig. 4), further
backbones with other seeds. Rows per eps: the backbone alone, the self-ensemble with the mean
of its predictors and with CrossMax (k = 3, "kth"); per `ensemble_eps` (spec C.7: the study is
at 2-4/255), the model ensemble with the mean and with CrossMax (median). The largest eps, the
paper's claim, is scored first.
Training resumes and each scored row is stored as it finishes, so a stopped call's re-run with
the same settings picks up where it stopped (scored_rows.py).
Deviation (spec C.6.4): no ImageNet-pretrained ResNet-152 and no 224 upsampling; the backbone
is a CIFAR-stem ResNet at the data's own 32 x 32.
"""

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from robustkernels.nn import IntermediateHeads, noise_seed

from .. import attacks
from .. import models as model_code
from ..data import load_dataset, to_unit_interval
from ..evaluate import adaptive
from ..evaluate.adaptive import adaptive_evaluation, merge_adaptive_results
from ..models import ModelEnsemble, SelfEnsemble, build_model, tap_features, to_multires_model
from ..models.self_ensemble import SinglePredictor
from ..train import (
    FGSMTraining,
    StandardTraining,
    TrainConfig,
    derived_generator,
    derived_seed,
    train,
    train_heads,
)
from ..train.runs import model_info, prepare_training_data
from .scored_rows import ScoredRows, model_digest
from .weights import load_matching

__all__ = ["EEE_BUDGETS", "EEEBudget", "eee_budget", "reproduce_eee"]

RESOLUTIONS = (32, 16, 8, 4)
# a row is scored and stored in pieces of this many images (every score is per image): a `small`
# row takes hours on a CPU, and a stopped run keeps the pieces it finished
_CHUNK = 50


@dataclass(frozen=True)
class EEEBudget:
    name: str
    model: str
    train_steps: int  # backbone optimizer steps (SGD, cosine)
    batch_size: int
    lr: float
    head_steps: int  # Adam steps per head
    head_lr: float
    eval_images: int
    eps: tuple[float, ...]
    steps: int  # steps of every attack
    rand_eot_draws: int  # AutoAttack rand (the paper's protocol: 20)
    adaptive_eot_draws: int
    draws: int  # fresh passes each point is scored on (worst of k)
    square_queries: int
    target_classes: int
    ensemble_models: int  # backbones of the model-ensemble study (0: no study)
    head_batch_size: int = 64
    ensemble_eps: tuple[float, ...] | None = None  # the model-ensemble study's (None: eps)


EEE_BUDGETS = {
    # a check that everything runs end to end (CI), its numbers are noise
    "smoke": EEEBudget("smoke", "resnet20", 30, 32, 0.05, 5, 1e-3, 8, (8 / 255,), 2, 1, 2, 2, 8, 2, 2, head_batch_size=32),
    "small": EEEBudget("small", "resnet20", 1500, 128, 0.1, 200, 1e-3, 200, (4 / 255, 8 / 255), 20, 20, 40, 10, 500, 9, 5,
                      ensemble_eps=(4 / 255,)),
    "paper": EEEBudget(
        "paper", "resnet18", 11_700, 128, 0.1, 800, 1e-3, 500, (2 / 255, 4 / 255, 6 / 255, 8 / 255), 100, 20, 100,
        10, 5000, 9, 10, ensemble_eps=(2 / 255, 4 / 255),
    ),
}  # fmt: skip


def eee_budget(name: str, dataset: str) -> EEEBudget:
    """The budget `name`; on the digits (17 grey levels) every eps is 4x larger, as in the other reproductions."""
    if name not in EEE_BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(EEE_BUDGETS)}, got {name!r}")
    budget = EEE_BUDGETS[name]
    if dataset == "digits":
        scaled = {"eps": tuple(4 * e for e in budget.eps)}
        if budget.ensemble_eps is not None:
            scaled["ensemble_eps"] = tuple(4 * e for e in budget.ensemble_eps)
        budget = replace(budget, **scaled)
    return budget


def _taps(net: torch.nn.Module) -> list[str]:
    """Every block of the last two stages and the pooled features (spec C.7's relative depths)."""
    stages = sorted(n for n, _ in net.named_children() if n.startswith("layer"))
    blocks = [f"{stage}.{i}" for stage in stages[-2:] for i in range(len(getattr(net, stage)))]
    return [*blocks, "pool"]


def _head_sizes(backbone, taps, x: torch.Tensor) -> list[int]:
    with torch.no_grad(), tap_features(backbone.net, taps) as tapped:
        backbone.eval()(x[:2], 0)
    return [tapped[name][0].numel() for name in taps]


def _trained_heads(ensemble: SelfEnsemble, path: Path, stamp: dict, train_them: Callable[[], list[float]]):
    """The heads' final losses, trained by train_them() and stored with the ensemble's state (head
    training also moves the backbone's BN statistics), or loaded from `path` when it holds the
    training of `stamp` (the settings and the backbone it started from): a re-run's heads, and so
    its stored rows' model hashes, do not depend on the machine retraining them bit for bit."""
    stamp = json.loads(json.dumps(stamp))  # as it reads back (tuples as lists)
    if path.exists():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored["stamp"] == stamp:
            ensemble.load_state_dict(stored["state"])
            return stored["losses"]
    losses = train_them()
    partial_path = path.with_suffix(".partial")
    torch.save({"stamp": stamp, "state": ensemble.state_dict(), "losses": losses}, partial_path)
    partial_path.replace(path)
    return losses


def reproduce_eee(
    budget: EEEBudget,
    out: str | Path,
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    weights: str | Path | None = None,
    light_at: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Trains and evaluates (see the module docstring); returns {"settings", "rows"}, one row per
    model and eps with method, eps, clean_accuracy, rand_accuracy and adaptive_accuracy."""
    emit = log or (lambda _line: None)
    out = Path(out)
    train_data, _ = prepare_training_data(dataset, data_dir, 0.0, 0)
    images, labels = load_dataset(dataset, "test", data_dir)
    test = to_unit_interval(images[: budget.eval_images]).to(device), labels[: budget.eval_images].to(device)
    info = model_info(budget.model, dataset, train_data[0])
    method = FGSMTraining(budget.eps[-1]) if light_at else StandardTraining()

    def backbone(index: int):
        torch.manual_seed(seed + index)
        net = build_model(info["name"], info["num_classes"], info["in_channels"], info["mean"], info["std"])
        if weights is not None and index == 0:
            emit(f"backbone weights from {weights}: " + load_matching(net, weights))
        model = to_multires_model(net, RESOLUTIONS).to(device)
        config = TrainConfig(
            epochs=None, max_steps=budget.train_steps, batch_size=budget.batch_size, lr=budget.lr,
            schedule="cosine", augment=False, seed=seed + index, log_every=max(budget.train_steps // 5, 1),
        )  # fmt: skip
        run_info = {
            "model": info,
            "dataset": {"name": dataset},
            "reproduce": f"eee-{index}",
            "weights": str(weights),
        }
        train(model, method, train_data, config, out / f"backbone-{index}", run_info=run_info, log=None)
        return model.eval()

    main = backbone(0)
    taps = _taps(main.net)
    heads = IntermediateHeads(_head_sizes(main, taps, test[0]), info["num_classes"], pool=None)  # flattened
    ensemble = SelfEnsemble(main, heads.to(device), taps)
    run_settings = {"budget": budget.__dict__, "dataset": dataset, "seed": seed, "device": str(device),
                    "light_at": light_at, "weights": str(weights)}  # fmt: skip
    # only what head training reads: an evaluation setting changed in the budget keeps the heads
    head_settings = {"head_steps": budget.head_steps, "head_lr": budget.head_lr, "head_batch_size": budget.head_batch_size,
                     "taps": taps, "dataset": dataset, "seed": seed, "device": str(device)}  # fmt: skip
    head_losses = _trained_heads(
        ensemble, out / "heads.pt", {"settings": head_settings, "backbone": model_digest(main)},
        lambda: train_heads(ensemble, train_data, steps=budget.head_steps, batch_size=budget.head_batch_size,
                            lr=budget.head_lr, seed=seed),
    )  # fmt: skip
    emit(f"heads at {taps} trained, final losses {[round(v, 3) for v in head_losses]}")
    ensemble.eval()
    mean_ensemble = SelfEnsemble(main, heads, taps, aggregation="mean").eval()
    models = {
        "multires backbone": SinglePredictor(main).eval(),
        "self-ensemble, mean of predictors": mean_ensemble,
        "self-ensemble, CrossMax (k=3)": ensemble,
    }
    plan = [(eps, name) for eps in budget.eps for name in models]
    if budget.ensemble_models > 1:
        members = [main, *(backbone(i) for i in range(1, budget.ensemble_models))]
        name = f"{len(members)}-model ensemble"
        study = {
            f"{name}, mean": ModelEnsemble(members, aggregation="mean").eval(),
            f"{name}, CrossMax (median)": ModelEnsemble(members, reduction="median").eval(),
        }
        models.update(study)
        plan += [(eps, name) for eps in budget.ensemble_eps or budget.eps for name in study]
    # the largest eps first (stable: the models keep their order), so a stopped run has the claim's rows
    plan.sort(key=lambda item: -item[0])
    # a row reused from an earlier call of the same settings is not scored again (scored_rows.py)
    # rescored when the code that scores a row changes: the attacks, the evaluation, the models' forward, this module
    stored = ScoredRows(
        out / "rows", run_settings, scored_by=(attacks, adaptive, model_code, sys.modules[__name__])
    )

    def score(name, model, eps, chunk: int) -> dict:
        # each piece's draws from its own seed: none depends on what ran before it
        images = slice(chunk * _CHUNK, (chunk + 1) * _CHUNK)
        with noise_seed(model, derived_seed(seed, "eee-eval-noise", name, eps, chunk)):
            return adaptive_evaluation(
                model, test[0][images], test[1][images], eps=eps, steps=budget.steps,
                rand_eot_draws=budget.rand_eot_draws, adaptive_eot_draws=budget.adaptive_eot_draws,
                draws=budget.draws, n_target_classes=budget.target_classes, square_queries=budget.square_queries,
                generator=derived_generator(seed, "eee-eval", name, eps, chunk, device=device),
            )  # fmt: skip

    rows = []
    chunks = range(-(-len(test[1]) // _CHUNK))
    for eps, name in plan:
        model = models[name]
        # the key names the images, so a piece is never taken for one of another size
        parts = [
            stored.get_or_score(f"{name} eps {eps!r} images {c * _CHUNK}:{(c + 1) * _CHUNK}", model,
                                partial(score, name, model, eps, c))
            for c in chunks
        ]  # fmt: skip
        result = merge_adaptive_results(parts)
        rows.append({"method": name, "eps": eps, **result})
        emit(f"{name} eps {eps:.4f}: CA {result['clean_accuracy']:.3f} rand {result['rand_accuracy']:.3f} "
             f"adaptive {result['adaptive_accuracy']:.3f}")  # fmt: skip
    rows.sort(key=lambda row: row["eps"])
    settings = {"dataset": dataset, "budget": budget.__dict__, "seed": seed, "device": str(device),
                "resolutions": RESOLUTIONS, "taps": taps, "head_losses": head_losses, "light_at": light_at,
                "weights": None if weights is None else str(weights)}  # fmt: skip
    return {"settings": settings, "rows": rows}
