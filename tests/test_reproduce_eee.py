"""`reproduce eee` end to end at a budget smaller than smoke: one row per model and eps with the
fields results.json promises, and the tables."""

import json
from dataclasses import replace

import torch

from python_api.reproduce import eee
from python_api.reproduce.eee import eee_budget, reproduce_eee
from python_api.reproduce.eee_results import format_eee_tables, not_monotone, write_eee_results

FIELDS = ("method", "eps", "clean_accuracy", "rand_accuracy", "adaptive_accuracy")


def test_reproduce_eee_writes_one_row_per_model_and_eps(tmp_path, monkeypatch):
    budget = replace(eee_budget("smoke", "digits"), train_steps=2, head_steps=1, eval_images=4, steps=1,
                     square_queries=2, target_classes=2, batch_size=16, head_batch_size=16)  # fmt: skip
    monkeypatch.setattr(eee, "_CHUNK", 3)  # each row scored in two stored pieces, of 3 and 1 images
    results = reproduce_eee(budget, tmp_path, dataset="digits")
    assert len(list((tmp_path / "rows").glob("*.json"))) == 2 * len(results["rows"])
    methods = [row["method"] for row in results["rows"]]
    assert (
        len(methods) == 5
        and "self-ensemble, CrossMax (k=3)" in methods
        and "2-model ensemble, mean" in methods
    )
    for row in results["rows"]:
        assert all(field in row for field in FIELDS)
        assert row["eps"] == budget.eps[0] and row["n"] == 4
        assert 0 <= row["adaptive_accuracy"] <= row["rand_accuracy"] <= 1  # the minimum includes rand
    paths = write_eee_results(results, tmp_path)
    assert json.loads(paths["json"].read_text())["rows"][0]["method"] == "multires backbone"
    assert "AA-rand (paper protocol)" in format_eee_tables(results)
    assert "CrossMax: rand / adaptive" in paths["markdown"].read_text()
    # a re-run resumes: the trained backbones and heads are reloaded and every stored row is reused
    monkeypatch.setattr(eee, "adaptive_evaluation", _never)
    monkeypatch.setattr(eee, "train_heads", _never)
    assert reproduce_eee(budget, tmp_path, dataset="digits")["rows"] == results["rows"]
    # a changed evaluation setting scores the rows again but keeps the heads (train_heads: _never)
    monkeypatch.setattr(eee, "adaptive_evaluation", _fixed_scores)
    rescored = reproduce_eee(replace(budget, square_queries=3), tmp_path, dataset="digits")["rows"]
    assert all(row["rand_accuracy"] == 0.5 for row in rescored)


def _never(*args, **kwargs):
    raise AssertionError("stored work was done again")


def _fixed_scores(model, x, y, **kwargs):
    return {"n": len(y), "clean_accuracy": 1.0, "clean_accuracy_every_draw": 1.0, "zero_gradient_fraction": 0.0,
            "rand_accuracy": 0.5, "adaptive_accuracy": 0.5, "robust_after": {"autoattack-rand": 0.5}}  # fmt: skip


def test_not_monotone_flags_accuracy_rising_with_eps():
    rows = [
        {"method": "m", "eps": 0.1, "adaptive_accuracy": 0.2},
        {"method": "m", "eps": 0.2, "adaptive_accuracy": 0.3},
    ]
    assert not_monotone(rows) == ["m"]
    assert not_monotone(rows[:1]) == []


def test_the_claims_eps_is_scored_first_and_the_model_ensembles_only_at_ensemble_eps(tmp_path, monkeypatch):
    small, large = 2 / 255, 8 / 255
    budget = replace(eee_budget("smoke", "cifar10"), train_steps=2, head_steps=1, eval_images=2, batch_size=16,
                     head_batch_size=16, eps=(small, large), ensemble_eps=(small,))  # fmt: skip
    assert eee_budget("small", "digits").ensemble_eps == (16 / 255,)  # scaled like eps on the digits
    scored = []

    def record(model, x, y, *, eps, **kwargs):
        scored.append(eps)
        return _fixed_scores(model, x, y)

    monkeypatch.setattr(eee, "adaptive_evaluation", record)
    monkeypatch.setattr(eee, "load_dataset", _tiny_cifar)
    monkeypatch.setattr(eee, "prepare_training_data", lambda *args: (_tiny_cifar(), None))
    rows = reproduce_eee(budget, tmp_path, dataset="cifar10")["rows"]
    assert scored == [large] * 3 + [small] * 5  # 3 self-ensemble rows first, then all at the small eps
    assert [row["eps"] for row in rows] == [small] * 5 + [large] * 3  # the table in eps order
    assert not any("model ensemble" in row["method"] for row in rows if row["eps"] == large)


def _tiny_cifar(*args, **kwargs):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=generator), torch.arange(
        32
    ) % 10
