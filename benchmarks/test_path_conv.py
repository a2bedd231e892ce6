"""Benchmarks of the routed multi-path layers.

Run through `python benchmarks/report.py` (pytest-benchmark medians, one variant at a time), or
`python benchmarks/test_path_conv.py`, which times the variants of each case in interleaved rounds
(every variant once per round, rotating order) and prints the target ratios: on a shared machine
that exposes all variants of a case to the same drift.

Cases (ResNet-style 3x3 layers, batch 128, 64 channels, 32x32):
- path_conv2d: P=4 paths, a random per-sample route, forward+backward, against one plain conv over
  the same batch, every path on every sample then select (a direct port of a gated block), and the
  hand-written eager loop over paths with index_select / index_copy_ (reference_eager);
- path_conv2d_float: FLOAT's dual path, clean first half and noisy second half of one weight,
  against one plain conv and the eager clean conv + PNI-style noisy conv on the halves;
- path_ensemble: K=8 masked sub-models of a small ResNet evaluated as one batched network
  (convert_ensemble + EnsembleModel: the stacked layout, channels_last; split_layout stacks
  the copies along the batch instead) against the 8 plain models one after another (in the
  default memory format, and in channels_last).
"""

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from timing import DEVICE, interleaved_medians, pedantic, sync
from torch import nn

import robustkernels.functional as rkF
import robustkernels.nn as rnn
from robustkernels import reference
from robustkernels.reference import path_conv as path_reference

BATCH, CHANNELS, SIZE, PATHS = 128, 64, 32, 4
MEMBERS = 8
ENSEMBLE_BATCHES = (32, 256)


def _conv_inputs(paths=PATHS):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE, generator=gen).to(DEVICE).requires_grad_(True)
    bank = (
        (torch.randn(paths, CHANNELS, CHANNELS, 3, 3, generator=gen) * 0.05).to(DEVICE).requires_grad_(True)
    )
    route = torch.randint(paths, (BATCH,), generator=gen).to(DEVICE)
    return x, bank, route


def random_route_variants():
    x, bank, route = _conv_inputs()
    plain_weight = bank[0].detach().clone().requires_grad_(True)
    index_loop = lambda: path_reference.index_loop_conv2d(x, bank, route, padding=1)  # noqa: E731
    return {
        "plain_conv2d": (lambda: F.conv2d(x, plain_weight, None, 1, 1), (x, plain_weight)),
        "every_path": (lambda: path_reference.every_path_conv2d(x, bank, route, padding=1), (x, bank)),
        "reference_eager": (index_loop, (x, bank)),
        "reference_compiled": (torch.compile(index_loop), (x, bank)),
        "robustkernels": (lambda: rkF.path_conv2d(x, bank, route, padding=1), (x, bank)),
    }


