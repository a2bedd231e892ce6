"""results.json and results.md from the rows run.log holds (the run was stopped before its last
rows, see README.md): `python partial.py run.log OUT`. The fields are reproduce eee's, with the
masking gap computed as it computes it, less the per-attack breakdown (not in the log)."""

import json
import re
import sys
from pathlib import Path

from robustkernels.api.evaluate.adaptive import masking_gap

IMAGES = 100
ROW = re.compile(r"\[\s*(\d+) s\] (.+) eps ([\d.]+): CA ([\d.]+) rand ([\d.]+) adaptive ([\d.]+)")


def logged_rows(log: Path) -> list[dict]:
    rows = []
    for match in map(ROW.match, log.read_text().splitlines()):
        if match is None:
            continue
        seconds, method, eps, clean, rand, adaptive = match.groups()
        gap, noise, flagged = masking_gap(float(rand), float(adaptive), IMAGES)
        rows.append(
            {
                "method": method,
                "eps": float(eps),
                "clean_accuracy": float(clean),
                "rand_accuracy": float(rand),
                "adaptive_accuracy": float(adaptive),
                "gap": gap,
                "noise": noise,
                "gradient_masking": flagged,
                "n": IMAGES,
                "finished_at_s": int(seconds),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| method | eps | clean | AA-rand (paper protocol) | adaptive (min over all) | gap (noise) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = "GRADIENT MASKING" if r["gradient_masking"] else "within noise"
        cells = (
            r["method"], f"{round(r['eps'] * 255)}/255", f"{100 * r['clean_accuracy']:.1f}",
            f"{100 * r['rand_accuracy']:.1f}", f"{100 * r['adaptive_accuracy']:.1f}",
            f"{100 * r['gap']:.1f} ({100 * r['noise']:.1f})", verdict,
        )  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    rows = logged_rows(Path(sys.argv[1]))
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    (out / "results.md").write_text(table(rows))
    print(table(rows))
