"""Benchmarks of the attack step: reference eager, torch.compile(reference), robustkernels.

Run through `python benchmarks/report.py`, which prints the ratios and writes
benchmarks/results/<machine>.csv. The eager reference is the sequence attack code
writes (robustkernels.reference.pgd_step): sign or per-sample normalisation, step,
projection onto the eps ball, clamp to [0, 1]. Forward only: attacks do not
differentiate through their steps.
"""

import pytest
import torch
from timing import DEVICE, pedantic, sync

import robustkernels.functional as rkF
from robustkernels import reference

SHAPES = [(128, 3, 32, 32), (256, 3, 64, 64)]
EPS = {"linf": 8 / 255, "l2": 0.5}
STEP = {"linf": 2 / 255, "l2": 0.1}


def _variants(norm):
    def reference_eager(x_adv, grad, x_orig):
        return reference.pgd_step(x_adv, grad, x_orig, STEP[norm], EPS[norm], norm)

    def robustkernels_op(x_adv, grad, x_orig):
        return rkF.pgd_step(x_adv, grad, x_orig, step=STEP[norm], eps=EPS[norm], norm=norm)

    return {
        "reference_eager": reference_eager,
        "reference_compiled": torch.compile(reference_eager),
        "robustkernels": robustkernels_op,
    }


VARIANTS = {norm: _variants(norm) for norm in EPS}


@pytest.mark.parametrize("variant", ["reference_eager", "reference_compiled", "robustkernels"])
@pytest.mark.parametrize("norm", list(EPS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_pgd_step(benchmark, shape, norm, variant):
    gen = torch.Generator().manual_seed(0)
    x_orig = torch.rand(shape, generator=gen).to(DEVICE)
    x_adv = (x_orig + EPS[norm] * (2 * torch.rand(shape, generator=gen) - 1).to(DEVICE)).clamp(0, 1)
    grad = torch.randn(shape, generator=gen).to(DEVICE)
    fn = VARIANTS[norm][variant]

    @torch.no_grad()
    def step():
        fn(x_adv, grad, x_orig)
        sync()

    step()  # warm-up (and compilation for the compiled reference)
    case = f"{norm} {'x'.join(map(str, shape))}"
    benchmark.group = f"pgd_step {case}"
    benchmark.extra_info.update(op="pgd_step", case=case, passes="forward", variant=variant)
    pedantic(benchmark, step, rounds=20, iterations=5, warmup_rounds=2)
