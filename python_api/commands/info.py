"""`robustkernels info`: versions, backends, models, data sets and optional packages on this machine."""

import argparse
import importlib.util

from robustkernels.info import report

from ..data import DATASETS
from ..models import MODELS, build_model

__all__ = ["add_arguments", "run_from_args"]

# Optional package -> what needs it.
OPTIONAL = {
    "tqdm": "progress bars",
    "safetensors": "checkpoints",
    "scipy": "SVHN .mat files",
    "PIL": "Tiny-ImageNet JPEGs (pip install Pillow)",
    "matplotlib": "training plots",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-models", action="store_true", help="skip building each model to count its parameters"
    )


def run_from_args(args: argparse.Namespace) -> int:
    print(report())
    print("\noptional packages:")
    for module, purpose in OPTIONAL.items():
        state = "installed" if importlib.util.find_spec(module) is not None else "MISSING"
        print(f"  {module:12s} {state:10s} {purpose}")
    print("\nmodels (--model):")
    for name in MODELS:
        size = (
            ""
            if args.no_models
            else f"{sum(p.numel() for p in build_model(name).parameters()) / 1e6:.2f} M parameters"
        )
        print(f"  {name:12s} {size}")
    print("\ndata sets (--dataset):")
    for spec in DATASETS.values():
        where = "from --data-dir" if spec.needs_data_dir else "embedded"
        print(
            f"  {spec.name:14s} {spec.num_classes:3d} classes, {spec.in_channels}x{spec.image_size}x{spec.image_size}, {where}"
        )
    return 0
