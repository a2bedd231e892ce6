"""What `reproduce` trains for each method and at which test-time settings it evaluates the model.

Each method is one or more `Entry`s (one trained model each; PGD-AT one per adv_weight), each with the
list of its test-time settings: (row fields, the context manager that sets the model, whether
the setting draws noise). The sweep is FLOAT's S_lam_n = {0, 0.2, 0.7, 1} for every method:
FLOAT for both lam_th, FLOAT-Slim at each width (lam_th 0.5), SMART (lam_n 0 its clean path,
lam_n > 0 its adversarial path with the noise scaled by lam_n, BN_A), OAT and OATS at lam = lam_n
(BN_A for lam > 0; OATS at each width) and one PGD-AT model per clean/adversarial weight
adv_weight = lam_n (its loss (1 - adv_weight) CE(clean) + adv_weight CE(PGD))."""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from ..train.float_at import CLEAN, NOISY, float_inference, inference_setting
from ..train.float_slim import floats_inference
from ..train.oat import oat_inference, oats_inference
from ..train.once_for_all import WIDTHS, training_method
from ..train.pgd_at import PGDAdversarialTraining
from ..train.smart import smart_inference, smart_variant

__all__ = ["FLOATS_LAM_TH", "LABELS", "LAM_N", "LAM_TH", "METHODS", "Entry", "entries"]

LAM_N = (0.0, 0.2, 0.7, 1.0)
LAM_TH = (0.0, 0.5)
METHODS = ("float", "floats", "smart", "oat", "oats", "pgd-at")
LABELS = {
    "float": "FLOAT",
    "floats": "FLOAT-Slim",
    "smart": "SMART",
    "oat": "OAT",
    "oats": "OATS",
    "pgd-at": "PGD-AT",
}
FLOATS_LAM_TH = 0.5
_BN = {CLEAN: "BN_C", NOISY: "BN_A"}
Setting = tuple[dict, contextlib.AbstractContextManager, bool]


@dataclass(frozen=True)
class Entry:
    """One trained model of a reproduce run: its run directory name, the method it was converted
    for (None: a plain network), options of that conversion, its training loss and its settings."""

    key: str  # the METHODS name it belongs to
    run_name: str
    convert: str | None
    options: dict | None
    training: object
    settings: Callable[[object], list[Setting]]
    variant: str | None = None


def _float(model) -> list[Setting]:
    rows = []
    for lam_th in LAM_TH:
        for lam_n in LAM_N:
            scale, bn_path = inference_setting(lam_n, lam_th)
            fields = {"lam_th": lam_th, "lam_n": lam_n, "noise_scale": scale, "bn": _BN[bn_path]}
            rows.append((fields, float_inference(model, lam_n, lam_th), scale > 0))
    return rows


def _floats(model) -> list[Setting]:
    rows = []
    for width in sorted(WIDTHS, reverse=True):
        for lam_n in LAM_N:
            scale, bn_path = inference_setting(lam_n, FLOATS_LAM_TH)
            fields = {
                "width": width,
                "lam_th": FLOATS_LAM_TH,
                "lam_n": lam_n,
                "noise_scale": scale,
                "bn": _BN[bn_path],
            }
            rows.append((fields, floats_inference(model, width, lam_n, FLOATS_LAM_TH), scale > 0))
    return rows


def _smart(model) -> list[Setting]:
    return [
        ({"lam_th": None, "lam_n": lam_n, "noise_scale": lam_n, "bn": _BN[NOISY if lam_n else CLEAN]},
         smart_inference(model, lam_n), lam_n > 0)
        for lam_n in LAM_N
    ]  # fmt: skip


def _oat_fields(lam: float, width: float = 1.0) -> dict:
    return {
        "width": width,
        "lam_th": None,
        "lam_n": lam,
        "noise_scale": 0.0,
        "bn": _BN[NOISY if lam else CLEAN],
    }


def _oat(model) -> list[Setting]:
    return [(_oat_fields(lam), oat_inference(model, lam), False) for lam in LAM_N]


def _oats(model) -> list[Setting]:
    return [
        (_oat_fields(lam, width), oats_inference(model, width, lam), False)
        for width in sorted(WIDTHS, reverse=True)
        for lam in LAM_N
    ]


def _plain(adv_weight: float) -> Callable[[object], list[Setting]]:
    # the table's lam_n column is the sweep's value: for PGD-AT the trained adv_weight
    fields = {"lam_th": None, "lam_n": adv_weight, "noise_scale": 0.0, "bn": "BN"}
    return lambda _model: [(fields, contextlib.nullcontext(), False)]


def entries(methods, attack: dict, smart: dict) -> list[Entry]:
    """The models to train for `methods` (in METHODS order) with the training attack settings;
    `smart` holds to_smart_model's "stages" and "shared"."""
    out = []
    for key in (m for m in METHODS if m in methods):
        if key == "pgd-at":
            out += [
                Entry(
                    key,
                    f"pgd-at-adv{weight}",
                    None,
                    None,
                    PGDAdversarialTraining(**attack, adv_weight=weight),
                    _plain(weight),
                )
                for weight in LAM_N
            ]
        elif key == "smart":
            default = smart == {"stages": None, "shared": 0.25}
            name = "smart" if default else f"smart-{smart['stages'] or 'later'}-overlap{smart['shared']:g}"
            variant = smart_variant(smart["stages"], smart["shared"])
            options = None if default else smart
            out.append(Entry(key, name, key, options, training_method(key, **attack), _smart, variant))
        else:
            settings = {"float": _float, "floats": _floats, "oat": _oat, "oats": _oats}[key]
            out.append(Entry(key, key, key, None, training_method(key, **attack), settings))
    return out
