"""What a stopped `reproduce` run keeps for its re-run: scored rows (scored_rows.py) and the
training time of models trained over several calls (train_seconds.py)."""

import math
import types

import torch

from robustkernels.api.reproduce.scored_rows import ScoredRows, evaluation_code_digest, model_digest
from robustkernels.api.reproduce.train_seconds import recorded_train_seconds


def _counting_score(result):
    calls = []

    def score():
        calls.append(1)
        return result

    return score, calls


def test_a_row_is_scored_once_for_the_same_model_and_settings(tmp_path):
    model = torch.nn.Linear(3, 2)
    score, calls = _counting_score({"method": "m", "eps": 0.03, "accuracy": 0.5, "per": (1, 2)})
    first = ScoredRows(tmp_path, scored_by=(), settings={"budget": "small", "seed": 0}).get_or_score(
        "m eps 0.03", model, score
    )
    again = ScoredRows(tmp_path, scored_by=(), settings={"seed": 0, "budget": "small"}).get_or_score(
        "m eps 0.03", model, score
    )
    assert len(calls) == 1
    # a fresh result and a stored one read the same (both as JSON gives them back)
    assert first == again == {"method": "m", "eps": 0.03, "accuracy": 0.5, "per": [1, 2]}


def test_a_changed_model_settings_or_key_is_scored_afresh(tmp_path):
    model = torch.nn.Linear(3, 2)
    score, calls = _counting_score({"accuracy": 0.5})
    rows = ScoredRows(tmp_path, scored_by=(), settings={"seed": 0})
    rows.get_or_score("m eps 0.03", model, score)
    with torch.no_grad():
        model.weight[0, 0] += 1e-6
    rows.get_or_score("m eps 0.03", model, score)  # retrained weights
    ScoredRows(tmp_path, scored_by=(), settings={"seed": 1}).get_or_score(
        "m eps 0.03", model, score
    )  # other settings
    ScoredRows(tmp_path, scored_by=(), settings={"seed": 1}).get_or_score(
        "m eps 0.05", model, score
    )  # other row
    assert len(calls) == 4
    ScoredRows(tmp_path, scored_by=(), settings={"seed": 1}).get_or_score("m eps 0.05", model, score)
    assert len(calls) == 4


def test_a_row_scored_by_other_evaluation_code_is_scored_again(tmp_path):
    model = torch.nn.Linear(3, 2)
    score, calls = _counting_score({"accuracy": 0.5})
    scorer = tmp_path / "scorer.py"
    scorer.write_text("STEPS = 10\n")
    module = types.ModuleType("scorer")
    module.__file__ = str(scorer)
    rows = tmp_path / "rows"
    ScoredRows(rows, {}, scored_by=[module]).get_or_score("m", model, score)
    ScoredRows(rows, {}, scored_by=[module]).get_or_score("m", model, score)
    assert len(calls) == 1
    scorer.write_text("STEPS = 20\n")  # the evaluation changed: its rows are scored again
    ScoredRows(rows, {}, scored_by=[module]).get_or_score("m", model, score)
    assert len(calls) == 2
    # a package counts with every file under it
    package = tmp_path / "scorers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "attack.py").write_text("STEPS = 10\n")
    scorers = types.ModuleType("scorers")
    scorers.__file__ = str(package / "__init__.py")
    before = evaluation_code_digest([scorers])
    (package / "attack.py").write_text("STEPS = 20\n")
    assert evaluation_code_digest([scorers]) != before


def test_a_row_left_unreadable_by_a_kill_is_scored_again(tmp_path):
    model = torch.nn.Linear(3, 2)
    score, calls = _counting_score({"accuracy": 0.5})
    rows = ScoredRows(tmp_path, scored_by=(), settings={})
    rows.get_or_score("m", model, score)
    (stored,) = tmp_path.glob("*.json")
    stored.write_text(stored.read_text()[:10])  # cut short
    assert rows.get_or_score("m", model, score) == {"accuracy": 0.5}
    assert len(calls) == 2 and rows.get_or_score("m", model, score) == {"accuracy": 0.5} and len(calls) == 2


def test_model_digest_covers_float_state_but_not_integer_state():
    model = torch.nn.BatchNorm1d(4)
    before = model_digest(model)
    model.num_batches_tracked += 5  # integer state (as a noise stream's position) is left out
    assert model_digest(model) == before
    model.running_mean += 1.0
    assert model_digest(model) != before
    scalar = torch.nn.Module()
    scalar.register_buffer("rate", torch.tensor(0.5))  # 0-dim float state
    assert model_digest(scalar) != model_digest(torch.nn.Module())


def test_train_seconds_sum_over_the_calls_that_trained_the_model(tmp_path):
    assert math.isnan(recorded_train_seconds(tmp_path, 10.0, 4, 10))  # stopped after 4 of 10 steps
    assert recorded_train_seconds(tmp_path, 15.0, 6, 10) == 25.0  # resumed and finished
    assert recorded_train_seconds(tmp_path, 0.1, 0, 10) == 25.0  # reused: keeps its time


def test_train_seconds_of_a_run_whose_killed_steps_are_missing_are_unknown(tmp_path):
    # a call killed before its end records nothing; the re-run trains from the last checkpoint only
    assert math.isnan(recorded_train_seconds(tmp_path, 15.0, 6, 10))


def test_train_seconds_of_an_earlier_versions_record_count_as_finished(tmp_path):
    (tmp_path / "train_seconds.json").write_text('{"seconds": 12.5}')  # no steps: written when finished
    assert recorded_train_seconds(tmp_path, 0.1, 0, 600) == 12.5
