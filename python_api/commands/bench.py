"""`robustkernels bench`: seconds per training step of each method on one model, measured in
interleaved rounds (so load changes on a shared machine hit every method alike), with
the ratio to plain training.

    robustkernels bench --model resnet20 --batch-size 64 --rounds 5
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ..data import dataset_spec
from ..models import MODELS, build_model
from ..train import derived_generator, resolve_device
from ..train.once_for_all import ONCE_FOR_ALL, convert
from ..train.optimizer import build_sgd
from . import arguments
from .errors import reports_errors
from .methods import METHODS, build_method

__all__ = ["add_arguments", "run_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0].replace("`", "")
    parser.epilog = "\n".join(__doc__.strip().splitlines()[3:])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", choices=list(MODELS), default="resnet20", help="(default: resnet20)")
    parser.add_argument(
        "--dataset",
        default="cifar10",
        help="shape and classes of random inputs like this data set (default: cifar10)",
    )
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="(default: all)"
    )
    parser.add_argument("--batch-size", type=arguments.positive_int, default=64, help="(default: 64)")
    parser.add_argument("--rounds", type=arguments.positive_int, default=5, help="timed rounds (default: 5)")
    parser.add_argument("--eps", type=arguments.epsilon, default=8 / 255)
    parser.add_argument("--attack-step", type=arguments.epsilon, default=2 / 255, help="(default: 2/255)")
    parser.add_argument("--attack-steps", type=arguments.positive_int, default=10, help="(default: 10)")
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--beta", type=arguments.non_negative_float, default=6.0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    parser.add_argument("--out", help="directory for bench.json (default: print only)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@reports_errors("bench")
def run_from_args(args: argparse.Namespace) -> int:
    spec = dataset_spec(args.dataset)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, spec.in_channels, spec.image_size, spec.image_size, device=device)
    y = torch.randint(0, spec.num_classes, (args.batch_size,), device=device)
    runs = {}
    for name in args.methods:
        model = build_model(args.model, spec.num_classes, spec.in_channels)
        if name in ONCE_FOR_ALL:
            convert(name, model)
        model = model.to(device).train()
        method = build_method(argparse.Namespace(**{**vars(args), "method": name}))
        runs[name] = (model, method, build_sgd(model, lr=0.01))
    times: dict[str, list[float]] = {name: [] for name in runs}

    def step(name: str, index: int) -> float:
        model, method, optimizer = runs[name]
        generator = derived_generator(0, "bench", index, device=device)
        _sync(device)
        start = time.perf_counter()
        loss, _ = method.loss(model, x, y, attack_model=model, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    for name in runs:  # warm-up
        step(name, -1)
    for index in range(args.rounds):
        for name in runs:
            times[name].append(step(name, index))
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians.get("standard")
    print(
        f"{args.model}, batch {args.batch_size} of {spec.in_channels}x{spec.image_size}x{spec.image_size}, "
        f"{device}, {args.rounds} interleaved rounds (median seconds per training step):"
    )
    for name, median in medians.items():
        ratio = f"  {median / baseline:6.2f}x standard" if baseline else ""
        print(f"  {name:9s} {median:8.4f} s  {args.batch_size / median:9.1f} images/s{ratio}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {"model": args.model, "batch_size": args.batch_size, "device": str(device), "seconds": times}
        (out / "bench.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {out / 'bench.json'}")
    return 0
