"""Evaluation results as JSON and as a printable report in which flagged sanity checks
always appear (first, and each with its evidence)."""

import json


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=True)


def _settings(result: dict) -> str:
    parts = [f"{result.get('norm', '?')} eps={result.get('eps', '?')}"]
    for key in ("steps", "restarts", "eot_draws", "draws"):
        if key in result:
            parts.append(f"{key}={result[key]}")
    return ", ".join(parts)


def _status(check: dict) -> str:
    if check.get("skipped"):
        return "skipped"
    return "ok" if check["passed"] else "FLAGGED"


def format_report(result: dict) -> str:
    lines = []
    checks = result.get("sanity_checks", [])
    flagged = [c for c in checks if not c["passed"]]
    if flagged:
        lines.append(f"WARNING: {len(flagged)} sanity check(s) flagged; this evaluation cannot be trusted:")
        lines += [f"  [FLAGGED] {c['name']}: {c['detail']}" for c in flagged]
        lines.append("")
    lines.append(
        f"attack {result.get('attack', '?')} ({_settings(result)}) on {result.get('n', '?')} samples"
    )
    draws = result.get("draws", 1)
    lines.append(
        f"  clean accuracy:  {result['clean_accuracy']:.4f}" + (" (mean over draws)" if draws > 1 else "")
    )
    if "robust_accuracy" in result:
        every = f" (right on every one of {draws} draws)" if draws > 1 else ""
        lines.append(f"  robust accuracy: {result['robust_accuracy']:.4f}{every}")
        if result.get("robust_accuracy_from", "as run") != "as run":
            lines.append(
                f"    {result['robust_accuracy_from']}; as run: {result['robust_accuracy_as_run']:.4f}"
            )
        if draws > 1:
            mean = result["robust_accuracy_mean_over_draws"]
            lines.append(f"  robust accuracy averaged over draws (not a worst case): {mean:.4f}")
    if len(result.get("robust_accuracy_per_restart", [])) > 1:
        per_restart = ", ".join(f"{a:.4f}" for a in result["robust_accuracy_per_restart"])
        lines.append(f"  after each restart: {per_restart}")
    if "transfer_accuracy" in result:
        lines.append(f"  transfer accuracy (all surrogates): {result['transfer_accuracy']:.4f}")
        if result.get("draws", 1) > 1:
            mean = result["transfer_accuracy_mean_over_draws"]
            lines.append(f"  transfer accuracy averaged over draws (not a worst case): {mean:.4f}")
        lines += [f"    from {name}: {acc:.4f}" for name, acc in result["per_surrogate"].items()]
    if result.get("suite_attacks"):
        lines.append(f"  suite: {', '.join(result['suite_attacks'])}")
    for name, reason in result.get("skipped_attacks", {}).items():
        lines.append(f"  skipped {name}: {reason}")
    if checks:
        lines.append("sanity checks:")
        lines += [f"  [{_status(c)}] {c['name']}: {c['detail']}" for c in checks]
    return "\n".join(lines)
