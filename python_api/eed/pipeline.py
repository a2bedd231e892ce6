"""EED's stages 1-5 end to end from an adversarially pre-trained dense base (stage 0): the pool
of pruned and fine-tuned sub-models (every criterion x every data part), the robust-diversity
team under the parameter cap, ensemble learning and the member order of dynamic inference."""

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..attacks import pgd
from ..train import TrainConfig, train
from ..train.pgd_at import PGDAdversarialTraining
from ..train.seeds import derived_generator
from .criteria import CRITERIA, criterion_scores
from .diversity import failure_matrix, robust_diversity, select_team
from .ensemble import EnsembleWeights, train_team
from .harp import harp_prune
from .loop import LoopConfig
from .masks import apply_masks, global_topk_masks, nonzero_parameters
from .subsets import split_subsets

__all__ = ["EEDConfig", "build_pool", "learn_team", "member_order", "prune_and_finetune", "select"]


@dataclass(frozen=True)
class EEDConfig:
    """Settings of stages 1-5 (spec B.1 / B.3; steps instead of epochs)."""

    eps: float
    step: float
    attack_steps: int
    batch_size: int = 128
    criteria: tuple[str, ...] = CRITERIA
    subsets: int = 4  # d
    sparsity: float = 0.8  # kappa of the team; each sub-model is four times sparser
    rd_threshold: float = 0.7
    static: bool = False  # criterion scores and a fixed global top-k instead of HARP's learning
    prune_steps: int = 100
    prune_epochs: int = 20  # the compression weight grows per "epoch" of the pruning steps
    gamma: float = 0.01
    prune_lr: float = 0.1
    finetune_steps: int = 100
    finetune_lr: float = 0.01
    ensemble_steps: int = 100
    ensemble_lr: float = 0.01
    weights: EnsembleWeights = field(default_factory=EnsembleWeights)
    score_images: int = 256  # images ASE's Fisher and the failure matrix use
    flip: bool = True
    seed: int = 0

    @property
    def member_density(self) -> float:
        """(1 - kappa) / 4: "more than four times sparser" than the team (kappa_sub 95 % at 80 %)."""
        return (1 - self.sparsity) / 4


