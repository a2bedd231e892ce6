"""The `robustkernels` command line: info, train, eval and bench, their help and their errors."""

import json
import signal
import subprocess
import sys

import pytest
import torch

from robustkernels.api import cli
from robustkernels.api import train as T

# A few quick steps of a small CNN on the embedded digits.
QUICK = [
    "--model",
    "small-cnn",
    "--batch-size",
    "16",
    "--attack-steps",
    "2",
    "--no-progress",
    "--log-every",
    "2",
]


def _weights(directory) -> dict[str, torch.Tensor]:
    return T.load_checkpoint(directory).model_state


@pytest.mark.parametrize(
    ("command", "expected"),
    [("train", "--data-dir"), ("eval", "--checkpoint"), ("bench", "--rounds"), ("reproduce", "--device")],
)
def test_help_explains_the_options(capsys, command, expected):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert expected in text and "robustkernels" in text


def test_info_lists_models_and_data_sets(capsys):
    assert cli.main(["info", "--no-models"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "cifar10" in out and "embedded" in out and "safetensors" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "pgd-at", "--out", "x", "--eps", "eight"], "must be a number >= 0 such as 8/255"),
        (["train", "pgd-at", "--out", "x", "--model", "resnet99"], "invalid choice: 'resnet99'"),
        (["train", "nope", "--out", "x"], "invalid choice: 'nope'"),
        (["eval", "--checkpoint", "x", "--attack", "cw"], "invalid choice: 'cw'"),
    ],
)
def test_bad_arguments_are_rejected_with_a_reason(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_missing_files_give_one_readable_line(capsys, tmp_path):
    assert cli.main(["train", "standard", "--dataset", "cifar10", "--out", str(tmp_path / "r")]) == 2
    assert "--dataset cifar10 needs --data-dir" in capsys.readouterr().err
    argv = [
        "train",
        "standard",
        "--dataset",
        "svhn",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "r"),
    ]
    assert cli.main(argv) == 2
    assert "SVHN files not found" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "robustkernels eval: error: no checkpoint at" in capsys.readouterr().err


def test_train_then_evaluate_on_the_digits(capsys, tmp_path):
    run = tmp_path / "at"
    assert cli.main(["train", "pgd-at", *QUICK, "--steps", "4", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "clean test accuracy" in out and "robustkernels eval --checkpoint" in out
    for name in ("checkpoint.json", "metrics.jsonl", "summary.json", "training.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and 0 <= summary["test_clean_accuracy"] <= 1

    argv = [
        "eval",
        "--checkpoint",
        str(run),
        "--attack",
        "pgd",
        "--eps",
        "8/255",
        "--steps",
        "2",
        "--limit",
        "20",
    ]
    assert cli.main(argv) == 0
    report = json.loads((run / f"eval-pgd-linf-eps{8 / 255:.5g}.json").read_text())
    assert report["split"] == "test" and report["checkpoint"].endswith("checkpoint.json")

    transfer = [
        "eval",
        "--checkpoint",
        str(run),
        "--attack",
        "transfer",
        "--source",
        str(run),
        "--steps",
        "2",
    ]
    assert cli.main([*transfer, "--limit", "20", "--out", str(tmp_path / "reports")]) == 0
    result = json.loads(next((tmp_path / "reports").glob("eval-transfer-*.json")).read_text())
    assert result["n"] == 20 and result["surrogates"] == [str(run)]
    # The surrogate is the evaluated model itself here, so the attack can only lower accuracy.
    assert 0 <= result["transfer_accuracy"] <= result["clean_accuracy"] <= 1


def test_trades_trains_from_the_command_line(tmp_path):
    assert cli.main(["train", "trades", *QUICK, "--steps", "2", "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["method"] == "trades"


# `robustkernels train` that SIGKILLs itself once its step-3 checkpoint is written: a kill at a
# known step, where racing a poller against a 10-step run could miss it on a loaded machine.
_KILLED_AT_STEP_3 = """
import os, signal, sys
from robustkernels.api import cli
from robustkernels.api.train import trainer

save = trainer.save_checkpoint


def save_then_die(directory, model, optimizer, record):
    path = save(directory, model, optimizer, record)
    if record["step"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return path


trainer.save_checkpoint = save_then_die
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    argv = ["train", "pgd-at", *QUICK, "--steps", "10", "--checkpoint-every", "1"]
    argv += ["--val-fraction", "0"]
    assert cli.main([*argv, "--out", str(tmp_path / "straight")]) == 0

    killed = tmp_path / "killed"
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_STEP_3, *argv, "--out", str(killed)], stdout=subprocess.DEVNULL
    )
    assert run.returncode == -signal.SIGKILL
    killed_at = T.load_checkpoint(killed).record["step"]
    assert killed_at == 3

    assert cli.main([*argv, "--out", str(killed)]) == 0
    straight, resumed = _weights(tmp_path / "straight"), _weights(killed)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    assert json.loads((killed / "summary.json").read_text())["resumed_from_step"] == killed_at


def test_bench_compares_methods(capsys, tmp_path):
    argv = ["bench", "--model", "small-cnn", "--dataset", "digits", "--batch-size", "8", "--rounds", "2"]
    assert cli.main([*argv, "--attack-steps", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "standard" in out and "pgd-at" in out and "x standard" in out
    assert set(json.loads((tmp_path / "bench.json").read_text())["seconds"]) == {
        "standard",
        "pgd-at",
        "trades",
        "float",
        "floats",
        "smart",
        "oat",
        "oats",
    }


@pytest.mark.parametrize("method", ["float", "floats", "smart", "oat", "oats"])
def test_once_for_all_methods_train_and_evaluate_at_a_test_time_setting(capsys, tmp_path, method):
    run = tmp_path / method
    assert cli.main(["train", method, *QUICK, "--steps", "2", "--out", str(run)]) == 0
    assert T.load_checkpoint(run).record["run"]["model"]["method"] == method
    common = [
        "eval",
        "--checkpoint",
        str(run),
        "--limit",
        "16",
        "--steps",
        "2",
        "--no-checks",
        "--eps",
        "8/255",
    ]
    width = ["--width", "0.5"] if method in ("floats", "oats") else []
    assert cli.main([*common, "--lam-n", "1", "--eot-draws", "2", "--draws", "3", *width]) == 0
    reports = list(run.glob("eval-pgd-*-lam1-*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert (report["method"], report["lam_n"], report["eot_draws"]) == (method, 1.0, 2)
    # a noisy setting is detected as randomised: every point scored on 3 draws, right on all
    # (OAT and OATS draw no noise: one pass)
    assert report["draws"] == (1 if method in ("oat", "oats") else 3)
    assert 0 <= report["robust_accuracy"] <= report["robust_accuracy_mean_over_draws"] <= 1
    assert report["robust_accuracy"] <= report["clean_accuracy"] <= 1
    capsys.readouterr()
    assert cli.main([*common, "--lam-n", "1.5"]) == 2
    assert "lam_n" in capsys.readouterr().err


def test_test_time_options_need_a_once_for_all_model(capsys, tmp_path):
    run = tmp_path / "standard"
    assert cli.main(["train", "standard", *QUICK, "--steps", "1", "--out", str(run)]) == 0
    assert cli.main(["eval", "--checkpoint", str(run), "--limit", "8", "--lam-n", "1"]) == 2
    assert "once-for-all" in capsys.readouterr().err
