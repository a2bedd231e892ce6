"""Routed multi-path layers (path_conv2d, path_linear, path_weights, route_sort) against their
references, on every backend and device (see helpers.py for the device convention; the
oracles run on the device under test, and results are compared on the CPU)."""

import pytest
import torch
import torch.nn.functional as TF
from helpers import HALF_DTYPES, TOLERANCE, assert_half_close, grads_of, targets
from path_banks import make_bank, make_x, random_route

import robustkernels
from robustkernels import functional as F
from robustkernels import reference

TARGETS = targets("cpp", "reference", "triton")  # no CUDA C++ kernel: Triton serves GPUs
# (x shape, weight shape [C_out, C_in/groups, kh, kw], stride, padding, dilation, groups)
CONV_CASES = [
    ((7, 4, 9, 7), (6, 4, 3, 3), 1, 1, 1, 1),
    ((5, 6, 11, 10), (8, 3, 3, 2), 2, (1, 0), 1, 2),
    ((6, 3, 8, 8), (5, 3, 1, 1), 1, 0, 1, 1),
]


def assert_all_close(got, expected, dtype=torch.float32):
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOLERANCE[dtype])


LAMS, SEEDS = [0.0, 0.8, 1.3], [5, 6, 7]


def ours_conv(backend, route, mask, lams, seeds, conv, shared=False):
    def run(x, w, b, a):
        with robustkernels.use_backend(backend):
            return F.path_conv2d(
                x, w[0] if shared else w, route, bias_bank=b, mask_bank=mask, noise=(a, lams, seeds), **conv
            )

    return run


def reference_conv(route, mask, lams, seeds, conv):
    return lambda x, w, b, a: reference.path_conv2d(x, w, b, route, lams, seeds, a, mask, **conv)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("alpha_kind", ["layer", "channel", "element"])
@pytest.mark.parametrize("shared", [False, True], ids=["bank", "shared"])
def test_conv_matches_reference(target, case, alpha_kind, shared):
    x_shape, w_shape, stride, padding, dilation, groups = case
    weight, bias, mask, alpha = make_bank(w_shape, 3, shared=shared, alpha_kind=alpha_kind)
    x = make_x(x_shape)
    route, mask = target.to(random_route(x_shape[0], 3), mask)
    conv = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    tensors = (x, weight, bias, alpha)
    got = grads_of(ours_conv(target.backend, route, mask, LAMS, SEEDS, conv, shared), tensors, target.device)
    expected = grads_of(reference_conv(route, mask, LAMS, SEEDS, conv), tensors, target.device)
    assert_all_close(got, expected)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("route", ["split", 1, [0, 4, 2]], ids=["split", "one-path", "sizes"])
def test_conv_segments(target, route):
    """Segment routes (no sort) against the reference on the same per-sample paths."""
    weight, bias, mask, alpha = make_bank((5, 4, 3, 3), 3)
    x = make_x((6, 4, 7, 7))
    sizes = {"split": [2, 2, 2], 1: [0, 6, 0]}.get(route, route) if not isinstance(route, list) else route
    conv = {"padding": 1}
    tensors = (x, weight, bias, alpha)
    (mask,) = target.to(mask)
    got = grads_of(ours_conv(target.backend, route, mask, LAMS, SEEDS, conv), tensors, target.device)
    assert_all_close(got, grads_of(reference_conv(sizes, mask, LAMS, SEEDS, conv), tensors, target.device))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("route_dtype", [torch.int32, torch.int64])
