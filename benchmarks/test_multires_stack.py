"""Benchmarks of the multi-resolution stack: reference eager, torch.compile(reference),
robustkernels, and a STREAM-style copy that gives the machine's memory bandwidth.

Run through `python benchmarks/report.py`, which prints the ratios, the bandwidth the
op reaches as a fraction of the copy's, and writes benchmarks/results/<machine>.csv.
The eager reference (robustkernels.reference.multires_stack) is the public recipe in
vectorised torch ops: per view a channel mean, the mix, a per-image roll by gather,
two F.interpolate calls, two noise draws (torch.rand) and a clip, then one cat.
"""

import pytest
import torch
from timing import DEVICE, pedantic, sync

import robustkernels.functional as rkF
from robustkernels import reference

SHAPES = [(128, 3, 32, 32)]
RESOLUTIONS = (32, 16, 8, 4)
SEED = 1234
# 64 Mi floats per buffer: far past the caches of the development machines.
STREAM_ELEMENTS = 64 * 2**20


def _variants():
    def reference_eager(x):
        # torch's own generator: the public recipe's randomness (the Philox stream in
        # torch integer ops, which the tests use, would make the baseline look slow)
        return reference.multires_stack(
            x, RESOLUTIONS, generator=torch.Generator(device=x.device).manual_seed(SEED)
        )

    def robustkernels_op(x):
        return rkF.multires_stack(x, RESOLUTIONS, seed=SEED)

    return {
        "reference_eager": reference_eager,
        "reference_compiled": torch.compile(reference_eager),
        "robustkernels": robustkernels_op,
    }


VARIANTS = _variants()


def traffic_bytes(shape, passes: str, views: int = len(RESOLUTIONS)) -> int:
    """The least memory traffic of the op: the forward reads x and writes the stack and its
    one-bit clip mask; the backward reads the stack's gradient and the mask and writes dx."""
    b, c, h, w = shape
    image = b * c * h * w * 4
    stack = image * views
    mask = b * c * views * h * ((w + 7) // 8)
    forward = image + stack + mask
    return forward if passes == "forward" else forward + stack + mask + image


@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_multires_stack(benchmark, shape, variant, passes):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(DEVICE).requires_grad_(True)
    fn = VARIANTS[variant]
    grad = torch.ones((shape[0], shape[1] * len(RESOLUTIONS), *shape[2:]), device=DEVICE)

    def step():
        out = fn(x)
        if passes == "forward_backward":
            out.backward(grad)
            x.grad = None
        sync()

    if passes == "forward":
        step = torch.no_grad()(step)
    try:
        step()  # warm-up (and compilation for the compiled reference)
    except RuntimeError as error:
        if variant != "reference_compiled" or "isIntList" not in str(error):
            raise
        # torch 2.13: inductor's fake-tensor pass asserts on the antialiased bicubic backward
        pytest.skip(f"torch.compile cannot compile the reference's backward: {str(error).splitlines()[0]}")
    case = "x".join(map(str, shape))
    benchmark.group = f"multires_stack {case} {passes}"
    benchmark.extra_info.update(
        op="multires_stack", case=case, passes=passes, variant=variant, bytes=traffic_bytes(shape, passes)
    )
    pedantic(benchmark, step, rounds=15, iterations=3, warmup_rounds=2)


def test_stream_copy(benchmark):
    """dst.copy_(src) on buffers far larger than the caches: reads and writes 4 bytes each per element."""
    src = torch.rand(STREAM_ELEMENTS, device=DEVICE)
    dst = torch.empty_like(src)

    def step():
        dst.copy_(src)
        sync()

    step()
    benchmark.group = "stream copy"
    benchmark.extra_info.update(
        op="stream_copy",
        case=f"{STREAM_ELEMENTS}",
        passes="copy",
        variant="torch_copy",
        bytes=8 * STREAM_ELEMENTS,
    )
    pedantic(benchmark, step, rounds=10, iterations=2, warmup_rounds=1)
