"""How much `robustkernels reproduce eed` trains and evaluates at each budget (spec B.3, B.7).

Steps replace the paper's epochs (100 pre-training + 20 pruning + 40 fine-tuning + 80 ensemble
epochs at `paper`). `smoke` exercises every stage on the digits in about a minute or two
(d = 1, so the pool is one sub-model per criterion, K = 4); `small` is the spec's small-scale
plan (d = 3, K = 8); `paper` is the paper's setting for a GPU.
"""

from dataclasses import dataclass, replace

__all__ = ["EED_BUDGETS", "EEDBudget", "eed_budget_for"]


@dataclass(frozen=True)
class EEDBudget:
    name: str
    model: str
    pretrain_steps: int
    batch_size: int
    attack_steps: int  # PGD steps while training (every stage)
    prune_steps: int
    prune_epochs: int  # the "epochs" over which HARP's compression weight grows
    finetune_steps: int
    ensemble_steps: int
    subsets: int  # d
    sparsities: tuple[float, ...]  # kappa of the team; one pipeline run per value
    distill_steps: int  # DVERGE's feature-distillation steps
    score_images: int  # ASE's Fisher, the failure matrix, the member order
    eval_images: int
    pgd_steps: int
    cw_steps: int
    autoattack_steps: int
    target_classes: int
    square_queries: int
    deepfool_steps: int
    checks: bool  # the library's sanity checks on every predictor (PGD)
    val_fraction: float = 0.1
    eps: float = 8 / 255
    step: float = 2 / 255
    lr: float = 0.1


EED_BUDGETS = {
    "smoke": EEDBudget("smoke", "small-cnn", 120, 64, 2, 10, 4, 20, 10, 1, (0.8,), 2, 64, 32, 3, 3, 3, 3, 30, 5, False),
    "small": EEDBudget("small", "small-cnn", 500, 64, 3, 40, 3, 60, 80, 3, (0.8,), 3, 256, 200, 10, 10, 10, 9, 300, 20, True),
    "paper": EEDBudget("paper", "resnet18", 9_800, 512, 20, 1_960, 20, 3_900, 7_800, 4, (0.5, 0.7, 0.8, 0.9, 0.95), 10,
                       5_000, 10_000, 20, 30, 100, 9, 5_000, 50, True),
}  # fmt: skip

_DIGITS_ATTACK = {"eps": 32 / 255, "step": 8 / 255}  # 8/255 is half a grey level of the digits
_MODELS = {("small", "cifar10"): "resnet20"}


def eed_budget_for(name: str, dataset: str) -> EEDBudget:
    """The budget `name` adapted to `dataset` (the digits' larger eps, the architecture)."""
    if name not in EED_BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(EED_BUDGETS)}, got {name!r}")
    budget = EED_BUDGETS[name]
    if dataset == "digits":
        budget = replace(budget, **_DIGITS_ATTACK)
    return replace(budget, model=_MODELS.get((name, dataset), budget.model))