def test_random_route_equals_loop_of_plain_convs(target, route_dtype):
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 4)
    x = make_x((9, 4, 8, 8))
    route = random_route(9, 4, route_dtype, seed=11)
    with robustkernels.use_backend(target.backend):
        y = F.path_conv2d(*target.to(x, weight, route), bias_bank=target.to(bias)[0], padding=1)
    expected = torch.cat(
        [TF.conv2d(x[b : b + 1], weight[r], bias[r], padding=1) for b, r in enumerate(route.tolist())]
    )
    torch.testing.assert_close(y.cpu(), expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
def test_one_path_equals_plain_conv(target):
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 3)
    x = make_x((5, 4, 8, 8))
    expected = grads_of(lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1), (x, weight[2], bias[2]))
    device_weight, device_bias, route_tensor = target.to(weight, bias, torch.full((5,), 2))
    for route in (route_tensor, 2):

        def run(x, w, b, route=route):
            bank = torch.stack([device_weight[0], device_weight[1], w])
            biases = torch.stack([device_bias[0], device_bias[1], b])
            with robustkernels.use_backend(target.backend):
                return F.path_conv2d(x, bank, route, bias_bank=biases, stride=2, padding=1)

        assert_all_close(grads_of(run, (x, weight[2], bias[2]), target.device), expected)


@pytest.mark.parametrize("target", TARGETS)
def test_input_gradient_alone(target):
    """What an attack asks for: dx with frozen weights, noise and alpha (no weight or alpha gradient)."""
    weight, bias, mask, alpha, x, route = target.to(
        *make_bank((5, 4, 3, 3), 2), make_x((6, 4, 7, 7)), torch.tensor([0, 1, 1, 0, 1, 0])
    )
    x.requires_grad_(True)
    noise = (alpha, [0.0, 1.0], [3, 4])
    with robustkernels.use_backend(target.backend):
        y = F.path_conv2d(x, weight, route, bias_bank=bias, mask_bank=mask, noise=noise, padding=1)
    (got,) = torch.autograd.grad(y.square().sum(), x)
    xr = x.detach().clone().requires_grad_(True)
    with robustkernels.use_backend("reference"):
        yr = F.path_conv2d(xr, weight, route, bias_bank=bias, mask_bank=mask, noise=noise, padding=1)
    (expected,) = torch.autograd.grad(yr.square().sum(), xr)
    torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
def test_unused_paths_get_exactly_zero_gradients(target):
    weight, bias, mask, alpha, x, route = target.to(
        *make_bank((5, 4, 3, 3), 4), make_x((6, 4, 7, 7)), torch.tensor([0, 2, 2, 0, 0, 2])
    )  # paths 1 and 3 unused
    noise = (alpha, [0.5, 0.7, 0.9, 1.1], [1, 2, 3, 4])
    tensors = [t.clone().requires_grad_(True) for t in (weight, bias, alpha)]
    with robustkernels.use_backend(target.backend):
        y = F.path_conv2d(
            x, tensors[0], route, bias_bank=tensors[1], mask_bank=mask, noise=(tensors[2], *noise[1:])
        )
    y.square().sum().backward()
    for t in tensors:
        assert torch.equal(t.grad[[1, 3]], torch.zeros_like(t.grad[[1, 3]]))
        assert t.grad[[0, 2]].abs().sum() > 0


@pytest.mark.parametrize("target", TARGETS)
def test_single_path(target):
    """P = 1 equals the foundation's noisy_conv2d (same transform, same noise stream)."""
    weight, bias, mask, alpha = make_bank((6, 4, 3, 3), 1)
    x = make_x((4, 4, 8, 8))
    mask, route = target.to(mask, torch.zeros(4, dtype=torch.int32))

    def ours(x, w, b, a):
        with robustkernels.use_backend(target.backend):
            return F.path_conv2d(x, w, route, bias_bank=b, mask_bank=mask, noise=(a, 0.9, 17), padding=1)

    def foundation(x, w, b, a):
        with robustkernels.use_backend(target.backend):
            return F.noisy_conv2d(
                x, w[0], b[0], a.reshape(6, 1, 1, 1), lam=0.9, seed=17, mask=mask[0], padding=1
            )

    tensors = (x, weight, bias, alpha)
    assert_all_close(grads_of(ours, tensors, target.device), grads_of(foundation, tensors, target.device))


