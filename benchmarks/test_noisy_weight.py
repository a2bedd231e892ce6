"""Benchmarks of the noisy / masked weight family: reference eager, torch.compile(reference), robustkernels.

Run through `python benchmarks/report.py`, which prints the ratios and writes
benchmarks/results/<machine>.csv. The eager reference is written the way PNI's
public code writes it (torch's generator, std over the weight); the plain
F.conv2d row is the floor noisy_conv2d is measured against.
"""

import pytest
import torch
import torch.nn.functional as F
from timing import DEVICE, pedantic, sync

import robustkernels.functional as rkF
from robustkernels import reference

CONV_SHAPES = [16, 32, 64]  # ResNet-style 3x3, channels in = out, batch 128, 32x32
CONV_BATCH, CONV_SIZE = 128, 32
WEIGHT_SHAPES = [(64, 64, 3, 3), (256, 256, 3, 3), (512, 512, 3, 3)]


def _conv_case(channels):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(CONV_BATCH, channels, CONV_SIZE, CONV_SIZE, generator=gen).to(DEVICE)
    weight = (torch.randn(channels, channels, 3, 3, generator=gen) * 0.05).to(DEVICE).requires_grad_(True)
    alpha = torch.full((1,), 0.25, device=DEVICE, requires_grad=True)
    x.requires_grad_(True)
    return x, weight, alpha


def _conv_variants():
    def plain(x, w, a):
        return F.conv2d(x, w, None, 1, 1)

    def pni_eager(x, w, a):
        return reference.pni_noisy_conv2d(x, w, None, a, 1.0, None, 1, 1)

    pni_compiled = torch.compile(pni_eager)

    def robustkernels_op(x, w, a):
        return rkF.noisy_conv2d(x, w, None, a, lam=1.0, seed=int(torch.randint(2**62, (1,))), padding=1)

    return {
        "plain_conv2d": plain,
        "reference_eager": pni_eager,
        "reference_compiled": pni_compiled,
        "robustkernels": robustkernels_op,
    }


CONV_VARIANTS = _conv_variants()


def _run(fn, args, backward):
    def step():
        out = fn(*args)
        if backward:
            out.backward(torch.ones_like(out))
            for t in args:
                t.grad = None
        sync()

    return step


@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
@pytest.mark.parametrize("variant", list(CONV_VARIANTS))
@pytest.mark.parametrize("channels", CONV_SHAPES)
def test_noisy_conv2d(benchmark, channels, variant, passes):
    args = _conv_case(channels)
    step = _run(CONV_VARIANTS[variant], args, passes == "forward_backward")
    if passes == "forward":
        step = torch.no_grad()(step)
    step()  # warm-up (and compilation for the compiled reference)
    benchmark.group = f"noisy_conv2d b{CONV_BATCH} c{channels} {CONV_SIZE}x{CONV_SIZE} {passes}"
    benchmark.extra_info.update(op="noisy_conv2d", case=f"c{channels}", passes=passes, variant=variant)
    pedantic(benchmark, step, rounds=7, iterations=1, warmup_rounds=2)


def _weight_variants():
    def pni_eager(w, a):
        return reference.pni_noisy_weight(w, a, 1.0)

    def robustkernels_op(w, a):
        return rkF.noisy_weight(w, a, lam=1.0, seed=int(torch.randint(2**62, (1,))))

    return {
        "reference_eager": pni_eager,
        "reference_compiled": torch.compile(pni_eager),
        "robustkernels": robustkernels_op,
    }


WEIGHT_VARIANTS = _weight_variants()


@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
@pytest.mark.parametrize("variant", list(WEIGHT_VARIANTS))
@pytest.mark.parametrize("shape", WEIGHT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_noisy_weight(benchmark, shape, variant, passes):
    weight = (torch.randn(shape) * 0.05).to(DEVICE).requires_grad_(True)
    alpha = torch.full((1,), 0.25, device=DEVICE, requires_grad=True)
    step = _run(WEIGHT_VARIANTS[variant], (weight, alpha), passes == "forward_backward")
    if passes == "forward":
        step = torch.no_grad()(step)
    step()
    case = "x".join(map(str, shape))
    benchmark.group = f"noisy_weight {case} {passes}"
    benchmark.extra_info.update(op="noisy_weight", case=case, passes=passes, variant=variant)
    pedantic(benchmark, step, rounds=20, iterations=5, warmup_rounds=2)
