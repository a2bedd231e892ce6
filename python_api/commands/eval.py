"""`robustkernels eval`: robust accuracy of a trained checkpoint under an attack.

    robustkernels eval --checkpoint runs/at --attack pgd --eps 8/255
    robustkernels eval --checkpoint runs/at --attack autoattack --eps 8/255 --limit 1000
    robustkernels eval --checkpoint runs/at --attack transfer --source runs/std --eps 8/255

White-box attacks (fgsm, pgd, apgd, autoattack) use the evaluated model's gradients
and run sanity checks that flag untrustworthy numbers; the robust accuracy reported is the
lowest any of their runs at --eps found. On a randomised model (--randomized, or two passes
differ) a sample counts as robust only if the model is right on every one of --draws fresh
draws at its adversarial point; the accuracy averaged over draws is reported beside it. "transfer" is a black-box
attack: M-DI2-FGSM examples (momentum PGD with input diversity) crafted on each
--source checkpoint are fed to the evaluated model. The data set and its normalisation
come from the checkpoint; files other than the embedded digits need --data-dir. The
report is printed and written as JSON into --out (default: the checkpoint's directory).
A once-for-all model (trained with float, floats or smart) is evaluated at --lam-n
(default 0: the clean setting), --lam-th and, for floats, --width:

    robustkernels eval --checkpoint runs/float --attack autoattack --randomized --lam-n 1
"""

import argparse
import contextlib
import json
from pathlib import Path

import torch

from ..attacks import DRAWS, SQUARE_QUERIES, pgd
from ..attacks.suites import RAND_EOT_DRAWS
from ..data import load_dataset, to_unit_interval
from ..evaluate import evaluate, format_report, looks_randomized, transfer_accuracy
from ..train import load_checkpoint, resolve_device
from ..train.once_for_all import at_test_time
from ..train.runs import model_from_checkpoint
from . import arguments
from .errors import CommandError, reports_errors

__all__ = ["add_arguments", "mdi2_fgsm", "run_from_args"]

WHITE_BOX = ("pgd", "apgd", "autoattack", "fgsm")
# M-DI2-FGSM's settings: MI-FGSM's decay factor (Dong et al. 2018) and DI's transform
# probability (Xie et al. 2019).
TRANSFER_MOMENTUM = 1.0
TRANSFER_INPUT_DIVERSITY = 0.5
TRANSFER_STEPS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0].replace("`", "")
    parser.epilog = "\n".join(__doc__.strip().splitlines()[2:])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--checkpoint", required=True, help="run directory written by `robustkernels train --out`"
    )
    parser.add_argument("--attack", choices=(*WHITE_BOX, "transfer"), default="pgd", help="(default: pgd)")
    parser.add_argument("--eps", type=arguments.epsilon, default=8 / 255, help="radius, e.g. 8/255 (default)")
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model (default: linf)")
    parser.add_argument(
        "--steps", type=arguments.positive_int, help="attack steps (default: the attack's own)"
    )
    parser.add_argument(
        "--restarts", type=arguments.positive_int, help="random restarts (default: the attack's own)"
    )
    parser.add_argument(
        "--eot-draws", type=arguments.positive_int, help="gradient draws per step, for randomised models"
    )
    parser.add_argument(
        "--randomized",
        action="store_true",
        help="the model is randomised (also detected: two passes differ); autoattack then runs 'rand'",
    )
    parser.add_argument(
        "--draws",
        type=arguments.positive_int,
        default=DRAWS,
        help="randomised models: a sample is robust only if right on every one of this many fresh "
        "draws at its adversarial point (default: %(default)s)",
    )
    parser.add_argument(
        "--square-queries",
        type=arguments.positive_int,
        default=SQUARE_QUERIES,
        help="queries of Square in the standard autoattack suite (with torchattacks; default: %(default)s)",
    )
    parser.add_argument(
        "--no-checks",
        action="store_true",
        help="skip the sanity checks that flag untrustworthy white-box numbers",
    )
    parser.add_argument(
        "--source",
        action="append",
        help="checkpoint the transfer attack crafts its examples on; repeat for several surrogates "
        "(a sample counts as robust only if it survives all of them)",
    )
    ofa = parser.add_argument_group("once-for-all models (float, floats, smart)")
    ofa.add_argument("--lam-n", type=float, default=0.0, help="test-time lam_n in [0, 1] (default: 0)")
    ofa.add_argument("--lam-th", type=float, default=0.5, help="BN_A above this lam_n (default: 0.5)")
    ofa.add_argument("--width", type=float, help="floats: the width to evaluate (default: the widest)")
    parser.add_argument("--data-dir", help="directory holding the data set's files (all but digits)")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="(default: test)")
    parser.add_argument("--limit", type=arguments.positive_int, help="evaluate only the first N images")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=256, help="(default: 256)")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="seed of the attacks' randomness")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    parser.add_argument("--out", help="directory for the JSON report (default: the checkpoint's directory)")


