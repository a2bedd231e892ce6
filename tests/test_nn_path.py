"""Routed modules (GatedConv2d, MaskedExpertConv2d, EnsembleConv2d, PathLinear, PathBatchNorm2d),
their convert helpers, route setting on whole models and gate sampling."""

import io
import itertools

import pytest
import torch
from helpers import TOLERANCE
from torch import nn

import robustkernels.nn as rnn
from robustkernels import functional as F
from robustkernels.paths import random_route, sample_paths


def small_resnet_block():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def images(batch=6, seed=1):
    return torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def randomise(model):
    """Different values in every path, so that a wrong path shows."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand(tensor.shape, generator=gen) + 0.5
                    if "var" in name
                    else torch.randn(tensor.shape, generator=gen) * 0.3
                )
    return model


def test_gated_conv_routes_and_derive():
    conv = rnn.GatedConv2d(3, 4, 3, padding=1, n=3)
    x = images()
    route = torch.tensor([2, 0, 1, 1, 0, 2])
    conv.route = route
    y = conv(x)
    for p in range(3):
        plain = conv.derive(p)
        assert type(plain) is nn.Conv2d
        torch.testing.assert_close(y[route == p], plain(x[route == p]), **TOLERANCE[torch.float32])
    conv.route = 1
    torch.testing.assert_close(conv(x), conv.derive(1)(x), **TOLERANCE[torch.float32])
    conv.route = "random"
    torch.manual_seed(5)
    y = conv(x)
    chosen = conv.last_route
    assert chosen.shape == (6,) and y.shape == (6, 4, 8, 8)
    torch.testing.assert_close(
        y, torch.cat([conv.derive(int(p))(x[b : b + 1]) for b, p in enumerate(chosen)])
    )


def test_gated_model_equals_derived_plain_model():
    model = randomise(rnn.convert_gated(small_resnet_block(), 2, linear=True)).eval()
    x = images()
    blocks = rnn.gated_blocks(model)
    assert len(blocks) == 2
    for path in itertools.product(range(2), repeat=2):
        with rnn.use_route(model, path[-1]), rnn.use_path(model, list(path)):
            gated = model(x)
        plain = rnn.derive(model, list(path))
        assert not any(isinstance(m, rnn.path_convert.ROUTED) for m in plain.modules())
        torch.testing.assert_close(plain(x), gated, **TOLERANCE[torch.float32])


def test_gated_training_step_per_sample_routes():
    model = rnn.convert_gated(small_resnet_block(), 2)
    x = images(8)
    routes = [random_route(8, 2, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    with rnn.use_path(model, routes):
        model(x).square().sum().backward()
    gated = rnn.gated_blocks(model)
    assert all(b.weight.grad is not None for b in gated)
    # every block's batch norm followed its conv's per-sample route
    assert all(
        torch.equal(bn.last_route, route) for bn, route in zip([model[1], model[4]], routes, strict=True)
    )


def test_sample_paths_rule():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        paths = sample_paths(6, 2, 3, distinct_prefix=2, generator=gen)
        assert paths.shape == (3, 6) and paths.min() >= 0 and paths.max() <= 1
        prefixes = {tuple(p[:2].tolist()) for p in paths}
        assert len(prefixes) == 3
    # large prefixes are drawn without listing all of them
    many = sample_paths(40, 2, 5, distinct_prefix=30, generator=gen)
    assert len({tuple(p[:30].tolist()) for p in many}) == 5
    with pytest.raises(ValueError, match="cannot differ pairwise"):
        sample_paths(4, 2, 5, distinct_prefix=2)
    with pytest.raises(ValueError, match="distinct_prefix must lie"):
        sample_paths(4, 2, 2, distinct_prefix=5)
    # without a prefix rule every gate is uniform
    counts = torch.bincount(sample_paths(10, 3, 300, generator=gen).flatten(), minlength=3)
    assert counts.min() > 800


def test_masked_expert_masks_and_noise():
    conv = rnn.MaskedExpertConv2d(
        4, 6, 3, padding=1, density=0.5, overlap=0.4, lam=1.0, alpha_granularity="channel"
    )
    masks = conv.masks
    kept = masks.sum(dim=(1, 2, 3, 4))
    numel = conv.weight.numel()
    assert masks.dtype == torch.bool and torch.equal(kept, torch.full((2,), round(0.5 * numel)))
    assert (masks[0] & masks[1]).sum() == round(0.4 * numel)  # overlap: a fraction of the tensor
    x = torch.randn(4, 4, 7, 7)
    conv.seed = 9
    conv.route = "split"
    y = conv(x)
    clean = nn.functional.conv2d(x[:2], conv.weight * masks[0], conv.bias, padding=1)
    noisy = F.noisy_conv2d(
        x[2:], conv.weight, conv.bias, conv.alpha, lam=1.0, seed=9, mask=masks[1], padding=1
    )
    torch.testing.assert_close(y, torch.cat([clean, noisy]), **TOLERANCE[torch.float32])
    y.sum().backward()
    assert conv.alpha.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="raise the overlap"):
        rnn.expert_masks((10,), 0.8, 0.1)


def test_float_dual_path_is_mask_free():
    model = rnn.convert_masked_experts(small_resnet_block(), density=None, skip=("0",))
    assert type(model[0]) is nn.Conv2d and model[3].masks is None
    with rnn.use_route(model, "split"):
        model(images(8)).sum().backward()
    assert model[3].alpha.grad is not None and model[3].route == 0


@pytest.mark.parametrize("density", [None, 0.5])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("frozen", [False, True])
def test_masked_expert_single_path_equals_the_routed_op(density, padding_mode, frozen):
    """The whole batch on one int path (an attack's forward with frozen parameters, a per-path
    training forward) skips the routed op: the same output and gradients (input, weight, alpha)
    as path_conv2d routing every sample to that path by segment sizes, on the same noise."""
    conv = rnn.MaskedExpertConv2d(4, 6, 3, padding=1, padding_mode=padding_mode, density=density)
    conv.seed = 5
    conv.requires_grad_(not frozen)
    x = torch.randn(3, 4, 7, 7)
    for path in (0, 1):
        outputs, grads = [], []
        for route in (path, [3, 0] if path == 0 else [0, 3]):
            conv.route = route
            conv.zero_grad()
            xi = x.clone().requires_grad_(True)
            out = conv(xi)
            out.square().sum().backward()
            outputs.append(out)
            params = [] if frozen else [conv.weight, conv.alpha]
            grads.append(
                [xi.grad] + [None if q.grad is None or not q.grad.any() else q.grad.clone() for q in params]
            )
            assert conv.last_route == route
        torch.testing.assert_close(outputs[0], outputs[1], **TOLERANCE[torch.float32])
        for one_path, routed in zip(*grads, strict=True):  # None: no gradient (alpha off the noisy path)
            if one_path is None or routed is None:
                assert one_path is None and routed is None
            else:
                torch.testing.assert_close(one_path, routed, **TOLERANCE[torch.float32])
    conv.route = 2
    with torch.no_grad(), pytest.raises(ValueError, match="route"):
        conv(x)


@pytest.mark.parametrize("factory", ["experts", "ensemble"])
def test_masks_survive_save_and_load(factory):
    if factory == "experts":
        layer = rnn.MaskedExpertConv2d(3, 4, 3, density=0.5, overlap=0.5)
        fresh = rnn.MaskedExpertConv2d(3, 4, 3, density=None)
    else:
        layer = rnn.EnsembleConv2d(3, 4, 3, members=3)
        layer.prune(0.3)
        fresh = rnn.EnsembleConv2d(3, 4, 3, members=3)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.masks.dtype == torch.bool and torch.equal(fresh.masks, layer.masks)
    x = torch.randn(6, 3, 6, 6)
    layer.route = fresh.route = torch.tensor([0, 1, 1, 0, 1, 0])
    layer.seed = fresh.seed = 4
    torch.testing.assert_close(fresh(x), layer(x))


@pytest.mark.parametrize("layout", ["stacked", "split"])
@pytest.mark.parametrize("density", [None, 0.5])
def test_ensemble_equals_sequential_members(density, layout):
    members = 4
    model = rnn.convert_ensemble(small_resnet_block(), members, density=density)
    randomise(model).eval()
    if density is not None:
        for layer in model.modules():
            if isinstance(layer, rnn.EnsembleConv2d):
                assert torch.allclose(
                    layer.masks.float().mean(dim=(1, 2, 3, 4)), torch.full((members,), 0.5), atol=0.03
                )
    x = images(5)
    out = rnn.EnsembleModel(model, members, layout=layout, chunk_size=2)(x)
    assert out.shape == (members, 5, 5)
    for k in range(members):
        torch.testing.assert_close(out[k], rnn.derive(model, k)(x), **TOLERANCE[torch.float32])


def test_path_batchnorm_matches_per_path_batchnorm():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    path_bn = rnn.PathBatchNorm2d.from_batchnorm(bn, 3)
    plain = [nn.BatchNorm2d(3) for _ in range(3)]
    x = torch.randn(9, 3, 4, 4)
    route = torch.tensor([0, 2, 2, 0, 1, 0, 2, 2, 1])
    path_bn.route = route
    y = path_bn(x)
    for p in range(3):
        torch.testing.assert_close(y[route == p], plain[p](x[route == p]), **TOLERANCE[torch.float32])
        torch.testing.assert_close(path_bn.running_mean[p], plain[p].running_mean)
        torch.testing.assert_close(path_bn.running_var[p], plain[p].running_var)
    assert torch.equal(path_bn.num_batches_tracked, torch.ones(3, dtype=torch.long))
    path_bn.eval()
    for p in range(3):
        plain[p].eval()
        path_bn.route = p
        torch.testing.assert_close(path_bn(x), plain[p](x), **TOLERANCE[torch.float32])
        torch.testing.assert_close(path_bn.derive(p)(x), plain[p](x), **TOLERANCE[torch.float32])
    path_bn.route = [3, 0, 6]
    torch.testing.assert_close(
        path_bn(x), torch.cat([plain[0](x[:3]), plain[2](x[3:])]), **TOLERANCE[torch.float32]
    )


def test_path_batchnorm_keeps_a_channels_last_batch_channels_last():
    torch.manual_seed(0)
    path_bn = rnn.PathBatchNorm2d(3, 3)
    path_bn.route = torch.tensor([0, 2, 2, 0, 1, 0, 2, 2, 1])
    x = torch.randn(9, 3, 4, 4)
    expected = path_bn(x)
    y = path_bn(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, expected, **TOLERANCE[torch.float32])


def test_stacked_training_matches_split():
    """Batch statistics, running statistics and gradients agree between the two layouts."""
    models = [randomise(rnn.convert_ensemble(small_resnet_block(), 3)) for _ in range(2)]
    x = images(4)
    outs = []
    for model, layout in zip(models, ["stacked", "split"], strict=True):
        out = rnn.EnsembleModel(model, 3, layout=layout)(x)
        out.square().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], **TOLERANCE[torch.float32])
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=name)
    for a, b in zip(models[0].buffers(), models[1].buffers(), strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE[torch.float32])


def test_path_linear_head():
    head = rnn.PathLinear(6, 3, num_paths=2, route=torch.tensor([1, 0, 1]))
    x = torch.randn(3, 6)
    y = head(x)
    torch.testing.assert_close(y[[0, 2]], head.derive(1)(x[[0, 2]]))
    torch.testing.assert_close(y[[1]], head.derive(0)(x[[1]]))


def test_use_route_restores_and_set_route():
    model = rnn.convert_masked_experts(small_resnet_block())
    with rnn.use_route(model, 1):
        assert all(m.route == 1 for m in model.modules() if isinstance(m, rnn.MaskedExpertConv2d))
    assert all(m.route == 0 for m in model.modules() if isinstance(m, rnn.MaskedExpertConv2d))
    rnn.set_route(model, "split")
    assert model[0].route == "split" and model[1]._follows == [model[0]]


def test_convert_rejects_single_layer_and_keeps_skip():
    with pytest.raises(TypeError, match="wrap it"):
        rnn.convert_gated(nn.Conv2d(3, 3, 1))
    model = rnn.convert_gated(small_resnet_block(), skip=("3",))
    assert type(model[3]) is nn.Conv2d and isinstance(model[0], rnn.GatedConv2d)


def test_converted_model_under_torch_compile():
    model = rnn.convert_ensemble(small_resnet_block(), 2).eval()
    ensemble = rnn.EnsembleModel(model, 2)
    x = images(4)
    compiled = torch.compile(ensemble, backend="aot_eager")
    torch.testing.assert_close(compiled(x), ensemble(x))


def test_route_contexts_restore_every_layer_even_when_the_block_raises():
    model = rnn.convert_masked_experts(small_resnet_block(), density=None, skip=("0",))
    model[3].route = 1
    with pytest.raises(RuntimeError, match="inside"), rnn.use_route(model, "split"):
        assert model[3].route == "split"
        raise RuntimeError("inside")
    assert model[3].route == 1
