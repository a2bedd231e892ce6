"""The training time of a reproduce run's model, summed over the calls that trained it: a run
stopped and resumed counts the steps each call trained, and a finished model that a later call
reuses keeps the time it was trained in.

The trainer keeps that sum in every checkpoint (TrainResult.train_seconds), so a killed call costs
only the steps after its last checkpoint, which are trained again. Checkpoints written before it did
fall back to a record of whole calls, which a killed call leaves incomplete (NaN)."""

import json
import math
from pathlib import Path

__all__ = ["recorded_train_seconds"]


def recorded_train_seconds(
    run_dir: Path, seconds: float, trained_steps: int, total_steps: int, kept: float = math.nan
) -> float:
    """`kept` (the checkpoints' own sum) when known; else adds this call's `seconds` for
    `trained_steps` steps to run_dir's record and gives the total once the record covers all
    `total_steps`, else NaN (steps trained after the last checkpoint of a killed call are not in it)."""
    if not math.isnan(kept):
        return kept
    record = Path(run_dir) / "train_seconds.json"
    earlier = json.loads(record.read_text()) if record.exists() else {"seconds": 0.0, "steps": 0}
    # a record without steps is an earlier version's, written only when a run had finished
    earlier.setdefault("steps", total_steps)
    if trained_steps:
        earlier = {"seconds": earlier["seconds"] + seconds, "steps": earlier["steps"] + trained_steps}
        partial = record.with_suffix(".partial")
        partial.write_text(json.dumps(earlier) + "\n")
        partial.replace(record)
    return earlier["seconds"] if earlier["steps"] == total_steps else math.nan
