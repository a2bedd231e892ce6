"""The `robustkernels` command line: `robustkernels <command> [options]`.

Each command lives in its own module, which provides `add_arguments(parser)` and
`run_from_args(args) -> exit status`; COMMANDS maps the command names to them, so a
new command (e.g. `reproduce`) is one more entry.
"""

import argparse
import sys
from types import ModuleType

from .commands import bench, demo, info
from .commands import eval as eval_command
from .commands import reproduce as reproduce_command
from .commands import train as train_command

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (module with add_arguments / run_from_args, one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "demo": (demo, "train a small noisy-convolution CNN on the bundled digits data and evaluate it"),
    "info": (info, "show versions, kernel backends, models, data sets and optional packages"),
    "train": (train_command, "train a model with a method (standard, pgd-at, trades); resumes a killed run"),
    "eval": (eval_command, "robust accuracy of a trained checkpoint under an attack"),
    "bench": (bench, "seconds per training step of each method, in interleaved rounds"),
    "reproduce": (
        reproduce_command,
        "train and evaluate FLOAT, SMART, PGD-AT, or EIO and DVERGE, end to end: tables and plots",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustkernels", description="robustkernels: fused kernels for adversarial-robustness research"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
