"""The seed chain of robustkernels.nn: every random layer draws its per-call seeds from its own
noise stream (set_noise_seed / noise_seed), never from torch's global generator, and a model
with noisy or routed layers compiles with fullgraph=True, drawing fresh noise on every call
without recompiling."""

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import robustkernels.functional as rkF
from robustkernels import nn as rknn
from robustkernels.api.train.float_at import to_float_model
from robustkernels.nn.seeds import random_modules


def noisy_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )
    return rknn.convert(model, linear=True)


def float_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return to_float_model(model)


def images(batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, 3, 6, 6, generator=torch.Generator().manual_seed(1))


def test_two_layers_and_two_calls_never_share_a_seed():
    model = noisy_model()
    layers = random_modules(model)
    rknn.set_noise_seed(model, 3)
    seeds = []
    for _ in range(3):
        model(images())
        seeds += [int(layer.last_seed) for layer in layers]
    assert len(seeds) == 9 and len(set(seeds)) == 9


def test_the_same_seed_repeats_the_noise_and_another_seed_changes_it():
    model, x = noisy_model(), images()
    outputs = []
    for seed in (5, 5, 6):
        rknn.set_noise_seed(model, seed)
        outputs.append((model(x), model(x)))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert not torch.equal(outputs[0][0], outputs[0][1])
    assert not torch.equal(outputs[0][0], outputs[2][0])


def test_noise_seed_context_puts_every_stream_back():
    model, x = noisy_model(), images()
    before = [layer.noise_stream.clone() for layer in random_modules(model)]
    with rknn.noise_seed(model, 9):
        first = model(x)
    with rknn.noise_seed(model, 9):
        again = model(x)
    assert torch.equal(first, again)
    for layer, stream in zip(random_modules(model), before, strict=True):
        assert torch.equal(layer.noise_stream, stream)


def test_a_drawn_seed_gives_the_noise_of_the_int_it_holds():
    layer = rknn.NoisyConv2d(3, 4, 3, padding=1, alpha_granularity="channel")
    x = images()
    y = layer(x)
    expected = rkF.noisy_conv2d(
        x, layer.weight, layer.bias, layer.alpha, lam=1.0, seed=int(layer.last_seed), padding=1
    )
    assert torch.equal(y, expected)


def test_masked_expert_routed_and_single_path_calls_draw_the_same_noise():
    """A drawn seed t gives path p the seed t + p in the routed call and in the one-path call."""
    model = float_model().eval()
    conv = next(m for m in model.modules() if isinstance(m, rknn.MaskedExpertConv2d))
    x = torch.rand(4, 3, 6, 6)
    outputs = []
    for route in (1, [0, 4]):
        conv.route = route
        rknn.set_noise_seed(model, 2)
        outputs.append(conv(x))
    torch.testing.assert_close(outputs[0], outputs[1])


def test_layers_never_read_torchs_generator():
    model = float_model()
    gated = rknn.GatedConv2d(3, 3, 3, padding=1, n=3, route="random")
    stack = rknn.MultiResStack((6, 3), jitter=1)
    x = images()
    state = torch.get_rng_state()
    for route in ("split", 1, 0):
        rknn.set_route(model, route)
        model(x).sum().backward()
    gated(x).sum().backward()
    stack(x)
    assert torch.equal(torch.get_rng_state(), state)


def test_random_route_is_fresh_per_call_and_repeats_under_a_seed():
    gated = rknn.GatedConv2d(3, 3, 3, padding=1, n=4, route="random")
    x = torch.rand(64, 3, 4, 4)
    rknn.set_noise_seed(gated, 1)
    gated(x)
    first = gated.last_route
    gated(x)
    assert not torch.equal(first, gated.last_route)
    rknn.set_noise_seed(gated, 1)
    gated(x)
    assert torch.equal(first, gated.last_route)


def test_seed_tensors_pass_the_op_checks():
    weight, alpha = torch.randn(4, 3, 3, 3, requires_grad=True), torch.full((1,), 0.3, requires_grad=True)
    seed = torch.tensor(11)
    torch.library.opcheck(torch.ops.robustkernels.noisy_weight.default, (weight, alpha, 1.0, 2, None, seed))
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    torch.library.opcheck(
        torch.ops.robustkernels.noisy_conv2d.default,
        (x, weight, None, alpha, 1.0, 0, None, [1, 1], [1, 1], [1, 1], 1, seed),
    )
    bank_alpha = torch.full((2, 1), 0.3, requires_grad=True)
    torch.library.opcheck(
        torch.ops.robustkernels.path_conv2d.default,
        (x, weight.unsqueeze(0), None, None, bank_alpha, [0.0, 1.0], [0, 1], None, [1, 1], [1, 1], [1, 1], [1, 1], 1, seed),
    )  # fmt: skip


