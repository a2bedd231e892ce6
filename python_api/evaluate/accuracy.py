"""Clean, white-box robust and black-box transfer accuracy, as plain dicts.

Every adversarial point is scored by `attacks.score` over k forward passes of the model: on a
randomised model (declared, or two passes on the same inputs differ) k = `draws` fresh draws,
and a sample counts as robust only if the model is right on every one of them (the worst case
over its randomness); a deterministic model needs one pass. `attacks.WorstCase` keeps each
sample's most adversarial point over restarts (and, for autoattack, the suite's own points with
the scores the suite gave them, never re-drawn), so robust accuracy is all-or-nothing over the
clean input, every restart and every draw. Beside it, "robust_accuracy_mean_over_draws" is the
fraction of draws right at each sample's final point, averaged: what a single deployed pass gets
right on average, not a worst case. Transfer accuracy is all-or-nothing over every adversarial
version (each surrogate, each restart) by the same rule. `eot_draws` averages the attack's gradients.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack

import torch

from robustkernels.nn import noise_seed

from ..attacks import DRAWS, SQUARE_QUERIES, Scores, WorstCase, apgd, autoattack, fgsm, pgd, predict, score
from ..attacks.arguments import check_count
from ..attacks.suites import skipped_attacks, suite_attacks

ATTACKS = ("pgd", "apgd", "autoattack", "fgsm")
Data = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]
# A custom attack: attack(model, x, y, *, eps, norm, steps, eot_draws, generator) -> x_adv.
AttackFn = Callable[..., torch.Tensor]
Progress = Callable[[int], None] | None


def batches(data: Data, batch_size: int):
    """(x, y) batches from a pair of tensors (sliced) or from any iterable of pairs (a loader)."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        for start in range(0, len(y), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
    else:
        yield from data


def looks_randomized(model, data: Data, batch_size: int = 256) -> bool:
    """Two forward passes on the same batch differ."""
    x, _ = next(iter(batches(data, batch_size)))
    with torch.no_grad():
        return not torch.equal(model(x), model(x))


def attack_name(attack: str | AttackFn) -> str:
    return attack if isinstance(attack, str) else getattr(attack, "__name__", "custom")


def attack_passes(attack: str | AttackFn, version: str, restarts: int, n_batches: int) -> int:
    """The `progress` units robust_accuracy reports: one per attack run on one batch (each attack
    of a suite counts once), per restart."""
    per_run = len(suite_attacks(version)) if attack == "autoattack" else 1
    return per_run * restarts * n_batches


def run_attack(
    model, x, y, *, attack, eps, norm, steps, eot_draws, generator, step=None, version="standard",
    draws=1, square_queries=SQUARE_QUERIES, n_target_classes=9, progress: Progress = None, clean=None,
):  # fmt: skip
    """One adversarial version of (x, y) (one restart): (x_adv, the suite's Scores of x_adv for
    autoattack, else None). autoattack reports its own progress per attack, the others none;
    clean: the Scores of x the caller drew, handed to the suite."""
    if not isinstance(attack, str):
        return attack(
            model, x, y, eps=eps, norm=norm, steps=steps, eot_draws=eot_draws, generator=generator
        ), None
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS} or a callable, got {attack!r}")
    if attack == "pgd":
        step_size = 2.5 * eps / steps if step is None else step  # Madry et al.'s step size
        x_adv = pgd(model, x, y, eps=eps, step=step_size, steps=steps, norm=norm, eot_draws=eot_draws,
                    generator=generator)  # fmt: skip
    elif attack == "fgsm":
        x_adv = fgsm(model, x, y, eps=eps, norm=norm, eot_draws=eot_draws)
    elif attack == "apgd":
        x_adv = apgd(model, x, y, eps=eps, norm=norm, steps=steps, eot_draws=eot_draws, generator=generator)
    else:
        # each restart seeds the external attacks anew, from the evaluation's stream
        seed = int(torch.randint(2**31, (), generator=generator, device=generator.device))
        x_adv, info = autoattack(model, x, y, eps=eps, norm=norm, version=version, steps=steps,
                                 eot_draws=eot_draws, draws=draws,
                                 square_queries=square_queries, n_target_classes=n_target_classes,
                                 generator=generator, seed=seed,
                                 progress=progress, clean=clean)  # fmt: skip
        return x_adv, info["scores"]
    return x_adv, None


def own_noise(models, seed: int) -> ExitStack:
    """The models' random layers on the evaluation's own noise streams (from `seed`), their own
    streams put back afterwards: an evaluation draws the same noise whatever ran before it."""
    stack = ExitStack()
    for model in models:
        if isinstance(model, torch.nn.Module):
            stack.enter_context(noise_seed(model, seed))
    return stack


