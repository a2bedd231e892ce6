"""The noisy conv layers' forward+backward against plain F.conv2d, eager and inside a CUDA graph
(issue 13's GPU targets: at most 1.15x eager, 1.05x in a graph, batch 128, 16 to 64 channels).

    python benchmarks/cuda_graph_conv.py [--replays N] [--out CSV]

Variants, each one step of forward, backward of sum(y^2) and nothing else:
  plain_conv2d   F.conv2d on a fixed weight
  noisy_conv2d   a NoisyConv2d layer (PNI's noisy conv)
  float_split    FLOAT's dual-path layer (MaskedExpertConv2d without masks, route="split": half the
                 batch clean, half on W + lam * alpha * std(W) * eta)
Both keep their seed stream on the GPU (robustkernels/nn/seeds.py), so each replay draws fresh
noise, as eager calls do.
Each is timed with CUDA events over N steps, eager and as replays of a graph captured after a
warm-up on a side stream (torch.cuda.graphs' recipe). A variant that cannot be captured gets its
error in the row instead of a time. Needs a CUDA GPU.
"""

import argparse
import csv
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from robustkernels.nn import MaskedExpertConv2d, NoisyConv2d

BATCH, SIZE = 128, 32
CHANNELS = (16, 32, 64)
TARGETS = {"eager": 1.15, "graph": 1.05}


def _variants(channels: int) -> dict:
    """{name: (step(x), parameters whose gradients the step computes)}."""
    weight = (torch.randn(channels, channels, 3, 3, device="cuda") * 0.05).requires_grad_(True)
    noisy_layer = NoisyConv2d(channels, channels, 3, padding=1, bias=False).to("cuda")
    float_layer = MaskedExpertConv2d(
        channels, channels, 3, padding=1, bias=False, density=None, route="split"
    )
    float_layer = float_layer.to("cuda")

    def plain(x):
        F.conv2d(x, weight, None, 1, 1).square().sum().backward()

    def noisy(x):
        noisy_layer(x).square().sum().backward()

    def float_split(x):
        float_layer(x).square().sum().backward()

    return {
        "plain_conv2d": (plain, [weight]),
        "noisy_conv2d": (noisy, list(noisy_layer.parameters())),
        "float_split": (float_split, list(float_layer.parameters())),
    }


def _time_ms(run, steps: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        run()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / steps


def _graph_of(step, x, parameters):
    """The step captured in a CUDA graph (gradients land in the graph's own .grad tensors)."""
    leaves = [x, *parameters]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            for leaf in leaves:
                leaf.grad = None
            step(x)
    torch.cuda.current_stream().wait_stream(side)
    for leaf in leaves:
        leaf.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(x)
    return graph


def measure(replays: int) -> list[dict]:
    rows = []
    for channels in CHANNELS:
        x = torch.randn(BATCH, channels, SIZE, SIZE, device="cuda", requires_grad=True)
        times: dict[tuple[str, str], float | str] = {}
        for name, (step, parameters) in _variants(channels).items():
            for _ in range(3):
                step(x)
            times[name, "eager"] = _time_ms(lambda step=step, x=x: step(x), replays)
            try:
                graph = _graph_of(step, x, parameters)
                graph.replay()
                times[name, "graph"] = _time_ms(graph.replay, replays)
            except RuntimeError as error:  # a variant that cannot be captured: its reason
                times[name, "graph"] = f"not captured: {str(error).splitlines()[0]}"
                torch.cuda.synchronize()
        for name in ("noisy_conv2d", "float_split"):
            for mode, target in TARGETS.items():
                ours, plain = times[name, mode], times["plain_conv2d", mode]
                ratio = ours / plain if isinstance(ours, float) and isinstance(plain, float) else None
                rows.append(
                    {
                        "case": f"b{BATCH} c{channels} {SIZE}x{SIZE}",
                        "variant": name,
                        "mode": mode,
                        "ms": f"{ours:.4f}" if isinstance(ours, float) else ours,
                        "plain_ms": f"{plain:.4f}" if isinstance(plain, float) else plain,
                        "ratio": "" if ratio is None else f"{ratio:.3f}",
                        "target": f"<= {target}",
                        "met": "" if ratio is None else ratio <= target,
                    }
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replays", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True, help="the results CSV")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("cuda_graph_conv: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 1
    rows = measure(args.replays)
    for row in rows:
        verdict = "" if row["met"] == "" else "met" if row["met"] else "NOT MET"
        print(f"{row['case']:<18} {row['variant']:<13} {row['mode']:<6} {row['ms']:>9} ms "
              f"(plain {row['plain_ms']}) {row['ratio']:>6} {row['target']} {verdict}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
