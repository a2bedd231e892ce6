"""`reproduce eio|dverge`'s results: results.json, results.md and the accuracy-vs-eps plots
(black-box and white-box, one line per defence, as in the EIO paper's figures)."""

import itertools
from pathlib import Path

from ..optional import require
from .results import write_results

__all__ = ["format_ensemble_table", "plot_accuracy_vs_eps", "write_ensemble_results"]

_HEADER = ("method", "eps", "clean", "black-box", "white-box", "white-box mean over draws", "train s",
           "train steps", "parameters", "sanity checks (white-box)")  # fmt: skip


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _cells(row: dict) -> tuple[str, ...]:
    checks = (
        "-"
        if row["flagged"] is None
        else ("FLAGGED: " + ", ".join(row["flagged"]) if row["flagged"] else "all passed")
    )
    mean = _percent(row["whitebox_accuracy_mean_over_draws"]) if row["randomized"] else "-"
    return (row["method"], f"{row['eps']:.4g}", _percent(row["clean_accuracy"]), _percent(row["blackbox_accuracy"]),
            _percent(row["whitebox_accuracy"]), mean, f"{row['train_seconds']:.0f}", str(row["train_steps"]), f"{row['parameters']:,}", checks)  # fmt: skip


def monotone_violations(results: dict, tolerance: float = 0.0) -> list[str]:
    """Defences whose black-box or white-box accuracy rises with eps by more than `tolerance` (a
    sanity check of spec D: a stronger perturbation never helps the defence)."""
    by_method: dict[str, list[dict]] = {}
    for row in results["rows"]:
        by_method.setdefault(row["method"], []).append(row)
    found = []
    for method, rows in by_method.items():
        rows = sorted(rows, key=lambda r: r["eps"])
        for key in ("blackbox_accuracy", "whitebox_accuracy"):
            values = [r[key] for r in rows]
            if any(b > a + tolerance for a, b in itertools.pairwise(values)):
                found.append(f"{method} ({key.split('_')[0]})")
    return found


def format_ensemble_table(results: dict) -> str:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in results["rows"]]
    return "\n".join(lines)


def _transfer_strength(results: dict) -> str:
    """The surrogates' clean accuracy and the baseline's black-box accuracy at check_eps, which spec
    A.6 expects near 0: a transfer set from weak surrogates flatters every defence."""
    s, b = results["settings"], results["settings"]["budget"]
    surrogates = ", ".join(f"{name} {_percent(acc)}%" for name, acc in s["surrogate_clean_accuracy"].items())
    baseline = [r for r in results["rows"] if r["method"] == "baseline" and r["eps"] == b["check_eps"]]
    line = f"Surrogates' clean accuracy: {surrogates}."
    if baseline:
        line += (f" The baseline's black-box accuracy at eps {b['check_eps']:.4g}: "
                 f"{_percent(baseline[0]['blackbox_accuracy'])}% (DVERGE and EIO report about 0: a higher figure "
                 "means a weaker transfer set than theirs, which raises every black-box figure here).")  # fmt: skip
    return line


def _markdown(results: dict) -> str:
    s = results["settings"]
    b = s["budget"]
    rising = monotone_violations(results, 1.0 / max(b["eval_images"], 1))
    dverge = ", ".join(f"{r['method']} {r['train_steps']}" for r in results["rows"]
                       if r["method"].startswith("DVERGE") and r["eps"] == b["eps_list"][0])  # fmt: skip
    return (
        f"# robustkernels reproduce {' '.join(s['methods'])} ({b['name']} budget, {s['dataset']})\n\n"
        f"{b['model']}, batch {b['batch_size']}. EIO: n = {b['gates']} gates, p = {b['paths']} paths, "
        f"{b['pretrain_steps']} pre-training + {b['diversify_steps']} diversification steps "
        f"(eps_d {b['distill_eps']:.4g}, {b['distill_steps']} distillation steps), derived path fine-tuned "
        f"{b['finetune_steps']} steps at lr 0.001. DVERGE-K steps: {dverge or '-'}"
        f"{' (DVERGE-3: EIO training time)' if b['match_wall_clock'] else ''}. Baseline: {b['baseline_steps']} steps.\n\n"
        f"On {b['eval_images']} test images. Black-box: all-or-nothing over the clean image and "
        f"{len(s['transfer_versions'])} transfer versions per image from the surrogates "
        f"{sorted({v.split('/')[0] for v in s['transfer_versions']})} (momentum PGD x{b['transfer_starts']}, "
        f"M-DI²-FGSM, SGM; CE and CW; {b['transfer_steps']} steps of eps/5). White-box: PGD-{b['whitebox_steps']}, "
        f"step eps/5, {b['whitebox_restarts']} restart(s), all-or-nothing; the random-gate RGN with EOT over "
        f"{b['eot_draws']} draws and right on every one of {b['draws']} draws (worst of k). Sanity checks at "
        f"eps {b['check_eps']:.4g}; every image's worst over their runs is the white-box figure there; at the other eps it is the PGD as run. {_transfer_strength(results)}\n\n"
        + format_ensemble_table(results)
        + f"\n\nOne seed and one derived path; at {b['eval_images']} images a figure p has a standard error of "
        f"sqrt(p (1 - p) / {b['eval_images']}), at most {50 / max(b['eval_images'], 1) ** 0.5:.1f} points."
        + "\n\nAccuracy rising with eps: "
        + (", ".join(rising) if rising else "none")
        + "\n"
    )


def plot_accuracy_vs_eps(results: dict, png_path: str | Path) -> Path:
    """Black-box (left) and white-box (right) accuracy against eps, one line per defence."""
    matplotlib = require("matplotlib", "plotting", "matplotlib")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "plotting", "matplotlib")
    figure, panels = pyplot.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    methods = list(dict.fromkeys(row["method"] for row in results["rows"]))
    for axes, key, title in zip(panels, ("blackbox_accuracy", "whitebox_accuracy"), ("black-box transfer", "white-box PGD"),
                                strict=True):  # fmt: skip
        for method in methods:
            rows = sorted((r for r in results["rows"] if r["method"] == method), key=lambda r: r["eps"])
            axes.plot([r["eps"] for r in rows], [100 * r[key] for r in rows], "o-", label=method)
        axes.set(xlabel="perturbation strength eps (L-inf)", title=title)
    panels[0].set_ylabel("accuracy (%)")
    panels[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    pyplot.close(figure)
    return Path(png_path)


def write_ensemble_results(results: dict, out: str | Path) -> dict[str, Path]:
    """out/results.json, out/results.md and out/accuracy-vs-eps.png; returns their paths."""
    return write_results(
        results, out, markdown=_markdown, plot=plot_accuracy_vs_eps, plot_name="accuracy-vs-eps.png"
    )