def prune_and_finetune(base, scores, density, data, config: EEDConfig, out: Path, *, name: str,
                       learn_rates: bool = True, static: bool = False, device="cpu", tick=None):  # fmt: skip
    """Stages 2 and 3 for one sub-model: a copy of `base` pruned to `density` (HARP, HYDRA with
    learn_rates=False, or the static global top-k), then PGD-AT fine-tuned with its mask fixed
    through the library trainer (checkpoints under out/name). Returns the masked model."""
    model = copy.deepcopy(base)
    if static:
        masks = global_topk_masks(scores, density)
    else:
        loop = LoopConfig(steps=config.prune_steps, batch_size=config.batch_size, lr=config.prune_lr,
                          flip=config.flip, seed=config.seed)  # fmt: skip
        masks = harp_prune(model, scores, density, data, loop, eps=config.eps, step=config.step,
                           attack_steps=config.attack_steps, gamma=config.gamma, epochs=config.prune_epochs,
                           learn_rates=learn_rates, name=f"prune-{name}", device=device,
                           on_step=(lambda _s: tick(1)) if tick else None)  # fmt: skip
    apply_masks(model, masks)
    finetune = TrainConfig(epochs=None, max_steps=config.finetune_steps, batch_size=config.batch_size,
                           lr=config.finetune_lr, schedule="cosine", flip=config.flip, seed=config.seed,
                           log_every=max(config.finetune_steps // 5, 1))  # fmt: skip
    method = PGDAdversarialTraining(config.eps, step=config.step, steps=config.attack_steps)
    train(model, method, data, finetune, out / name, run_info={"eed": name}, log=None,
          on_step=(lambda _s: tick(1)) if tick else None)  # fmt: skip
    return model.eval()


def build_pool(base, data, config: EEDConfig, out: Path, *, device="cpu", tick=None) -> list[dict]:
    """Every criterion x every data part (stage 1: parts re-drawn per criterion): [{"criterion",
    "part", "model", "nonzeros"}]."""
    images, labels = data
    pool = []
    for criterion in config.criteria:
        parts = split_subsets(
            len(labels), config.subsets, derived_generator(config.seed, "subsets", criterion)
        )
        sample = parts[0][: config.score_images]
        x = images[sample].to(device).float() / (255.0 if images.dtype == torch.uint8 else 1.0)
        generator = derived_generator(config.seed, "ase", criterion, device=device)
        scores = criterion_scores(criterion, base.eval(), x, labels[sample].to(device), eps=config.eps,
                                  step=config.step, steps=config.attack_steps, generator=generator)  # fmt: skip
        for part, index in enumerate(parts):
            name = f"{criterion}-{part}"
            model = prune_and_finetune(base, scores, config.member_density, (images[index], labels[index]), config,
                                       out, name=name, static=config.static, device=device, tick=tick)  # fmt: skip
            pool.append(
                {"criterion": criterion, "part": part, "model": model, "nonzeros": nonzero_parameters(model)}
            )
    return pool


def select(pool: list[dict], val, config: EEDConfig, dense_nonzeros: int, *, device="cpu") -> dict:
    """Stage 4 on the validation images: the failure matrix of the pool on PGD against the pool
    average, and the smallest team with RD >= threshold within (1 - kappa) of the dense count."""
    x, y = val[0][: config.score_images].to(device), val[1][: config.score_images].to(device)
    generator = derived_generator(config.seed, "failures", device=device)
    members = [entry["model"] for entry in pool]
    failures = failure_matrix(members, x, y, eps=config.eps, step=config.step, steps=config.attack_steps,
                              generator=generator)  # fmt: skip
    cap = (1 - config.sparsity) * dense_nonzeros
    chosen = select_team(
        failures, [e["nonzeros"] for e in pool], max_nonzeros=cap, threshold=config.rd_threshold
    )
    return {**chosen, "max_nonzeros": cap, "failures": failures,
            "pool_robust_accuracy": (1 - failures.float().mean(dim=1)).tolist()}  # fmt: skip


def learn_team(members, data, config: EEDConfig, *, device="cpu", tick=None) -> list[float]:
    """Stage 5 on the full training set (multi-step lr, the drop at 50 %: spec B.3)."""
    loop = LoopConfig(steps=config.ensemble_steps, batch_size=config.batch_size, lr=config.ensemble_lr,
                      schedule="multistep", milestones=(0.5,), gamma=0.2, flip=config.flip, seed=config.seed)  # fmt: skip
    return train_team(members, data, loop, eps=config.eps, step=config.step, attack_steps=config.attack_steps,
                      weights=config.weights, device=device, on_step=(lambda _s: tick(1)) if tick else None)  # fmt: skip


def member_order(members, val, config: EEDConfig, *, device="cpu") -> tuple[list[int], list[float], float]:
    """Members by descending own white-box PGD accuracy on the validation images (the order is
    unstated: spec B.1 stage 6), their accuracies, and the team's RD recomputed after stage 5."""
    x, y = val[0][: config.score_images].to(device), val[1][: config.score_images].to(device)
    accuracies = []
    for k, member in enumerate(members):
        generator = derived_generator(config.seed, "order", k, device=device)
        x_adv = pgd(member.eval(), x, y, eps=config.eps, step=config.step, steps=config.attack_steps,
                    generator=generator)  # fmt: skip
        with torch.no_grad():
            accuracies.append(float((member(x_adv).argmax(dim=1) == y).float().mean()))
    order = sorted(range(len(members)), key=lambda k: -accuracies[k])
    generator = derived_generator(config.seed, "failures-after", device=device)
    failures = failure_matrix(members, x, y, eps=config.eps, step=config.step, steps=config.attack_steps,
                              generator=generator)  # fmt: skip
    rd = (
        float(robust_diversity(failures, torch.ones(1, len(members), dtype=torch.bool))[0])
        if len(members) > 1
        else 0.0
    )
    return order, accuracies, rd