@pytest.mark.parametrize("target", TARGETS)
def test_float_dual_path_equals_clean_and_noisy_halves(target):
    """FLOAT: one weight, clean first half, W + lam * alpha * std(W) * eta on the second."""
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 1, shared=True)
    alpha = torch.tensor([[0.0], [0.3]])
    x = make_x((8, 4, 8, 8))

    def ours(x, w, b, a):
        with robustkernels.use_backend(target.backend):
            return F.path_conv2d(x, w[0], "split", bias_bank=b, noise=(a, [0.0, 1.0], [0, 23]), padding=1)

    def halves(x, w, b, a):
        clean = TF.conv2d(x[:4], w[0], b, padding=1)
        with robustkernels.use_backend(target.backend):
            return torch.cat([clean, F.noisy_conv2d(x[4:], w[0], b, a[1], lam=1.0, seed=23, padding=1)])

    tensors = (x, weight, bias[0], alpha)
    got, expected = grads_of(ours, tensors, target.device), grads_of(halves, tensors, target.device)
    assert_all_close(got[:4], expected[:4])
    torch.testing.assert_close(got[4][1], expected[4][1], **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
def test_empty_batch_and_non_contiguous(target):
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 2)
    x = make_x((8, 5, 4, 10))[:, :, :, ::2].transpose(1, 2)  # [8, 4, 5, 5], non-contiguous
    route = random_route(16, 2)[::2]
    expected = reference.path_conv2d(x.contiguous(), weight, bias, route, [0.0, 0.0], [0, 0], padding=1)
    weight, bias, empty_x, empty_route = target.to(
        weight, bias, make_x((0, 4, 8, 8)), torch.zeros(0, dtype=torch.int64)
    )
    x, route = x.to(target.device), route.to(target.device)  # keep the strides
    with robustkernels.use_backend(target.backend):
        empty = F.path_conv2d(empty_x, weight, empty_route, padding=1)
        assert empty.shape == (0, 6, 8, 8)
        bank = weight.transpose(3, 4).contiguous().transpose(3, 4)
        y = F.path_conv2d(x, bank, route, bias_bank=bias, padding=1)
    torch.testing.assert_close(y.cpu(), expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shared", [False, True], ids=["bank", "shared"])
def test_linear_matches_reference(target, shared):
    weight, bias, mask, alpha = make_bank((5, 7), 3, shared=shared, alpha_kind="channel")
    x = make_x((8, 7))
    route, mask = target.to(random_route(8, 3, seed=5), mask)

    def ours(x, w, b, a):
        with robustkernels.use_backend(target.backend):
            return F.path_linear(
                x, w[0] if shared else w, route, bias_bank=b, mask_bank=mask, noise=(a, LAMS, SEEDS)
            )

    def ref(x, w, b, a):
        return reference.path_linear(x, w, b, route, LAMS, SEEDS, a, mask)

    tensors = (x, weight, bias, alpha)
    assert_all_close(grads_of(ours, tensors, target.device), grads_of(ref, tensors, target.device))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes(target, dtype):
    """Half precision by the rule of helpers.assert_half_close (the reference in the same dtype and
    in float64 on the same values); float64 to float32's precision, as eta is float32."""
    tensors = (make_x((6, 4, 6, 6), dtype), *make_bank((5, 4, 3, 3), 3, dtype=dtype))
    x, weight, bias, mask, alpha = tensors
    tensors = (x, weight, bias, alpha)
    route, mask = target.to(random_route(6, 3), mask)
    conv = {"padding": 1}
    got = grads_of(ours_conv(target.backend, route, mask, LAMS, SEEDS, conv), tensors, target.device)
    ref = reference_conv(route.cpu(), mask.cpu(), LAMS, SEEDS, conv)
    oracle = grads_of(ref, [t.double() for t in tensors])
    same_dtype = grads_of(ref, tensors) if dtype in HALF_DTYPES else oracle
    for what, g, r, e in zip(("out", "x", "weight", "bias", "alpha"), got, same_dtype, oracle, strict=True):
        assert g.dtype == dtype
        if dtype in HALF_DTYPES:
            assert_half_close(g, r, e, what)
        else:
            torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-6)