def generator_on(device: torch.device, seed: int, current: torch.Generator | None) -> torch.Generator:
    """The generator in use if it lives on `device`, else a new one there seeded with `seed`
    (one stream for the whole evaluation, on the data's device as torch requires)."""
    if current is not None and current.device == device:
        return current
    return torch.Generator(device=device).manual_seed(seed)


def scoring_draws(model, data: Data, draws: int, randomized: bool | None, batch_size: int) -> int:
    """k: `draws` on a randomised model (declared, or detected when randomized is None), else 1."""
    check_count("draws", draws)
    randomized = looks_randomized(model, data, batch_size) if randomized is None else randomized
    return draws if randomized else 1


def shared_clean(clean_scores: dict | None, number: int, model, x, y, draws: int) -> Scores:
    """Batch `number`'s clean scores from the shared dict, drawn (and stored) on first use: every
    evaluation that shares the dict scores the clean input on the same draws."""
    if clean_scores is None:
        return score(model, x, y, draws)
    if number not in clean_scores:
        clean_scores[number] = score(model, x, y, draws)
    return clean_scores[number]


class _PerImage:
    """Each image's robust flag and fraction of draws right, batch after batch (data order)."""

    def __init__(self):
        self.robust: list[bool] = []
        self.correct_fraction: list[float] = []

    def add(self, worst) -> None:
        self.robust += worst.robust.tolist()
        self.correct_fraction += worst.correct_fraction.tolist()

    def lists(self) -> dict:
        return {"robust": self.robust, "correct_fraction": self.correct_fraction}


