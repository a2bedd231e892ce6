"""DVERGE-3 for EIO's wall-clock time (python_api/reproduce/matched_steps.py): the probes' layers,
which step of a probe is timed, and the matching arithmetic."""

import json
import time

import pytest
from test_reproduce_ensembles import TINY

from robustkernels.api.reproduce import ensembles
from robustkernels.api.reproduce import matched_steps as matching
from robustkernels.api.reproduce.ensembles import _dverge3_steps, _Runs
from robustkernels.api.train import TrainConfig


def test_middle_layers_average_to_the_mean_of_a_uniform_draw():
    assert matching.middle_layers(1, 19) == [10]
    assert matching.middle_layers(2, 19) == [10, 11]  # mean 10.5
    assert matching.middle_layers(3, 3) == [3]


def test_the_timed_step_is_neither_the_warm_up_nor_the_last(monkeypatch):
    durations = {"warm-up": 0.2, "timed": 0.02, "last, with its checkpoint": 0.2}

    def fake_train(model, method, data, config, out, *, log, on_step):
        for step, seconds in enumerate(durations.values(), start=1):
            time.sleep(seconds)
            on_step(step)

    monkeypatch.setattr(matching, "train", fake_train)
    config = TrainConfig(epochs=None, max_steps=3, log_every=3)
    (measured,) = matching.seconds_per_step([(lambda: None, None)], None, config, rounds=1)
    assert 0.02 <= measured < 0.1
    with pytest.raises(ValueError, match="3 steps"):
        matching.seconds_per_step(
            [(lambda: None, None)], None, TrainConfig(epochs=None, max_steps=2), rounds=1
        )


def test_matched_steps_cost_what_the_reference_stages_cost_and_are_kept(tmp_path):
    record = tmp_path / "dverge-3" / "matched_steps.json"
    a, b1, b2, t1 = (object() for _ in range(4))
    seconds = {a: 0.1, b1: 2.0, b2: 3.0, t1: 2.0}
    measured = []

    def measure(probes):
        measured.append(probes)
        return [seconds[p] for p in probes]

    reference = [(300, [a]), (600, [b1, b2])]  # 300 steps at 0.1 s, 600 at the mean of 2 and 3 s
    assert matching.matched_steps(record, reference, [t1], measure, print) == round((30 + 1500) / 2.0)
    kept = json.loads(record.read_text())
    assert kept["reference_seconds_per_step"] == [0.1, 2.5] and kept["matched_seconds"] == pytest.approx(1530)
    assert matching.matched_steps(record, reference, [t1], measure, print) == 765 and len(measured) == 1
    # a budget with other reference steps decides again
    assert matching.matched_steps(record, [(300, [a]), (300, [b1, b2])], [t1], measure, print) == 390
    assert len(measured) == 2


def test_dverge3_probes_distil_at_each_methods_middle_layer(tmp_path, monkeypatch):
    probed = []

    def fake_seconds(probes, data, config):
        probed.extend(probes)
        assert config.max_steps == 3
        return [1.0] * len(probes)

    monkeypatch.setattr(ensembles, "seconds_per_step", fake_seconds)
    runs = _Runs(TINY, "digits", None, tmp_path, 0, "cpu", print)
    steps = _dverge3_steps(TINY, runs, lambda: None, 0)
    layers = {type(method).__name__: [] for _, method in probed}
    for _, method in probed:
        layers[type(method).__name__].append(
            getattr(method, "layer", None) or getattr(method, "fixed_layer", None)
        )
    taps = len(ensembles.eio_blocks(ensembles._gated(TINY, runs, "probe")))
    assert layers["EIOPretraining"] == [None]
    assert layers["EIODiversification"] == matching.middle_layers(2, taps)
    assert layers["DVERGETraining"] == matching.middle_layers(1, taps)
    assert steps == TINY.pretrain_steps + TINY.diversify_steps  # every probe 1 s per step
