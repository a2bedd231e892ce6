"""Host overhead of each op: its cost over its platform counterpart on inputs so small that
kernel time is near zero (1x1x4x4 images, one thread, forward+backward on the CPU).

    python benchmarks/op_overhead.py [--rounds N] [--out CSV]

What is left is the op's Python, dispatch, autograd and launch cost, which on a GPU can exceed
a small layer's kernel. Each round times every pair once, in rotating order, on thread CPU
time (another process on the cores slows wall time, much less a thread's own time); the figure
is the median over rounds of the per-call difference. Target (issue 13): at most 20 us over.
Counterparts: F.conv2d and F.linear for the layers, the eager reference for crossmax and pgd_step,
the public recipe in eager torch (torch's generator, F.interpolate) for multires_stack.
"""

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import machine_name  # noqa: E402

import robustkernels.functional as rkF  # noqa: E402
from robustkernels import reference  # noqa: E402

TARGET_US = 20.0
CALLS_PER_ROUND = 200


def _leaf(*shape, value=None):
    t = torch.randn(*shape) if value is None else torch.full(shape, value)
    return t.requires_grad_(True)


def _pairs() -> dict[str, tuple]:
    """op -> (platform counterpart, robustkernels), each a forward+backward step."""
    x, w, a = _leaf(1, 1, 4, 4), _leaf(1, 1, 3, 3), _leaf(1, value=0.25)
    xl, wl = _leaf(1, 4), _leaf(3, 4)
    seed = torch.tensor(7)
    logits = _leaf(3, 1, 4)
    image, generator = torch.rand(1, 1, 4, 4).requires_grad_(True), torch.Generator().manual_seed(0)
    x_adv, grad, x_orig = torch.rand(1, 1, 4, 4), torch.randn(1, 1, 4, 4), torch.rand(1, 1, 4, 4)
    bank, route = _leaf(2, 1, 1, 3, 3), torch.zeros(1, dtype=torch.int64)
    linear_bank = _leaf(2, 3, 4)

    def backward(y):
        y.sum().backward()

    return {
        "noisy_conv2d": (
            lambda: backward(F.conv2d(x, w, None, 1, 1)),
            lambda: backward(rkF.noisy_conv2d(x, w, None, a, lam=1.0, seed=seed, padding=1)),
        ),
        "noisy_linear": (
            lambda: backward(F.linear(xl, wl)),
            lambda: backward(rkF.noisy_linear(xl, wl, None, a, lam=1.0, seed=seed)),
        ),
        "path_conv2d": (
            lambda: backward(F.conv2d(x, w, None, 1, 1)),
            lambda: backward(rkF.path_conv2d(x, bank, route, padding=1)),
        ),
        # EIO's gated layers: the whole batch on one path, given as an index (no route sort)
        "path_conv2d_index": (
            lambda: backward(F.conv2d(x, w, None, 1, 1)),
            lambda: backward(rkF.path_conv2d(x, bank, 0, padding=1)),
        ),
        "path_linear": (
            lambda: backward(F.linear(xl, wl)),
            lambda: backward(rkF.path_linear(xl, linear_bank, route)),
        ),
        "crossmax": (
            lambda: backward(reference.crossmax(logits, k=2)),
            lambda: backward(rkF.crossmax(logits, k=2)),
        ),
        # the counterpart: the public recipe in eager torch, with torch's generator
        "multires_stack": (
            lambda: backward(reference.multires_stack(image, (4, 2), generator=generator)),
            lambda: backward(rkF.multires_stack(image, (4, 2), seed=7)),
        ),
        "pgd_step": (
            lambda: reference.pgd_step(x_adv, grad, x_orig, step=0.01, eps=0.03),
            lambda: rkF.pgd_step(x_adv, grad, x_orig, step=0.01, eps=0.03),
        ),
    }


def _kernel_pairs() -> dict[str, tuple]:
    """--kernels: op -> (its C++ kernel ops called directly, forward then backward, plus the sum and
    autograd pass that every forward+backward step here pays, on a leaf shaped like the op's output;
    the public function, forward+backward): what the op adds beyond its kernels (Python, dispatch,
    its autograd node). No target: a native op's node costs some of this too."""
    logits = _leaf(3, 1, 4)
    grad_out, out_leaf = torch.ones(1, 4), _leaf(1, 4)
    image = torch.rand(1, 1, 4, 4).requires_grad_(True)
    stack_leaf = _leaf(1, 2, 4, 4)
    settings = ([4, 2], [4, 2], 3)
    noise = (0.2, "uniform")
    rest = (0.5, 1.0, "bicubic", False, True, 7)
    ops = torch.ops.robustkernels

    def crossmax_kernels():
        _, class_idx, pred_idx, sel_idx = ops.crossmax_fwd_kernel(logits.detach(), 2, "kth")
        ops.crossmax_bwd_kernel(grad_out, class_idx, pred_idx, sel_idx)
        out_leaf.sum().backward()

    def multires_kernels():
        out, clip_mask = ops.multires_stack_fwd_kernel(image.detach(), *settings, *noise, *rest)
        ops.multires_stack_bwd_kernel(torch.ones_like(out), clip_mask, image.detach(), *settings, *rest)
        stack_leaf.sum().backward()

    return {
        "crossmax": (crossmax_kernels, lambda: rkF.crossmax(logits, k=2).sum().backward()),
        "multires_stack": (
            multires_kernels,
            lambda: rkF.multires_stack(image, (4, 2), seed=7).sum().backward(),
        ),
    }


def _per_call_us(step) -> float:
    start = time.thread_time()
    for _ in range(CALLS_PER_ROUND):
        step()
    return (time.thread_time() - start) / CALLS_PER_ROUND * 1e6


def measure(rounds: int, pairs: dict[str, tuple], target: bool = True) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    for op, (platform, ours) in pairs.items():
        for step in (platform, ours):
            _per_call_us(step)  # warm-up
        platform_us, ours_us = [], []
        for r in range(rounds):
            order = [(platform, platform_us), (ours, ours_us)][:: 1 if r % 2 == 0 else -1]
            for step, times in order:
                times.append(_per_call_us(step))
        platform_median, ours_median = statistics.median(platform_us), statistics.median(ours_us)
        over = statistics.median(o - p for o, p in zip(ours_us, platform_us, strict=True))
        rows.append(
            {
                "op": op,
                "platform_us": f"{platform_median:.1f}",
                "robustkernels_us": f"{ours_median:.1f}",
                "over_us": f"{over:.1f}",
                "target_us": f"<= {TARGET_US:.0f}" if target else "-",
                "met": over <= TARGET_US if target else "",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/op-overhead-<machine>.csv")
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="against the ops' own kernels called directly (crossmax, multires)",
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = measure(args.rounds, *((_kernel_pairs(), False) if args.kernels else (_pairs(), True)))
    counterpart = "kernels us" if args.kernels else "platform us"
    print(f"{'op':17s} {counterpart:>12s} {'robustkernels us':>17s} {'over us':>8s}  target")
    for row in rows:
        print(
            f"{row['op']:17s} {row['platform_us']:>12s} {row['robustkernels_us']:>17s} {row['over_us']:>8s}  "
            f"{row['target_us']} {'' if row['met'] == '' else 'met' if row['met'] else 'NOT MET'}"
        )
    suffix = "-kernels" if args.kernels else ""
    out = args.out or HERE / "results" / f"op-overhead{suffix}-{machine_name()}.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
