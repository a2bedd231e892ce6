"""How much `reproduce eio` and `reproduce dverge` train and evaluate at each budget.

`paper` is DVERGE's and EIO's protocol (ResNet-20 on CIFAR-10; 200 epochs each; surrogates of 3, 5
and 8 members; 100-step transfer attacks with 3 random starts, 30 versions per image; white-box
PGD-50 with 5 restarts; eps 0.01 to 0.07). `small` is spec A.6's plan cut to
about 1/20 to 1/30 of its training steps (one 3-member surrogate, M-PGD with one start, DI and SGM
with CE and CW, 50 steps; eps 0.01, 0.03, 0.05; DVERGE-3 trained for EIO's wall-clock time, its
distillation layer redrawn 200 times as in DVERGE's 200 epochs). `smoke` checks the plumbing in about a minute on the digits.

`--model` trains the defences on another architecture (the surrogates keep the budget's, as
the papers attack VGG-16 defences with ResNet-20 surrogates); VGG models distil with
eps_d 0.03 (EIO's and DVERGE's VGG setting) and `gate_classifier` also gates VGG's classifier.

The digits are 8x8 scans upsampled, with 17 grey levels: every eps, ε_d included, is 4x the CIFAR
one there (as `reproduce`'s other budgets scale 8/255 to 32/255).
"""

from dataclasses import dataclass, replace

__all__ = ["ENSEMBLE_BUDGETS", "EnsembleBudget", "ensemble_budget_for"]

_EPOCH = 390  # steps of batch 128 per CIFAR-10 epoch


@dataclass(frozen=True)
class EnsembleBudget:
    name: str
    model: str
    batch_size: int
    surrogate_sizes: tuple[int, ...]  # members of each standard-trained surrogate ensemble
    surrogate_steps: int  # per member
    baseline_steps: int  # the single standard-trained model (the "baseline" row)
    pretrain_steps: int  # EIO: one uniform path per batch
    diversify_steps: int  # EIO: vulnerability diversification
    finetune_steps: int  # the derived model, clean CE at lr 0.001 (0: none)
    dverge_sizes: tuple[int, ...]
    dverge_steps: int  # per ensemble (when match_wall_clock, for sizes other than 3)
    eval_images: int
    eps_list: tuple[float, ...]
    transfer_steps: int
    transfer_starts: int  # momentum-PGD random starts per surrogate and loss
    whitebox_steps: int
    whitebox_restarts: int
    eot_draws: int  # the random-gate RGN's gradient draws
    draws: int  # ... and the draws each point is scored on (worst of k)
    check_eps: float  # the eps at which every defence's white-box sanity checks run
    distill_eps: float = 0.07
    distill_steps: int = 10
    paths: int = 3  # EIO's p
    gates: int = 2  # EIO's n
    lr: float = 0.1
    weight_decay: float = 1e-4
    match_wall_clock: bool = False  # DVERGE-3 trains for EIO's (pre-training + diversification) time
    surrogate_model: str | None = None  # None: the defences' architecture
    gate_classifier: bool = False  # EIO: a random gated block for the classifier too
    # DVERGE's distillation-layer draws over a run (None: one per epoch, DVERGE's 200 in 200 epochs);
    # a short run drawing per epoch would distil at a handful of layers only
    dverge_layer_draws: int | None = None


ENSEMBLE_BUDGETS = {
    "smoke": EnsembleBudget(
        "smoke", "small-cnn", 64, (3,), 60, 100, 60, 20, 20, (3,), 20, 48, (0.01, 0.03), 5, 1, 5, 2, 2, 3,
        0.03, distill_steps=3,
    ),
    "small": EnsembleBudget(
        "small", "small-cnn", 128, (3,), 600, 600, 300, 600, 100, (3,), 600, 500, (0.01, 0.03, 0.05),
        50, 1, 20, 2, 4, 10, 0.03, match_wall_clock=True, dverge_layer_draws=200,
    ),
    "paper": EnsembleBudget(
        "paper", "resnet20", 128, (3, 5, 8), 200 * _EPOCH, 200 * _EPOCH, 200 * _EPOCH, 200 * _EPOCH,
        20 * _EPOCH, (3, 5, 8), 200 * _EPOCH, 1000, (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07), 100, 3,
        50, 5, 20, 10, 0.03,
    ),
}  # fmt: skip

_DIGITS_SCALE = 4.0
_MODELS = {("small", "cifar10"): "resnet20"}
_VGG_DISTILL_EPS = 0.03


def ensemble_budget_for(
    name: str, dataset: str, model: str | None = None, gate_classifier: bool = False
) -> EnsembleBudget:
    """The budget `name` for `dataset`: its architecture (or `model` for the defences), and on the
    digits every eps 4x."""
    if name not in ENSEMBLE_BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(ENSEMBLE_BUDGETS)}, got {name!r}")
    budget = ENSEMBLE_BUDGETS[name]
    budget = replace(
        budget, model=_MODELS.get((name, dataset), budget.model), gate_classifier=gate_classifier
    )
    if model is not None and model != budget.model:
        budget = replace(budget, model=model, surrogate_model=budget.model)
        if model.startswith("vgg"):
            budget = replace(budget, distill_eps=_VGG_DISTILL_EPS)
    if dataset == "digits":
        scale = _DIGITS_SCALE
        budget = replace(
            budget,
            eps_list=tuple(scale * e for e in budget.eps_list),
            check_eps=scale * budget.check_eps,
            distill_eps=scale * budget.distill_eps,
        )
    return budget
