"""PNG plots of a run's metrics (matplotlib, drawn off-screen)."""

import json
from pathlib import Path

from .optional import require

__all__ = ["plot_training"]


def plot_training(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Training loss, training accuracy and validation accuracy against the epoch, from a
    metrics.jsonl written by the trainer, saved as one PNG."""
    matplotlib = require("matplotlib", "plotting", "matplotlib")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "plotting", "matplotlib")
    entries = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    train = [e for e in entries if e["event"] == "train"]
    val = [e for e in entries if e["event"] == "val"]
    figure, (loss_axes, accuracy_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot([e["epoch"] for e in train], [e["loss"] for e in train])
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="loss")
    accuracy_axes.plot(
        [e["epoch"] for e in train], [e["accuracy"] for e in train], label="train (method's batch)"
    )
    if val:
        accuracy_axes.plot(
            [e["epoch"] for e in val], [e["accuracy"] for e in val], "o-", label="validation (clean)"
        )
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    accuracy_axes.legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    pyplot.close(figure)
    return Path(png_path)
