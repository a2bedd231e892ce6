"""Runs the benchmarks, prints the ratios as a table and writes benchmarks/results/<machine>.csv.

    python benchmarks/report.py [-k EXPR] [--machine NAME] [--rounds N] [--out CSV]

Every figure comes from one pytest-benchmark run on this machine (medians over
rounds); nothing is carried over from elsewhere. Also measured here: the bytes
each noisy_conv2d variant saves for backward.

Here: running the benchmarks and the timing table; the targets and their checks in
report_targets.py, the noisy_conv2d measurements in report_noisy_conv2d.py, the CSV in
report_csv.py.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from report_csv import write_results  # noqa: E402
from report_noisy_conv2d import interleaved_conv_rows, saved_bytes_rows, with_interleaved  # noqa: E402
from report_targets import Medians, Traffic, bandwidth_rows, target_rows  # noqa: E402
from timing import ROUNDS_VARIABLE  # noqa: E402


def machine_name() -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
    else:
        model = platform.processor() or "cpu"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1]
                    break
        except OSError:
            pass
        name = f"cpu-{model}-{os.cpu_count()}cores"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_benchmarks(select: str | None) -> list[dict]:
    """Eager variants and torch.compile variants run in separate processes: once
    inductor has compiled a graph, later eager F.conv2d calls with leaf weights ran
    ~1.8x slower in the same process on the CPU build measured here, which would
    flatter every variant measured after it."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for part, expression in (("eager", "not reference_compiled"), ("compiled", "reference_compiled")):
            json_path = Path(tmp) / f"{part}.json"
            selection = f"({expression}) and ({select})" if select else expression
            command = [
                sys.executable,
                "-m",
                "pytest",
                str(HERE),
                "-q",
                "-p",
                "no:cacheprovider",
                "-k",
                selection,
                f"--benchmark-json={json_path}",
            ]
            completed = subprocess.run(command, cwd=HERE.parent)
            if completed.returncode not in (0, 5):  # 5: nothing selected
                raise SystemExit(f"benchmark run failed: {' '.join(command)}")
            if json_path.exists():
                results += json.loads(json_path.read_text())["benchmarks"]
    return results


def medians_and_traffic(results: list[dict]) -> tuple[Medians, Traffic]:
    """Each benchmark's median by (op, case, passes) and variant, and its bytes per second where
    it states its bytes."""
    medians: Medians = defaultdict(dict)
    traffic: Traffic = {}
    for bench in results:
        info = bench["extra_info"]
        medians[(info["op"], info["case"], info["passes"])][info["variant"]] = bench["stats"]["median"]
        if "bytes" in info:
            traffic[(info["op"], info["case"], info["passes"], info["variant"])] = (
                info["bytes"] / bench["stats"]["median"]
            )
    return medians, traffic


def timing_rows(medians: Medians) -> list[dict]:
    """Prints every median beside its ratio to robustkernels' and returns them as CSV rows."""
    print(
        f"{'op':<13} {'case':<12} {'passes':<17} {'variant':<19} {'median ms':>10} {'vs robustkernels':>17}"
    )
    rows = []
    for (op, case, passes), by_variant in sorted(medians.items()):
        ours = by_variant.get("robustkernels")
        for variant, seconds in sorted(by_variant.items()):
            ratio = seconds / ours if ours else float("nan")
            print(f"{op:<13} {case:<12} {passes:<17} {variant:<19} {seconds * 1e3:>10.3f} {ratio:>16.2f}x")
            rows.append(
                {
                    "op": op,
                    "case": case,
                    "passes": passes,
                    "variant": variant,
                    "median_ms": f"{seconds * 1e3:.4f}",
                    "time_over_robustkernels": f"{ratio:.3f}",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-k", dest="select", help="pytest -k expression selecting benchmarks")
    parser.add_argument(
        "--machine", default=machine_name(), help="name of the results file (default: from the hardware)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="cap every benchmark at this many rounds of one iteration (a short run; default: their own)",
    )
    parser.add_argument(
        "--out", type=Path, help="the results CSV (default: benchmarks/results/<machine>.csv)"
    )
    args = parser.parse_args()
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error(f"--rounds must be a positive integer, got {args.rounds}")
        os.environ[ROUNDS_VARIABLE] = str(args.rounds)  # read by the benchmarks in the pytest runs

    medians, traffic = medians_and_traffic(run_benchmarks(args.select))
    print(f"\nmachine: {args.machine}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    rows = timing_rows(medians)

    # the interleaved conv timings and the saved bytes belong to noisy_conv2d: measured when it is selected
    conv_selected = any(op == "noisy_conv2d" for op, _, _ in medians)
    interleaved = interleaved_conv_rows() if conv_selected else []
    if interleaved:
        print("\nnoisy_conv2d forward_backward, interleaved rounds (used for the conv targets):")
    for row in interleaved:
        print(f"  {row['case']:<5} {row['variant']:<16} {row['median_ms']:>9.3f} ms")
        rows.append(
            {
                "op": "noisy_conv2d",
                "case": row["case"],
                "passes": "forward_backward_interleaved",
                "variant": row["variant"],
                "median_ms": f"{row['median_ms']:.4f}",
                "time_over_robustkernels": "",
            }
        )

    targets = target_rows(with_interleaved(medians, interleaved)) + bandwidth_rows(traffic)

    memory = saved_bytes_rows() if conv_selected else []
    if memory:
        print("\nsaved for backward (bytes):")
    for row in memory:
        print(
            f"  {row['case']:<14} {row['variant']:<16} saved {row['saved_bytes']:>10}  newly allocated {row['new_bytes']:>10}"
        )

    out = args.out or RESULTS / f"{args.machine}.csv"
    write_results(out, args.machine, args.rounds, rows, targets, memory)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
