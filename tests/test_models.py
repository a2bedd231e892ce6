"""The architectures of robustkernels.api.models and tapping their features by name."""

import pytest
import torch
from torch import nn

from robustkernels.api import models

# Parameter counts (10 classes) as the papers and the common CIFAR code report them, in millions.
PUBLISHED_MILLIONS = {
    "resnet20": 0.27,
    "resnet18": 11.17,
    "resnet34": 21.28,
    "vgg16-bn": 14.72,
    "wrn-16-8": 10.96,
    "wrn-40-2": 2.24,
}


@pytest.mark.parametrize("name", list(models.MODELS))
def test_forward_shape_with_any_classes_and_channels(name):
    torch.manual_seed(0)
    model = models.build_model(name, num_classes=7, in_channels=1, mean=0.5, std=0.25).eval()
    out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert isinstance(model.normalize, models.Normalize)
    assert model.normalize.mean.flatten().tolist() == [0.5] and model.normalize.std.flatten().tolist() == [
        0.25
    ]


@pytest.mark.parametrize(("name", "millions"), PUBLISHED_MILLIONS.items())
def test_parameter_counts_match_the_published_architectures(name, millions):
    count = sum(p.numel() for p in models.build_model(name).parameters())
    assert round(count / 1e6, 2) == pytest.approx(millions, abs=0.01)


def test_normalisation_happens_inside_the_model():
    torch.manual_seed(0)
    shifted = models.build_model("resnet20", mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5)).eval()
    plain = models.build_model("resnet20").eval()
    plain.load_state_dict(
        {k: v for k, v in shifted.state_dict().items() if not k.startswith("normalize.")}, strict=False
    )
    x = torch.rand(2, 3, 32, 32)
    expected = plain((x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5)
    torch.testing.assert_close(shifted(x), expected)


def test_larger_inputs_are_pooled_globally():
    model = models.build_model("vgg16-bn", num_classes=200).eval()
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 200)


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown model 'resnet99'.*resnet20"):
        models.build_model("resnet99")
    with pytest.raises(ValueError, match="num_classes"):
        models.build_model("resnet20", num_classes=1)
    with pytest.raises(ValueError, match="in_channels"):
        models.build_model("resnet20", in_channels=0)
    with pytest.raises(ValueError, match="depth"):
        models.WideResNet(depth=15, widen_factor=2)


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("name", list(models.MODELS))
def test_feature_extractor_matches_a_full_forward_for_every_architecture(name):
    torch.manual_seed(0)
    model = models.build_model(name).eval()
    names = models.layer_names(model)
    chosen = [names[1], names[len(names) // 2], names[-1]]
    x = torch.rand(1, 3, 32, 32)
    with models.tap_features(model, chosen) as tapped:
        logits = model(x)
    torch.testing.assert_close(tapped[names[-1]], logits)
    for layer in chosen:
        torch.testing.assert_close(models.feature_extractor(model, layer)(x), tapped[layer])
    assert _no_hooks_left(model)


def test_feature_extractor_stops_after_the_layer_and_keeps_the_graph():
    model = models.build_model("resnet20").eval()
    calls = []
    model.fc.register_forward_hook(lambda *_: calls.append("fc"))
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    features = models.feature_extractor(model, "layer2.1")(x)
    assert features.shape == (2, 32, 16, 16) and calls == []
    features.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_layer_name_lists_the_valid_names_and_leaves_no_hook():
    model = models.build_model("wrn-16-8")
    with pytest.raises(ValueError, match=r"no layer 'layer9'.*valid layer names: normalize, conv1, layer1"):
        models.feature_extractor(model, "layer9")
    with pytest.raises(ValueError, match="no layer 'nope'"), models.tap_features(model, ["layer1", "nope"]):
        pass
    with pytest.raises(TypeError, match="sequence of names"), models.tap_features(model, "layer1"):
        pass
    assert _no_hooks_left(model)


def test_hooks_are_removed_when_the_forward_fails():
    model = models.build_model("small-cnn")
    with pytest.raises(RuntimeError), models.tap_features(model, ["block1"]):
        model(torch.rand(2, 5, 32, 32))  # wrong channel count
    assert _no_hooks_left(model)


def test_tapped_features_survive_in_place_operations_of_user_models():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    x = torch.randn(2, 3, 32, 32)
    with models.tap_features(model, ["0"]) as tapped:
        model(x)
    assert (tapped["0"] < 0).any()  # the in-place ReLU did not clip the tapped conv output


def test_normalize_hands_the_convolutions_a_channels_last_batch_on_the_cpu():
    norm = models.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = torch.rand(5, 3, 7, 9)
    y = norm(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, (x - norm.mean) / norm.std, rtol=0, atol=0)
    # as it runs under torch.func's per-sample transforms (EED's criteria)
    per_sample = torch.func.vmap(lambda s: norm(s.unsqueeze(0)).squeeze(0))(x)
    torch.testing.assert_close(per_sample, y, rtol=0, atol=0)


def test_a_model_in_channels_last_computes_what_it_computes_in_nchw():
    torch.manual_seed(0)
    model = models.resnet20().eval()
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        # the same network on an NCHW batch
        h = torch.relu(model.bn1(model.conv1((x - model.normalize.mean) / model.normalize.std)))
        nchw = model.fc(torch.flatten(model.pool(model.layer3(model.layer2(model.layer1(h)))), 1))
        assert not h.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, nchw, rtol=1e-5, atol=1e-5)