def mdi2_fgsm(model, x, y, *, eps, norm, steps, eot_draws, generator):
    """M-DI2-FGSM (momentum PGD with input diversity, no random start), the transfer attack."""
    return pgd(
        model,
        x,
        y,
        eps=eps,
        step=eps / steps,
        steps=steps,
        norm=norm,
        random_start=False,
        momentum=TRANSFER_MOMENTUM,
        input_diversity=TRANSFER_INPUT_DIVERSITY,
        eot_draws=eot_draws,
        generator=generator,
    )


def _evaluate(args: argparse.Namespace, model, run: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    randomized = args.randomized or looks_randomized(model, (x, y), args.batch_size)
    scoring = {
        "draws": args.draws,
        "randomized": randomized,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    if args.attack == "transfer":
        surrogates = {}
        for source_path in args.source:
            source, source_run = model_from_checkpoint(load_checkpoint(source_path))
            if source_run["model"]["num_classes"] != run["model"]["num_classes"]:
                raise CommandError(f"--source {source_path} was trained for a different number of classes")
            surrogates[source_path] = source.to(x.device)
        return transfer_accuracy(
            model,
            surrogates,
            (x, y),
            attack=mdi2_fgsm,
            eps=args.eps,
            norm=args.norm,
            steps=args.steps or TRANSFER_STEPS,
            restarts=args.restarts or 1,
            eot_draws=args.eot_draws or 1,
            **scoring,
        )
    options = {
        key: getattr(args, key)
        for key in ("steps", "restarts", "eot_draws")
        if getattr(args, key) is not None
    }
    if randomized and args.attack == "autoattack":
        options.setdefault("eot_draws", RAND_EOT_DRAWS)  # AutoAttack's rand version's own
    return evaluate(
        model,
        x,
        y,
        attack=args.attack,
        eps=args.eps,
        norm=args.norm,
        version="rand" if randomized else "standard",
        square_queries=args.square_queries,
        checks=not args.no_checks,
        **scoring,
        **options,
    )


@reports_errors("eval")
def run_from_args(args: argparse.Namespace) -> int:
    if args.attack == "transfer" and args.source is None:
        raise CommandError("--attack transfer needs --source (the checkpoint to craft the examples on)")
    if args.source is not None and args.attack != "transfer":
        raise CommandError("--source is only used by --attack transfer")
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(args.checkpoint)
    model, run = model_from_checkpoint(checkpoint)
    model.to(device)
    method = run["model"].get("method")
    if method is None and (args.lam_n != 0.0 or args.width is not None):
        raise CommandError(
            "--lam-n and --width apply to once-for-all models (trained with float, floats or smart)"
        )
    setting = (
        contextlib.nullcontext()
        if method is None
        else at_test_time(method, model, args.lam_n, args.lam_th, args.width)
    )
    images, labels = load_dataset(run["dataset"]["name"], args.split, args.data_dir)
    if args.limit is not None:
        images, labels = images[: args.limit], labels[: args.limit]
    x, y = to_unit_interval(images).to(device), labels.to(device)
    torch.manual_seed(args.seed)
    with setting:
        result = _evaluate(args, model, run, x, y)
    if method is not None:
        result = {"method": method, "lam_n": args.lam_n, "lam_th": args.lam_th, "width": args.width, **result}
    result = {"checkpoint": str(checkpoint.path), "split": args.split, "seed": args.seed, **result}
    out = Path(args.out) if args.out else checkpoint.path.parent
    out.mkdir(parents=True, exist_ok=True)
    setting_name = (
        ""
        if method is None
        else f"-lam{args.lam_n:g}-th{args.lam_th:g}" + (f"-width{args.width:g}" if args.width else "")
    )
    name = f"eval-{args.attack}-{args.norm}-eps{args.eps:.5g}{setting_name}.json"
    (out / name).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(format_report(result))
    print(f"wrote {out / name}")
    return 0