def test_opcheck():
    weight, bias, mask, alpha = make_bank((4, 3, 3, 3), 3)
    x = make_x((5, 3, 6, 6)).requires_grad_(True)
    route = torch.tensor([1, 0, 1, 1, 0])
    ops = torch.ops.robustkernels
    torch.library.opcheck(
        ops.path_weights.default, (weight.requires_grad_(True), mask, alpha, LAMS, SEEDS, None)
    )
    torch.library.opcheck(ops.route_sort.default, (route, 3))
    conv = ([1, 1], [1, 1], [1, 1], 1)
    torch.library.opcheck(
        ops.path_conv2d.default, (x, weight, bias, mask, alpha, LAMS, SEEDS, route, [], *conv)
    )
    torch.library.opcheck(
        ops.path_conv2d.default, (x, weight[:1], None, None, None, [0.0] * 3, [0] * 3, None, [2, 0, 3], *conv)
    )
    lx = make_x((5, 4)).requires_grad_(True)
    lw = torch.randn(3, 2, 4, requires_grad=True)
    torch.library.opcheck(ops.path_linear.default, (lx, lw, None, None, None, [0.0] * 3, [0] * 3, route, []))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compile_backend):
    weight, bias, mask, alpha = make_bank((4, 3, 3, 3), 3)
    x = make_x((6, 3, 6, 6))
    route = random_route(6, 3)

    def step(x, w, route):
        return F.path_conv2d(
            x, w, route, bias_bank=bias, mask_bank=mask, noise=(alpha, LAMS, SEEDS), padding=1
        ).relu()

    compiled = torch.compile(step, backend=compile_backend, fullgraph=True)
    w = weight.clone().requires_grad_(True)
    got = compiled(x, w, route)
    (got_grad,) = torch.autograd.grad(got.sum(), w)
    w2 = weight.clone().requires_grad_(True)
    expected = step(x, w2, route)
    (expected_grad,) = torch.autograd.grad(expected.sum(), w2)
    torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])
    torch.testing.assert_close(got_grad, expected_grad, **TOLERANCE[torch.float32])


