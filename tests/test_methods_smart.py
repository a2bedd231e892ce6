"""SMART: the conversion (later stages masked, every conv noisy), the masks' density and sharing,
their persistence through state_dict and checkpoints, the path parameter counts, the test-time
lam_n setting and training."""

import json

import pytest
import torch
from torch import nn

from robustkernels.api.models import SmallCNN, build_model
from robustkernels.api.train import METRICS_NAME, TrainConfig, load_checkpoint, train
from robustkernels.api.train.once_for_all import at_test_time, convert
from robustkernels.api.train.smart import (
    CLEAN,
    NOISY,
    SPARSE_EVERYWHERE,
    SMARTTraining,
    expert_stages,
    path_parameters,
    smart_inference,
    to_smart_model,
)
from robustkernels.nn import MaskedExpertConv2d, PathBatchNorm2d


def _smart_cnn(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return to_smart_model(SmallCNN(width=4), generator=torch.Generator().manual_seed(seed), **kwargs)


def _batch(n: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.randint(10, (n,), generator=generator)


def _experts(model) -> list[MaskedExpertConv2d]:
    """The masked (expert-stage) convolutions."""
    return [m for m in model.modules() if isinstance(m, MaskedExpertConv2d) and m.masks is not None]


def _dense(model) -> list[MaskedExpertConv2d]:
    return [m for m in model.modules() if isinstance(m, MaskedExpertConv2d) and m.masks is None]


@pytest.mark.parametrize(
    ("name", "stages"),
    [("small-cnn", ("block3",)), ("resnet20", ("layer2", "layer3")), ("resnet18", ("layer3", "layer4"))],
)
def test_expert_stages_are_the_later_half(name, stages):
    assert expert_stages(build_model(name, 10, 3, 0.5, 0.25)) == stages


def test_later_stages_get_masks_and_every_conv_gets_noise():
    model = to_smart_model(build_model("resnet20", 10, 3, 0.5, 0.25))
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | MaskedExpertConv2d)]
    assert convs and all(isinstance(m, MaskedExpertConv2d) for _, m in convs)  # Eq. 4 on all layers
    for name, module in convs:
        assert (module.masks is not None) == name.startswith(("layer2", "layer3")), name
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert all(not m._follows for m in model.modules() if isinstance(m, PathBatchNorm2d))


def test_sparse_everywhere_masks_every_stage_but_the_stem():
    model = to_smart_model(build_model("resnet20", 10, 3, 0.5, 0.25), stages=SPARSE_EVERYWHERE)
    for name, module in model.named_modules():
        if isinstance(module, MaskedExpertConv2d):
            assert (module.masks is not None) == (name != "conv1"), name


@pytest.mark.parametrize(("density", "shared"), [(0.5, 0.25), (0.5, 0.0), (0.3, 0.1)])
def test_masks_keep_density_and_share_the_asked_fraction_of_the_tensor(density, shared):
    for conv in _experts(_smart_cnn(density=density, shared=shared)):
        clean, adversarial = conv.masks.flatten(1)
        kept = round(density * clean.numel())
        assert int(clean.sum()) == int(adversarial.sum()) == kept
        # d(M_C * M_A) measured over the whole tensor, as the paper defines it
        assert (clean & adversarial).float().mean().item() == pytest.approx(shared, abs=1 / clean.numel())
        if density == 0.5 and shared == 0.0:
            assert bool((clean ^ adversarial).all())  # complementary


def test_unknown_stage_is_refused_naming_the_children():
    with pytest.raises(ValueError, match=r"stages names no top-level child.*block1"):
        to_smart_model(SmallCNN(width=4), stages=("layer9",))
    with pytest.raises(ValueError, match="lam_n must lie"):
        smart_inference(_smart_cnn(), 2)
    with pytest.raises(ValueError, match="overlap must lie"):
        _smart_cnn(shared=0.6)
    with pytest.raises(ValueError, match="do not apply"):
        convert("float", SmallCNN(width=4), options={"shared": 0.0})


