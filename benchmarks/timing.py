"""What every benchmark shares: the device it runs on, the synchronisation that makes a GPU
step's time its own, and the rounds it is timed over.

ROBUSTKERNELS_BENCH_ROUNDS=N (set by `report.py --rounds N`) caps every benchmark at N rounds of
one iteration after one warm-up round: a short run that still compiles and times every variant
(`./run.sh gpu-check` uses it); unset, each benchmark runs its own rounds.
"""

import os

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


def trainer_step(model, method, batches):
    """step(): one step of the trainer on the next of `batches` (cycling): the method's loss with
    the trainer's per-step generator, backward and SGD with TrainConfig's defaults."""
    from robustkernels.api.train import TrainConfig, build_sgd, derived_generator

    config = TrainConfig()
    model.to(DEVICE).train()
    optimizer = build_sgd(
        model, config.lr, config.momentum, config.weight_decay, config.no_weight_decay, config.nesterov
    )
    done = [0]

    def step():
        x, y = batches[done[0] % len(batches)]
        generator = derived_generator(config.seed, "method", done[0], device=DEVICE)
        loss, _ = method.loss(model, x, y, attack_model=model, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done[0] += 1
        sync()

    return step
