"""What every benchmark shares: the device it runs on, the synchronisation that makes a GPU
step's time its own, and the rounds it is timed over.

ROBUSTKERNELS_BENCH_ROUNDS=N (set by `report.py --rounds N`) caps every benchmark at N rounds of
one iteration after one warm-up round: a short run that still compiles and times every variant
(`./run.sh gpu-check` uses it); unset, each benchmark runs its own rounds.
"""

import os
import time

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROUNDS_VARIABLE = "ROBUSTKERNELS_BENCH_ROUNDS"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def round_cap() -> int | None:
    """The rounds every benchmark is capped at, or None for each benchmark's own."""
    value = os.environ.get(ROUNDS_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ROUNDS_VARIABLE} must be a positive integer, got {value!r}")
    return int(value)


def capped_rounds(default: int) -> int:
    """`default`, or the cap when one is set and smaller."""
    cap = round_cap()
    return default if cap is None else min(default, cap)


def pedantic(benchmark, step, *, rounds: int, iterations: int, warmup_rounds: int) -> None:
    """benchmark.pedantic with the given rounds, or the short run's under a round cap."""
    if round_cap() is None:
        benchmark.pedantic(step, rounds=rounds, iterations=iterations, warmup_rounds=warmup_rounds)
    else:
        benchmark.pedantic(step, rounds=capped_rounds(rounds), iterations=1, warmup_rounds=1)


def interleaved_times(steps: dict, rounds: int, calls: int = 1) -> dict:
    """{name: [seconds per call in each round]} of each step {name: callable} over `rounds` rounds in
    which every step runs `calls` times, the order rotating per round (drift on a shared machine
    hits every variant alike); each step runs once first as a warm-up."""
    for step in steps.values():
        step()
    names = list(steps)
    times = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(calls):
                steps[name]()
            times[name].append((time.perf_counter() - start) / calls)
    return times


def median(values) -> float:
    return sorted(values)[len(values) // 2]


def interleaved_medians(steps: dict, rounds: int, calls: int = 1) -> dict:
    """Median seconds per call of each step over interleaved rounds (interleaved_times)."""
    return {name: median(t) for name, t in interleaved_times(steps, rounds, calls).items()}


def paired_ratio(numerator: list, denominator: list) -> str:
    """The median of the per-round ratios of two variants' interleaved_times and their middle half
    (the two ran back to back in each round, so a drift in the machine's speed cancels there)."""
    ratios = sorted(a / b for a, b in zip(numerator, denominator, strict=True))
    quarter = len(ratios) // 4
    return f"{median(ratios):.3f} (middle half of {len(ratios)} rounds {ratios[quarter]:.3f}-{ratios[-1 - quarter]:.3f})"


def trainer_step(model, method, batches):
    """method_step with SGD at TrainConfig's defaults on the model (moved to the device, in training mode)."""
    from robustkernels.api.train import TrainConfig, build_sgd

    config = TrainConfig()
    model.to(DEVICE).train()
    optimizer = build_sgd(
        model, config.lr, config.momentum, config.weight_decay, config.no_weight_decay, config.nesterov
    )
    return method_step(model, method, batches, optimizer, config.seed)


def method_step(model, method, batches, optimizer, seed: int = 0):
    """step(): one trainer step of a training method (its loss on the next of `batches`, cycling,
    with the trainer's per-step generator and start_step hook, backward, optimizer step)."""
    from robustkernels.api.train import derived_generator  # the method layer, only for these benchmarks

    done = [0]

    def step():
        x, y = batches[done[0] % len(batches)]
        generator = derived_generator(seed, "method", done[0], device=DEVICE)
        if hasattr(method, "start_step"):
            method.start_step(done[0], 0)
        loss, _ = method.loss(model, x, y, attack_model=model, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done[0] += 1
        sync()

    return step