def clean_accuracy(model, data: Data, *, batch_size: int = 256) -> float:
    correct = total = 0
    for x, y in batches(data, batch_size):
        correct += int((predict(model, x) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def robust_accuracy(
    model,
    data: Data,
    *,
    attack: str | AttackFn = "pgd",
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    restarts: int = 1,
    step: float | None = None,
    eot_draws: int = 1,
    draws: int = DRAWS,
    randomized: bool | None = None,
    version: str = "standard",
    square_queries: int = SQUARE_QUERIES,
    n_target_classes: int = 9,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress = None,
    clean_scores: dict | None = None,
    per_image: bool = False,
) -> dict:
    """White-box robust accuracy, all-or-nothing over restarts and over k draws (k = `draws` on
    a randomised model, 1 otherwise; randomized=None detects it). The attack's random draws come
    from a generator seeded with `seed`, the model's noisy and random layers from noise streams of
    `seed` (own_noise); for autoattack every restart runs the whole suite again
    from new random starts. eot_draws is used as given, by the suites too (the rand suite's own
    20 only when calling autoattack itself); square_queries bounds the suite's Square and
    n_target_classes its APGD-T and FAB-T. Returns attack, eps, norm, steps, restarts,
    eot_draws, draws (k), n, clean_accuracy (averaged over the k draws),
    clean_accuracy_every_draw, robust_accuracy (right on every draw),
    robust_accuracy_mean_over_draws, robust_accuracy_per_restart; for autoattack also its
    suite's attacks and skipped attacks. progress(n) reports the work done, `attack_passes`
    units in all. clean_scores: a dict shared by the evaluations of one model on the same
    batches (the sanity checks'), each batch's clean draws made once and reused. per_image: also
    "per_image" (each image's robust flag and fraction of draws right, in data order), which lets
    the sanity checks combine their runs image by image."""
    check_count("restarts", restarts)
    tick = progress or (lambda _n: None)
    per_run = attack_passes(attack, version, 1, 1)
    generator = None
    total = clean = clean_every = mean_over_draws = 0.0
    robust_after = [0] * restarts
    suite = {}
    images = _PerImage()
    with own_noise([model], seed):
        k = scoring_draws(model, data, draws, randomized, batch_size)
        for number, (x, y) in enumerate(batches(data, batch_size)):
            generator = generator_on(x.device, seed, generator)
            worst = WorstCase(model, x, y, k, clean=shared_clean(clean_scores, number, model, x, y, k))
            clean += worst.clean.correct_fraction.sum().item()
            clean_every += int(worst.clean.robust.sum())
            total += len(y)
            for r in range(restarts):
                idx = worst.attackable()
                if idx.numel() > 0:
                    x_adv, scores = run_attack(model, x[idx], y[idx], attack=attack, eps=eps, norm=norm, steps=steps,
                                               eot_draws=eot_draws, generator=generator, step=step, version=version,
                                               draws=k, square_queries=square_queries,
                                               n_target_classes=n_target_classes, progress=progress,
                                               clean=worst.clean.select(idx))  # fmt: skip
                    worst.update(idx, x_adv, scores)
                    if attack != "autoattack":
                        tick(per_run)
                else:
                    tick(per_run)
                robust_after[r] += int(worst.robust.sum())
            mean_over_draws += worst.correct_fraction.sum().item()
            images.add(worst)
    if attack == "autoattack":
        suite = {"suite_attacks": suite_attacks(version), "skipped_attacks": skipped_attacks(version)}
    n = max(total, 1)
    return {
        "attack": attack_name(attack),
        "eps": eps,
        "norm": norm,
        "steps": steps,
        "restarts": restarts,
        "eot_draws": eot_draws,
        "draws": k,
        "n": int(total),
        "clean_accuracy": clean / n,
        "clean_accuracy_every_draw": clean_every / n,
        "robust_accuracy": robust_after[-1] / n,
        "robust_accuracy_mean_over_draws": mean_over_draws / n,
        "robust_accuracy_per_restart": [count / n for count in robust_after],
        **suite,
        **({"per_image": images.lists()} if per_image else {}),
    }


def transfer_accuracy(
    target_model,
    surrogates: Mapping[str, Callable] | Sequence[Callable],
    data: Data,
    *,
    attack: str | AttackFn = "pgd",
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    restarts: int = 1,
    step: float | None = None,
    eot_draws: int = 1,
    draws: int = DRAWS,
    randomized: bool | None = None,
    version: str = "standard",
    square_queries: int = SQUARE_QUERIES,
    n_target_classes: int = 9,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress = None,
    clean_scores: dict | None = None,
    per_image: bool = False,
) -> dict:
    """Black-box transfer accuracy of target_model against examples crafted on each
    surrogate (white-box on the surrogate), all-or-nothing over every adversarial
    version (surrogate x restart) and over k draws of the target (as robust_accuracy).
    Returns clean_accuracy, transfer_accuracy, transfer_accuracy_mean_over_draws,
    per_surrogate (each surrogate's own all-or-nothing accuracy) and the settings. clean_scores
    and per_image: as robust_accuracy's, for the target model."""
    named = (
        dict(surrogates)
        if isinstance(surrogates, Mapping)
        else {f"surrogate_{i}": s for i, s in enumerate(surrogates)}
    )
    if not named:
        raise ValueError("surrogates must hold at least one model")
    check_count("restarts", restarts)
    tick = progress or (lambda _n: None)
    per_run = attack_passes(attack, version, 1, 1)
    generator = None
    total = clean = robust_all = mean_over_draws = 0.0
    per_surrogate = dict.fromkeys(named, 0)
    images = _PerImage()
    with own_noise([target_model, *named.values()], seed):
        k = scoring_draws(target_model, data, draws, randomized, batch_size)
        for number, (x, y) in enumerate(batches(data, batch_size)):
            generator = generator_on(x.device, seed, generator)
            everything = torch.arange(len(y), device=y.device)
            worst = WorstCase(
                target_model, x, y, k, clean=shared_clean(clean_scores, number, target_model, x, y, k)
            )
            for name, surrogate in named.items():
                own = WorstCase(target_model, x, y, k, clean=worst.clean)
                for _ in range(restarts):
                    # the surrogate's own flags say nothing of the target: every point is scored on the target
                    x_adv, _ = run_attack(surrogate, x, y, attack=attack, eps=eps, norm=norm, steps=steps,
                                          eot_draws=eot_draws, generator=generator, step=step, version=version,
                                          square_queries=square_queries, n_target_classes=n_target_classes,
                                          progress=progress)  # fmt: skip
                    if attack != "autoattack":
                        tick(per_run)
                    scores = score(target_model, x_adv, y, k)
                    own.update(everything, x_adv, scores)
                    worst.update(everything, x_adv, scores)
                per_surrogate[name] += int(own.robust.sum())
            clean += worst.clean.correct_fraction.sum().item()
            robust_all += int(worst.robust.sum())
            mean_over_draws += worst.correct_fraction.sum().item()
            total += len(y)
            images.add(worst)
    n = max(total, 1)
    return {
        "attack": attack_name(attack),
        "eps": eps,
        "norm": norm,
        "steps": steps,
        "restarts": restarts,
        "eot_draws": eot_draws,
        "draws": k,
        "n": int(total),
        "surrogates": list(named),
        "clean_accuracy": clean / n,
        "transfer_accuracy": robust_all / n,
        "transfer_accuracy_mean_over_draws": mean_over_draws / n,
        "per_surrogate": {name: count / n for name, count in per_surrogate.items()},
        **({"per_image": images.lists()} if per_image else {}),
    }


def eps_sweep(model, data: Data, eps_values: Sequence[float], **kwargs) -> dict:
    """robust_accuracy at every eps (same settings and seed); returns eps, robust_accuracy
    (lists, in the given order) and results (the full dict per eps)."""
    results = [robust_accuracy(model, data, eps=float(e), **kwargs) for e in eps_values]
    return {
        "eps": [float(e) for e in eps_values],
        "robust_accuracy": [r["robust_accuracy"] for r in results],
        "results": results,
    }
