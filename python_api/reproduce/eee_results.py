"""`reproduce eee`'s results: results.json (one row per model and eps) and results.md, the paper's
protocol and the adaptive number side by side, and the mean versus CrossMax comparison."""

import itertools
import json
from pathlib import Path

__all__ = ["format_eee_tables", "not_monotone", "write_eee_results"]

_HEADER = (
    "method",
    "eps",
    "CA",
    "CA every draw",
    "AA-rand (paper protocol)",
    "adaptive (min over all)",
    "gap",
    "verdict",
    "strongest adaptive attack",
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _eps(value: float) -> str:
    return f"{value * 255:.3g}/255"


def _strongest(row: dict) -> str:
    """The adaptive attack that took the most images after AutoAttack rand."""
    previous, best, drop = row["rand_accuracy"], "-", 0.0
    for name, after in list(row["robust_after"].items())[1:]:
        if previous - after > drop:
            best, drop = name, previous - after
        previous = after
    return best if drop == 0 else f"{best} (-{_pct(drop)})"


def not_monotone(rows: list[dict]) -> list[str]:
    """Methods whose adaptive accuracy rises with eps (a failed sanity check of spec part D)."""
    failed = []
    for method in dict.fromkeys(r["method"] for r in rows):
        ordered = sorted((r for r in rows if r["method"] == method), key=lambda r: r["eps"])
        values = [r["adaptive_accuracy"] for r in ordered]
        if any(b > a for a, b in itertools.pairwise(values)):
            failed.append(method)
    return failed


def _zero_gradients(rows: list[dict]) -> str:
    flagged = sorted(
        {f"{r['method']} {_pct(r['zero_gradient_fraction'])}%" for r in rows if r["zero_gradient_fraction"]}
    )
    return ", ".join(flagged) if flagged else "none"


def _cells(row: dict) -> tuple[str, ...]:
    verdict = "GRADIENT MASKING" if row["gradient_masking"] else "within noise"
    return (
        row["method"], _eps(row["eps"]), _pct(row["clean_accuracy"]), _pct(row["clean_accuracy_every_draw"]),
        _pct(row["rand_accuracy"]),
        _pct(row["adaptive_accuracy"]), f"{_pct(row['gap'])} (noise {_pct(row['noise'])})", verdict, _strongest(row),
    )  # fmt: skip


def _comparison(rows: list[dict]) -> list[str]:
    """Mean against CrossMax, per ensemble and eps: rand / adaptive for each."""
    lines = ["| ensemble | eps | mean: rand / adaptive | CrossMax: rand / adaptive |", "|---|---|---|---|"]
    by_key = {(r["method"], r["eps"]): r for r in rows}
    for row in rows:
        if not row["method"].endswith(", mean") and not row["method"].endswith("mean of predictors"):
            continue
        kind = row["method"].rsplit(",", 1)[0]
        crossmax = next(
            (r for (m, e), r in by_key.items() if e == row["eps"] and m.startswith(kind + ", CrossMax")), None
        )
        if crossmax is not None:
            pair = lambda r: f"{_pct(r['rand_accuracy'])} / {_pct(r['adaptive_accuracy'])}"  # noqa: E731
            lines.append(f"| {kind} | {_eps(row['eps'])} | {pair(row)} | {pair(crossmax)} |")
    return lines


def format_eee_tables(results: dict) -> str:
    rows = results["rows"]
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join([*lines, "", *_comparison(rows)])


def _markdown(results: dict) -> str:
    s = results["settings"]
    b = s["budget"]
    failed = not_monotone(results["rows"])
    return (
        f"# robustkernels reproduce eee ({b['name']} budget, {s['dataset']})\n\n"
        f"{b['model']} on multires stacks {tuple(s['resolutions'])}, {b['train_steps']} steps of batch "
        f"{b['batch_size']}{' (FGSM light AT)' if s['light_at'] else ''}; flattened heads at {', '.join(s['taps'])} "
        f"({b['head_steps']} Adam steps each, frozen backbone); {b['ensemble_models']} backbones for the model "
        f"ensembles, at {', '.join(map(_eps, b.get('ensemble_eps') or b['eps']))}. First {b['eval_images']} test images, L-inf. AA-rand: APGD-CE + APGD-DLR, {b['steps']} steps, "
        f"EOT {b['rand_eot_draws']} (the paper's protocol: 20 draws, AutoAttack's 100 steps, its points scored on one pass, not "
        f"the worst of {b['draws']} as here). Adaptive: the minimum per image over AA-rand "
        f"and APGD-CE with EOT {b['adaptive_eot_draws']}, the BPDA mean surrogate, the sum of the predictors' CE, "
        f"each predictor alone, transfer from the fixed-draw mean twin, APGD-T ({b['target_classes']} targets) and Square "
        f"({b['square_queries']} queries). Every point is scored on the real model and an image is robust only "
        f"if it is right on all of {b['draws']} fresh draws. Gap: AA-rand minus adaptive; flagged as gradient "
        "masking past two standard errors. CA is the mean over the draws; CA every draw, the robust columns' "
        "rule at eps 0. Sanity checks: adaptive accuracy not rising with eps "
        + (f"FAILED for {', '.join(failed)}" if failed else "passed")
        + "; images whose loss gradient at x is exactly zero (a cut gradient): "
        + _zero_gradients(results["rows"])
        + ".\n\n"
        + format_eee_tables(results)
        + "\n"
    )


def write_eee_results(results: dict, out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    paths["markdown"].write_text(_markdown(results))
    return paths
