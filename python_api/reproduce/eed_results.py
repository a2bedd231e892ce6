"""`reproduce eed`'s results: results.json, a markdown table, and two plots (accuracy against
non-zero parameters per method and sparsity; accuracy against the members dynamic inference uses)."""

from pathlib import Path

from ..optional import require
from .results import write_results

__all__ = ["format_eed_table", "plot_eed", "write_eed_results"]

_HEADER = ("method", "sparsity", "clean", "PGD", "AA", "CW", "DF-L2 (0.5)", "DF-L2 (eps literal)",
           "non-zero params", "FLOP speed-up", "members used", "wall clock ms/image", "sanity checks")  # fmt: skip


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _clock(row) -> str:
    clock = row.get("wall_clock_ms_per_image")
    if isinstance(clock, dict):
        return f"{clock['dynamic']:.3f} (full team: batched {clock['team_batched']:.3f}, sequential {clock['full_sequential']:.3f})"
    return "-" if clock is None else f"{clock:.3f}"


def _cells(row: dict) -> tuple[str, ...]:
    flagged = row.get("flagged")
    checks = (
        "not run" if flagged is None else ("all passed" if not flagged else "FLAGGED: " + ", ".join(flagged))
    )
    used = row.get("members_used")
    return (
        row["method"], f"{row['sparsity']:g}", _pct(row["clean_accuracy"]), _pct(row["pgd_accuracy"]),
        _pct(row["autoattack_accuracy"]), _pct(row["cw_accuracy"]), _pct(row["deepfool_accuracy"]),
        _pct(row["deepfool_literal_accuracy"]), f"{row['nonzero_parameters']:,}", f"{row['flop_speedup']:.2f}x",
        "-" if used is None else f"{used:.2f} of {row['team_size']}", _clock(row), checks,
    )  # fmt: skip


def format_eed_table(results: dict) -> str:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in results["rows"]]
    return "\n".join(lines)


def _markdown(results: dict) -> str:
    settings, budget = results["settings"], results["settings"]["budget"]
    teams = [
        f"- sparsity {r['sparsity']:g}: team {', '.join(r['team'])} from a pool of {r['pool_size']} "
        f"(RD {r['rd']:.3f}{'' if r['rd_reached_threshold'] else ', threshold 0.7 not reached'}; "
        f"{r['rd_after_ensemble_learning']:.3f} after ensemble learning; {r['teams_scored']} teams scored)"
        for r in results["rows"]
        if r["method"] == "EED"
    ]
    return (
        f"# robustkernels reproduce eed ({budget['name']} budget, {settings['dataset']})\n\n"
        f"{budget['model']}; dense PGD-AT base {budget['pretrain_steps']} steps of batch {budget['batch_size']} "
        f"against PGD-{budget['attack_steps']} (L-inf eps {budget['eps']:.4g}, step {budget['step']:.4g}); "
        f"pruning {budget['prune_steps']}, fine-tuning {budget['finetune_steps']}, ensemble learning "
        f"{budget['ensemble_steps']} steps; d = {budget['subsets']}. First {budget['eval_images']} test images: "
        f"PGD-{budget['pgd_steps']} (CE), the AutoAttack standard suite ({budget['autoattack_steps']} steps; "
        f"FAB-T and Square only with torchattacks), CW-margin PGD-{budget['cw_steps']} at L-inf eps "
        f"{budget['eps']:.4g}, DeepFool-L2 ({budget['deepfool_steps']} steps) at eps_2 = 0.5 and at the literal "
        f"eps_2 = {budget['eps']:.4g}. EED is its dynamic-inference predictor, attacked through the full-team "
        "average and through its own dynamic forward: an image counts as robust only if it survives both. "
        "Non-zero params: weights and biases of the convolutions and linear layers (the team's summed); "
        "FLOP speed-up: dense multiply-accumulates over those of the non-zero weights actually run (EED: the "
        "members each clean test image used); wall clock with dense kernels on this machine.\n\n"
        + format_eed_table(results)
        + "\n\n"
        + "\n".join(teams)
        + "\n"
    )


def plot_eed(results: dict, png_path: str | Path) -> Path:
    """Left: clean and PGD accuracy against non-zero parameters (every method and sparsity);
    right: dynamic inference's accuracy against the members it uses over tau_c."""
    matplotlib = require("matplotlib", "plotting", "matplotlib")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "plotting", "matplotlib")
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4.5))
    for method in dict.fromkeys(r["method"] for r in results["rows"]):
        rows = sorted(
            (r for r in results["rows"] if r["method"] == method), key=lambda r: r["nonzero_parameters"]
        )
        params = [r["nonzero_parameters"] for r in rows]
        (line,) = left.plot(params, [100 * r["pgd_accuracy"] for r in rows], "o-", label=f"{method} PGD")
        left.plot(
            params,
            [100 * r["clean_accuracy"] for r in rows],
            "s--",
            color=line.get_color(),
            label=f"{method} clean",
        )
    left.set(xscale="log", xlabel="non-zero parameters", ylabel="accuracy (%)", title="sparsity")
    left.legend(fontsize=7)
    for sweep in results["sweeps"]:
        used = [p["members_used"] for p in sweep["points"]]
        right.plot(
            used,
            [100 * p["clean_accuracy"] for p in sweep["points"]],
            "s--",
            label=f"clean, sparsity {sweep['sparsity']:g}",
        )
        right.plot([p["members_used_adversarial"] for p in sweep["points"]],
                   [100 * p["pgd_transfer_accuracy"] for p in sweep["points"]], "o-",
                   label=f"PGD vs full team, sparsity {sweep['sparsity']:g}")  # fmt: skip
    right.set(xlabel="mean members used (tau_c sweep)", ylabel="accuracy (%)", title="dynamic inference")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    pyplot.close(figure)
    return Path(png_path)


def write_eed_results(results: dict, out: str | Path) -> dict[str, Path]:
    """Writes out/results.json, out/results.md and out/eed.png; returns their paths."""
    return write_results(results, out, markdown=_markdown, plot=plot_eed, plot_name="eed.png")