def test_bad_inputs_name_the_argument():
    weight, bias, mask, alpha = make_bank((4, 3, 3, 3), 3)
    x = make_x((4, 3, 6, 6))
    route = torch.tensor([0, 1, 2, 1])
    cases = [
        (lambda: F.path_conv2d(x, weight, route.float()), TypeError, "route must be an int32 or int64"),
        (
            lambda: F.path_conv2d(x, weight, torch.tensor([0, 1, 3, 1])),
            ValueError,
            r"route values must lie in \[0, 3\)",
        ),
        (lambda: F.path_conv2d(x, weight, torch.tensor([0, 1, -1, 1])), ValueError, r"route values must lie"),
        (lambda: F.path_conv2d(x, weight, route[:3]), ValueError, "route must hold one path per sample"),
        (lambda: F.path_conv2d(x, weight, [1, 1, 1]), ValueError, "segments must be 3 non-negative sizes"),
        (lambda: F.path_conv2d(x, weight, "split"), ValueError, 'route="split" needs a batch divisible'),
        (lambda: F.path_conv2d(x, weight, 3), ValueError, "must name a path"),
        (lambda: F.path_conv2d(x, weight, 1.5), TypeError, "route must be"),
        (lambda: F.path_conv2d(x, weight, route, mask_bank=mask[:2]), ValueError, "mask must have shape"),
        (lambda: F.path_conv2d(x, weight, route, mask_bank=mask.float()), TypeError, "mask must be a bool"),
        (lambda: F.path_conv2d(x, weight, route, bias_bank=bias[:, :2]), ValueError, "bias must have shape"),
        (lambda: F.path_conv2d(x, weight, route, noise=(alpha, 1.0, -1)), ValueError, "seed must be in"),
        (
            lambda: F.path_conv2d(x, weight, route, noise=(alpha[:, :2], 1.0, 1)),
            ValueError,
            "alpha must hold",
        ),
        (
            lambda: F.path_conv2d(x, weight, route, noise=(alpha, [1.0], 1)),
            ValueError,
            "lam and seed must hold",
        ),
        (lambda: F.path_conv2d(x, weight, route, noise=alpha), TypeError, "noise must be a tuple"),
        (lambda: F.path_conv2d(x.double(), weight, route), TypeError, "x must have (the )?weight's dtype"),
        (lambda: F.path_conv2d(x[:, :2], weight, route), ValueError, "x has 2 channels"),
        (lambda: F.path_linear(x, weight, route), ValueError, r"weight must be \[S, out, in\]"),
        (lambda: F.path_linear(x[0, 0, 0], weight[:, :, 0, 0, 0], route), ValueError, "x must have rank"),
        (lambda: F.route_sort(route, 2), ValueError, r"route values must lie in \[0, 2\)"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize("target", TARGETS)
def test_stacked_layout(target):
    """route="stacked": path p's input in channel block p, one grouped convolution / batched matmul."""
    weight, bias, mask, alpha = make_bank((6, 2, 3, 3), 3)
    x = make_x((4, 6, 7, 7))
    (mask,) = target.to(mask)

    def ours(x, w, b, a):
        with robustkernels.use_backend(target.backend):
            return F.path_conv2d(
                x, w, "stacked", bias_bank=b, mask_bank=mask, noise=(a, LAMS, SEEDS), padding=1
            )

    def per_path(x, w, b, a):
        effective = reference.path_weights(w, LAMS, SEEDS, a, mask)
        blocks = x.split(2, dim=1)
        return torch.cat([TF.conv2d(blocks[p], effective[p], b[p], padding=1) for p in range(3)], dim=1)

    tensors = (x, weight, bias, alpha)
    assert_all_close(grads_of(ours, tensors, target.device), grads_of(per_path, tensors, target.device))
    lw, lb, _, _ = make_bank((5, 4), 3)
    lx = make_x((3, 12))
    with robustkernels.use_backend(target.backend):
        y = F.path_linear(*target.to(lx, lw), "stacked", bias_bank=target.to(lb)[0])
    expected = torch.cat([TF.linear(lx[:, 4 * p : 4 * p + 4], lw[p], lb[p]) for p in range(3)], dim=1)
    torch.testing.assert_close(y.cpu(), expected, **TOLERANCE[torch.float32])
    with pytest.raises(ValueError, match='route="stacked" needs x with 3 x 4 channels'):
        F.path_linear(lx[:, :8], lw, "stacked")


@pytest.mark.parametrize("target", TARGETS)
def test_linear_segments(target):
    weight, bias, _, alpha = make_bank((4, 5), 2, shared=True, alpha_kind="layer")
    x = make_x((6, 5))

    def ours(x, w, b, a):
        with robustkernels.use_backend(target.backend):
            return F.path_linear(x, w[0], "split", bias_bank=b, noise=(a, [0.0, 1.0], [0, 3]))

    def ref(x, w, b, a):
        return reference.path_linear(x, w, b, [3, 3], [0.0, 1.0], [0, 3], a)

    tensors = (x, weight, bias, alpha)
    assert_all_close(grads_of(ours, tensors, target.device), grads_of(ref, tensors, target.device))


@pytest.mark.parametrize("target", targets("cpp"))
def test_a_channels_last_batch_stays_channels_last(target):
    """A channels-last network (common with mixed precision on GPUs) keeps its layout through a
    routed layer, forward and backward, instead of falling back to NCHW after it."""
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 3)
    x = make_x((8, 4, 7, 7))
    route = random_route(8, 3, torch.int64, seed=5)
    expected = grads_of(
        lambda x: reference.path_conv2d(x, weight, bias, route, [0.0] * 3, [0] * 3, padding=1), (x,)
    )
    device_weight, device_bias, device_route = target.to(weight, bias, route)

    def run(x):
        with robustkernels.use_backend(target.backend):
            return F.path_conv2d(x, device_weight, device_route, bias_bank=device_bias, padding=1)

    got = grads_of(run, (x.contiguous(memory_format=torch.channels_last),), target.device)
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in got)
    assert_all_close(got, expected)
