"""The once-for-all methods by name, as the CLI sees them: how a model is converted for each
(recorded in a checkpoint, so `eval` rebuilds the same layers before loading the weights) and
how one trained model is set at test time (lam_n, lam_th and, for FLOAT-Slim, the width)."""

import contextlib

import torch
from torch import nn

from .float_at import FLOATTraining, float_inference, to_float_model
from .float_slim import FLOATSlimTraining, floats_inference, to_floats_model
from .oat import OATSTraining, OATTraining, oat_inference, oats_inference, to_oat_model
from .smart import SMARTTraining, smart_inference, to_smart_model

__all__ = ["ONCE_FOR_ALL", "at_test_time", "convert", "training_method"]

ONCE_FOR_ALL = {
    "float": "FLOAT (Kundu et al.): noisy-weight convs and dual BN, one model tuned by lam_n at test time",
    "floats": "FLOAT-Slim: FLOAT at widths 0.5 and 1.0 of one slimmable model (Algorithm 2)",
    "smart": "SMART (Kundu et al.): noisy dual-path convs with clean and adversarial sparse masks at later stages",
    "oat": "OAT (Wang et al.): FiLM after every (dual) BN conditioned on lam, lam drawn per batch",
    "oats": "OATS: OAT on FLOAT-Slim's slimmable layers at widths 0.5 and 1.0",
}
WIDTHS = (0.5, 1.0)


def _check(method: str) -> None:
    if method not in ONCE_FOR_ALL:
        raise ValueError(f"method must be one of {', '.join(ONCE_FOR_ALL)}, got {method!r}")


def convert(method: str, model: nn.Module, seed: int = 0, options: dict | None = None) -> nn.Module:
    """`model` converted in place for `method` (SMART's masks drawn from a generator seeded
    with `seed`; a checkpoint's saved masks replace them on loading). `options` (stored in a
    checkpoint's model description): SMART's "stages" and "shared" (to_smart_model's)."""
    _check(method)
    options = dict(options or {})
    unknown = set(options) - ({"stages", "shared"} if method == "smart" else set())
    if unknown:
        raise ValueError(f"options {sorted(unknown)} do not apply to {method}")
    if method == "float":
        return to_float_model(model)
    if method == "floats":
        return to_floats_model(model, WIDTHS)
    if method in ("oat", "oats"):
        widths = WIDTHS if method == "oats" else None
        return to_oat_model(model, widths, generator=torch.Generator().manual_seed(seed))
    return to_smart_model(model, generator=torch.Generator().manual_seed(seed), **options)


def training_method(method: str, **attack):
    """The method's trainer loss with the attack settings (eps, step, steps, norm)."""
    _check(method)
    if method in ("floats", "oats"):
        return {"floats": FLOATSlimTraining, "oats": OATSTraining}[method](tuple(reversed(WIDTHS)), **attack)
    return {"float": FLOATTraining, "smart": SMARTTraining, "oat": OATTraining}[method](**attack)


def at_test_time(
    method: str, model: nn.Module, lam_n: float, lam_th: float = 0.5, width: float | None = None
) -> contextlib.AbstractContextManager:
    """`with at_test_time(...):` runs the block with the model at lam_n (FLOAT and FLOAT-Slim:
    float_inference's rule with lam_th; SMART: smart_inference's, lam_n 0 the clean expert path,
    lam_n > 0 the adversarial one with the noise scaled by lam_n; OAT and OATS: FiLM at lam = lam_n,
    BN_A for lam_n > 0; lam_th applies to FLOAT and FLOAT-Slim only) and, for FLOAT-Slim and OATS,
    at `width` (default: the widest)."""
    _check(method)
    if isinstance(lam_n, bool) or not 0.0 <= lam_n <= 1.0:
        raise ValueError(f"lam_n must lie in [0, 1], got {lam_n!r}")
    if width is not None and method not in ("floats", "oats"):
        raise ValueError(f"width applies to floats and oats only, not {method}")
    if method == "float":
        return float_inference(model, lam_n, lam_th)
    if method == "floats":
        return floats_inference(model, max(WIDTHS) if width is None else width, lam_n, lam_th)
    if method == "oat":
        return oat_inference(model, lam_n)
    if method == "oats":
        return oats_inference(model, max(WIDTHS) if width is None else width, lam_n)
    return smart_inference(model, lam_n)
