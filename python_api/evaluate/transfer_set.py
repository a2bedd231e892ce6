"""DVERGE's black-box protocol, which Ensemble-in-One reuses: a transfer set crafted once per eps on
surrogate ensembles and stored, then every defence scored all-or-nothing on the same inputs.

Per surrogate and per loss (CE, and the CW margin), the versions are:
- momentum PGD from `starts` uniform random starts (MI-FGSM's L1-normalised momentum, decay 1);
- M-DI²-FGSM: momentum PGD with input diversity of probability 0.5 (from the clean image);
- SGM: momentum PGD whose gradient through every residual branch is scaled by gamma = 0.2.
All with `steps` steps of eps / 5. The paper's settings (3 surrogates, 3 starts) give
3 x (3 + 1 + 1) x 2 = 30 versions per image. An image counts as robust only if the defence is right
on its clean input and on every version (`attacks.WorstCase`: on a randomised defence, on every
one of k draws at each).

The random starts of one variant run as one batch (the surrogate in eval mode, samples
independent), so M-PGD's starts share each forward pass. The set is written to
`<directory>/transfer-eps<eps>.safetensors` with its settings, and read back when they match.
The CW loss is the unclipped margin: DVERGE's confidence kappa = 0.1 only stops the ascent once
the margin passes kappa, and going further cannot make a transfer example weaker on the surrogate.
"""

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..attacks import WorstCase, pgd, residual_relus, score, skip_gradient
from ..models.resnet import BasicBlock
from ..optional import require

__all__ = ["TransferSetConfig", "build_transfer_set", "load_or_build", "sgm_modules", "transfer_set_accuracy"]

LOSSES = ("ce", "cw")


@dataclass(frozen=True)
class TransferSetConfig:
    eps: float
    steps: int = 100
    starts: int = 3  # random starts of momentum PGD per surrogate and loss
    diversity: float = 0.5  # M-DI²-FGSM's transform probability
    sgm_gamma: float = 0.2
    batch_size: int = 250
    seed: int = 0


def sgm_modules(model: nn.Module) -> list[str]:
    """Where SGM scales the gradient: the last module of every residual branch (a BasicBlock's bn2,
    before the addition). A network without residual blocks has no skip path to favour; there it
    falls back to `residual_relus`, and SGM is its base attack up to a scale that sign steps ignore."""
    names = [f"{name}.bn2" for name, module in model.named_modules() if isinstance(module, BasicBlock)]
    return names or residual_relus(model)


def _versions(surrogate: nn.Module, x, y, config: TransferSetConfig, generator) -> dict[str, torch.Tensor]:
    common = {"eps": config.eps, "step": config.eps / 5, "steps": config.steps, "momentum": 1.0,
              "generator": generator}  # fmt: skip
    out = {}
    for loss in LOSSES:
        repeated = x.repeat(config.starts, *([1] * (x.dim() - 1)))
        starts = pgd(surrogate, repeated, y.repeat(config.starts), loss=loss, random_start=True, **common)
        for start, x_adv in enumerate(starts.split(len(x))):
            out[f"mpgd{start}-{loss}"] = x_adv
        out[f"mdi2fgsm-{loss}"] = pgd(
            surrogate, x, y, loss=loss, random_start=False, input_diversity=config.diversity, **common
        )
        sgm = skip_gradient(surrogate, config.sgm_gamma, sgm_modules(surrogate))
        with sgm if sgm_modules(surrogate) else contextlib.nullcontext():
            out[f"sgm-{loss}"] = pgd(surrogate, x, y, loss=loss, random_start=False, **common)
    return out


