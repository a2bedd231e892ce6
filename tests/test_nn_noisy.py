"""NoisyConv2d / NoisyLinear as drop-in replacements, and convert()."""

import io

import pytest
import torch
from torch import nn

from robustkernels import nn as rknn
from robustkernels import reference


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False, padding_mode="reflect"),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def test_state_dict_keys_are_conv_keys_plus_alpha_and_mask():
    plain = nn.Conv2d(3, 8, 3)
    noisy = rknn.NoisyConv2d(3, 8, 3)
    assert set(noisy.state_dict()) == set(plain.state_dict()) | {"alpha"}
    noisy.set_mask(torch.rand(8, 3, 3, 3) > 0.5)
    assert set(noisy.state_dict()) == set(plain.state_dict()) | {"alpha", "mask"}
    assert isinstance(noisy, nn.Conv2d)
    assert noisy.alpha.item() == pytest.approx(0.25)


@pytest.mark.parametrize("granularity", ["layer", "channel", "element"])
def test_alpha_granularities(granularity):
    layer = rknn.NoisyConv2d(3, 8, 3, alpha_granularity=granularity)
    expected = {"layer": (1,), "channel": (8, 1, 1, 1), "element": (8, 3, 3, 3)}[granularity]
    assert layer.alpha.shape == expected
    layer(torch.randn(2, 3, 6, 6)).sum().backward()
    assert layer.alpha.grad is not None and layer.alpha.grad.shape == expected
    with pytest.raises(ValueError, match="alpha_granularity"):
        rknn.NoisyConv2d(3, 8, 3, alpha_granularity="row")


def test_mask_survives_state_dict_round_trip_into_a_fresh_layer():
    layer = rknn.NoisyConv2d(4, 6, 3, mask=torch.rand(6, 4, 3, 3) > 0.5)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = rknn.NoisyConv2d(4, 6, 3)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh.mask, layer.mask)
    assert fresh.mask.dtype == torch.bool
    x = torch.randn(2, 4, 7, 7)
    fresh.seed = layer.seed = 5
    torch.testing.assert_close(fresh(x), layer(x))


def test_noise_seed_makes_forward_repeatable_and_each_forward_fresh():
    layer = rknn.NoisyLinear(6, 4)
    x = torch.randn(3, 6)
    rknn.set_noise_seed(layer, 1)
    a, b = layer(x), layer(x)
    rknn.set_noise_seed(layer, 1)
    c = layer(x)
    assert torch.equal(a, c)
    assert not torch.equal(a, b)


def test_forward_leaves_torchs_generator_alone_and_manual_seed_before_building_repeats_noise():
    x = torch.randn(3, 6)
    torch.manual_seed(1)
    first = rknn.NoisyLinear(6, 4)
    state = torch.get_rng_state()
    a = first(x)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)
    assert torch.equal(rknn.NoisyLinear(6, 4)(x), a)


def test_forward_matches_reference_with_recorded_seed():
    layer = rknn.NoisyConv2d(3, 5, 3, stride=2, padding=1, alpha_granularity="channel", lam=0.7)
    x = torch.randn(2, 3, 9, 9)
    y = layer(x)
    expected = reference.noisy_conv2d(
        x, layer.weight, layer.bias, layer.alpha, 0.7, int(layer.last_seed), None, stride=2, padding=1
    )
    torch.testing.assert_close(y, expected)


def test_convert_keeps_weights_and_skips_named_layers():
    model = small_model()
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    expected = model(x)
    rknn.convert(model, linear=True, skip=("0",), lam=0.0)
    assert type(model[0]) is nn.Conv2d
    assert isinstance(model[3], rknn.NoisyConv2d) and model[3].padding_mode == "reflect"
    assert isinstance(model[7], rknn.NoisyLinear)
    torch.testing.assert_close(model(x), expected)  # lam = 0: identical to the plain model
    rknn.set_noise_scale(model, 1.0)
    assert not torch.allclose(model(x), expected)


def test_converted_model_trains_alpha_and_weights():
    model = rknn.convert(small_model(), linear=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    alpha_before = model[3].alpha.detach().clone()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert not torch.equal(model[3].alpha, alpha_before)
    assert all(p.grad is not None for p in model.parameters())


def test_masked_layer_keeps_pruned_weights_out_of_the_output():
    mask = torch.zeros(4, 3, 3, 3, dtype=torch.bool)
    mask[:2] = True  # output channels 2 and 3 fully pruned
    layer = rknn.NoisyConv2d(3, 4, 3, bias=False, mask=mask)
    y = layer(torch.randn(2, 3, 6, 6))
    assert torch.all(y[:, 2:] == 0)
    y.sum().backward()
    assert torch.all(layer.weight.grad[2:] == 0)


def test_repr_mentions_noise():
    assert "alpha=layer" in repr(rknn.NoisyConv2d(3, 4, 3))
    assert "mask density" in repr(rknn.NoisyLinear(3, 4, mask=torch.ones(4, 3, dtype=torch.bool)))


def test_converted_model_under_torch_compile():
    """Per-forward seeds and fixed seeds both compile in full (tests/test_seed_chain.py checks
    the fresh noise and the absence of recompiles)."""
    model = rknn.convert(small_model(), linear=True)
    x = torch.randn(4, 3, 8, 8)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for _ in range(2):
        compiled(x).sum().backward()
    for module in model.modules():
        if isinstance(module, (rknn.NoisyConv2d, rknn.NoisyLinear)):
            module.seed = 7
    eager = model(x)
    torch.testing.assert_close(torch.compile(model, backend="aot_eager", fullgraph=True)(x), eager)


def test_convert_keeps_frozen_layers_frozen_and_shared_layers_shared():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), shared, nn.ReLU(), shared)
    model[0].weight.requires_grad_(False)
    rknn.convert(model)
    assert isinstance(model[0], rknn.NoisyConv2d) and not model[0].weight.requires_grad
    assert model[0].bias.requires_grad
    assert isinstance(model[1], rknn.NoisyConv2d) and model[1] is model[3]
    with pytest.raises(TypeError, match="single"):
        rknn.convert(nn.Conv2d(3, 4, 3))


def test_single_weight_layer_has_no_noise_rather_than_nan():
    layer = rknn.NoisyLinear(1, 1)
    y = layer(torch.randn(3, 1))
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(layer.alpha.grad).all() and torch.isfinite(layer.weight.grad).all()
