"""Clean, white-box robust and black-box transfer accuracy, as plain dicts.

Robust accuracy is all-or-nothing over restarts: a sample counts as robust only if it
is classified correctly clean and after every restart of the attack. Transfer accuracy
is all-or-nothing over every adversarial version (each surrogate, each restart).
Predictions are one forward pass of the model as deployed (a randomised model draws
its randomness anew, as it would in use); `eot_draws` averages the attack's gradients.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from ..attacks import apgd, autoattack, fgsm, pgd, predict

ATTACKS = ("pgd", "apgd", "autoattack", "fgsm")
Data = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]
# A custom attack: attack(model, x, y, *, eps, norm, steps, eot_draws, generator) -> x_adv.
AttackFn = Callable[..., torch.Tensor]


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


def attack_name(attack: str | AttackFn) -> str:
    return attack if isinstance(attack, str) else getattr(attack, "__name__", "custom")


def run_attack(
    model, x, y, *, attack, eps, norm, steps, eot_draws, generator, alpha=None, version="standard"
):
    """One adversarial version of (x, y) (one restart); for autoattack, the whole suite's
    x_adv and its info dict, else (x_adv, None)."""
    if not isinstance(attack, str):
        return attack(
            model, x, y, eps=eps, norm=norm, steps=steps, eot_draws=eot_draws, generator=generator
        ), None
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS} or a callable, got {attack!r}")
    if attack == "pgd":
        step_size = 2.5 * eps / steps if alpha is None else alpha  # Madry et al.'s step size
        x_adv = pgd(model, x, y, eps=eps, alpha=step_size, steps=steps, norm=norm, eot_draws=eot_draws,
                    generator=generator)  # fmt: skip
    elif attack == "fgsm":
        x_adv = fgsm(model, x, y, eps=eps, norm=norm, eot_draws=eot_draws)
    elif attack == "apgd":
        x_adv = apgd(model, x, y, eps=eps, norm=norm, steps=steps, eot_draws=eot_draws, generator=generator)
    else:
        return autoattack(model, x, y, eps=eps, norm=norm, version=version, steps=steps,
                          eot_draws=eot_draws if eot_draws > 1 else None, generator=generator)  # fmt: skip
    return x_adv, None


def generator_on(device: torch.device, seed: int, current: torch.Generator | None) -> torch.Generator:
    """The generator in use if it lives on `device`, else a new one there seeded with `seed`
    (one stream for the whole evaluation, on the data's device as torch requires)."""
    if current is not None and current.device == device:
        return current
    return torch.Generator(device=device).manual_seed(seed)


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
    alpha: float | None = None,
    eot_draws: int = 1,
    version: str = "standard",
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """White-box robust accuracy, all-or-nothing over restarts. The attack's random
    draws come from a generator seeded with `seed`. Returns attack, eps, norm, steps,
    restarts, eot_draws, n, clean_accuracy, robust_accuracy and
    robust_accuracy_per_restart (after 1, 2, ... restarts); for autoattack also its
    suite's attacks and skipped attacks (restarts are the suite's own there)."""
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be an int >= 1, got {restarts!r}")
    generator = None
    rounds = 1 if attack == "autoattack" else restarts
    total = clean = 0
    robust_after = [0] * rounds
    suite = {}
    for x, y in batches(data, batch_size):
        generator = generator_on(x.device, seed, generator)
        robust = predict(model, x) == y
        clean += int(robust.sum())
        total += len(y)
        for r in range(rounds):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() > 0:
                x_adv, info = run_attack(model, x[idx], y[idx], attack=attack, eps=eps, norm=norm, steps=steps,
                                         eot_draws=eot_draws, generator=generator, alpha=alpha, version=version)  # fmt: skip
                if info is not None:
                    suite = {"suite_attacks": info["attacks"], "skipped_attacks": info["skipped"]}
                robust[idx] = predict(model, x_adv) == y[idx]
            robust_after[r] += int(robust.sum())
    n = max(total, 1)
    return {
        "attack": attack_name(attack),
        "eps": eps,
        "norm": norm,
        "steps": steps,
        "restarts": rounds,
        "eot_draws": eot_draws,
        "n": total,
        "clean_accuracy": clean / n,
        "robust_accuracy": robust_after[-1] / n,
        "robust_accuracy_per_restart": [count / n for count in robust_after],
        **suite,
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
    alpha: float | None = None,
    eot_draws: int = 1,
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Black-box transfer accuracy of target_model against examples crafted on each
    surrogate (white-box on the surrogate), all-or-nothing over every adversarial
    version (surrogate x restart). Returns clean_accuracy, transfer_accuracy,
    per_surrogate (each surrogate's own all-or-nothing accuracy) and the settings."""
    named = (
        dict(surrogates)
        if isinstance(surrogates, Mapping)
        else {f"surrogate_{i}": s for i, s in enumerate(surrogates)}
    )
    if not named:
        raise ValueError("surrogates must hold at least one model")
    generator = None
    total = clean = robust_all = 0
    per_surrogate = dict.fromkeys(named, 0)
    for x, y in batches(data, batch_size):
        generator = generator_on(x.device, seed, generator)
        correct = predict(target_model, x) == y
        everywhere = correct.clone()
        for name, surrogate in named.items():
            survived = correct.clone()
            for _ in range(1 if attack == "autoattack" else restarts):
                x_adv, _ = run_attack(surrogate, x, y, attack=attack, eps=eps, norm=norm, steps=steps,
                                      eot_draws=eot_draws, generator=generator, alpha=alpha)  # fmt: skip
                survived &= predict(target_model, x_adv) == y
            per_surrogate[name] += int(survived.sum())
            everywhere &= survived
        clean += int(correct.sum())
        robust_all += int(everywhere.sum())
        total += len(y)
    n = max(total, 1)
    return {
        "attack": attack_name(attack),
        "eps": eps,
        "norm": norm,
        "steps": steps,
        "restarts": restarts,
        "eot_draws": eot_draws,
        "n": total,
        "surrogates": list(named),
        "clean_accuracy": clean / n,
        "transfer_accuracy": robust_all / n,
        "per_surrogate": {name: count / n for name, count in per_surrogate.items()},
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
