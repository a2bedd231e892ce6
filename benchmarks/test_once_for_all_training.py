"""Training time per epoch of the once-for-all methods side by side in one run (CPU or GPU):
FLOAT against PGD-AT with the same attack steps and against OAT, the papers' cost claims
(FLOAT: PGD-AT and OAT are 1.37x and 1.43x slower per epoch; the issue's targets: FLOAT at most
1.05x PGD-AT's epoch and at most 0.75x OAT's), plus FiLM's share of an OAT step (OAT against
OAT with its FiLM layers replaced by identities: a fused FiLM op only pays if that share
exceeds 10%) and FLOAT-Slim against OATS.

Variants, each with the trainer's step (the method's loss, backward, SGD), PGD-7 (eps 8/255,
step 2/255, random start) wherever a method attacks:
- float: FLOATTraining on to_float_model (PGD on half the batch, two half-batch forwards);
- pgd_at: PGDAdversarialTraining(steps=7) on the plain model (PGD on the whole batch);
- oat: OATTraining on to_oat_model (lam drawn per step from {0, 0.1, 0.2, 0.3, 0.4, 1} by the
  trainer's per-step generator; no attack when lam = 0; PGD on the whole batch otherwise);
- oat_unfused_film: the same with FiLM run as its own pass after the batch norm (fold=False);
- oat_no_film: the same with every FiLM2d replaced by nn.Identity (FiLM's cost: its share of
  an OAT step, folded and not);
- floats / oats: FLOAT-Slim and OATS at widths 1 and 0.5.

Cases (batch 128): SmallCNN on the digits training split (11 batches: a round is one epoch) and
ResNet-20 on the shared real CIFAR-10 slice (a round is ROUND_BATCHES of its batches, the epoch
extrapolated from its images). Rounds interleave the variants (rotating order); medians.

    OMP_NUM_THREADS=1 python benchmarks/test_once_for_all_training.py [rounds] [case ...]
    OMP_NUM_THREADS=1 python benchmarks/test_once_for_all_training.py film   # FiLM's cost alone
"""

import copy
import os
import sys
from pathlib import Path

import torch
from test_float_training import BATCH, small_cnn_digits
from timing import DEVICE, interleaved_medians, sync, trainer_step

from robustkernels.api.data import load_dataset, to_unit_interval
from robustkernels.api.models import build_model
from robustkernels.api.train.oat import oat_inference
from robustkernels.api.train.once_for_all import convert, training_method
from robustkernels.api.train.pgd_at import PGDAdversarialTraining
from robustkernels.api.train.runs import model_info
from robustkernels.nn.film import FiLM2d, FiLMAfter

ATTACK = {"eps": 8 / 255, "step": 2 / 255, "steps": 7}
VARIANTS = ("float", "pgd_at", "oat", "oat_unfused_film", "oat_no_film", "floats", "oats")
TARGETS = (("float", "pgd_at", 1.05), ("float", "oat", 0.75))  # (numerator, denominator, at most)
FILM_SHARE_LIMIT = 0.10
ROUND_BATCHES = 3
CIFAR_SLICE = Path(os.environ.get("ROBUSTKERNELS_SHARED_DATA", "/work/shared/data")) / "cifar-10-subset"


def resnet20_cifar_slice():
    """(plain model, ROUND_BATCHES batches, steps of an epoch of the slice)."""
    images, labels = load_dataset("cifar10", "train", CIFAR_SLICE)
    info = model_info("resnet20", "cifar10", images)
    torch.manual_seed(0)
    model = build_model(info["name"], info["num_classes"], info["in_channels"], info["mean"], info["std"])
    batches = [
        (
            to_unit_interval(images[i * BATCH : (i + 1) * BATCH]).to(DEVICE),
            labels[i * BATCH : (i + 1) * BATCH].to(DEVICE),
        )
        for i in range(ROUND_BATCHES)
    ]
    return model, batches, len(labels) // BATCH


CASES = {"small_cnn_digits": small_cnn_digits, "resnet20_cifar_slice": resnet20_cifar_slice}


def _without_film(model):
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, FiLM2d):
                setattr(module, name, torch.nn.Identity())
            if isinstance(child, FiLMAfter):
                child.fold = False  # an identity cannot fold
    return model


