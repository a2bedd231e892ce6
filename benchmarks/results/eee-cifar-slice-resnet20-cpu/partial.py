"""results.json and results.md from both runs (see README.md):
`python partial.py run.log results-8/results.json OUT`.

run.log was stopped before its last rows; its rows carry reproduce eee's fields, with the masking
gap computed as it computes it, less the per-attack breakdown (not in the log). The second file is
run_8.py's complete output: its rows replace run.log's at the same method and eps, after a check
that the numbers run.log has for them are the same (both runs draw from the same seeds)."""

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


def merged(logged: list[dict], complete: list[dict]) -> list[dict]:
    later = {(r["method"], round(r["eps"], 4)): r for r in complete}
    for row in logged:
        twin = later.get((row["method"], row["eps"]))
        if twin is not None:
            for key in ("clean_accuracy", "rand_accuracy", "adaptive_accuracy"):
                assert abs(twin[key] - row[key]) < 1e-3, (row["method"], row["eps"], key)
    return [r for r in logged if (r["method"], r["eps"]) not in later] + complete


if __name__ == "__main__":
    rows = merged(logged_rows(Path(sys.argv[1])), json.loads(Path(sys.argv[2]).read_text())["rows"])
    out = Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    (out / "results.md").write_text(table(rows))
    print(table(rows))
