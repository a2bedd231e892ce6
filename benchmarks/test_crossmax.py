"""Benchmarks of CrossMax: reference eager, torch.compile(reference), robustkernels.

Run through `python benchmarks/report.py`, which prints the ratios and writes
benchmarks/results/<machine>.csv. The eager reference is the public notebook's
max / max / topk sequence (robustkernels.reference.crossmax), k = 3, "kth".
"""

import pytest
import torch
from timing import DEVICE, pedantic, sync

import robustkernels.functional as rkF
from robustkernels import reference

SHAPES = [(8, 512, 100), (16, 128, 1000)]  # [N predictors, B samples, C classes]
K = 3


def _variants():
    def reference_eager(x):
        return reference.crossmax(x, K, "kth")

    def robustkernels_op(x):
        return rkF.crossmax(x, k=K, reduction="kth")

    return {
        "reference_eager": reference_eager,
        "reference_compiled": torch.compile(reference_eager),
        "robustkernels": robustkernels_op,
    }


VARIANTS = _variants()


def _run(fn, logits, backward):
    def step():
        out = fn(logits)
        if backward:
            out.backward(torch.ones_like(out))
            logits.grad = None
        sync()

    return step


@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_crossmax(benchmark, shape, variant, passes):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(shape, generator=gen) * 3).to(DEVICE).requires_grad_(True)
    step = _run(VARIANTS[variant], logits, passes == "forward_backward")
    if passes == "forward":
        step = torch.no_grad()(step)
    step()  # warm-up (and compilation for the compiled reference)
    case = "x".join(map(str, shape))
    benchmark.group = f"crossmax {case} {passes}"
    benchmark.extra_info.update(op="crossmax", case=case, passes=passes, variant=variant)
    pedantic(benchmark, step, rounds=20, iterations=5, warmup_rounds=2)
