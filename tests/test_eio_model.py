"""Ensemble-in-One's random gated network: conversion, gate sampling, routes, layer taps and derive."""

import math

import pytest
import torch
from torch import nn

from robustkernels.api.models import SmallCNN, resnet20, tap_features, vgg16_bn
from robustkernels.api.train.eio_model import (
    derive_eio,
    diversification_paths,
    eio_blocks,
    feature_taps,
    layer_features,
    min_distinct_layer,
    random_gates,
    to_eio_model,
    use_eio_path,
)
from robustkernels.nn import GatedConv2d, PathBatchNorm2d, PathLinear


def _images(batch=4, seed=0):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _perturb_batch_norms(model):
    """Different running statistics and affine values per path, so a wrong path shows."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (PathBatchNorm2d, nn.BatchNorm2d)):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)


@pytest.mark.parametrize(
    ("n", "p", "first"), [(2, 3, 2), (2, 2, 1), (2, 4, 2), (2, 5, 3), (3, 3, 1), (4, 17, 3)]
)
def test_min_distinct_layer_is_the_first_with_enough_prefixes(n, p, first):
    assert min_distinct_layer(n, p) == first
    assert n**first >= p and (first == 1 or n ** (first - 1) < p)


def test_diversification_paths_follow_the_rule():
    generator = torch.Generator().manual_seed(0)
    layers = set()
    for _ in range(300):
        layer, paths = diversification_paths(19, 2, 3, generator)
        layers.add(layer)
        assert paths.shape == (3, 19) and int(paths.min()) >= 0 and int(paths.max()) <= 1
        prefixes = {tuple(row[:layer].tolist()) for row in paths}
        assert len(prefixes) == 3  # pairwise different within the first l gates
    # l = 1 cannot hold 3 distinct prefixes of 2 gates; every other layer is drawn
    assert layers == set(range(2, 20))


def test_diversification_paths_draw_no_layer_past_max_layer():
    generator = torch.Generator().manual_seed(0)
    draws = [diversification_paths(14, 2, 3, generator, max_layer=13) for _ in range(300)]
    assert {layer for layer, _ in draws} == set(range(2, 14)) and draws[0][1].shape == (3, 14)
    with pytest.raises(ValueError, match=r"layer must lie in \[2, 13\]"):
        diversification_paths(14, 2, 3, layer=14, max_layer=13)


def test_diversification_paths_reject_an_impossible_request():
    with pytest.raises(ValueError, match="cannot differ"):
        diversification_paths(2, 2, 5)


def test_resnet20_gets_19_gated_blocks_and_shares_shortcuts_and_classifier():
    torch.manual_seed(0)  # the generator's seed too: gate 1 must still not replay gate 0's draws
    model = to_eio_model(resnet20(), 2, generator=torch.Generator().manual_seed(0))
    blocks = eio_blocks(model)
    assert len(blocks) == 19 and all(isinstance(b, GatedConv2d) and b.num_paths == 2 for b in blocks)
    assert math.prod(b.num_paths for b in blocks) == 2**19
    assert sum(isinstance(m, PathBatchNorm2d) for m in model.modules()) == 19
    assert (
        type(model.layer2[0].shortcut[0]) is nn.Conv2d and type(model.layer2[0].shortcut[1]) is nn.BatchNorm2d
    )
    assert type(model.fc) is nn.Linear
    # the gates are independent initialisations, not copies
    for block in blocks:
        assert not torch.equal(block.weight[0], block.weight[1])
        assert float(block.weight[1].detach().std()) == pytest.approx(
            float(block.weight[0].detach().std()), rel=0.3
        )


def test_vgg16_gates_13_convs_and_optionally_the_classifier():
    assert len(eio_blocks(to_eio_model(vgg16_bn()))) == 13
    gated = to_eio_model(vgg16_bn(), gate_classifier=True)
    blocks = eio_blocks(gated)
    assert len(blocks) == 14 and isinstance(blocks[-1], PathLinear)


def test_to_eio_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        to_eio_model(SmallCNN(), 1)
    with pytest.raises(ValueError, match="no main-branch"):
        to_eio_model(nn.Sequential(nn.Linear(3, 2)))


def test_use_eio_path_checks_the_path_and_restores_the_routes():
    model = to_eio_model(SmallCNN())
    with pytest.raises(ValueError, match="one gate per gated block"):
        with use_eio_path(model, [0, 1]):
            pass
    with pytest.raises(ValueError, match="outside"):
        with use_eio_path(model, [0, 2, 1]):
            pass
    before = [b.route for b in eio_blocks(model)]
    with use_eio_path(model, [1, 0, 1]):
        assert [b.route for b in eio_blocks(model)] == [1, 0, 1]
    assert [b.route for b in eio_blocks(model)] == before


@pytest.mark.parametrize("training", [False, True])
def test_a_fixed_route_equals_the_plain_model_with_that_paths_weights(training):
    model = to_eio_model(resnet20(), generator=torch.Generator().manual_seed(1))
    _perturb_batch_norms(model)
    path = torch.randint(2, (19,), generator=torch.Generator().manual_seed(2))
    plain = resnet20()
    plain.load_state_dict(derive_eio(model, path).state_dict())
    model.train(training)
    plain.train(training)
    x = _images()
    with use_eio_path(model, path):
        gated_out = model(x)
    torch.testing.assert_close(gated_out, plain(x), atol=1e-5, rtol=1e-5)


def test_derive_is_a_plain_model_of_the_base_class_with_identical_outputs():
    model = to_eio_model(vgg16_bn(), gate_classifier=True, generator=torch.Generator().manual_seed(3))
    _perturb_batch_norms(model)
    model.eval()
    path = [1, 0] * 7
    derived = derive_eio(model, path).eval()
    assert type(derived) is type(vgg16_bn())
    assert not any(isinstance(m, (GatedConv2d, PathLinear, PathBatchNorm2d)) for m in derived.modules())
    x = _images(2)
    with use_eio_path(model, path):
        expected = model(x)
    assert torch.equal(derived(x), expected)
    # another path gives other outputs (the test could fail)
    with use_eio_path(model, [0, 1] * 7):
        assert not torch.allclose(model(x), expected)


def test_layer_taps_are_pre_relu_with_the_residual_addition():
    model = resnet20().eval()
    taps = feature_taps(model)
    assert len(taps) == 19
    assert taps[0] == ("bn1",) and taps[2] == ("layer1.0.bn2", "layer1.0.shortcut")
    x = _images(2)
    with tap_features(model, ["layer2.0", "layer1.0.bn1"]) as seen:
        model(x)
    # the block's output is the ReLU of the tapped post-addition feature (layer 9: layer2.0's conv2)
    torch.testing.assert_close(layer_features(model, 9)(x).relu(), seen["layer2.0"])
    torch.testing.assert_close(layer_features(model, 2)(x), seen["layer1.0.bn1"])
    with pytest.raises(ValueError, match="layer must lie in"):
        layer_features(model, 20)


def test_the_gated_model_has_the_same_taps_on_its_route():
    model = to_eio_model(resnet20()).eval()
    path = [1] * 19
    derived = derive_eio(model, path).eval()
    x = _images(2)
    with use_eio_path(model, path):
        gated = layer_features(model, 6)(x)
    torch.testing.assert_close(gated, layer_features(derived, 6)(x))


def test_random_gates_draw_per_input_from_the_noise_stream():
    model = to_eio_model(SmallCNN()).eval()
    x = _images(64)
    with random_gates(model):
        first, second = model(x), model(x)
    assert not torch.equal(first, second)
    with use_eio_path(model, [0, 0, 0]):
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_a_whole_batch_gate_equals_the_routed_op_and_leaves_the_other_gates_untouched(padding_mode):
    conv = GatedConv2d(3, 4, 3, padding=1, padding_mode=padding_mode, n=3, route=2)
    x = _images(5).requires_grad_(True)
    fast = conv(x)
    fast_grad_x, fast_grad_w = torch.autograd.grad(fast.square().sum(), (x, conv.weight))
    conv.route = torch.full((5,), 2)  # a per-sample route: the routed op
    routed = conv(x)
    routed_grad_x, routed_grad_w = torch.autograd.grad(routed.square().sum(), (x, conv.weight))
    torch.testing.assert_close(fast, routed)
    torch.testing.assert_close(fast_grad_x, routed_grad_x)
    torch.testing.assert_close(fast_grad_w, routed_grad_w)
    assert float(fast_grad_w[:2].abs().sum()) == 0.0 and float(fast_grad_w[2].abs().sum()) > 0
    conv.route = 3
    with pytest.raises(ValueError, match="must name a gate"):
        conv(x)


def test_a_fixed_layer_outside_the_feasible_range_is_rejected():
    assert diversification_paths(19, 2, 3, layer=5)[0] == 5
    with pytest.raises(ValueError, match="layer must lie in"):
        diversification_paths(19, 2, 3, layer=1)
