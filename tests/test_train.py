"""The shared trainer of robustkernels.api.train: schedules, weight-decay groups, metrics,
atomic checkpoints, exact resume, and the PGD-AT / TRADES losses."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import robustkernels
from robustkernels.api import data, models
from robustkernels.api import train as T
from robustkernels.api.train import once_for_all

N_IMAGES, BATCH = 192, 32


def _digits():
    images, labels = data.load_digits("train")
    return images[:N_IMAGES], labels[:N_IMAGES]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return models.SmallCNN(width=4)


CONFIG = T.TrainConfig(
    epochs=2, batch_size=BATCH, lr=0.05, checkpoint_every=4, log_every=3, schedule="cosine"
)


class _Interrupt(Exception):
    pass


def _interrupt_at(step_to_stop: int):
    def on_step(step: int) -> None:
        if step == step_to_stop:
            raise _Interrupt

    return on_step


def _without_seconds(path):
    return [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in path.read_text().splitlines()
    ]


# ---------------------------------------------------------------- schedules and optimizer


def test_schedules():
    cosine = T.LRSchedule(0.1, 100, "cosine")
    assert cosine.lr_at(0) == pytest.approx(0.1) and cosine.lr_at(50) == pytest.approx(0.05)
    assert cosine.lr_at(100) == pytest.approx(0.0, abs=1e-12)
    multistep = T.LRSchedule(0.1, 100, "multistep", milestones=(0.5, 0.75), gamma=0.1)
    assert [multistep.lr_at(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    assert T.LRSchedule(0.1, 10, "constant").lr_at(9) == 0.1
    with pytest.raises(ValueError, match="schedule must be one of"):
        T.LRSchedule(0.1, 10, "linear")
    with pytest.raises(ValueError, match="milestones"):
        T.LRSchedule(0.1, 10, "multistep", milestones=(0.75, 0.5))


def test_noise_scales_get_no_weight_decay():
    model = robustkernels.nn.convert(_model(), skip=(models.SmallCNN.FIRST_CONV,))
    optimizer = T.build_sgd(model, lr=0.1, weight_decay=5e-4)
    decayed, exempt = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    exempt_names = sorted(names[id(p)] for p in exempt["params"])
    assert exempt_names and all(n.endswith(".alpha") for n in exempt_names) and exempt["weight_decay"] == 0.0
    assert decayed["weight_decay"] == 5e-4 and len(decayed["params"]) + len(exempt_names) == len(names)
    custom = T.build_sgd(model, lr=0.1, no_weight_decay=("*.bias", "*.alpha"))
    assert any(names[id(p)] == "fc.bias" for p in custom.param_groups[1]["params"])


def test_config_checks():
    with pytest.raises(ValueError, match="give epochs, max_steps or both"):
        T.TrainConfig(epochs=None)
    with pytest.raises(ValueError, match="batch_size"):
        T.TrainConfig(batch_size=0)


# ---------------------------------------------------------------- trainer, checkpoints, resume


def test_training_writes_metrics_and_a_loadable_checkpoint(tmp_path):
    model = _model()
    val = tuple(t[:64] for t in data.load_digits("test"))
    result = T.train(
        model, T.StandardTraining(), _digits(), CONFIG, tmp_path, val_data=val, run_info={"x": 1}, log=None
    )
    steps_per_epoch = N_IMAGES // BATCH
    assert result.total_steps == 2 * steps_per_epoch and result.resumed_from == 0
    lines = [json.loads(line) for line in (tmp_path / T.METRICS_NAME).read_text().splitlines()]
    train_steps = [e["step"] for e in lines if e["event"] == "train"]
    assert train_steps == [3, 6, 9, 12]  # every log_every=3 steps; epoch ends (6, 12) coincide
    assert [e["step"] for e in lines if e["event"] == "val"] == [6, 12]
    assert all(math.isfinite(e["loss"]) for e in lines if e["event"] == "train")
    assert all(0 <= e["accuracy"] <= 1 for e in lines)
    checkpoint = T.load_checkpoint(tmp_path)
    assert checkpoint.record["step"] == 12 and checkpoint.record["run"] == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-000000012.safetensors",
        "checkpoint.json",
        "metrics.jsonl",
    ]
    fresh = models.SmallCNN(width=4)
    fresh.load_state_dict(checkpoint.model_state)
    x = val[0][:8]
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_step_budget_caps_the_epochs(tmp_path):
    config = T.TrainConfig(epochs=5, max_steps=4, batch_size=BATCH, log_every=100)
    result = T.train(_model(), T.StandardTraining(), _digits(), config, tmp_path, log=None)
    assert result.total_steps == 4 and T.load_checkpoint(tmp_path).record["step"] == 4


def _straight_and_resumed(tmp_path, build, method, config, stop_after: int, checkpoint_at: int):
    """Trains build() with method straight through, and again killed after step `stop_after` and
    resumed from its checkpoint at `checkpoint_at` (with torch's global generator elsewhere);
    returns both models and run directories."""
    straight = build()
    T.train(straight, method, _digits(), config, tmp_path / "straight", log=None)

    interrupted_dir = tmp_path / "interrupted"
    with pytest.raises(_Interrupt):
        T.train(
            build(), method, _digits(), config, interrupted_dir, log=None, on_step=_interrupt_at(stop_after)
        )
    assert T.load_checkpoint(interrupted_dir).record["step"] == checkpoint_at
    with open(interrupted_dir / T.METRICS_NAME, "a") as f:
        f.write('{"event": "train", "st')  # a line torn by a kill
    resumed = build()
    torch.manual_seed(12345)  # a fresh process: nothing may depend on torch's generator
    result = T.train(resumed, method, _digits(), config, interrupted_dir, log=None)
    assert result.resumed_from == checkpoint_at
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    return tmp_path / "straight", interrupted_dir


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    # Stops after step 11 of 12; the last checkpoint is at step 8 (mid-epoch), so 9-11 are redone.
    straight_dir, interrupted_dir = _straight_and_resumed(
        tmp_path, _model, T.StandardTraining(), CONFIG, stop_after=11, checkpoint_at=8
    )
    a_opt, b_opt = (T.load_checkpoint(d).optimizer_state for d in (straight_dir, interrupted_dir))
    for index, entry in a_opt["state"].items():
        assert torch.equal(entry["momentum_buffer"], b_opt["state"][index]["momentum_buffer"])
    # The metrics of the redone steps are not duplicated.
    assert _without_seconds(straight_dir / T.METRICS_NAME) == _without_seconds(
        interrupted_dir / T.METRICS_NAME
    )


def test_the_training_seconds_of_a_killed_and_resumed_run_are_kept_in_its_checkpoints(tmp_path):
    with pytest.raises(_Interrupt):
        T.train(
            _model(), T.StandardTraining(), _digits(), CONFIG, tmp_path, log=None, on_step=_interrupt_at(11)
        )
    at_8 = T.load_checkpoint(tmp_path).record["train_seconds"]  # steps 9-11 are lost, and their time
    resumed = T.train(_model(), T.StandardTraining(), _digits(), CONFIG, tmp_path, log=None)
    assert 0 < at_8 < resumed.train_seconds == T.load_checkpoint(tmp_path).record["train_seconds"]
    # a finished run reused by a later call keeps its time
    assert T.train(_model(), T.StandardTraining(), _digits(), CONFIG, tmp_path, log=None).train_seconds == (
        resumed.train_seconds
    )
    # a checkpoint of a version that kept no time: unknown, not the time of the last call alone
    record_path = tmp_path / "checkpoint.json"
    record = json.loads(record_path.read_text())
    del record["train_seconds"]
    record_path.write_text(json.dumps(record))
    assert math.isnan(
        T.train(_model(), T.StandardTraining(), _digits(), CONFIG, tmp_path, log=None).train_seconds
    )


@pytest.mark.parametrize("method", ["float", "floats", "smart"])
def test_once_for_all_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, method):
    """The noise of the noisy layers restarts from (seed, step, rank) at every step, so a
    FLOAT / FLOAT-Slim / SMART run killed mid-epoch resumes onto the same weights, masks, noise
    scales and batch-norm statistics."""
    config = T.TrainConfig(epochs=1, batch_size=BATCH, lr=0.05, checkpoint_every=2, log_every=2)

    def build():
        return once_for_all.convert(method, _model())

    # 6 steps; stopped after step 5, so step 5 (after the checkpoint at 4) is redone.
    _straight_and_resumed(
        tmp_path, build, once_for_all.training_method(method, steps=1), config, stop_after=5, checkpoint_at=4
    )


def test_resuming_with_other_settings_is_refused(tmp_path):
    T.train(_model(), T.StandardTraining(), _digits(), CONFIG, tmp_path, log=None, run_info={"model": "a"})
    other = T.TrainConfig(**{**CONFIG.__dict__, "lr": 0.2})
    with pytest.raises(ValueError, match=r"other settings \(config\.lr differ\)"):
        T.train(_model(), T.StandardTraining(), _digits(), other, tmp_path, log=None, run_info={"model": "a"})
    with pytest.raises(ValueError, match=r"run\.model differ"):
        T.train(
            _model(), T.StandardTraining(), _digits(), CONFIG, tmp_path, log=None, run_info={"model": "b"}
        )


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from robustkernels.api import models
    from robustkernels.api.train import checkpoint

    directory, kill_at = sys.argv[1], int(sys.argv[2])
    model = models.SmallCNN(width=4)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    checkpoint.save_checkpoint(directory, model, None, {"step": 1})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(2.0)
    calls = 0
    real_replace = os.replace

    def replace_then_die(src, dst):
        global calls
        calls += 1
        if calls == kill_at:
            os._exit(9)  # killed: the temporary file is written but not renamed
        real_replace(src, dst)

    os.replace = replace_then_die
    checkpoint.save_checkpoint(directory, model, None, {"step": 2})
    """
)


@pytest.mark.parametrize("kill_at", [1, 2], ids=["before-weights-rename", "before-record-rename"])
def test_checkpoint_survives_a_kill_between_write_and_rename(tmp_path, kill_at):
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt"), str(kill_at)], capture_output=True
    )
    assert run.returncode == 9, run.stderr.decode()
    assert list((tmp_path / "ckpt").glob(".*.tmp")) or kill_at == 2  # a torn write was left behind
    survivor = T.load_checkpoint(tmp_path / "ckpt")
    assert survivor.record["step"] == 1
    assert all(bool((v == 1.0).all()) for k, v in survivor.model_state.items() if k.endswith("weight"))
    # The next save completes and clears what the killed one left.
    T.save_checkpoint(tmp_path / "ckpt", models.SmallCNN(width=4), None, {"step": 3})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "checkpoint-000000003.safetensors",
        "checkpoint.json",
    ]


def test_load_checkpoint_errors_are_readable(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        T.load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a checkpoint record"):
        T.load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text(
        json.dumps({"format": 1, "weights": "gone.safetensors", "step": 1})
    )
    with pytest.raises(FileNotFoundError, match=r"gone\.safetensors"):
        T.load_checkpoint(tmp_path)
