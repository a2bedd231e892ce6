"""FLOAT (training and inference), the lam-weighted PGD-AT baseline and `robustkernels reproduce`."""

import copy
import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from data_files import cifar10_subset
from helpers import RecordingBar
from torch import nn

from robustkernels.api import cli
from robustkernels.api.commands import reproduce as reproduce_command
from robustkernels.api.models import SmallCNN
from robustkernels.api.reproduce import BUDGETS, Budget
from robustkernels.api.train import TrainConfig, build_sgd, train
from robustkernels.api.train.float_at import (
    CLEAN,
    NOISY,
    FLOATTraining,
    float_inference,
    inference_setting,
    to_float_model,
)
from robustkernels.api.train.pgd_at import PGDAdversarialTraining
from robustkernels.nn import MaskedExpertConv2d, PathBatchNorm2d

TINY = Budget(
    "smoke",
    "small-cnn",
    2,
    16,
    12,
    1,
    2,
    draws=3,
    square_queries=5,
    eps=32 / 255,
    step=8 / 255,
    attack_steps=1,
)


def _float_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return to_float_model(SmallCNN(width=4))


def _batch(n: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.randint(10, (n,), generator=generator)


@pytest.mark.parametrize(
    ("lam_n", "lam_th", "scale", "bn_path"),
    [
        (0.0, 0.0, 0.0, CLEAN),
        (0.2, 0.0, 0.2, NOISY),
        (1.0, 0.0, 1.0, NOISY),
        (0.0, 0.5, 0.0, CLEAN),
        (0.2, 0.5, 0.4, CLEAN),
        (0.5, 0.5, 1.0, CLEAN),
        (0.7, 0.5, 0.4, NOISY),
        (1.0, 0.5, 1.0, NOISY),
    ],
)
def test_lam_th_rule(lam_n, lam_th, scale, bn_path):
    assert inference_setting(lam_n, lam_th) == (pytest.approx(scale), bn_path)


def test_lam_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="lam_n"):
        inference_setting(1.5, 0.5)


def test_float_inference_sets_and_restores_routes_and_noise():
    model = _float_cnn().eval()
    convs = [m for m in model.modules() if isinstance(m, MaskedExpertConv2d)]
    norms = [m for m in model.modules() if isinstance(m, PathBatchNorm2d)]
    assert len(convs) == 3 and len(norms) == 3 and all(not n._follows for n in norms)
    x, _ = _batch()
    with float_inference(model, 0.7, 0.5):
        assert all(c.route == NOISY and c.lam == pytest.approx(0.4) for c in convs)
        assert all(n.route == NOISY for n in norms)
        assert not torch.equal(model(x), model(x))  # noisy weights: a random model
    with float_inference(model, 0.2, 0.5):
        assert all(n.route == CLEAN for n in norms)
    with float_inference(model, 0.0, 0.5):
        assert torch.equal(model(x), model(x))  # lam_n = 0 is the exact clean model
    assert all(c.route == 0 and c.lam == 1.0 for c in convs)
    assert all(n.route == 0 for n in norms)


@pytest.mark.parametrize("forward", ["routed", "separate"])
def test_batch_split_routes_clean_half_through_bn_c_and_adversarial_half_through_bn_a(forward):
    model = _float_cnn().train()
    reference = copy.deepcopy(model)
    x, y = _batch(8)
    method = FLOATTraining(eps=8 / 255, step=2 / 255, steps=2, forward=forward)
    loss, logits = method.loss(model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0))
    assert logits.shape == (8, 10) and loss.ndim == 0
    # the clean half alone, clean weights and BN_C in train mode (statistics of those 4 samples)
    with float_inference(reference, 0.0, 0.5):
        clean = reference(x[:4])
    torch.testing.assert_close(logits[:4], clean)
    for norm in (m for m in model.modules() if isinstance(m, PathBatchNorm2d)):
        assert norm.num_batches_tracked.tolist() == [1, 1]  # one update each; the attack ran in eval mode
        assert norm.route == 0


def test_routed_and_separate_forwards_give_the_same_loss_and_gradients():
    x, y = _batch(8)
    results = []
    for forward in ("routed", "separate"):
        model = _float_cnn().train()
        for conv in model.modules():
            if isinstance(conv, MaskedExpertConv2d):
                conv.seed = 11  # the same noise in both
        method = FLOATTraining(eps=8 / 255, step=2 / 255, steps=2, forward=forward)
        loss, logits = method.loss(
            model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0)
        )
        loss.backward()
        results.append((loss, logits, {n: p.grad for n, p in model.named_parameters()}, model.state_dict()))
    (loss_a, logits_a, grads_a, state_a), (loss_b, logits_b, grads_b, state_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(logits_a, logits_b)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], msg=name)
    for name, value in state_a.items():  # the batch norms' statistics too
        torch.testing.assert_close(value, state_b[name], msg=name)
    with pytest.raises(ValueError, match="forward"):
        FLOATTraining(forward="fused")


def test_alpha_gets_no_weight_decay():
    model = _float_cnn()
    optimizer = build_sgd(model, lr=0.1, weight_decay=5e-4)
    decayed, free = optimizer.param_groups
    alphas = {id(m.alpha) for m in model.modules() if isinstance(m, MaskedExpertConv2d)}
    assert len(alphas) == 3 and {id(p) for p in free["params"]} == alphas
    assert free["weight_decay"] == 0.0 and decayed["weight_decay"] == 5e-4
    assert alphas.isdisjoint(id(p) for p in decayed["params"])