def test_masks_persist_through_state_dict():
    model = _smart_cnn(seed=0)
    reloaded = _smart_cnn(seed=1)  # other masks and weights until loaded
    assert not all(
        torch.equal(a.masks, b.masks) for a, b in zip(_experts(model), _experts(reloaded), strict=True)
    )
    reloaded.load_state_dict(model.state_dict())
    for a, b in zip(_experts(model), _experts(reloaded), strict=True):
        assert torch.equal(a.masks, b.masks)
    x, _ = _batch()
    model.eval(), reloaded.eval()
    for path in (CLEAN, NOISY):
        for m in (model, reloaded):
            for conv in _experts(m) + _dense(m):
                conv.seed = 7  # the same noise draw in both
        with smart_inference(model, path), smart_inference(reloaded, path):
            torch.testing.assert_close(model(x), reloaded(x), rtol=0, atol=0)


def test_masks_persist_through_a_training_checkpoint(tmp_path):
    model = _smart_cnn(seed=0)
    masks = [conv.masks.clone() for conv in _experts(model)]
    x, y = _batch(16)
    config = TrainConfig(epochs=None, max_steps=1, batch_size=8, lr=0.01, log_every=1, augment=False)
    train(model, SMARTTraining(eps=8 / 255, step=2 / 255, steps=1), (x, y), config, tmp_path, log=None)
    fresh = _smart_cnn(seed=1)
    fresh.load_state_dict(load_checkpoint(tmp_path).model_state)
    for conv, saved in zip(_experts(fresh), masks, strict=True):
        assert torch.equal(conv.masks, saved)


def test_path_parameters_count_each_path_the_union_and_the_noise():
    model = _smart_cnn()
    counts = path_parameters(model)
    dense_convs = _dense(model)
    dense = sum(
        int(m.weight.count_nonzero()) + (0 if m.bias is None else int(m.bias.count_nonzero()))
        for m in [*dense_convs, *(m for m in model.modules() if type(m) is nn.Linear)]
    )
    (expert,) = _experts(model)
    weight = expert.weight.detach()
    assert counts["clean_path"] == dense + int((weight * expert.masks[0]).count_nonzero())
    assert counts["adversarial_path"] == dense + int((weight * expert.masks[1]).count_nonzero())
    assert counts["union"] == dense + int((weight * (expert.masks[0] | expert.masks[1])).count_nonzero())
    # the noise: every weight of the dense layers, half of the masked one's (the paper's 11.4M)
    noisy = sum(m.weight.numel() for m in dense_convs) + int(expert.masks[1].sum())
    assert counts["noise_additions"] == {"clean_path": 0, "adversarial_path": noisy}
    # density 0.5 each with d(M_C * M_A) = 0.25: the union holds 3/4 of the expert layer
    assert counts["union"] - dense == pytest.approx(0.75 * weight.numel(), abs=1)


def test_inference_paths_use_their_mask_bn_and_noise():
    model = _smart_cnn().eval()
    x, _ = _batch()
    with smart_inference(model, 0.0):
        clean = model(x)
        assert torch.equal(clean, model(x))  # the clean path has no noise
        assert all(m.route == CLEAN for m in model.modules() if isinstance(m, PathBatchNorm2d))
    for lam_n in (0.2, 1.0):
        with smart_inference(model, lam_n):
            assert not torch.equal(model(x), model(x))  # noisy on every conv: a random model
            assert all(m.route == NOISY for m in model.modules() if isinstance(m, PathBatchNorm2d))
            assert {m.lam for m in _experts(model) + _dense(model)} == {lam_n}
    assert all(m.route == 0 and m.lam == 1.0 for m in _experts(model) + _dense(model))  # restored


