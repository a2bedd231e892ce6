"""Seeds held on the device: the noisy weight kernels add a seed_offset tensor to their int seed
on the device (robustkernels/nn/seeds.py: a noisy layer's stream lives on its GPU), so a layer
captured in a CUDA graph draws fresh noise at every replay.

On the CPU every kernel is checked to add the offset exactly as the host would (C++, the Triton
kernels under the interpreter, the reference); the capture itself runs where a GPU is present.
"""

import pytest
import torch

import robustkernels.functional as rkF
from robustkernels import use_backend
from robustkernels.nn import (
    MaskedExpertConv2d,
    MultiResStack,
    NoisyConv2d,
    NoisyLinear,
    noise_seed,
    set_noise_seed,
)
from robustkernels.ops import backend

OPS = torch.ops.robustkernels
SEED, OFFSET = 2**40 + 3, 1234567
CPU_BACKENDS = [
    name for name in ("cpp", "triton", "reference") if backend.unavailable_reason(name, "cpu") is None
]


def _case(mode: str):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 5, 3, generator=generator)
    alpha = {"layer": torch.full((1,), 0.3), "channel": torch.rand(6, 1, 1, generator=generator) + 0.1}[mode]
    mask = torch.rand(6, 5, 3, generator=generator) > 0.3
    grad = torch.randn(6, 5, 3, generator=generator)
    return weight, alpha, mask, grad


@pytest.mark.parametrize("mode", ["layer", "channel"])
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_weight_kernels_add_the_seed_offset(name, mode):
    weight, alpha, mask, grad = _case(mode)
    offset = torch.tensor(OFFSET)
    with use_backend(name):
        out, sigma = OPS.noisy_weight_fwd_python(weight, alpha, 0.7, SEED, mask, offset)
        expected_out, expected_sigma = OPS.noisy_weight_fwd_python(weight, alpha, 0.7, SEED + OFFSET, mask)
        grads = OPS.noisy_weight_bwd_python(grad, alpha, sigma, 0.7, SEED, mask, True, offset)
        expected_grads = OPS.noisy_weight_bwd_python(grad, alpha, sigma, 0.7, SEED + OFFSET, mask, True)
    assert torch.equal(out, expected_out) and torch.equal(sigma, expected_sigma)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    other = OPS.noisy_weight_fwd_kernel(weight, alpha, 0.7, SEED, mask, torch.tensor(OFFSET + 1))[0]
    assert not torch.equal(other, out)  # the offset is read, not ignored


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_path_weight_kernels_add_the_seed_offset(name):
    generator = torch.Generator().manual_seed(1)
    weight, grad = torch.randn(1, 6, 5, generator=generator), torch.randn(2, 6, 5, generator=generator)
    alpha, lams, seeds = torch.full((2, 1), 0.3), [0.0, 0.9], [SEED, SEED + 1]
    offset = torch.tensor(OFFSET)
    shifted = [seed + OFFSET for seed in seeds]
    with use_backend(name):
        out, sigma = OPS.path_weights_fwd_python(weight, None, alpha, lams, seeds, None, offset)
        expected_out, _ = OPS.path_weights_fwd_python(weight, None, alpha, lams, shifted, None)
        grads = OPS.path_weights_bwd_python(grad, 1, None, alpha, sigma, lams, seeds, None, True, offset)
        expected_grads = OPS.path_weights_bwd_python(grad, 1, None, alpha, sigma, lams, shifted, None, True)
    assert torch.equal(out, expected_out)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_multires_stack_kernels_add_the_seed_offset(name):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    settings = ([8, 4], [8, 4], 2, 0.1, "uniform", 0.5, 1.0, "bicubic", False, True)
    offset = torch.tensor(OFFSET)
    with use_backend(name):
        out, mask = OPS.multires_stack_fwd_python(x, *settings, SEED, offset)
        expected_out, expected_mask = OPS.multires_stack_fwd_python(x, *settings, SEED + OFFSET)
        backward_settings = (*settings[:3], *settings[5:])
        grad = torch.ones_like(out)
        dx = OPS.multires_stack_bwd_python(grad, mask, x, *backward_settings, SEED, offset)
        expected_dx = OPS.multires_stack_bwd_python(grad, mask, x, *backward_settings, SEED + OFFSET)
    assert torch.equal(out, expected_out) and torch.equal(mask, expected_mask)
    torch.testing.assert_close(dx, expected_dx, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("offset", "error", "message"),
    [
        (torch.tensor(3, dtype=torch.int32), TypeError, "seed_offset must be a int64 tensor"),
        (torch.tensor([3]), ValueError, "seed_offset must be a 0-dim tensor"),
        (torch.tensor(-3), ValueError, r"seed \+ seed_offset"),
    ],
)
def test_bad_seed_offsets_are_refused_naming_the_argument(offset, error, message):
    weight, alpha, mask, _ = _case("layer")
    with pytest.raises(error, match=message):
        OPS.noisy_weight_fwd_kernel(weight, alpha, 0.7, SEED, mask, offset)


