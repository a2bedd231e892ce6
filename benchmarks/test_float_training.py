"""FLOAT's training time: FLOATTraining on robustkernels' layers (MaskedExpertConv2d's fused
dual-path conv, PathBatchNorm2d; the default forward="auto", which on a CPU trains the two
halves in one forward each, and forward="routed", both halves in one routed forward) against the
same Algorithm 1 on eager PNI-style layers (benchmarks/float_reference.py: PNIConv2d
drawing torch.randn noise per call, DualBatchNorm2d of two nn.BatchNorm2d, the clean and the
adversarial half in two forwards). Both variants start from one model's weights and run the
library's pgd (PGD-7, random start) and the trainer's SGD (build_sgd with TrainConfig's
defaults), so only the layers differ. One step: PGD on half the batch, the training forward,
backward and the optimizer step.

Cases (batch 128):
- small_cnn_digits: SmallCNN on the embedded digits training split (1,437 images, 11 full
  batches per epoch, no augmentation);
- resnet20_cifar_shape: ResNet-20 on random 32x32x3 inputs and labels (timing only), the epoch
  extrapolated to CIFAR-10's 50,000 training images (390 full batches).

Run through `python benchmarks/report.py` (pytest-benchmark medians of a few steps per variant),
or `python benchmarks/test_float_training.py [rounds]`, which times the variants in interleaved
rounds (every variant once per round, rotating order; a round of small_cnn_digits is a whole
epoch) and prints ms/step, s/epoch and the ratio eager / ours. On a shared 2-core machine
`OMP_NUM_THREADS=1` gives the steadier ratio (two threads wait on each other's time slices).
"""

import copy
import sys

import pytest
import torch
from float_reference import EagerFLOATTraining, to_eager_float_model
from timing import DEVICE, interleaved_medians, pedantic, trainer_step

from robustkernels.api.data import load_dataset, to_unit_interval
from robustkernels.api.models import build_model
from robustkernels.api.train.float_at import FLOATTraining, to_float_model
from robustkernels.api.train.runs import model_info

BATCH = 128
CIFAR10_TRAIN_IMAGES = 50_000
VARIANTS = ("reference_eager", "robustkernels", "robustkernels_routed")


def small_cnn_digits():
    """(plain model, batches of one epoch, steps per epoch)."""
    images, labels = load_dataset("digits", "train")
    info = model_info("small-cnn", "digits", images)
    torch.manual_seed(0)
    model = build_model(info["name"], info["num_classes"], info["in_channels"], info["mean"], info["std"])
    steps = len(labels) // BATCH
    batches = [
        (
            to_unit_interval(images[i * BATCH : (i + 1) * BATCH]).to(DEVICE),
            labels[i * BATCH : (i + 1) * BATCH].to(DEVICE),
        )
        for i in range(steps)
    ]
    return model, batches, steps


def resnet20_cifar_shape():
    """(plain model, one random batch, steps of a CIFAR-10 epoch)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3)
    x = torch.rand(BATCH, 3, 32, 32, generator=generator).to(DEVICE)
    y = torch.randint(10, (BATCH,), generator=generator).to(DEVICE)
    return model, [(x, y)], CIFAR10_TRAIN_IMAGES // BATCH


CASES = {"small_cnn_digits": small_cnn_digits, "resnet20_cifar_shape": resnet20_cifar_shape}


def training_steps(case: str) -> tuple[dict, int, int]:
    """({variant: step()}, batches in the case, steps per epoch); each step() trains one batch,
    cycling through the case's batches."""
    plain, batches, epoch_steps = CASES[case]()
    models = {
        "reference_eager": (to_eager_float_model(copy.deepcopy(plain)), EagerFLOATTraining()),
        "robustkernels": (to_float_model(copy.deepcopy(plain)), FLOATTraining()),  # forward="auto"
        "robustkernels_routed": (to_float_model(copy.deepcopy(plain)), FLOATTraining(forward="routed")),
    }
    return {name: trainer_step(*models[name], batches) for name in VARIANTS}, len(batches), epoch_steps


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", list(CASES))
def test_float_training(benchmark, case, variant):
    step = training_steps(case)[0][variant]
    step()  # warm-up
    benchmark.group = f"float_training {case} train_step"
    benchmark.extra_info.update(op="float_training", case=case, passes="train_step", variant=variant)
    pedantic(benchmark, step, rounds=3, iterations=1, warmup_rounds=1)


SPEEDUP_TARGET = 1.0  # issue 6: FLOAT on robustkernels trains faster than on the eager layers


def interleaved(rounds: int = 5) -> dict:
    """{case: {variant: median seconds per step}, "epoch_steps": ...}: per case, rounds in which
    every variant trains once over the case's batches (rotating order), after one warm-up pass."""
    medians = {}
    for case in CASES:
        steps, per_round, epoch_steps = training_steps(case)
        medians[case] = (interleaved_medians(steps, rounds, per_round), epoch_steps)
    return medians


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    medians = interleaved(rounds)
    print(f"device {DEVICE}; torch {torch.__version__}; threads {torch.get_num_threads()}; {rounds} rounds")
    print(f"{'case':<22} {'variant':<16} {'ms/step':>9} {'steps/epoch':>12} {'s/epoch':>9}")
    for case, (by_variant, epoch_steps) in medians.items():
        for variant, seconds in by_variant.items():
            print(
                f"{case:<22} {variant:<16} {seconds * 1e3:>9.1f} {epoch_steps:>12} {seconds * epoch_steps:>9.2f}"
            )
    print(f"speed-up, eager / ours (target >= {SPEEDUP_TARGET} for the default, forward='auto'):")
    for case, (by_variant, _) in medians.items():
        for variant in VARIANTS[1:]:
            speedup = by_variant["reference_eager"] / by_variant[variant]
            verdict = (
                ("met" if speedup >= SPEEDUP_TARGET else "NOT MET") if variant == "robustkernels" else ""
            )
            print(f"  {case} {variant}: {speedup:.3f} {verdict}")


if __name__ == "__main__":
    main()
