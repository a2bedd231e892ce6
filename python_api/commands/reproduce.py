"""`robustkernels reproduce METHOD`: train and evaluate a method end to end at a named budget.

    robustkernels reproduce all --budget smoke                 # minutes on a CPU, embedded digits
    robustkernels reproduce float --budget small --out runs/float
    robustkernels reproduce float pgd-at --budget small --out runs/float-vs-pgd-at
    robustkernels reproduce all --budget small --dataset cifar10 --data-dir ~/data/cifar-10
    robustkernels reproduce eee --budget smoke                 # the multires self-ensemble + CrossMax
    robustkernels reproduce eed --budget smoke --out runs/eed   # EED against HYDRA, HARP and AT

Methods (each evaluated at lam in 0, 0.2, 0.7, 1; rows also give MACs and training seconds per epoch):
float (one FLOAT model evaluated over lam_n in 0, 0.2, 0.7, 1 for lam_th 0 and 0.5),
smart (one SMART model over the same lam_n: 0 its clean expert path, > 0 its adversarial path
with the noise scaled by lam_n; --smart-stages and --smart-overlap give its Table 1 ablations),
oat and oats (OAT, Wang et al.: FiLM after each dual BN conditioned on lam, lam drawn per batch
from 0, 0.1, 0.2, 0.3, 0.4, 1; OATS its slimmable version at widths 1 and 0.5), pgd-at (one
PGD-AT model per value w of the sweep, loss (1 - w) CE clean + w CE adversarial), all (every
method; eed runs on its own, not in all: EED's pruned pool, robust-diversity team,
ensemble learning and dynamic inference against a single HYDRA and HARP model at the same
non-zero parameters and the dense PGD-AT base; it writes results.md, results.json and eed.png).
eio (Ensemble-in-One: a derived single model and the random-gate network) and dverge
(DVERGE-K ensembles) are scored with a standard-trained baseline under DVERGE's protocol (black-box
transfer from surrogate ensembles, white-box PGD, all-or-nothing) over an eps sweep, into
results.md, results.json and accuracy-vs-eps.png; they run on their own (not with the others).
eee (alone: the multi-resolution self-ensemble with CrossMax and its model-ensemble
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

from ..data import DATASETS, dataset_spec, load_dataset
from ..models import MODELS
from ..optional import require
from ..reproduce import BUDGETS, METHODS, budget_for, format_table, reproduce, write_results
from ..reproduce.eed import eed_work_units, reproduce_eed
from ..reproduce.eed_budgets import eed_budget_for
from ..reproduce.eed_results import format_eed_table, write_eed_results
from ..reproduce.eee import eee_budget, reproduce_eee
from ..reproduce.eee_results import format_eee_tables, write_eee_results
from ..reproduce.ensemble_budgets import ensemble_budget_for
from ..reproduce.ensemble_results import format_ensemble_table, write_ensemble_results
from ..reproduce.ensembles import ENSEMBLE_METHODS, reproduce_ensembles
from ..reproduce.runner import PROTOCOLS, work_units
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
        choices=[*METHODS, "all", "eed", "eee", *ENSEMBLE_METHODS],
        help="methods to reproduce (one or more), all; or eed, or eee; or eio and/or dverge",
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        help="eio, dverge: the defences' architecture (default: the budget's; surrogates keep it)",
    )
    parser.add_argument(
        "--gate-classifier", action="store_true", help="eio: gate the classifier too (VGG-16's 14 blocks)"
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
        "--dataset",
        choices=list(DATASETS),
        default=None,
        help="(default: digits, embedded; --budget paper needs one of the papers' data sets named)",
    )
    parser.add_argument("--data-dir", help="directory holding the data set's files (all but digits)")
    parser.add_argument(
        "--smart-stages",
        choices=["later", "all"],
        default="later",
        help="SMART's masked stages: the later half ([D D S S], the paper's) or all ([S S S S], its "
        "Table 1 ablation) (default: later)",
    )
    parser.add_argument(
        "--smart-overlap",
        type=float,
        default=0.25,
        help="SMART's d(M_C * M_A), a fraction of each masked tensor (default: 0.25, the paper's; "
        "0: disjoint masks, Table 1's ablation)",
    )
    parser.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default="library",
        help="library (default): the strict evaluation alone; paper: also the papers' own protocol "
        "(PGD-7 without EOT, one draw, best CA and RA over training, mean of 3 seeds: trains 3 seeds)",
    )
    parser.add_argument("--out", default="runs/reproduce", help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="(default: 0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@reports_errors("reproduce")
def run_from_args(args: argparse.Namespace) -> int:
    named_dataset, args.dataset = args.dataset, args.dataset or "digits"
    if dataset_spec(args.dataset).needs_data_dir and args.data_dir is None:
        raise CommandError(f"--dataset {args.dataset} needs --data-dir (the directory holding its files)")
    if "eed" in args.method:
        return _run_eed(args)
    if "eee" in args.method:
        return _run_eee(args)
    ensemble_methods = [m for m in ENSEMBLE_METHODS if m in args.method]
    if ensemble_methods:
        if len(ensemble_methods) != len(args.method):
            raise CommandError("eio and dverge run on their own: reproduce them in a separate call")
        return _run_ensembles(args, ensemble_methods)
    methods = list(METHODS) if "all" in args.method else [m for m in METHODS if m in args.method]
    try:
        budget = budget_for(args.budget, named_dataset)
    except ValueError as error:
        raise CommandError(str(error)) from None
    device = resolve_device(args.device)
    print(
        f"robustkernels reproduce {' '.join(args.method)}: {', '.join(methods)} at the {budget.name} budget "
        f"({budget.model} on {args.dataset}, {device}, {args.protocol} protocol), output in {args.out}"
    )
    train_size = len(load_dataset(args.dataset, "train", args.data_dir)[1])
    smart = {"stages": None if args.smart_stages == "later" else "all", "shared": args.smart_overlap}
    return _run(args, work_units(methods, budget, train_size, args.protocol), write_results, format_table,
                lambda **kw: reproduce(methods, budget, args.out, protocol=args.protocol, smart=smart, **kw))  # fmt: skip


def _run_eed(args: argparse.Namespace) -> int:
    if args.method != ["eed"]:
        raise CommandError("eed runs on its own: `robustkernels reproduce eed` (not with other methods)")
    budget = eed_budget_for(args.budget, args.dataset)
    device = resolve_device(args.device)
    print(f"robustkernels reproduce eed at the {budget.name} budget ({budget.model} on {args.dataset}, {device}), "
          f"output in {args.out}")  # fmt: skip
    return _run(args, eed_work_units(budget), write_eed_results, format_eed_table,
                lambda **kw: reproduce_eed(budget, args.out, **kw))  # fmt: skip


def _run(args: argparse.Namespace, total: int, write, table, run) -> int:
    """run(dataset=, data_dir=, seed=, device=, progress=, log=) under a progress bar of `total`
    units, then the results written, the table printed and the files named."""
    bar = None
    if not args.no_progress:
        bar = require("tqdm", "progress bars", "tqdm").tqdm(
            total=total, unit="step", dynamic_ncols=True, file=sys.stderr
        )
    started = time.perf_counter()
    try:
        results = run(
            dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, device=resolve_device(args.device),
            progress=bar.update if bar is not None else None, log=bar.write if bar is not None else print,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    return _report(results, started, write, table, args.out)


def _report(results: dict, started: float, write, table, out) -> int:
    """Writes the results files, prints the table and where they went."""
    results["settings"]["seconds"] = time.perf_counter() - started
    paths = write(results, out)
    print(table(results))
    print(
        f"{results['settings']['seconds']:.0f} s; wrote {paths['markdown']}, {paths['json']} and {paths['plot']}"
    )
    return 0


def _run_ensembles(args: argparse.Namespace, methods: list[str]) -> int:
    budget = ensemble_budget_for(args.budget, args.dataset, args.model, args.gate_classifier)
    device = resolve_device(args.device)
    surrogates = f", surrogates {budget.surrogate_model}" if budget.surrogate_model else ""
    print(f"robustkernels reproduce {' '.join(methods)} at the {budget.name} budget "
          f"({budget.model}{surrogates} on {args.dataset}, {device}), output in {args.out}")  # fmt: skip
    started = time.perf_counter()
    results = reproduce_ensembles(
        methods, budget, args.out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, device=device,
        log=None if args.no_progress else print,
    )  # fmt: skip
    return _report(results, started, write_ensemble_results, format_ensemble_table, args.out)


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