def test_a_seed_tensor_on_another_device_is_refused():
    weight, alpha, _, _ = _case("layer")
    with pytest.raises(ValueError, match=r"0-dim int64 CPU tensor, got torch.int64 of shape \(\) on meta"):
        OPS.noisy_weight(weight, alpha, 0.7, 0, None, torch.tensor(3, device="meta"))


def test_noisy_layers_keep_a_cpu_stream_on_the_cpu():
    layer = NoisyConv2d(3, 4, 3)
    layer(torch.rand(1, 3, 5, 5))
    assert layer.noise_stream.is_cpu and layer.last_seed.is_cpu


@pytest.mark.parametrize(
    "make", [lambda: NoisyConv2d(3, 4, 3), lambda: MultiResStack((8, 4)), MaskedExpertConv2d]
)
def test_dtype_moves_and_to_empty_leave_the_stream_alone(make):
    module = make(3, 4, 3) if make is MaskedExpertConv2d else make()
    start = int(module.noise_stream)
    module.double().half().float().to_empty(device="cpu")
    module.to("meta").to_empty(device="cpu").share_memory()  # a meta module keeps a real stream
    assert module.noise_stream.dtype == torch.int64 and int(module.noise_stream) == start
    assert module.noise_stream.is_cpu and not module.noise_stream.is_shared()


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _captured(layer, x):
    """(graph, output) of layer(x) captured after a warm-up on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            layer(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = layer(x)
    return graph, y


def _replays(graph, y, count: int) -> list[torch.Tensor]:
    """y after each of `count` replays."""
    outputs = []
    for _ in range(count):
        graph.replay()
        outputs.append(y.clone())
    torch.cuda.synchronize()
    return outputs


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_a_captured_noisy_layer_draws_fresh_noise_per_replay(kind):
    torch.manual_seed(0)
    if kind == "conv":
        layer, x = NoisyConv2d(4, 4, 3, padding=1).cuda(), torch.randn(2, 4, 8, 8, device="cuda")

        def eager(seed):
            return rkF.noisy_conv2d(
                x, layer.weight, layer.bias, layer.alpha, lam=layer.lam, seed=seed, padding=1
            )

    else:
        layer, x = NoisyLinear(8, 5).cuda(), torch.randn(3, 8, device="cuda")

        def eager(seed):
            return rkF.noisy_linear(x, layer.weight, layer.bias, layer.alpha, lam=layer.lam, seed=seed)

    assert layer.noise_stream.is_cuda  # moved with the layer by .cuda()
    graph, y = _captured(layer, x)
    outputs = _replays(graph, y, 3)
    assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[1], outputs[2])
    after = int(layer.noise_stream)  # every replay advanced the stream by one
    with torch.no_grad():
        for k, output in enumerate(outputs):
            torch.testing.assert_close(output, eager(after - 3 + k))
    set_noise_seed(layer, 11)  # in place: the graph reads the restarted stream
    graph.replay()
    first = y.clone()
    set_noise_seed(layer, 11)
    graph.replay()
    assert torch.equal(first, y)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("route", ["split", 1])
def test_a_captured_float_layer_draws_fresh_noise_per_replay(route):
    torch.manual_seed(0)
    layer = MaskedExpertConv2d(4, 4, 3, padding=1, density=None, route=route).cuda()
    x = torch.randn(4, 4, 8, 8, device="cuda")
    graph, y = _captured(layer, x)
    assert layer.noise_stream.is_cuda
    outputs = _replays(graph, y, 2)
    half = slice(2, 4) if route == "split" else slice(0, 4)  # the noisy path's samples
    assert not torch.equal(outputs[0][half], outputs[1][half])
    with torch.no_grad():
        # the last replay drew t = stream - 2 (two seeds a call); its noisy path 1 used t + 1, which a
        # fixed int seed gives path 1 as it is
        layer.seed = int(layer.noise_stream) - 1
        torch.testing.assert_close(outputs[1], layer(x))


@pytest.mark.cuda
@needs_cuda
def test_a_captured_multires_stack_draws_fresh_views_per_replay():
    stack = MultiResStack((8, 4, 2))
    x = torch.rand(2, 3, 8, 8, device="cuda")
    graph, y = _captured(stack, x)
    assert stack.noise_stream.is_cuda
    outputs = _replays(graph, y, 2)
    assert not torch.equal(outputs[0], outputs[1])
    torch.testing.assert_close(outputs[1], stack(x, seed=int(stack.noise_stream) - 1))  # one seed a call


@pytest.mark.cuda
@needs_cuda
def test_noise_seed_puts_a_gpu_stream_back_by_value():
    layer = NoisyConv2d(4, 4, 3, padding=1).cuda()
    x = torch.randn(2, 4, 8, 8, device="cuda")
    layer(x)
    stream = layer.noise_stream
    before = int(stream)
    with noise_seed(layer, 5):
        layer(x)
    assert layer.noise_stream is stream and int(stream) == before
