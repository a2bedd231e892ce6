"""Training one method for another's wall-clock time (spec A.6: DVERGE-3 for EIO's): the steps of
the target method that cost what the reference's training stages cost.

Seconds per step come from probes of every stage and of the target, run side by side in rotating
rounds on throwaway models, so the machine's load of the moment, a stopped and resumed run or a
faster machine weigh on both sides alike (the reference's own measured time would carry all three).
A distillation step's cost grows with its layer, and both EIO and DVERGE draw the layer uniformly:
their probes distil at the middle of the range each draws from (`middle_layers`).
"""

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..train import TrainConfig, train

__all__ = ["Probe", "matched_steps", "middle_layers", "seconds_per_step"]

Probe = tuple[Callable[[], torch.nn.Module], object]  # (builds a throwaway model, training method)


def middle_layers(first: int, last: int) -> list[int]:
    """The layers whose mean cost is that of a layer drawn uniformly from first..last (the two
    around the middle when it falls between them)."""
    return sorted({(first + last) // 2, (first + last + 1) // 2})


def seconds_per_step(
    probes: Sequence[Probe], train_data, config: TrainConfig, rounds: int = 3
) -> list[float]:
    """Median seconds of each probe's second step over `rounds` rounds, every probe once per round
    in rotating order. config must run 3 steps: the first warms up, the third (the last) also writes
    a checkpoint, so neither is timed."""
    if config.max_steps != 3:
        raise ValueError(f"the probes run 3 steps, got a config of {config.max_steps}")
    times = [[] for _ in probes]
    for r in range(rounds):
        for i in [(r + k) % len(probes) for k in range(len(probes))]:
            build, method = probes[i]
            stamps = []
            with tempfile.TemporaryDirectory() as scratch:
                train(build(), method, train_data, config, scratch, log=None,
                      on_step=lambda _step: stamps.append(time.perf_counter()))  # noqa: B023  # fmt: skip
            times[i].append(stamps[1] - stamps[0])
    return [sorted(t)[len(t) // 2] for t in times]


def matched_steps(
    record: Path,
    reference: Sequence[tuple[int, Sequence[Probe]]],
    target: Sequence[Probe],
    measure: Callable[[list[Probe]], list[float]],
    log: Callable[[str], None],
) -> int:
    """The target's steps that cost what `reference` does: (steps, probes) per stage, a stage's
    (and the target's) seconds per step the mean over its probes, measure(probes) -> seconds per
    step of each. Decided once and kept in `record`: a re-run reuses the count (its models were
    trained with it) while the reference's step counts are the same."""
    reference_steps = [s for s, _ in reference]
    if record.exists():
        kept = json.loads(record.read_text())
        if kept["reference_steps"] == reference_steps:
            log(f"{record.parent.name}: {kept['steps']} matched steps, as decided before ({record})")
            return kept["steps"]
    probes = [p for _, stage in reference for p in stage] + list(target)
    measured = iter(measure(probes))
    stage_seconds = [sum(next(measured) for _ in stage) / len(stage) for _, stage in reference]
    per_step = sum(measured) / len(target)
    cost = sum(steps * t for (steps, _), t in zip(reference, stage_seconds, strict=True))
    steps = max(1, round(cost / per_step))
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_suffix(".partial")
    partial.write_text(json.dumps({"steps": steps, "seconds_per_step": per_step, "matched_seconds": cost,
                                   "reference_steps": reference_steps,
                                   "reference_seconds_per_step": stage_seconds}))  # fmt: skip
    partial.replace(record)
    log(f"{record.parent.name}: {per_step:.3f} s per step, {steps} steps in the {cost:.1f} s that "
        f"{reference_steps} reference steps take at {[round(t, 3) for t in stage_seconds]} s each")  # fmt: skip
    return steps
