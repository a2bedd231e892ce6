"""SMART: the conversion (later stages masked, the rest dense), the masks' density and sharing,
their persistence through state_dict and checkpoints, the path parameter counts and training."""

import json

import pytest
import torch
from torch import nn

from robustkernels.api.models import SmallCNN, build_model
from robustkernels.api.train import METRICS_NAME, TrainConfig, load_checkpoint, train
from robustkernels.api.train.smart import (
    CLEAN,
    NOISY,
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
    return [m for m in model.modules() if isinstance(m, MaskedExpertConv2d)]


@pytest.mark.parametrize(
    ("name", "stages"),
    [("small-cnn", ("block3",)), ("resnet20", ("layer2", "layer3")), ("resnet18", ("layer3", "layer4"))],
)
def test_expert_stages_are_the_later_half(name, stages):
    assert expert_stages(build_model(name, 10, 3, 0.5, 0.25)) == stages


def test_later_stages_get_masks_and_the_rest_stays_dense():
    model = to_smart_model(build_model("resnet20", 10, 3, 0.5, 0.25))
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | MaskedExpertConv2d):
            assert isinstance(module, MaskedExpertConv2d) == name.startswith(("layer2", "layer3")), name
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert all(not m._follows for m in model.modules() if isinstance(m, PathBatchNorm2d))


@pytest.mark.parametrize(("density", "shared"), [(0.5, 0.25), (0.5, 0.0), (0.3, 0.5)])
def test_masks_keep_density_and_share_the_asked_fraction(density, shared):
    for conv in _experts(_smart_cnn(density=density, shared=shared)):
        clean, adversarial = conv.masks.flatten(1)
        kept = round(density * clean.numel())
        assert int(clean.sum()) == int(adversarial.sum()) == kept
        assert int((clean & adversarial).sum()) == round(shared * kept)
        if density == 0.5 and shared == 0.0:
            assert bool((clean ^ adversarial).all())  # complementary


def test_unknown_stage_is_refused_naming_the_children():
    with pytest.raises(ValueError, match=r"stages names no top-level child.*block1"):
        to_smart_model(SmallCNN(width=4), stages=("layer9",))
    with pytest.raises(ValueError, match="path must be"):
        smart_inference(_smart_cnn(), 2)


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
            for conv in _experts(m):
                conv.seed = 7  # the same noise draw in both
        with smart_inference(model, path), smart_inference(reloaded, path):
            torch.testing.assert_close(model(x), reloaded(x), rtol=0, atol=0)


def test_masks_persist_through_a_training_checkpoint(tmp_path):
    model = _smart_cnn(seed=0)
    masks = [conv.masks.clone() for conv in _experts(model)]
    x, y = _batch(16)
    config = TrainConfig(epochs=None, max_steps=1, batch_size=8, lr=0.01, log_every=1, augment=False)
    train(model, SMARTTraining(eps=8 / 255, alpha=2 / 255, steps=1), (x, y), config, tmp_path, log=None)
    fresh = _smart_cnn(seed=1)
    fresh.load_state_dict(load_checkpoint(tmp_path).model_state)
    for conv, saved in zip(_experts(fresh), masks, strict=True):
        assert torch.equal(conv.masks, saved)


def test_path_parameters_count_each_path_the_union_and_the_noise():
    model = _smart_cnn()
    counts = path_parameters(model)
    dense = sum(
        int(m.weight.count_nonzero()) + (0 if m.bias is None else int(m.bias.count_nonzero()))
        for m in model.modules()
        if type(m) in (nn.Conv2d, nn.Linear)
    )
    (expert,) = _experts(model)
    weight = expert.weight.detach()
    assert counts["clean_path"] == dense + int((weight * expert.masks[0]).count_nonzero())
    assert counts["adversarial_path"] == dense + int((weight * expert.masks[1]).count_nonzero())
    assert counts["union"] == dense + int((weight * (expert.masks[0] | expert.masks[1])).count_nonzero())
    assert counts["noise_additions"] == {"clean_path": 0, "adversarial_path": int(expert.masks[1].sum())}
    # density 0.5 with a quarter of the kept weights shared: the union holds 7/8 of the expert layer
    assert counts["union"] - dense == pytest.approx(0.875 * weight.numel(), abs=1)


def test_inference_paths_use_their_mask_bn_and_noise():
    model = _smart_cnn().eval()
    x, _ = _batch()
    with smart_inference(model, CLEAN):
        clean = model(x)
        assert torch.equal(clean, model(x))  # the clean path has no noise
    (expert,) = _experts(model)
    expert.lam = 0.0  # the adversarial path without its noise: its mask and BN_A alone
    with smart_inference(model, NOISY):
        adversarial = model(x)
    expert.lam = 1.0
    with smart_inference(model, NOISY):
        assert not torch.equal(model(x), model(x))  # noisy: a random model
    assert not torch.allclose(clean, adversarial)
    assert expert.route == 0  # restored


def test_training_step_gives_gradients_only_inside_the_masks_union():
    model = _smart_cnn().train()
    x, y = _batch()
    loss, logits = SMARTTraining(eps=8 / 255, alpha=2 / 255, steps=1).loss(
        model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0)
    )
    loss.backward()
    (expert,) = _experts(model)
    outside = ~(expert.masks[0] | expert.masks[1])
    assert logits.shape == (8, 10) and torch.isfinite(loss)
    assert expert.weight.grad[outside].abs().max() == 0
    assert expert.weight.grad[~outside].abs().max() > 0
    assert expert.alpha.grad.abs() > 0  # the adversarial half's noise is trained


def test_short_training_lowers_the_loss(tmp_path):
    model = _smart_cnn()
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(2, (64,), generator=generator)
    x = 0.2 * torch.rand(64, 3, 32, 32, generator=generator) + 0.6 * y.view(-1, 1, 1, 1)  # dark or bright
    config = TrainConfig(epochs=None, max_steps=10, batch_size=32, lr=0.05, log_every=1, augment=False)
    train(model, SMARTTraining(eps=2 / 255, alpha=1 / 255, steps=1), (x, y), config, tmp_path, log=None)
    lines = [json.loads(line) for line in (tmp_path / METRICS_NAME).read_text().splitlines()]
    losses = [line["loss"] for line in lines if line["event"] == "train"]
    assert len(losses) == 10 and sum(losses[-3:]) < 0.5 * sum(losses[:3])
