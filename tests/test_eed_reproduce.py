"""`robustkernels reproduce eed` end to end on a tiny budget: the rows, their fields, the files."""

import json
from types import SimpleNamespace

import pytest
from helpers import RecordingBar

from robustkernels.api import cli
from robustkernels.api.commands import reproduce as reproduce_command
from robustkernels.api.reproduce.eed_budgets import EED_BUDGETS, EEDBudget, eed_budget_for

TINY = EEDBudget("smoke", "small-cnn", 6, 16, 1, 2, 2, 2, 2, 1, (0.8,), 1, 16, 8, 1, 1, 1, 2, 5, 2, True)


def test_reproduce_eed_writes_rows_table_and_plot(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(EED_BUDGETS, "smoke", TINY)
    monkeypatch.setattr(RecordingBar, "bars", [])
    monkeypatch.setattr(reproduce_command, "require", lambda *_args: SimpleNamespace(tqdm=RecordingBar))
    out = tmp_path / "eed"
    assert cli.main(["reproduce", "eed", "--budget", "smoke", "--out", str(out)]) == 0
    assert RecordingBar.bars[0].done == RecordingBar.bars[0].total
    results = json.loads((out / "results.json").read_text())
    rows = {row["method"]: row for row in results["rows"]}
    assert list(rows) == ["AT", "EED", "HYDRA", "HARP"]
    for row in rows.values():
        for field in (
            "clean_accuracy",
            "pgd_accuracy",
            "autoattack_accuracy",
            "cw_accuracy",
            "deepfool_accuracy",
        ):
            assert 0 <= row[field] <= row["clean_accuracy"] <= 1 or field == "clean_accuracy"
        assert row["nonzero_parameters"] > 0 and row["flop_speedup"] >= 1.0
        assert isinstance(row["flagged"], list)  # the sanity checks ran
    eed, at = rows["EED"], rows["AT"]
    assert 1 <= eed["members_used"] <= eed["team_size"] >= 2
    assert eed["nonzero_parameters"] <= 0.2 * at["nonzero_parameters"]  # the team's cap
    # the deployed predictor is scored on the worse of both attacks, per image
    for attack in ("pgd", "autoattack", "cw", "deepfool"):
        assert eed[f"{attack}_accuracy"] <= min(
            eed["per_target"][f"{attack}@{t}"] for t in ("full_team", "dynamic")
        )
    # the baselines match the team's non-zero parameters (within the rounding of a density)
    for method in ("HYDRA", "HARP"):
        assert (
            abs(rows[method]["nonzero_parameters"] - eed["nonzero_parameters"])
            <= 0.1 * eed["nonzero_parameters"]
        )
    points = results["sweeps"][0]["points"]
    assert [p["tau_c"] for p in points][-1] == 2.0
    # tau_c 2 never exits early: every member runs, on clean and on adversarial images
    assert points[-1]["members_used"] == points[-1]["members_used_adversarial"] == eed["team_size"]
    assert all(1 <= p["members_used_adversarial"] <= eed["team_size"] for p in points)
    assert (out / "eed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| EED | 0.8 |" in (out / "results.md").read_text()
    assert "| HARP | 0.8 |" in capsys.readouterr().out


def test_reproduce_eed_runs_alone_and_budgets_adapt(capsys):
    assert cli.main(["reproduce", "eed", "float", "--no-progress"]) == 2
    assert "eed runs on its own" in capsys.readouterr().err
    assert eed_budget_for("smoke", "digits").eps == pytest.approx(32 / 255)
    assert eed_budget_for("small", "cifar10").model == "resnet20"
    with pytest.raises(ValueError, match="budget"):
        eed_budget_for("huge", "digits")
