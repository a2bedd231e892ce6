"""How much each `reproduce` budget trains and evaluates, per data set.

The attack follows the papers on CIFAR-10 (L-inf eps 8/255, step 2/255, 7 training steps; 5 at
the `small` budget and 3 at `smoke`, which must fit tens of minutes and 3 minutes on a CPU). Every
attack of the evaluation is bounded by the budget, the optional torchattacks ones included: steps
(APGD, FAB), restarts, EOT draws, the draws each point is scored on, Square's queries and the
target classes of APGD-T and FAB-T.
The digits are 8x8 scans upsampled, with 17 grey levels: 8/255 is half a level and changes
no digit, so they get eps 32/255 (two levels) with the same step-to-eps ratio, 8/255.

`paper` trains as the papers do, in epochs of the data set: 200 on CIFAR-10/100, SVHN and STL-10
(OAT's settings, which both papers follow; FLOAT's Appendix A.1), on Tiny-ImageNet 120 for FLOAT
and FLOAT-Slim and 80 for SMART (each paper's Section 5.1 / 4.1; the baselines take FLOAT's 120),
with batch 128, 64 on STL-10's 96x96 images, on the papers' architectures. It needs a real data
set: the embedded digits are no data set of the papers.
"""

import math
from dataclasses import dataclass, replace

__all__ = ["BUDGETS", "Budget", "budget_for", "train_steps"]


@dataclass(frozen=True)
class Budget:
    name: str
    model: str
    train_steps: int | None  # optimizer steps per trained model (None: `epochs` passes instead)
    batch_size: int
    eval_images: int  # first n test images
    eval_steps: int  # attack steps of the evaluation, FAB's too (the sanity checks also run 4x as many)
    eot_draws: int  # gradient draws per attack step on a randomised (noisy) model (the checks: 4x)
    eval_restarts: int = 1  # restarts of each evaluation (the sanity checks also run 2 more)
    draws: int = 10  # forward passes each adversarial point is scored on, randomised models (worst of k)
    square_queries: int = 5000  # Square's queries in the standard suite (with torchattacks installed)
    target_classes: int = 9  # the target classes of APGD-T and FAB-T in the standard suite
    eps: float = 8 / 255
    step: float = 2 / 255
    attack_steps: int = 7  # PGD steps while training
    lr: float = 0.1
    epochs: int | None = None  # passes over the training set (the `paper` budget), else train_steps
    method_epochs: tuple[tuple[str, int], ...] = ()  # (method, epochs) where a paper differs


BUDGETS = {
    "smoke": Budget(
        "smoke", "small-cnn", 120, 64, 64, 3, 2, draws=5, square_queries=30, target_classes=3, attack_steps=3
    ),
    "small": Budget("small", "small-cnn", 600, 128, 200, 10, 2, square_queries=300, attack_steps=5),
    # 200 epochs (per data set below); AutoAttack's own Square budget, its "plus" version's 5 restarts
    "paper": Budget("paper", "resnet34", None, 128, 10_000, 20, 20, eval_restarts=5, epochs=200),
}

_DIGITS_ATTACK = {"eps": 32 / 255, "step": 8 / 255}
# the papers' architectures per data set at `paper`; a ResNet-20 for CIFAR-10 at `small`
_MODELS = {("small", "cifar10"): "resnet20", ("paper", "svhn"): "wrn-16-8", ("paper", "stl10"): "wrn-40-2"}


_PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "stl10", "tiny-imagenet")
_PAPER_BATCH = {"stl10": 64}
_PAPER_EPOCHS = {"tiny-imagenet": 120}
_PAPER_METHOD_EPOCHS = {"tiny-imagenet": (("smart", 80),)}


def budget_for(name: str, dataset: str | None) -> Budget:
    """The budget `name` adapted to `dataset` (the digits' larger eps, the architecture, and at
    `paper` the epochs and batch size the papers give for it). `dataset` None means the embedded
    digits, except at `paper`, which needs one of the papers' data sets named."""
    if name not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {name!r}")
    budget = BUDGETS[name]
    if name == "paper":
        if dataset not in _PAPER_DATASETS:
            raise ValueError(
                f"the paper budget needs one of the papers' data sets ({', '.join(_PAPER_DATASETS)}) "
                f"named with --dataset, got {dataset!r}"
            )
        budget = replace(
            budget,
            batch_size=_PAPER_BATCH.get(dataset, budget.batch_size),
            epochs=_PAPER_EPOCHS.get(dataset, budget.epochs),
            method_epochs=_PAPER_METHOD_EPOCHS.get(dataset, ()),
        )
    dataset = "digits" if dataset is None else dataset
    if dataset == "digits":
        budget = replace(budget, **_DIGITS_ATTACK)
    return replace(budget, model=_MODELS.get((name, dataset), budget.model))


def train_steps(budget: Budget, train_size: int, method: str | None = None) -> int:
    """The optimizer steps of one trained model: budget.train_steps, or its epochs (the method's
    own where a paper gives it) of `train_size` images in whole batches."""
    if budget.epochs is None:
        return budget.train_steps
    epochs = dict(budget.method_epochs).get(method, budget.epochs)
    return epochs * max(math.floor(train_size / budget.batch_size), 1)