def build_transfer_set(
    surrogates: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, config: TransferSetConfig
) -> dict:
    """{"x", "y", "versions" [V, N, ...], "names" (surrogate/variant per version), "images_per_second"}:
    every version of every image, crafted white-box on each surrogate (in eval mode)."""
    if not surrogates:
        raise ValueError("surrogates must hold at least one model")
    generator = torch.Generator(device=x.device).manual_seed(config.seed)
    started = time.perf_counter()
    names: list[str] = []
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, len(y), config.batch_size):
        xb, yb = x[start : start + config.batch_size], y[start : start + config.batch_size]
        batch_versions = []
        for surrogate_name, surrogate in surrogates.items():
            was_training = surrogate.training
            surrogate.eval()
            try:
                versions = _versions(surrogate, xb, yb, config, generator)
            finally:
                surrogate.train(was_training)
            if start == 0:
                names += [f"{surrogate_name}/{variant}" for variant in versions]
            batch_versions += list(versions.values())
        chunks.append(batch_versions)
    versions = torch.stack([torch.cat(parts) for parts in zip(*chunks, strict=True)])
    seconds = time.perf_counter() - started
    return {"x": x, "y": y, "versions": versions, "names": names,
            "images_per_second": versions.shape[0] * len(y) / max(seconds, 1e-9)}  # fmt: skip


def _path(directory: Path, eps: float) -> Path:
    return directory / f"transfer-eps{eps:.4f}.safetensors"


def load_or_build(
    directory: str | Path,
    surrogates: Mapping[str, nn.Module],
    x,
    y,
    config: TransferSetConfig,
    described: dict,
) -> dict:
    """The transfer set of `config` from `directory` when one with the same settings (config and
    `described`: the surrogates, the images) and the same clean images x, y is stored there, else
    built and stored (safetensors)."""
    st = require("safetensors.torch", "storing transfer sets", "safetensors")
    path = _path(Path(directory), config.eps)
    settings = json.dumps({"config": asdict(config), **described}, sort_keys=True)
    if path.exists():
        with require("safetensors", "reading transfer sets", "safetensors").safe_open(
            str(path), "pt"
        ) as stored:
            metadata = stored.metadata()
        if metadata.get("settings") == settings:
            tensors = st.load_file(str(path), device=str(x.device))
            # the same settings over other images (eval_images or the test draw changed) are not the same set
            if (
                tensors["x"].shape == x.shape
                and torch.equal(tensors["x"], x)
                and torch.equal(tensors["y"], y)
            ):
                names = json.loads(metadata["names"])
                return {"x": tensors["x"], "y": tensors["y"], "versions": tensors["versions"], "names": names,
                        "images_per_second": float(metadata["images_per_second"]), "reused": True}  # fmt: skip
    built = build_transfer_set(surrogates, x, y, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: built[key].detach().cpu().contiguous() for key in ("x", "y", "versions")}
    metadata = {"settings": settings, "names": json.dumps(built["names"]),
                "images_per_second": str(built["images_per_second"])}  # fmt: skip
    partial = path.with_suffix(".partial")
    st.save_file(tensors, str(partial), metadata=metadata)
    partial.replace(path)
    return {**built, "reused": False}


@torch.no_grad()
def transfer_set_accuracy(model, transfer_set: dict, *, draws: int = 1, batch_size: int = 250) -> dict:
    """All-or-nothing accuracy of `model` on a transfer set: right on the clean input and on every
    version (on every one of `draws` passes at each; draws > 1 for a randomised model). Returns
    clean_accuracy, blackbox_accuracy, blackbox_accuracy_mean_over_draws, per_version accuracy, n."""
    x, y, versions = transfer_set["x"], transfer_set["y"], transfer_set["versions"]
    robust = mean_over_draws = clean = 0.0
    per_version = torch.zeros(versions.shape[0])
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        worst = WorstCase(model, xb, yb, draws)
        everything = torch.arange(len(yb), device=yb.device)
        for v in range(versions.shape[0]):
            scores = score(model, versions[v, start : start + batch_size], yb, draws)
            per_version[v] += float(scores.robust.sum())
            worst.update(everything, versions[v, start : start + batch_size], scores)
        clean += float(worst.clean.correct_fraction.sum())
        robust += float(worst.robust.sum())
        mean_over_draws += float(worst.correct_fraction.sum())
    n = max(len(y), 1)
    return {"clean_accuracy": clean / n, "blackbox_accuracy": robust / n,
            "blackbox_accuracy_mean_over_draws": mean_over_draws / n, "n": len(y), "draws": draws,
            "per_version": dict(zip(transfer_set["names"], (per_version / n).tolist(), strict=True))}  # fmt: skip
