"""How much each `reproduce` budget trains and evaluates, per data set.

The attack follows the papers on CIFAR-10 (L-inf eps 8/255, step 2/255, 7 training steps; 5 at
the `small` budget and 3 at `smoke`, which must fit tens of minutes and 3 minutes on a CPU). Every
attack of the evaluation is bounded by the budget, the optional torchattacks ones included: steps
(APGD, FAB), restarts, EOT draws, the draws each point is scored on, Square's queries and the
target classes of APGD-T and FAB-T.
The digits are 8x8 scans upsampled, with 17 grey levels: 8/255 is half a level and changes
no digit, so they get eps 32/255 (two levels) with the same step-to-eps ratio, 8/255.
"""

from dataclasses import dataclass, replace

__all__ = ["BUDGETS", "Budget", "budget_for"]


@dataclass(frozen=True)
class Budget:
    name: str
    model: str
    train_steps: int  # optimizer steps per trained model
    batch_size: int
    eval_images: int  # first n test images
    eval_steps: int  # attack steps of the evaluation, FAB's too (the sanity checks also run 4x as many)
    eot_draws: int  # gradient draws per attack step on a randomised (noisy) model (the checks: 4x)
    eval_restarts: int = 1  # restarts of each evaluation (the sanity checks also run 2 more)
    draws: int = 10  # forward passes each adversarial point is scored on, randomised models (worst of k)
    square_queries: int = 5000  # Square's queries in the standard suite (with torchattacks installed)
    target_classes: int = 9  # the target classes of APGD-T and FAB-T in the standard suite
    eps: float = 8 / 255
    alpha: float = 2 / 255
    attack_steps: int = 7  # PGD steps while training
    lr: float = 0.1


BUDGETS = {
    "smoke": Budget(
        "smoke", "small-cnn", 120, 64, 64, 3, 2, draws=5, square_queries=30, target_classes=3, attack_steps=3
    ),
    "small": Budget("small", "small-cnn", 600, 128, 200, 10, 2, square_queries=300, attack_steps=5),
    # 200 epochs of CIFAR-10; AutoAttack's own Square budget, its "plus" version's 5 restarts
    "paper": Budget("paper", "resnet34", 78_000, 128, 10_000, 20, 20, eval_restarts=5),
}

_DIGITS_ATTACK = {"eps": 32 / 255, "alpha": 8 / 255}
# the papers' architectures per data set at `paper`; a ResNet-20 for CIFAR-10 at `small`
_MODELS = {("small", "cifar10"): "resnet20", ("paper", "svhn"): "wrn-16-8", ("paper", "stl10"): "wrn-40-2"}


def budget_for(name: str, dataset: str) -> Budget:
    """The budget `name` adapted to `dataset` (the digits' larger eps, the architecture)."""
    if name not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {name!r}")
    budget = BUDGETS[name]
    if dataset == "digits":
        budget = replace(budget, **_DIGITS_ATTACK)
    return replace(budget, model=_MODELS.get((name, dataset), budget.model))
