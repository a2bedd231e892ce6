"""`reproduce`'s results: a markdown table, JSON and the CA-RA trade-off plot."""

import json
from pathlib import Path

from ..optional import require

__all__ = ["format_table", "plot_tradeoff", "write_results"]

_HEADER = (
    "method", "width", "lam_th", "lam_n", "noise", "BN", "CA", "RA (PGD)", "RA (AA)",
    "RA mean over draws (PGD / AA)", "non-zero params", "MACs", "noise adds", "s / epoch", "sanity checks",
)  # fmt: skip
_PAPER_HEADER = ("CA / RA (papers' protocol)",)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _cells(row: dict) -> tuple[str, ...]:
    flagged = ", ".join(row["flagged"]) if row["flagged"] else "all passed"
    mean_over_draws = (
        f"{_percent(row['robust_accuracy_mean_over_draws'])} / "
        f"{_percent(row['autoattack_robust_accuracy_mean_over_draws'])}"
        if row["draws"] > 1
        else "-"
    )
    return (
        row["method"] + (f" {row['variant']}" if row.get("variant") else ""),
        f"{row['width']:g}",
        "-" if row["lam_th"] is None else f"{row['lam_th']:g}",
        f"{row['lam_n']:g}",
        f"{row['noise_scale']:g}",
        row["bn"],
        _percent(row["clean_accuracy"]),
        _percent(row["robust_accuracy"]),
        f"{_percent(row['autoattack_robust_accuracy'])} ({row['autoattack_version']})",
        mean_over_draws,
        f"{row['parameters']:,}"
        + (f" (union {row['union_parameters']:,})" if row["union_parameters"] != row["parameters"] else ""),
        f"{row['macs']:,}",
        f"{row['noise_additions']:,}",
        f"{row['epoch_seconds']:.2f}",
        flagged if not row["flagged"] else f"FLAGGED: {flagged}",
    ) + (
        (f"{_percent(row['paper_clean_accuracy'])} / {_percent(row['paper_robust_accuracy'])}",)
        if "paper_clean_accuracy" in row
        else ()
    )


def format_table(results: dict) -> str:
    """The rows as a markdown table: CA and RA in percent on the evaluated test images."""
    header = _HEADER + (_PAPER_HEADER if any("paper_clean_accuracy" in r for r in results["rows"]) else ())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in results["rows"]]
    return "\n".join(lines)


def _training_length(settings: dict) -> str:
    budget = settings["budget"]
    if budget["epochs"] is None:
        return f"{budget['train_steps']} training steps"
    per_method = "".join(f", {m} {e}" for m, e in budget["method_epochs"])
    return f"{budget['epochs']} epochs{per_method}"


def _paper_note(settings: dict) -> str:
    if settings.get("protocol") != "paper":
        return ""
    return (
        " CA / RA (papers' protocol): the papers' own evaluation, optimistic by design and given only "
        "for comparison with their tables: PGD-7 at the same eps without EOT, one noise draw per "
        "pass, the best CA and the best RA over 5 points of each training, mean of 3 seeds."
    )


def _markdown(results: dict) -> str:
    settings = results["settings"]
    budget = settings["budget"]
    return (
        f"# robustkernels reproduce ({budget['name']} budget, {settings['dataset']})\n\n"
        f"{budget['model']}, {_training_length(settings)} of batch {budget['batch_size']} per model; "
        f"trained against PGD-{budget['attack_steps']} (eps {budget['eps']:.4g}, step {budget['step']:.4g}). "
        f"CA and RA on the first {budget['eval_images']} test images at L-inf eps {budget['eps']:.4g}, "
        f"{budget['eval_restarts']} restart(s): RA (PGD) under PGD-{budget['eval_steps']}, RA (AA) under the "
        f"AutoAttack-style suite, `standard` on deterministic settings (APGD-CE, APGD-T over "
        f"{budget['target_classes']} target classes, and FAB-T and Square with {budget['square_queries']} "
        f"queries where torchattacks is installed) and `rand` on noisy ones "
        f"(APGD-CE, APGD-DLR), {budget['eval_steps']} steps each. On a noisy setting every gradient is "
        f"averaged over {budget['eot_draws']} draws (EOT), and a sample counts as robust only if the model "
        f"is right on every one of {budget['draws']} fresh draws at its adversarial point; CA there, and the "
        '"mean over draws" column, are the fraction of draws right, averaged (what one pass gets right on '
        "average, not a worst case). Each RA counts an image only if it survived every run of the sanity checks "
        "at this eps (4x steps, 2 more restarts, 4x EOT draws, the transfer from the deterministic twin). "
        "Non-zero params: the weights and biases of the convolutions "
        "and linear layers on the evaluated path (SMART: and of both paths' union; OAT, OATS: FiLM's "
        "included); MACs: multiply-accumulates of one image's forward pass at that setting "
        "(convolutions, linear layers, FiLM's layers and affine); noise adds: the "
        "additions of weight noise per forward pass; s / epoch: the model's training time per "
        f"epoch of {settings['train_size']} images, measured in this run.{_paper_note(settings)}\n\n"
        + format_table(results)
        + "\n"
    )


def plot_tradeoff(results: dict, png_path: str | Path) -> Path:
    """CA against RA, under PGD (left) and the AutoAttack-style suite (right), one line per method (and
    FLOAT per lam_th), points labelled with lam_n."""
    matplotlib = require("matplotlib", "plotting", "matplotlib")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "plotting", "matplotlib")
    series: dict[str, list[dict]] = {}
    for row in results["rows"]:
        label = row["method"] + (f" {row['variant']}" if row.get("variant") else "")
        label += "" if row["lam_th"] is None else f" (lam_th={row['lam_th']:g})"
        if row["method"] in ("FLOAT-Slim", "OATS"):
            label += f" width {row['width']:g}"
        series.setdefault(label, []).append(row)
    figure, panels = pyplot.subplots(1, 2, figsize=(11, 5), sharey=True)
    for axes, key, attack in zip(
        panels, ("robust_accuracy", "autoattack_robust_accuracy"), ("PGD", "AutoAttack"), strict=True
    ):
        for label, rows in series.items():
            ra = [100 * r[key] for r in rows]
            ca = [100 * r["clean_accuracy"] for r in rows]
            axes.plot(ra, ca, "o-", label=label)
            for r, x, y in zip(rows, ra, ca, strict=True):
                axes.annotate(
                    f"{r['lam_n']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
        axes.set(
            xlabel=f"robust accuracy under {attack} (%)", title=f"CA-RA trade-off, {attack} (labels: lam)"
        )
    panels[0].set_ylabel("clean accuracy (%)")
    panels[0].legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    pyplot.close(figure)
    return Path(png_path)


def write_results(
    results: dict, out: str | Path, *, markdown=None, plot=None, plot_name: str = "tradeoff.png"
) -> dict[str, Path]:
    """Writes out/results.json, out/results.md (`markdown(results)`, default this table's) and the
    plot (`plot(results, path)`, default the CA-RA trade-off) as out/plot_name; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "plot": out / plot_name}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    paths["markdown"].write_text((markdown or _markdown)(results))
    (plot or plot_tradeoff)(results, paths["plot"])
    return paths