def float_variants():
    x, bank, _ = _conv_inputs(1)
    weight = bank[0].detach().clone().requires_grad_(True)
    alpha = torch.full((1,), 0.25, device=DEVICE, requires_grad=True)
    half = BATCH // 2

    def eager():
        clean = F.conv2d(x[:half], weight, None, 1, 1)
        return torch.cat([clean, reference.pni_noisy_conv2d(x[half:], weight, None, alpha, 1.0, None, 1, 1)])

    def ours():
        noise = (torch.cat([torch.zeros_like(alpha), alpha]).reshape(2, 1), [0.0, 1.0], [0, 7])
        return rkF.path_conv2d(x, weight, "split", noise=noise, padding=1)

    return {
        "plain_conv2d": (lambda: F.conv2d(x, weight, None, 1, 1), (x, weight)),
        "reference_eager": (eager, (x, weight, alpha)),
        "reference_compiled": (torch.compile(eager), (x, weight, alpha)),
        "robustkernels": (ours, (x, weight, alpha)),
    }


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def small_resnet(classes=10):
    """A ResNet-8 for 32x32 inputs: stem 16, stages 16 / 32 / 64 of one basic block each."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        BasicBlock(16, 16, 1),
        BasicBlock(16, 32, 2),
        BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


def ensemble_variants(batch):
    torch.manual_seed(0)
    base = small_resnet().to(DEVICE).eval()
    members = [copy.deepcopy(base) for _ in range(MEMBERS)]
    for member in members:  # different weights per member, as EED's pruned sub-models have
        with torch.no_grad():
            for p in member.parameters():
                p.add_(torch.randn_like(p) * 0.01)
    converted = rnn.convert_ensemble(copy.deepcopy(base), MEMBERS, density=0.5).eval()
    stacked = rnn.EnsembleModel(converted, MEMBERS)
    split = rnn.EnsembleModel(converted, MEMBERS, layout="split")
    members_cl = [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in members]
    x = torch.randn(batch, 3, 32, 32, device=DEVICE)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    return {
        "sequential": (lambda: torch.stack([m(x) for m in members]), ()),
        "sequential_channels_last": (lambda: torch.stack([m(x_cl) for m in members_cl]), ()),
        "split_layout": (lambda: split(x), ()),
        "robustkernels": (lambda: stacked(x), ()),
    }


def _step(fn, inputs, backward):
    def step():
        out = fn()
        if backward:
            out.backward(torch.ones_like(out))
            for t in inputs:
                t.grad = None
        sync()

    return step if backward else torch.no_grad()(step)


CASES = {
    ("path_conv2d", f"p{PATHS}_b{BATCH}_c{CHANNELS}", "forward_backward"): random_route_variants,
    ("path_conv2d_float", f"b{BATCH}_c{CHANNELS}", "forward_backward"): float_variants,
    **{
        ("path_ensemble", f"k{MEMBERS}_b{b}", "forward"): (lambda b=b: ensemble_variants(b))
        for b in ENSEMBLE_BATCHES
    },
}
_VARIANTS = {
    "path_conv2d": ["plain_conv2d", "every_path", "reference_eager", "reference_compiled", "robustkernels"],
    "path_conv2d_float": ["plain_conv2d", "reference_eager", "reference_compiled", "robustkernels"],
    "path_ensemble": ["sequential", "sequential_channels_last", "split_layout", "robustkernels"],
}


def _params():
    for (op, case, passes), _ in CASES.items():
        for variant in _VARIANTS[op]:
            yield pytest.param(op, case, passes, variant, id=f"{op}-{case}-{passes}-{variant}")


@pytest.mark.parametrize(("op", "case", "passes", "variant"), list(_params()))
def test_path_conv(benchmark, op, case, passes, variant):
    fn, inputs = CASES[(op, case, passes)]()[variant]
    step = _step(fn, inputs, passes == "forward_backward")
    step()  # warm-up (and compilation for the compiled reference)
    benchmark.group = f"{op} {case} {passes}"
    benchmark.extra_info.update(op=op, case=case, passes=passes, variant=variant)
    pedantic(benchmark, step, rounds=5, iterations=1, warmup_rounds=1)


TARGETS = [
    ("path_conv2d", "robustkernels", "plain_conv2d", "<=", 1.25),
    ("path_conv2d", "every_path", "robustkernels", ">=", 2.0),
    ("path_conv2d", "robustkernels", "reference_eager", "<=", 1.0),
    ("path_conv2d_float", "robustkernels", "plain_conv2d", "<=", 1.15),
    ("path_ensemble", "sequential", "robustkernels", ">=", 1.5),
    ("path_ensemble", "sequential_channels_last", "robustkernels", ">=", 1.5),
]


def interleaved(rounds: int = 7) -> dict:
    """Median seconds per (op, case, passes) and eager variant, interleaved rounds per case."""
    medians = {}
    for key, make in CASES.items():
        variants = {n: v for n, v in make().items() if n != "reference_compiled"}
        steps = {n: _step(fn, inputs, key[2] == "forward_backward") for n, (fn, inputs) in variants.items()}
        medians[key] = interleaved_medians(steps, rounds)
    return medians


def main() -> None:
    medians = interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
    print(f"device {DEVICE}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    for (op, case, passes), by_variant in medians.items():
        for variant, seconds in by_variant.items():
            print(f"{op:<18} {case:<14} {passes:<17} {variant:<16} {seconds * 1e3:>10.2f} ms")
    print("targets:")
    for op, num, den, relation, bound in TARGETS:
        for (o, case, _), by_variant in medians.items():
            if o == op:
                value = by_variant[num] / by_variant[den]
                met = value <= bound if relation == "<=" else value >= bound
                print(
                    f"  {op} {case}: {num} / {den} = {value:.3f} (target {relation} {bound}) {'met' if met else 'NOT MET'}"
                )


if __name__ == "__main__":
    main()
