"""Benchmarks of EED's inference: the team as one batched network, and dynamic inference.

Run through `python benchmarks/report.py`, or `python benchmarks/test_eed_team.py [rounds]`,
which times the variants of each case in interleaved rounds (every variant once per round,
rotating order) and prints the target ratios.

Cases (a ResNet-20 for 32x32 inputs, members pruned to 5 % density by ERM top-k with their own
batch-norm statistics, evaluation, batch 256, forward only):
- eed_team M=3 and M=4: TeamNetwork (the members' masked weights stacked into EnsembleConv2d /
  PathLinear, batch norm folded into the convolutions, EnsembleModel's stacked layout) against
  the members one after another as trained (the library's masked layers with batch norm) and
  one after another as folded plain models (the fairest sequential baseline);
- eed_dynamic M=4: DynamicEnsemble (compacting the batch after each member) with tau_c set so
  that half of the samples stop after the first member (the rest once their running average is
  confident enough), against the full team run member
  by member on every sample. The target compares its time with (mean members used / M) of the
  full team's.
"""

import sys

import pytest
import torch
from timing import DEVICE, interleaved_medians, pedantic, sync
from torch import nn

from robustkernels.api.eed.criteria import erm_scores
from robustkernels.api.eed.dynamic import DynamicEnsemble
from robustkernels.api.eed.masks import apply_masks, global_topk_masks
from robustkernels.api.eed.team import TeamNetwork, plain_copy
from robustkernels.api.models import resnet20

BATCH, DENSITY = 256, 0.05


def _members(count: int) -> list[nn.Module]:
    members = []
    for k in range(count):
        torch.manual_seed(k)
        model = resnet20().to(DEVICE)
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 2.0)
        members.append(apply_masks(model.eval(), global_topk_masks(erm_scores(model), DENSITY)))
    return members


def team_variants(count: int) -> dict:
    members = _members(count)
    x = torch.rand(BATCH, 3, 32, 32, device=DEVICE)
    folded = [plain_copy(m, x[:1]) for m in members]
    team = TeamNetwork(members, x[:1])
    return {
        "sequential_masked": lambda: torch.stack([m(x) for m in members]),
        "sequential_folded": lambda: torch.stack([m(x) for m in folded]),
        "team_batched": lambda: team(x),
    }


def dynamic_variants(count: int = 4) -> dict:
    members = _members(count)
    x = torch.rand(BATCH, 3, 32, 32, device=DEVICE)
    with torch.no_grad():
        confidence = members[0](x).softmax(dim=1).amax(dim=1).square()
    # half of the samples pass the confidence test after member 1; tau_u = inf: the rest stop as soon
    # as their running average passes it
    dynamic = DynamicEnsemble(members, tau_u=float("inf"), tau_c=float(confidence.median()))
    full = DynamicEnsemble(members, dynamic=False)
    return {"full_team": lambda: full(x), "dynamic": lambda: dynamic(x), "_model": dynamic, "_x": x}


CASES = {
    ("eed_team", "m3"): lambda: team_variants(3),
    ("eed_team", "m4"): lambda: team_variants(4),
    ("eed_dynamic", "m4"): lambda: dynamic_variants(4),
}


def _params():
    for op, case in CASES:
        names = (
            ["sequential_masked", "sequential_folded", "team_batched"]
            if op == "eed_team"
            else ["full_team", "dynamic"]
        )
        for variant in names:
            yield pytest.param(op, case, variant, id=f"{op}-{case}-{variant}")


def _step(fn):
    @torch.no_grad()
    def step():
        fn()
        sync()

    return step


@pytest.mark.parametrize(("op", "case", "variant"), list(_params()))
def test_eed_inference(benchmark, op, case, variant):
    step = _step(CASES[(op, case)]()[variant])
    step()
    benchmark.group = f"{op} {case}"
    benchmark.extra_info.update(op=op, case=case, variant=variant)
    pedantic(benchmark, step, rounds=5, iterations=1, warmup_rounds=1)


def interleaved(rounds: int = 7) -> tuple[dict, float]:
    """Median seconds per case and variant over interleaved rounds, and the dynamic case's mean
    members used."""
    medians, used = {}, None
    for key, make in CASES.items():
        variants = make()
        if "_model" in variants:
            with torch.no_grad():
                variants["_model"](variants["_x"])
            used = float(variants["_model"].members_used.float().mean())
        steps = {n: _step(fn) for n, fn in variants.items() if not n.startswith("_")}
        medians[key] = interleaved_medians(steps, rounds)
    return medians, used


def main() -> None:
    medians, used = interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
    print(f"device {DEVICE}; torch {torch.__version__}; threads {torch.get_num_threads()}; batch {BATCH}")
    for (op, case), by_variant in medians.items():
        for variant, seconds in by_variant.items():
            print(f"{op:<12} {case:<4} {variant:<18} {seconds * 1e3:>10.2f} ms")
    print("targets:")
    for case in ("m3", "m4"):
        by_variant = medians[("eed_team", case)]
        for baseline in ("sequential_masked", "sequential_folded"):
            ratio = by_variant[baseline] / by_variant["team_batched"]
            print(
                f"  eed_team {case}: {baseline} / team_batched = {ratio:.3f} (target >= 1.5) {'met' if ratio >= 1.5 else 'NOT MET'}"
            )
    by_variant = medians[("eed_dynamic", "m4")]
    share = by_variant["dynamic"] / by_variant["full_team"]
    bound = 1.2 * used / 4
    print(f"  eed_dynamic m4: dynamic / full_team = {share:.3f} with {used:.2f} of 4 members used on average; "
          f"target <= 1.2 x {used / 4:.3f} = {bound:.3f} {'met' if share <= bound else 'NOT MET'}")  # fmt: skip


if __name__ == "__main__":
    main()
