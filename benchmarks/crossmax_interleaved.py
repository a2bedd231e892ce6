"""CrossMax fwd+bwd (and forward) timings, interleaved across processes and builds.

    python benchmarks/crossmax_interleaved.py [--threads 1 2] [--repeats 5] [--rounds 30]
        [--build NAME=PYTHONPATH ...]

Each measurement is one child process timing one variant on every shape: the eager reference,
torch.compile(reference) (its own processes: an inductor compile can slow later eager calls in
the same process, see report.py) and robustkernels once per --build (NAME=DIR puts DIR first on
PYTHONPATH, e.g. a copy of the package holding another build of the extension). Within a child
every round calls the step --calls times, median over rounds; the parent runs every variant once
per repeat, in rotating order, so drift on a shared machine hits all of them alike, and prints
the median over repeats with its spread (min-max) and the ratios. k = 3, reduction "kth".
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = [(8, 512, 100), (16, 128, 1000)]
K = 3


def child(variant: str, rounds: int, calls: int) -> None:
    import torch

    import robustkernels
    import robustkernels.functional as rkF
    from robustkernels import reference

    def eager(x):
        return reference.crossmax(x, K, "kth")

    fn = {
        "eager": eager,
        "compiled": torch.compile(eager),
        "ours": lambda x: rkF.crossmax(x, k=K, reduction="kth"),
    }[variant]

    def fwd_bwd(logits):
        out = fn(logits)
        out.backward(torch.ones_like(out))
        logits.grad = None

    @torch.no_grad()
    def fwd(logits):
        fn(logits)

    result = {"module": robustkernels.__file__}
    for shape in SHAPES:
        logits = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3).requires_grad_(True)
        for passes, run in (("forward_backward", fwd_bwd), ("forward", fwd)):
            step = functools.partial(run, logits)
            for _ in range(3):
                step()  # warm-up (and compilation)
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(calls):
                    step()
                times.append((time.perf_counter() - start) / calls * 1e3)
            result["x".join(map(str, shape)) + " " + passes] = statistics.median(times)
    print(json.dumps(result))


def parent(args) -> None:
    builds = dict(b.split("=", 1) for b in args.build) or {"ours": ""}
    variants = [("eager", "eager", ""), ("compiled", "compiled", "")]
    variants += [(name, "ours", path) for name, path in builds.items()]
    for threads in args.threads:
        samples = {name: [] for name, _, _ in variants}
        for repeat in range(args.repeats):
            shift = repeat % len(variants)
            for name, variant, path in variants[shift:] + variants[:shift]:
                env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
                if path:
                    env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
                command = [sys.executable, __file__, "--child", variant, "--rounds", str(args.rounds)]
                command += ["--calls", str(args.calls)]
                out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
                samples[name].append(json.loads(out.strip().splitlines()[-1]))
        print(f"\n## {threads} thread(s), {args.repeats} repeats x {args.rounds} rounds x {args.calls} calls")
        for name, _, path in variants:
            if path:
                print(f"{name}: {samples[name][0]['module']}")
        cases = [c for c in samples["eager"][0] if c != "module"]
        print("| case | variant | median ms | min-max ms | eager / this | compiled / this |")
        print("| --- | --- | --- | --- | --- | --- |")
        for case in cases:
            medians = {n: statistics.median(s[case] for s in samples[n]) for n in samples}
            for name in samples:
                values = [s[case] for s in samples[name]]
                print(
                    f"| {case} | {name} | {medians[name]:.3f} | {min(values):.3f}-{max(values):.3f} |"
                    f" {medians['eager'] / medians[name]:.2f} | {medians['compiled'] / medians[name]:.2f} |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", choices=["eager", "compiled", "ours"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument(
        "--build", action="append", default=[], help="NAME=PYTHONPATH of one robustkernels build"
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rounds, args.calls)
    else:
        parent(args)


if __name__ == "__main__":
    main()
