"""`robustkernels reproduce METHOD`: train and evaluate a method end to end at a named budget.

    robustkernels reproduce all --budget smoke                 # minutes on a CPU, embedded digits
    robustkernels reproduce float --budget small --out runs/float
    robustkernels reproduce float pgd-at --budget small --out runs/float-vs-pgd-at
    robustkernels reproduce all --budget small --dataset cifar10 --data-dir ~/data/cifar-10
    robustkernels reproduce eee --budget smoke                 # the multires self-ensemble + CrossMax

Methods: float (one FLOAT model evaluated over lam_n in 0, 0.2, 0.7, 1 for lam_th 0 and 0.5),
smart (one SMART model evaluated on its clean and its adversarial expert path), pgd-at (one
PGD-AT model per lam of the sweep, loss (1 - lam) CE clean + lam CE adversarial), all (every
method of those), eee (alone: the multi-resolution self-ensemble with CrossMax and its model-ensemble
form, AutoAttack rand beside the adaptive evaluation; --weights a local backbone state dict,
--light-at the FGSM option). Every setting is evaluated under PGD and under an AutoAttack-style suite (standard, or
rand with EOT where the setting is noisy; there a sample is robust only if the model is right on
every one of the budget's draws, and the mean over draws is given beside). Writes into --out:
results.md and results.json (CA and RA per lam with the evaluation's sanity checks, non-zero
parameters and noise additions per path),
tradeoff.png (the CA-RA trade-off) and one training run per model (a re-run with the same
settings reuses the trained models).
"""

import argparse
import sys
import time

from ..data import DATASETS, dataset_spec
from ..optional import require
from ..reproduce import BUDGETS, METHODS, budget_for, format_table, reproduce, write_results
from ..reproduce.eee import eee_budget, reproduce_eee
from ..reproduce.eee_results import format_eee_tables, write_eee_results
from ..reproduce.runner import work_units
from ..train import resolve_device
from . import arguments
from .errors import CommandError, reports_errors

__all__ = ["add_arguments", "run_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0].replace("`", "")
    parser.epilog = "\n".join(__doc__.strip().splitlines()[2:])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "method",
        nargs="+",
        choices=[*METHODS, "all", "eee"],
        help="methods to reproduce (one or more), or all",
    )
    parser.add_argument("--weights", help="eee: a local backbone weights file (never downloaded)")
    parser.add_argument("--light-at", action="store_true", help="eee: FGSM light adversarial training")
    parser.add_argument(
        "--budget",
        choices=list(BUDGETS),
        default="smoke",
        help="how long to train and evaluate (default: smoke)",
    )
    parser.add_argument(
        "--dataset", choices=list(DATASETS), default="digits", help="(default: digits, embedded)"
    )
    parser.add_argument("--data-dir", help="directory holding the data set's files (all but digits)")
    parser.add_argument("--out", default="runs/reproduce", help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="(default: 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@reports_errors("reproduce")
def run_from_args(args: argparse.Namespace) -> int:
    if dataset_spec(args.dataset).needs_data_dir and args.data_dir is None:
        raise CommandError(f"--dataset {args.dataset} needs --data-dir (the directory holding its files)")
    if "eee" in args.method:
        return _run_eee(args)
    methods = list(METHODS) if "all" in args.method else [m for m in METHODS if m in args.method]
    budget = budget_for(args.budget, args.dataset)
    device = resolve_device(args.device)
    print(
        f"robustkernels reproduce {' '.join(args.method)}: {', '.join(methods)} at the {budget.name} budget "
        f"({budget.model} on {args.dataset}, {device}), output in {args.out}"
    )
    bar = None
    if not args.no_progress:
        bar = require("tqdm", "progress bars", "tqdm").tqdm(
            total=work_units(methods, budget), unit="step", dynamic_ncols=True, file=sys.stderr
        )
    started = time.perf_counter()
    try:
        results = reproduce(
            methods, budget, args.out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, device=device,
            progress=bar.update if bar is not None else None, log=bar.write if bar is not None else print,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    results["settings"]["seconds"] = time.perf_counter() - started
    paths = write_results(results, args.out)
    print(format_table(results))
    print(
        f"{results['settings']['seconds']:.0f} s; wrote {paths['markdown']}, {paths['json']} and {paths['plot']}"
    )
    return 0


def _run_eee(args: argparse.Namespace) -> int:
    if args.method != ["eee"]:
        raise CommandError("reproduce eee runs alone (not with other methods)")
    budget = eee_budget(args.budget, args.dataset)
    device = resolve_device(args.device)
    print(
        f"robustkernels reproduce eee at the {budget.name} budget ({budget.model} on {args.dataset}, {device})"
    )
    started = time.perf_counter()
    results = reproduce_eee(
        budget, args.out, dataset=args.dataset, data_dir=args.data_dir, weights=args.weights,
        light_at=args.light_at, seed=args.seed, device=device, log=print,
    )  # fmt: skip
    results["settings"]["seconds"] = time.perf_counter() - started
    paths = write_eee_results(results, args.out)
    print(format_eee_tables(results))
    print(f"{results['settings']['seconds']:.0f} s; wrote {paths['markdown']} and {paths['json']}")
    return 0
