"""AutoAttack-style suites (Croce & Hein, 2020): attacks run one after another, each
on the samples every earlier attack failed on; a sample is robust only if all fail.

- "standard": APGD-CE, APGD-T (targeted DLR over the 9 most likely wrong classes),
  then FAB-T and Square through the optional `torchattacks` package; without it those
  two are skipped and `info["skipped"]` says so.
- "rand", for randomised defences: APGD-CE and APGD-DLR, every gradient averaged over
  20 draws (EOT).
"""

from collections.abc import Callable

import torch

from .apgd import apgd
from .arguments import check_batch, check_nonnegative, check_norm
from .eot import predict
from .guard import untouched

VERSIONS = ("standard", "rand")
RAND_EOT_DRAWS = 20
SQUARE_QUERIES = 5000


def _torchattacks():
    """The torchattacks module, or (None, why it cannot be used)."""
    try:
        import torchattacks
    except ImportError as exc:
        return None, f"torchattacks is not installed ({exc})"
    return torchattacks, None


def _external(name: str, model, eps: float, norm: str, num_classes: int, steps: int, seed: int):
    torchattacks, reason = _torchattacks()
    if torchattacks is None:
        return None, reason
    norm_name = {"linf": "Linf", "l2": "L2"}[norm]
    if name == "fab-t":
        attack = torchattacks.FAB(
            model, norm=norm_name, eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
            n_classes=num_classes, seed=seed,
        )  # fmt: skip
    else:
        attack = torchattacks.Square(
            model, norm=norm_name, eps=eps, n_queries=SQUARE_QUERIES, n_restarts=1, seed=seed
        )
    return attack, None


def autoattack(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    steps: int = 100,
    n_target_classes: int = 9,
    eot_draws: int | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, dict]:
    """Runs the suite; returns (x_adv, info). x_adv holds, per sample, the example of
    the first attack that fooled the model (x itself where none did or the model was
    already wrong). info: version, eps, norm, clean_accuracy, robust_accuracy,
    robust_accuracy_after (per attack, cumulative), attacks (those run), skipped
    ({attack: reason}), eot_draws. eot_draws defaults to 1 ("standard") or 20 ("rand").
    seed seeds the torchattacks attacks (our own draw from `generator`)."""
    check_batch(x, y)
    check_norm(norm)
    check_nonnegative("eps", eps)
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    draws = eot_draws if eot_draws is not None else (RAND_EOT_DRAWS if version == "rand" else 1)
    x = x.detach()
    result = x.clone()
    info = {"version": version, "eps": eps, "norm": norm, "eot_draws": draws, "attacks": [], "skipped": {}}
    with untouched(model):
        with torch.no_grad():
            logits = model(x)
        robust = logits.argmax(dim=1) == y
        info["clean_accuracy"] = robust.float().mean().item()
        info["robust_accuracy_after"] = {}
        common = {"eps": eps, "norm": norm, "steps": steps, "eot_draws": draws, "generator": generator}
        if version == "standard":
            plan = [
                ("apgd-ce", lambda xs, ys: apgd(model, xs, ys, loss="ce", **common)),
                ("apgd-t", lambda xs, ys: apgd(model, xs, ys, loss="dlr-targeted", n_target_classes=n_target_classes, **common)),
            ]  # fmt: skip
            for name in ("fab-t", "square"):
                attack, reason = _external(name, model, eps, norm, logits.shape[1], steps, seed)
                if attack is None:
                    info["skipped"][name] = reason
                else:
                    plan.append((name, attack))
        else:
            plan = [
                ("apgd-ce", lambda xs, ys: apgd(model, xs, ys, loss="ce", **common)),
                ("apgd-dlr", lambda xs, ys: apgd(model, xs, ys, loss="dlr", **common)),
            ]
        for name, attack in plan:
            info["attacks"].append(name)
            idx = robust.nonzero().squeeze(1)
            if idx.numel() > 0:
                x_adv = attack(x[idx], y[idx]).detach()
                fooled = predict(model, x_adv) != y[idx]  # the deployed model: one pass
                result[idx[fooled]] = x_adv[fooled]
                robust[idx[fooled]] = False
            info["robust_accuracy_after"][name] = robust.float().mean().item()
        info["robust_accuracy"] = robust.float().mean().item()
    return result, info
