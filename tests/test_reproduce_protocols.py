"""`reproduce`'s budgets per data set (the papers' epochs and batch sizes, `paper` needing a real
data set) and the papers' evaluation protocol beside the library's."""

import json
from dataclasses import replace

import pytest
import torch

from robustkernels.api import cli
from robustkernels.api.reproduce import BUDGETS, Budget, budget_for
from robustkernels.api.reproduce.budgets import train_steps
from robustkernels.api.reproduce.paper_protocol import BestTracker, mean_over_seeds


@pytest.mark.parametrize(
    ("dataset", "model", "batch", "epochs", "smart_epochs"),
    [
        ("cifar10", "resnet34", 128, 200, 200),
        ("cifar100", "resnet34", 128, 200, 200),
        ("svhn", "wrn-16-8", 128, 200, 200),
        ("stl10", "wrn-40-2", 64, 200, 200),
        ("tiny-imagenet", "resnet34", 128, 120, 80),
    ],
)
def test_paper_budget_trains_the_papers_epochs_and_batch(dataset, model, batch, epochs, smart_epochs):
    budget = budget_for("paper", dataset)
    assert (budget.model, budget.batch_size, budget.epochs) == (model, batch, epochs)
    assert train_steps(budget, 50_000, "float") == epochs * (50_000 // batch)
    assert train_steps(budget, 50_000, "smart") == smart_epochs * (50_000 // batch)
    assert budget.eps == 8 / 255


def test_paper_budget_needs_a_papers_data_set(capsys):
    for dataset in (None, "digits"):
        with pytest.raises(ValueError, match="paper budget needs one of the papers' data sets"):
            budget_for("paper", dataset)
    assert cli.main(["reproduce", "float", "--budget", "paper", "--out", "/nonexistent"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert budget_for("smoke", None) == budget_for("smoke", "digits")  # no data set: the digits
    assert train_steps(budget_for("small", "digits"), 10**6) == BUDGETS["small"].train_steps


def test_best_tracker_keeps_the_best_ca_and_ra_apart_and_means_seeds(tmp_path, monkeypatch):
    import robustkernels.api.reproduce.paper_protocol as protocol

    scores = iter([(0.5, 0.1), (0.4, 0.3), (0.9, 0.2), (0.7, 0.4)])
    monkeypatch.setattr(protocol, "paper_scores", lambda *_args: next(scores))
    one_setting = lambda _model: [({}, __import__("contextlib").nullcontext(), False)]  # noqa: E731
    model = torch.nn.Linear(1, 1)
    first = BestTracker(tmp_path / "a", one_setting, None, 0.1, 0.01, 0, total_steps=10)
    assert first.points == {2, 4, 6, 8, 10}
    first(model, 3)  # not a scoring point
    first(model, 4), first(model, 10), first.score(model, 10)  # the last scored once
    assert first.best == {"steps": [4, 10], "best": [[0.5, 0.3]]}  # best CA and best RA, each its own
    assert BestTracker(tmp_path / "a", one_setting, None, 0.1, 0.01, 0, 10).best == first.best  # kept on disk
    second = BestTracker(tmp_path / "b", one_setting, None, 0.1, 0.01, 0, total_steps=10)
    second.score(model, 2), second.score(model, 10)
    (mean,) = mean_over_seeds([first, second])
    assert mean["paper_clean_accuracy"] == pytest.approx(0.7) and mean[
        "paper_robust_accuracy"
    ] == pytest.approx(0.35)
    with pytest.raises(RuntimeError, match="never scored"):
        mean_over_seeds([first, BestTracker(tmp_path / "c", one_setting, None, 0.1, 0.01, 0, 10)])


def test_reproduce_with_the_papers_protocol_trains_three_seeds_and_labels_both(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    tiny = Budget("smoke", "small-cnn", 2, 16, 8, 1, 2, draws=2, square_queries=5, eps=32 / 255, step=8 / 255)
    monkeypatch.setitem(BUDGETS, "smoke", replace(tiny, attack_steps=1))
    out = tmp_path / "paper"
    argv = ["reproduce", "pgd-at", "--protocol", "paper", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["protocol"] == "paper"
    for row in results["rows"]:
        assert row["paper_seeds"] == 3 and row["paper_checkpoints"] == [2, 2, 2]
        assert 0 <= row["paper_robust_accuracy"] <= 1 and 0 <= row["paper_clean_accuracy"] <= 1
        assert row["epoch_seconds"] > 0 and row["macs"] > 0
    assert (out / "pgd-at-adv1.0-seed2" / "paper_protocol.json").exists()
    markdown = (out / "results.md").read_text()
    assert "CA / RA (papers' protocol)" in markdown and "optimistic by design" in markdown