def test_one_float_training_step_changes_weights_and_alpha(tmp_path):
    model = _float_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = _batch(16, seed=1)
    config = TrainConfig(epochs=None, max_steps=1, batch_size=16, schedule="cosine", augment=False)
    train(model, FLOATTraining(steps=1), (images, labels), config, tmp_path, log=None)
    after = model.state_dict()
    for key, value in before.items():
        if key.endswith("alpha") or key.endswith(".weight"):
            assert not torch.equal(after[key], value), key


def test_pgd_at_adv_weight_mixes_clean_and_adversarial_losses():
    torch.manual_seed(0)
    model = SmallCNN(width=4).eval()  # eval: batch statistics would couple the two halves
    x, y = _batch(6)
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731

    def loss(**kwargs):
        method = PGDAdversarialTraining(steps=3, **kwargs)
        return method.loss(model, x, y, attack_model=model, generator=generator())[0]

    clean, adversarial, mixed = loss(adv_weight=0.0), loss(), loss(adv_weight=0.25)
    torch.testing.assert_close(mixed, 0.75 * clean + 0.25 * adversarial)
    torch.testing.assert_close(clean, nn.functional.cross_entropy(model(x), y))
    assert adversarial > clean  # the default adv_weight 1 is Madry's loss on PGD examples alone
    for bad in (1.5, -0.1, True):
        with pytest.raises(ValueError, match="adv_weight"):
            PGDAdversarialTraining(adv_weight=bad)


def test_reproduce_all_writes_table_json_and_plot(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(BUDGETS, "smoke", TINY)
    monkeypatch.setattr(RecordingBar, "bars", [])
    monkeypatch.setattr(reproduce_command, "require", lambda *_args: SimpleNamespace(tqdm=RecordingBar))
    out = tmp_path / "run"
    assert cli.main(["reproduce", "all", "--budget", "smoke", "--out", str(out)]) == 0
    assert (
        RecordingBar.bars[0].done == RecordingBar.bars[0].total
    )  # the bar counts every training step and attack run
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert [(r["method"], r["width"], r["lam_th"], r["lam_n"]) for r in rows] == [
        *[("FLOAT", 1.0, th, n) for th in (0.0, 0.5) for n in (0.0, 0.2, 0.7, 1.0)],
        *[("FLOAT-Slim", w, 0.5, n) for w in (1.0, 0.5) for n in (0.0, 0.2, 0.7, 1.0)],
        *[("SMART", 1.0, None, n) for n in (0.0, 0.2, 0.7, 1.0)],
        *[("OAT", 1.0, None, n) for n in (0.0, 0.2, 0.7, 1.0)],
        *[("OATS", w, None, n) for w in (1.0, 0.5) for n in (0.0, 0.2, 0.7, 1.0)],
        *[("PGD-AT", 1.0, None, n) for n in (0.0, 0.2, 0.7, 1.0)],
    ]
    for row in rows:
        noisy = row["noise_scale"] > 0
        assert 0 <= row["robust_accuracy"] <= row["clean_accuracy"] <= 1
        assert 0 <= row["autoattack_robust_accuracy"] <= row["clean_accuracy"]
        assert row["autoattack_version"] == ("rand" if noisy else "standard")
        for attack in ("pgd", "autoattack"):
            names = {c["name"] for c in row["sanity_checks"][attack]}
            assert names >= {"eps_zero", "converged", "eot_for_randomness"}
            assert ("draw_gap" in names) == ("twin_transfer" in names) == noisy
        assert row["eot_draws"] == (TINY.eot_draws if noisy else 1)
        assert row["draws"] == (TINY.draws if noisy else 1)
        assert row["robust_accuracy"] <= row["robust_accuracy_mean_over_draws"]
        assert (row["noise_additions"] > 0) == (row["noise_scale"] > 0)
    smart_clean, *_, smart_adversarial = (r for r in rows if r["method"] == "SMART")
    assert [r["bn"] for r in rows if r["method"] == "SMART"] == ["BN_C", "BN_A", "BN_A", "BN_A"]
    assert smart_clean["parameters"] == smart_adversarial["parameters"] < smart_clean["union_parameters"]
    assert smart_clean["union_parameters"] < rows[0]["parameters"]  # sparser than the dense FLOAT model
    slim_full, slim_half = (
        next(r for r in rows if r["method"] == "FLOAT-Slim" and r["width"] == w) for w in (1.0, 0.5)
    )
    assert slim_full["parameters"] == rows[0]["parameters"]
    assert slim_half["parameters"] < 0.5 * slim_full["parameters"]  # about a quarter of the conv weights
    assert (out / "results.md").read_text().count("| FLOAT |") == 8
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| PGD-AT | 1 | - | 1 |" in printed and "results.md" in printed


def test_reproduce_needs_a_data_dir_for_files_on_disk(tmp_path, capsys):
    assert cli.main(["reproduce", "float", "--dataset", "cifar10", "--out", str(tmp_path)]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_reproduce_runs_on_the_shared_cifar10_slice_with_the_small_budgets_model(tmp_path, monkeypatch):
    """`--budget small --dataset cifar10` trains ResNet-20 on the real CIFAR-10 slice (here with
    the tiny budget's step counts)."""
    pytest.importorskip("matplotlib")
    data_dir = cifar10_subset()
    monkeypatch.setitem(BUDGETS, "small", replace(TINY, name="small"))
    out = tmp_path / "cifar"
    argv = ["reproduce", "smart", "--budget", "small", "--dataset", "cifar10"]
    assert cli.main([*argv, "--data-dir", str(data_dir), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["budget"]["model"] == "resnet20"
    assert {r["method"] for r in results["rows"]} == {"SMART"}
    assert all(r["n"] == TINY.eval_images for r in results["rows"])
