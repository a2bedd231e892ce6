"""The results CSV of benchmarks/report.py: one header line (machine, torch, threads, device,
rounds), then one row per timing, per target and per saved-bytes measurement, in one column layout
(a kind's unused columns empty).
"""

import csv
from pathlib import Path

import torch
from timing import DEVICE

COLUMNS = [
    *("kind", "op", "case", "passes", "variant", "median_ms", "time_over_robustkernels"),
    *("metric", "value", "target", "met"),
]


def write_results(
    out: Path, machine: str, rounds: int | None, timing: list[dict], targets: list[dict], memory: list[dict]
) -> None:
    """timing and targets: rows keyed by COLUMNS; memory: saved_bytes_rows() of report_noisy_conv2d."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        csv.writer(handle).writerow(
            [
                *("# machine", machine, "torch", torch.__version__),
                *("threads", torch.get_num_threads(), "device", DEVICE),
                *("rounds", rounds or "each benchmark's own"),
            ]
        )
        writer = csv.DictWriter(handle, COLUMNS, restval="")
        writer.writeheader()
        writer.writerows({"kind": "timing", **row} for row in timing)
        writer.writerows({"kind": "target", **row} for row in targets)
        for row in memory:
            writer.writerow(
                {
                    "kind": "saved_bytes",
                    "op": "noisy_conv2d",
                    "case": row["case"],
                    "passes": "forward",
                    "variant": row["variant"],
                    "metric": "saved/new bytes",
                    "value": f"{row['saved_bytes']}/{row['new_bytes']}",
                    "target": "new == 0",
                    "met": row["new_bytes"] == 0,
                }
            )
