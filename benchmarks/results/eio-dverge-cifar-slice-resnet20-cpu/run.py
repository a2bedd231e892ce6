"""A reduced CPU run of reproduce eio dverge on the CIFAR-10 slice with the `small` budget's ResNet-20
(see README.md): `OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python run.py OUT`."""

import sys
import time
from dataclasses import replace

from robustkernels.api.reproduce.ensemble_budgets import ensemble_budget_for
from robustkernels.api.reproduce.ensemble_results import format_ensemble_table, write_ensemble_results
from robustkernels.api.reproduce.ensembles import reproduce_ensembles

budget = replace(
    ensemble_budget_for("small", "cifar10"), name="cifar-slice-resnet20-cpu", surrogate_steps=600,
    baseline_steps=600, pretrain_steps=300, diversify_steps=160, finetune_steps=40, eval_images=300,
    transfer_steps=30, whitebox_steps=10, distill_steps=5,
)  # fmt: skip
started = time.perf_counter()
results = reproduce_ensembles(
    ["eio", "dverge"], budget, sys.argv[1], dataset="cifar10", data_dir="/work/shared/data/cifar-10-subset",
    log=lambda line: print(line, flush=True),
)  # fmt: skip
results["settings"]["seconds"] = time.perf_counter() - started
write_ensemble_results(results, sys.argv[1])
print(format_ensemble_table(results))
print(results["settings"]["seconds"], "s")
