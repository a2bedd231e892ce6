"""The reduced CPU run of reproduce eio dverge on the CIFAR-10 slice (see README.md):
`OMP_NUM_THREADS=1 python run.py OUT` (formatted for ruff after the run; the settings are those run)."""

import sys
import time
from dataclasses import replace

from robustkernels.api.reproduce.ensemble_budgets import ensemble_budget_for
from robustkernels.api.reproduce.ensemble_results import format_ensemble_table, write_ensemble_results
from robustkernels.api.reproduce.ensembles import reproduce_ensembles

budget = replace(
    ensemble_budget_for("smoke", "cifar10"), name="cifar-slice-cpu", batch_size=64, surrogate_sizes=(3,),
    surrogate_steps=200, baseline_steps=300, pretrain_steps=100, diversify_steps=120, finetune_steps=40,
    dverge_sizes=(3,), dverge_steps=120, eval_images=200, eps_list=(0.01, 0.03, 0.05), transfer_steps=20,
    transfer_starts=1, whitebox_steps=10, whitebox_restarts=2, eot_draws=2, draws=5, check_eps=0.03,
    distill_steps=5, match_wall_clock=True,
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
