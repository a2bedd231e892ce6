"""A reduced CPU run of `reproduce eee` on the CIFAR-10 slice with the `small` budget's ResNet-20
(see README.md): `OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python run.py OUT`."""

import sys
import time
from dataclasses import replace

from robustkernels.api.reproduce.eee import eee_budget, reproduce_eee
from robustkernels.api.reproduce.eee_results import format_eee_tables, write_eee_results

BUDGET = replace(
    eee_budget("small", "cifar10"), name="cifar-slice-resnet20-cpu", train_steps=800, eval_images=100,
    rand_eot_draws=10, adaptive_eot_draws=20, draws=5, square_queries=200, target_classes=3, ensemble_models=3,
)  # fmt: skip


def run(budget, out: str) -> None:
    started = time.perf_counter()
    results = reproduce_eee(
        budget, out, dataset="cifar10", data_dir="/work/shared/data/cifar-10-subset",
        log=lambda line: print(f"[{time.perf_counter() - started:7.0f} s] {line}", flush=True),
    )  # fmt: skip
    results["settings"]["seconds"] = time.perf_counter() - started
    write_eee_results(results, out)
    print(format_eee_tables(results))
    print(results["settings"]["seconds"], "s")


if __name__ == "__main__":
    run(BUDGET, sys.argv[1])