def test_intermediate_lam_scales_the_noise_of_every_conv():
    """lam_n = 0.2 equals the adversarial path at lam 1 with every alpha scaled by 0.2 (the same
    noise draw): the noise of the dense layers and of the masked ones is scaled by lam_n."""
    model = _smart_cnn().eval()
    x, _ = _batch()
    convs = _experts(model) + _dense(model)
    for conv in convs:
        conv.seed = 5
    with smart_inference(model, 0.2):
        tuned = model(x)
    with torch.no_grad():
        for conv in convs:
            conv.alpha.mul_(0.2)
    with smart_inference(model, 1.0):
        reference = model(x)
    torch.testing.assert_close(tuned, reference)
    with at_test_time("smart", model, 0.0):
        assert not torch.allclose(model(x), tuned)
    for conv in convs:
        conv.seed = None
    with at_test_time("smart", model, 0.7):  # any lam_n in [0, 1] is a setting
        assert not torch.equal(model(x), model(x))


def test_training_step_gives_gradients_only_inside_the_masks_union():
    model = _smart_cnn().train()
    x, y = _batch()
    loss, logits = SMARTTraining(eps=8 / 255, step=2 / 255, steps=1).loss(
        model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0)
    )
    loss.backward()
    (expert,) = _experts(model)
    outside = ~(expert.masks[0] | expert.masks[1])
    assert logits.shape == (8, 10) and torch.isfinite(loss)
    assert expert.weight.grad[outside].abs().max() == 0
    assert expert.weight.grad[~outside].abs().max() > 0
    assert expert.alpha.grad.abs() > 0  # the adversarial half's noise is trained
    assert all(conv.alpha.grad.abs() > 0 for conv in _dense(model))  # the dense layers' too


def test_short_training_lowers_the_loss(tmp_path):
    model = _smart_cnn()
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(2, (64,), generator=generator)
    x = 0.2 * torch.rand(64, 3, 32, 32, generator=generator) + 0.6 * y.view(-1, 1, 1, 1)  # dark or bright
    config = TrainConfig(epochs=None, max_steps=10, batch_size=32, lr=0.05, log_every=1, augment=False)
    train(model, SMARTTraining(eps=2 / 255, step=1 / 255, steps=1), (x, y), config, tmp_path, log=None)
    lines = [json.loads(line) for line in (tmp_path / METRICS_NAME).read_text().splitlines()]
    losses = [line["loss"] for line in lines if line["event"] == "train"]
    assert len(losses) == 10 and sum(losses[-3:]) < 0.5 * sum(losses[:3])


def test_reproduce_reaches_the_table1_ablations(tmp_path, monkeypatch):
    """`reproduce smart --smart-stages all --smart-overlap 0` trains Table 1's [S S S S] model with
    disjoint masks, records them in the checkpoint and labels its rows."""
    pytest.importorskip("matplotlib")
    from dataclasses import replace

    from robustkernels.api import cli
    from robustkernels.api.reproduce import BUDGETS, Budget
    from robustkernels.api.train.runs import build_from_info

    tiny = Budget("smoke", "small-cnn", 2, 16, 8, 1, 2, draws=2, square_queries=5, eps=32 / 255, step=8 / 255)
    monkeypatch.setitem(BUDGETS, "smoke", replace(tiny, attack_steps=1))
    out = tmp_path / "ablation"
    argv = ["reproduce", "smart", "--smart-stages", "all", "--smart-overlap", "0", "--no-progress"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["lam_n"] for r in rows] == [0.0, 0.2, 0.7, 1.0]
    assert {r["variant"] for r in rows} == {"[S S S S], d(M_C*M_A)=0"}
    checkpoint = load_checkpoint(out / "smart-all-overlap0")
    info = checkpoint.record["run"]["model"]
    assert info["method_options"] == {"stages": "all", "shared": 0.0}
    model = build_from_info(info)
    model.load_state_dict(checkpoint.model_state)
    experts = _experts(model)
    assert len(experts) == 3  # SmallCNN's three blocks all masked
    assert all(not (m.masks[0] & m.masks[1]).any() for m in experts)
