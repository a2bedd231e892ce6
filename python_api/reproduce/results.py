"""`reproduce`'s results: a markdown table, JSON and the CA-RA trade-off plot."""

import json
from pathlib import Path

from ..optional import require

__all__ = ["format_table", "plot_tradeoff", "write_results"]

_HEADER = ("method", "lam_th", "lam_n", "noise", "BN", "CA", "RA", "sanity checks")


def _cells(row: dict) -> tuple[str, ...]:
    flagged = ", ".join(row["flagged"]) if row["flagged"] else "all passed"
    return (
        row["method"],
        "-" if row["lam_th"] is None else f"{row['lam_th']:g}",
        f"{row['lam_n']:g}",
        f"{row['noise_scale']:g}",
        row["bn"],
        f"{100 * row['clean_accuracy']:.1f}",
        f"{100 * row['robust_accuracy']:.1f}",
        flagged if not row["flagged"] else f"FLAGGED: {flagged}",
    )


def format_table(results: dict) -> str:
    """The rows as a markdown table: CA and RA in percent on the evaluated test images."""
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in results["rows"]]
    return "\n".join(lines)


def _markdown(results: dict) -> str:
    settings = results["settings"]
    budget = settings["budget"]
    return (
        f"# robustkernels reproduce ({budget['name']} budget, {settings['dataset']})\n\n"
        f"{budget['model']}, {budget['train_steps']} training steps of batch {budget['batch_size']} per model; "
        f"CA / RA on the first {budget['eval_images']} test images, RA under L-inf PGD-{budget['eval_steps']} "
        f"at eps {budget['eps']:.4g} (EOT over {budget['eot_draws']} draws where the model is random), "
        "trained against PGD-"
        f"{budget['attack_steps']} (eps {budget['eps']:.4g}, step {budget['alpha']:.4g}).\n\n"
        + format_table(results)
        + "\n"
    )


def plot_tradeoff(results: dict, png_path: str | Path) -> Path:
    """CA against RA, one line per method (and FLOAT per lam_th), points labelled with lam_n."""
    matplotlib = require("matplotlib", "plotting", "matplotlib")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "plotting", "matplotlib")
    series: dict[str, list[dict]] = {}
    for row in results["rows"]:
        label = row["method"] if row["lam_th"] is None else f"{row['method']} (lam_th={row['lam_th']:g})"
        series.setdefault(label, []).append(row)
    figure, axes = pyplot.subplots(figsize=(6, 5))
    for label, rows in series.items():
        ra = [100 * r["robust_accuracy"] for r in rows]
        ca = [100 * r["clean_accuracy"] for r in rows]
        axes.plot(ra, ca, "o-", label=label)
        for r, x, y in zip(rows, ra, ca, strict=True):
            axes.annotate(f"{r['lam_n']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set(xlabel="robust accuracy (%)", ylabel="clean accuracy (%)", title="CA-RA trade-off (labels: lam)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    pyplot.close(figure)
    return Path(png_path)


def write_results(results: dict, out: str | Path) -> dict[str, Path]:
    """Writes out/results.json, out/results.md and out/tradeoff.png; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / "tradeoff.png"}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    paths["markdown"].write_text(_markdown(results))
    plot_tradeoff(results, paths["plot"])
    return paths