def test_an_int_seed_plus_the_tensor_is_the_seed():
    weight, alpha = torch.randn(4, 3), torch.full((1,), 0.3)
    from_tensor = rkF.noisy_weight(weight, alpha, lam=1.0, seed=torch.tensor(40))
    assert torch.equal(from_tensor, rkF.noisy_weight(weight, alpha, lam=1.0, seed=40))
    bank = rkF.path_weights(weight, shared_paths=2, noise=(torch.full((2, 1), 0.3), 1.0, torch.tensor(40)))
    assert torch.equal(
        bank, rkF.path_weights(weight, shared_paths=2, noise=(torch.full((2, 1), 0.3), 1.0, 40))
    )


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        (torch.tensor(1.0), "0-dim int64 CPU tensor"),
        (torch.tensor([1]), "0-dim int64 CPU tensor"),
        (torch.tensor(-1), r"seed must be in \[0, 2\*\*63\)"),
    ],
)
def test_bad_seed_tensors_are_refused_naming_the_seed(seed, message):
    with pytest.raises(ValueError, match=message):
        rkF.noisy_weight(torch.randn(4, 3), torch.ones(1), lam=1.0, seed=seed)


def test_set_noise_seed_refuses_a_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        rknn.set_noise_seed(noisy_model(), -3)


def _compiled_calls(model, x, compiled):
    """Three compiled forward + backward calls: the outputs, and the number of graphs compiled."""
    torch._dynamo.reset()
    counters.clear()
    outputs = []
    for call in range(3):
        # after the first call nothing may recompile: not a new seed, not a new stream
        with torch._dynamo.config.patch(error_on_recompile=call > 0):
            if call == 2:
                rknn.set_noise_seed(model, 4)
            y = compiled(x)
            y.sum().backward()
        outputs.append(y.detach())
    return outputs, counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_noisy_model_compiles_in_full_with_fresh_noise_per_call(backend):
    model, x = noisy_model(), images()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    outputs, graphs = _compiled_calls(model, x, compiled)
    assert graphs == 1
    assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[1], outputs[2])
    rknn.set_noise_seed(model, 4)
    torch.testing.assert_close(outputs[2], model(x))  # the compiled draw is the eager one


@pytest.mark.parametrize("route", ["split", 1])
def test_float_model_compiles_in_full_with_fresh_noise_per_call(route):
    model, x = float_model().eval(), images()
    rknn.set_route(model, route)
    outputs, graphs = _compiled_calls(model, x, torch.compile(model, backend="aot_eager", fullgraph=True))
    assert graphs == 1
    noisy = slice(2, 4) if route == "split" else slice(None)
    assert not torch.equal(outputs[0][noisy], outputs[1][noisy])
    rknn.set_noise_seed(model, 4)
    torch.testing.assert_close(outputs[2], model(x))


def test_random_gated_layer_compiles_in_full_with_a_fresh_route_per_call():
    torch.manual_seed(0)
    model = nn.Sequential(rknn.GatedConv2d(3, 4, 3, padding=1, n=4, route="random"), nn.ReLU())
    x = torch.rand(16, 3, 4, 4)
    outputs, graphs = _compiled_calls(model, x, torch.compile(model, backend="aot_eager", fullgraph=True))
    assert graphs == 1
    assert not torch.equal(outputs[0], outputs[1])


def test_streams_drawn_in_inference_mode_still_train():
    model, x = noisy_model(), images()
    with torch.inference_mode():
        model(x)  # draws advance the streams inside the block
        with rknn.noise_seed(model, 3):
            model(x)
        rknn.set_noise_seed(model, 4)
    assert not any(module.noise_stream.is_inference() for module in random_modules(model))
    model(x).sum().backward()  # an inference-tensor seed could not be saved for backward


def test_compiled_model_called_in_inference_mode_still_trains():
    model, x = noisy_model(), images()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.inference_mode():
        compiled(x)  # Dynamo cannot test for inference mode: the draw must be safe there as traced
    assert not any(module.noise_stream.is_inference() for module in random_modules(model))
    compiled(x).sum().backward()