def _unfused(model):
    for module in model.modules():
        if isinstance(module, FiLMAfter):
            module.fold = False
    return model


def _variant(plain, name):
    if name == "pgd_at":
        return copy.deepcopy(plain), PGDAdversarialTraining(**ATTACK)
    method = {"oat_no_film": "oat", "oat_unfused_film": "oat"}.get(name, name)
    model = convert(method, copy.deepcopy(plain))
    model = {"oat_no_film": _without_film, "oat_unfused_film": _unfused}.get(name, lambda m: m)(model)
    return model, training_method(method, **ATTACK)


def training_steps(case: str, variants=VARIANTS):
    """({variant: step()}, batches per round, steps per epoch)."""
    plain, batches, epoch_steps = CASES[case]()
    return (
        {name: trainer_step(*_variant(plain, name), batches) for name in variants},
        len(batches),
        epoch_steps,
    )


def interleaved(rounds: int, cases) -> dict:
    """{case: ({variant: median seconds per step}, steps per epoch)}."""
    medians = {}
    for case in cases:
        steps, per_round, epoch_steps = training_steps(case)
        medians[case] = (interleaved_medians(steps, rounds, per_round), epoch_steps)
    return medians


def report(case: str, by_variant: dict, epoch_steps: int) -> None:
    print(f"{'case':<22} {'variant':<12} {'ms/step':>9} {'steps/epoch':>12} {'s/epoch':>9}")
    for variant, seconds in by_variant.items():
        print(
            f"{case:<22} {variant:<12} {seconds * 1e3:>9.1f} {epoch_steps:>12} {seconds * epoch_steps:>9.2f}"
        )
    t = by_variant
    for numerator, denominator, limit in TARGETS:
        ratio = t[numerator] / t[denominator]
        verdict = "met" if ratio <= limit else "NOT MET"
        print(f"  {case} {numerator} / {denominator}: {ratio:.3f} (target <= {limit}) {verdict}")
    for variant in ("oat_unfused_film", "oat"):
        share = 1 - t["oat_no_film"] / t[variant]
        print(
            f"  {case} FiLM's share of an {variant} step: {100 * share:.1f}% (limit {100 * FILM_SHARE_LIMIT:.0f}%)"
        )
    print(
        f"  {case} floats / oats: {t['floats'] / t['oats']:.3f}; oat / float: {t['oat'] / t['float']:.3f}",
        flush=True,
    )


def film_forward_backward(rounds: int = 12) -> dict:
    """{variant: median ms} of one forward and backward of OAT's SmallCNN (train mode, lam 0.3,
    batch 128 of 32x32 inputs, no attack): FiLM folded, as its own pass, and absent. The attack's
    and optimizer's shares of a training step do not dilute FiLM's share here."""
    torch.manual_seed(0)
    plain = build_model("small-cnn", 10, 3)
    models = {name: _variant(plain, name)[0].train() for name in ("oat", "oat_unfused_film", "oat_no_film")}
    x, y = torch.rand(BATCH, 3, 32, 32).to(DEVICE), torch.randint(10, (BATCH,)).to(DEVICE)

    def forward_backward(model):
        def step():
            with oat_inference(model, 0.3):
                torch.nn.functional.cross_entropy(model(x), y).backward()
            sync()

        return step

    steps = {name: forward_backward(model) for name, model in models.items()}
    return {name: 1e3 * seconds for name, seconds in interleaved_medians(steps, rounds).items()}


def main() -> None:
    if sys.argv[1:2] == ["film"]:
        ms = film_forward_backward()
        print(f"device {DEVICE}; torch {torch.__version__}; threads {torch.get_num_threads()}")
        for name, value in ms.items():
            print(
                f"OAT SmallCNN forward+backward {name}: {value:.1f} ms ({100 * (1 - ms['oat_no_film'] / value):.1f}% FiLM)"
            )
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"device {DEVICE}; torch {torch.__version__}; threads {torch.get_num_threads()}; {rounds} rounds")
    for case in sys.argv[2:] or list(CASES):  # each case reported as soon as it is timed
        report(case, *interleaved(rounds, [case])[case])


if __name__ == "__main__":
    main()
