"""`reproduce eio|dverge` end to end on a tiny budget, its results files and its CLI."""

import json
from dataclasses import replace

import pytest

from robustkernels.api import cli
from robustkernels.api.reproduce import ensembles
from robustkernels.api.reproduce.ensemble_budgets import ENSEMBLE_BUDGETS, ensemble_budget_for
from robustkernels.api.reproduce.ensemble_results import monotone_violations, write_ensemble_results
from robustkernels.api.reproduce.ensembles import reproduce_ensembles

TINY = replace(
    ensemble_budget_for("smoke", "digits"), batch_size=32, surrogate_sizes=(2,), surrogate_steps=4,
    baseline_steps=4, pretrain_steps=3, diversify_steps=2, finetune_steps=2, dverge_sizes=(2, 3),
    dverge_steps=2, eval_images=8, transfer_steps=2, whitebox_steps=2, whitebox_restarts=1, eot_draws=2,
    draws=2, distill_steps=1, match_wall_clock=True,
)  # fmt: skip


def test_reproduce_eio_and_dverge_write_one_row_per_defence_and_eps(tmp_path, monkeypatch):
    results = reproduce_ensembles(["eio", "dverge"], TINY, tmp_path)
    methods = ["baseline", "EIO (no fine-tune)", "EIO", "EIO-RGN (random gates)", "DVERGE-2", "DVERGE-3"]
    assert [row["method"] for row in results["rows"]] == [m for m in methods for _ in TINY.eps_list]
    for row in results["rows"]:
        assert row["eps"] in TINY.eps_list
        for key in ("clean_accuracy", "blackbox_accuracy", "whitebox_accuracy"):
            assert 0.0 <= row[key] <= 1.0
        # all-or-nothing: never above the clean accuracy
        assert (
            row["blackbox_accuracy"] <= row["clean_accuracy"]
            and row["whitebox_accuracy"] <= row["clean_accuracy"]
        )
        assert (row["flagged"] is not None) == (row["eps"] == TINY.check_eps)
    rgn = [row for row in results["rows"] if row["method"].startswith("EIO-RGN")]
    assert all(row["randomized"] and row["draws"] == 2 and row["eot_draws"] == 2 for row in rgn)
    # (1 start + DI + SGM) x (CE, CW) for the one surrogate
    assert len(results["settings"]["transfer_versions"]) == 6
    paths = write_ensemble_results(results, tmp_path)
    stored = json.loads(paths["json"].read_text())
    assert stored["rows"][0].keys() >= {
        "method",
        "eps",
        "clean_accuracy",
        "blackbox_accuracy",
        "whitebox_accuracy",
    }
    assert paths["plot"].stat().st_size > 0 and "| EIO |" in paths["markdown"].read_text()
    # DVERGE-3's steps cost what EIO's two stages cost, on probes of all three side by side
    matched = json.loads((tmp_path / "dverge-3" / "matched_steps.json").read_text())
    per_step = matched["reference_seconds_per_step"]
    assert len(per_step) == 2 and min(per_step) > 0 and matched["seconds_per_step"] > 0
    assert matched["matched_seconds"] == pytest.approx(
        TINY.pretrain_steps * per_step[0] + TINY.diversify_steps * per_step[1]
    )
    assert matched["steps"] == max(1, round(matched["matched_seconds"] / matched["seconds_per_step"]))
    assert len(list((tmp_path / "rows").glob("*.json"))) == len(results["rows"])
    dverge3 = [row for row in results["rows"] if row["method"] == "DVERGE-3"]
    assert all(row["train_steps"] == matched["steps"] for row in dverge3)
    markdown = paths["markdown"].read_text()
    assert f"DVERGE-3 {matched['steps']}" in markdown and "Surrogates' clean accuracy: baseline" in markdown
    assert all(0 <= acc <= 1 for acc in results["settings"]["surrogate_clean_accuracy"].values())
    # a re-run reuses the trained models, the stored transfer sets and the scored rows
    monkeypatch.setattr(ensembles, "transfer_set_accuracy", _never)
    monkeypatch.setattr(ensembles, "robust_accuracy", _never)
    monkeypatch.setattr(ensembles, "evaluate", _never)
    again = reproduce_ensembles(["eio", "dverge"], TINY, tmp_path)
    assert again["rows"] == results["rows"]


def _never(*args, **kwargs):
    raise AssertionError("a stored row was scored again")


def test_monotone_check_flags_a_rise_with_eps():
    rows = [
        {"method": "m", "eps": e, "blackbox_accuracy": a, "whitebox_accuracy": 0.0}
        for e, a in ((0.01, 0.2), (0.03, 0.5))
    ]
    assert monotone_violations({"rows": rows}) == ["m (blackbox)"]
    rows[1]["blackbox_accuracy"] = 0.1
    assert monotone_violations({"rows": rows}) == []


def test_budgets_scale_eps_on_the_digits_and_keep_the_papers_protocol():
    paper = ensemble_budget_for("paper", "cifar10")
    assert paper.eps_list == (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07) and paper.surrogate_sizes == (3, 5, 8)
    assert paper.transfer_steps == 100 and paper.transfer_starts == 3 and paper.whitebox_restarts == 5
    assert ensemble_budget_for("smoke", "digits").distill_eps == pytest.approx(
        4 * ENSEMBLE_BUDGETS["smoke"].distill_eps
    )
    assert ensemble_budget_for("small", "cifar10").model == "resnet20"
    with pytest.raises(ValueError, match="budget must be one of"):
        ensemble_budget_for("huge", "digits")


def test_model_option_trains_vgg_defences_against_the_budgets_surrogates():
    vgg = ensemble_budget_for("small", "cifar10", "vgg16-bn", gate_classifier=True)
    assert (vgg.model, vgg.surrogate_model, vgg.distill_eps, vgg.gate_classifier) == (
        "vgg16-bn",
        "resnet20",
        0.03,
        True,
    )
    same = ensemble_budget_for("small", "cifar10", "resnet20")
    assert same.surrogate_model is None and same.distill_eps == 0.07
    assert ensemble_budget_for("smoke", "digits", "vgg16-bn").distill_eps == pytest.approx(4 * 0.03)


def test_cli_runs_eio_on_its_own(capsys):
    assert cli.main(["reproduce", "eio", "float", "--out", "unused"]) == 2
    assert "run on their own" in capsys.readouterr().err
