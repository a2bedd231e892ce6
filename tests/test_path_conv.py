"""Routed multi-path layers (path_conv2d, path_linear, path_weights, route_sort) against their references."""

import pytest
import torch
import torch.nn.functional as TF
from helpers import TOLERANCE, require_backend

import robustkernels
from robustkernels import functional as F
from robustkernels import reference

BACKENDS = ["cpp", "reference"]
# (x shape, weight shape [C_out, C_in/groups, kh, kw], stride, padding, dilation, groups)
CONV_CASES = [
    ((7, 4, 9, 7), (6, 4, 3, 3), 1, 1, 1, 1),
    ((5, 6, 11, 10), (8, 3, 3, 2), 2, (1, 0), 1, 2),
    ((6, 3, 8, 8), (5, 3, 1, 1), 1, 0, 1, 1),
]


def make_bank(w_shape, paths, *, shared=False, alpha_kind="channel", dtype=torch.float32, seed=0):
    """weight bank (or one shared weight), per-path bias, masks and alpha [P, A]."""
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn((1 if shared else paths, *w_shape), generator=gen) * 0.3).to(dtype)
    bias = torch.randn(paths, w_shape[0], generator=gen).to(dtype)
    mask = torch.rand((paths, *w_shape), generator=gen) > 0.3
    numel = weight[0].numel()
    a = {"layer": 1, "channel": w_shape[0], "element": numel}[alpha_kind]
    alpha = (0.1 + torch.rand(paths, a, generator=gen)).to(dtype)
    return weight, bias, mask, alpha


def make_x(shape, dtype=torch.float32, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def random_route(batch, paths, dtype=torch.int64, seed=2):
    return torch.randint(paths, (batch,), generator=torch.Generator().manual_seed(seed)).to(dtype)


def grads_of(fn, tensors, seed=3):
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*tensors)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    return (out, *torch.autograd.grad(out, tensors, grad, allow_unused=True))


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("alpha_kind", ["layer", "channel", "element"])
@pytest.mark.parametrize("shared", [False, True], ids=["bank", "shared"])
def test_conv_matches_reference(backend, case, alpha_kind, shared):
    require_backend(backend)
    x_shape, w_shape, stride, padding, dilation, groups = case
    weight, bias, mask, alpha = make_bank(w_shape, 3, shared=shared, alpha_kind=alpha_kind)
    x = make_x(x_shape)
    route = random_route(x_shape[0], 3)
    conv = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    tensors = (x, weight, bias, alpha)
    got = grads_of(ours_conv(backend, route, mask, LAMS, SEEDS, conv, shared), tensors)
    assert_all_close(got, grads_of(reference_conv(route, mask, LAMS, SEEDS, conv), tensors))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("route", ["split", 1, [0, 4, 2]], ids=["split", "one-path", "sizes"])
def test_conv_segments(backend, route):
    """Segment routes (no sort) against the reference on the same per-sample paths."""
    require_backend(backend)
    weight, bias, mask, alpha = make_bank((5, 4, 3, 3), 3)
    x = make_x((6, 4, 7, 7))
    sizes = {"split": [2, 2, 2], 1: [0, 6, 0]}.get(route, route) if not isinstance(route, list) else route
    conv = {"padding": 1}
    tensors = (x, weight, bias, alpha)
    got = grads_of(ours_conv(backend, route, mask, LAMS, SEEDS, conv), tensors)
    assert_all_close(got, grads_of(reference_conv(sizes, mask, LAMS, SEEDS, conv), tensors))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("route_dtype", [torch.int32, torch.int64])
def test_random_route_equals_loop_of_plain_convs(backend, route_dtype):
    require_backend(backend)
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 4)
    x = make_x((9, 4, 8, 8))
    route = random_route(9, 4, route_dtype, seed=11)
    with robustkernels.use_backend(backend):
        y = F.path_conv2d(x, weight, route, bias_bank=bias, padding=1)
    expected = torch.cat(
        [TF.conv2d(x[b : b + 1], weight[r], bias[r], padding=1) for b, r in enumerate(route.tolist())]
    )
    torch.testing.assert_close(y, expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_path_equals_plain_conv(backend):
    require_backend(backend)
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 3)
    x = make_x((5, 4, 8, 8))
    expected = grads_of(lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1), (x, weight[2], bias[2]))
    for route in (torch.full((5,), 2), 2):

        def run(x, w, b, route=route):
            bank = torch.stack([weight[0], weight[1], w])
            biases = torch.stack([bias[0], bias[1], b])
            with robustkernels.use_backend(backend):
                return F.path_conv2d(x, bank, route, bias_bank=biases, stride=2, padding=1)

        assert_all_close(grads_of(run, (x, weight[2], bias[2])), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_gradient_alone(backend):
    """What an attack asks for: dx with frozen weights, noise and alpha (no weight or alpha gradient)."""
    require_backend(backend)
    weight, bias, mask, alpha = make_bank((5, 4, 3, 3), 2)
    x = make_x((6, 4, 7, 7)).requires_grad_(True)
    route = torch.tensor([0, 1, 1, 0, 1, 0])
    noise = (alpha, [0.0, 1.0], [3, 4])
    with robustkernels.use_backend(backend):
        y = F.path_conv2d(x, weight, route, bias_bank=bias, mask_bank=mask, noise=noise, padding=1)
    (got,) = torch.autograd.grad(y.square().sum(), x)
    xr = x.detach().clone().requires_grad_(True)
    with robustkernels.use_backend("reference"):
        yr = F.path_conv2d(xr, weight, route, bias_bank=bias, mask_bank=mask, noise=noise, padding=1)
    (expected,) = torch.autograd.grad(yr.square().sum(), xr)
    torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_unused_paths_get_exactly_zero_gradients(backend):
    require_backend(backend)
    weight, bias, mask, alpha = make_bank((5, 4, 3, 3), 4)
    x = make_x((6, 4, 7, 7))
    route = torch.tensor([0, 2, 2, 0, 0, 2])  # paths 1 and 3 unused
    noise = (alpha, [0.5, 0.7, 0.9, 1.1], [1, 2, 3, 4])
    tensors = [t.clone().requires_grad_(True) for t in (weight, bias, alpha)]
    with robustkernels.use_backend(backend):
        y = F.path_conv2d(
            x, tensors[0], route, bias_bank=tensors[1], mask_bank=mask, noise=(tensors[2], *noise[1:])
        )
    y.square().sum().backward()
    for t in tensors:
        assert torch.equal(t.grad[[1, 3]], torch.zeros_like(t.grad[[1, 3]]))
        assert t.grad[[0, 2]].abs().sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_path(backend):
    """P = 1 equals the foundation's noisy_conv2d (same transform, same noise stream)."""
    require_backend(backend)
    weight, bias, mask, alpha = make_bank((6, 4, 3, 3), 1)
    x = make_x((4, 4, 8, 8))

    def ours(x, w, b, a):
        with robustkernels.use_backend(backend):
            return F.path_conv2d(x, w, torch.zeros(4, dtype=torch.int32), bias_bank=b, mask_bank=mask,
                                 noise=(a, 0.9, 17), padding=1)  # fmt: skip

    def foundation(x, w, b, a):
        return F.noisy_conv2d(x, w[0], b[0], a.reshape(6, 1, 1, 1), lam=0.9, seed=17, mask=mask[0], padding=1)

    tensors = (x, weight, bias, alpha)
    assert_all_close(grads_of(ours, tensors), grads_of(foundation, tensors))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_dual_path_equals_clean_and_noisy_halves(backend):
    """FLOAT: one weight, clean first half, W + lam * alpha * std(W) * eta on the second."""
    require_backend(backend)
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 1, shared=True)
    alpha = torch.tensor([[0.0], [0.3]])
    x = make_x((8, 4, 8, 8))

    def ours(x, w, b, a):
        with robustkernels.use_backend(backend):
            return F.path_conv2d(x, w[0], "split", bias_bank=b, noise=(a, [0.0, 1.0], [0, 23]), padding=1)

    def halves(x, w, b, a):
        clean = TF.conv2d(x[:4], w[0], b, padding=1)
        return torch.cat([clean, F.noisy_conv2d(x[4:], w[0], b, a[1], lam=1.0, seed=23, padding=1)])

    tensors = (x, weight, bias[0], alpha)
    got, expected = grads_of(ours, tensors), grads_of(halves, tensors)
    assert_all_close(got[:4], expected[:4])
    torch.testing.assert_close(got[4][1], expected[4][1], **TOLERANCE[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_non_contiguous(backend):
    require_backend(backend)
    weight, bias, _, _ = make_bank((6, 4, 3, 3), 2)
    with robustkernels.use_backend(backend):
        empty = F.path_conv2d(make_x((0, 4, 8, 8)), weight, torch.zeros(0, dtype=torch.int64), padding=1)
        assert empty.shape == (0, 6, 8, 8)
        x = make_x((8, 5, 4, 10))[:, :, :, ::2].transpose(1, 2)  # [8, 4, 5, 5], non-contiguous
        bank = weight.transpose(3, 4).contiguous().transpose(3, 4)
        route = random_route(16, 2)[::2]
        y = F.path_conv2d(x, bank, route, bias_bank=bias, padding=1)
    expected = reference.path_conv2d(x.contiguous(), weight, bias, route, [0.0, 0.0], [0, 0], padding=1)
    torch.testing.assert_close(y, expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [False, True], ids=["bank", "shared"])
def test_linear_matches_reference(backend, shared):
    require_backend(backend)
    weight, bias, mask, alpha = make_bank((5, 7), 3, shared=shared, alpha_kind="channel")
    x = make_x((8, 7))
    route = random_route(8, 3, seed=5)

    def ours(x, w, b, a):
        with robustkernels.use_backend(backend):
            return F.path_linear(
                x, w[0] if shared else w, route, bias_bank=b, mask_bank=mask, noise=(a, LAMS, SEEDS)
            )

    def ref(x, w, b, a):
        return reference.path_linear(x, w, b, route, LAMS, SEEDS, a, mask)

    tensors = (x, weight, bias, alpha)
    assert_all_close(grads_of(ours, tensors), grads_of(ref, tensors))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    weight, bias, mask, alpha = make_bank((5, 4, 3, 3), 3, dtype=dtype)
    x = make_x((6, 4, 6, 6), dtype)
    route = random_route(6, 3)
    got = grads_of(ours_conv("cpp", route, mask, LAMS, SEEDS, {"padding": 1}), (x, weight, bias, alpha))
    expected = grads_of(
        reference_conv(route, mask, LAMS, SEEDS, {"padding": 1}),
        [t.float() for t in (x, weight, bias, alpha)],
    )
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        tol = {"atol": 0.15, "rtol": 0.05} if dtype == torch.bfloat16 else TOLERANCE[torch.float32]
        torch.testing.assert_close(g.float(), e, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_route_sort_is_stable(backend):
    require_backend(backend)
    route = random_route(50, 5, torch.int32, seed=7)
    route[route == 3] = 1  # path 3 empty
    with robustkernels.use_backend(backend):
        counts, perm = F.route_sort(route, 5)
    assert torch.equal(counts, torch.bincount(route.long(), minlength=5))
    assert torch.equal(perm, torch.argsort(route, stable=True))


def test_gradcheck_float64():
    """std(W) is a constant of the backward by definition (as in PNI): the check runs x, bias and
    alpha with the noise on, and the weight bank with the noise off."""
    weight, bias, mask, alpha = make_bank((3, 2, 3, 3), 3, dtype=torch.float64)
    x = make_x((5, 2, 5, 5), torch.float64)
    route = torch.tensor([2, 0, 2, 2, 0])

    def run(x, w, b, a, lams=LAMS):
        return F.path_conv2d(x, w, route, bias_bank=b, mask_bank=mask, noise=(a, lams, SEEDS), padding=1)

    x, bias, alpha = (t.clone().requires_grad_(True) for t in (x, bias, alpha))
    assert torch.autograd.gradcheck(lambda x, b, a: run(x, weight, b, a), (x, bias, alpha))
    bank = weight.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: run(x, w, bias, alpha, [0.0] * 3), (bank,))
    shared = weight[0, :, :, 0, 0].clone().requires_grad_(True)  # [3, 2]
    assert torch.autograd.gradcheck(
        lambda x, w: F.path_linear(x, w, [2, 3, 0], mask_bank=mask[:, :, :, 0, 0]), (x[:, :, 0, 0], shared)
    )


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
        (lambda: F.path_conv2d(x, weight, route, noise=(alpha[:, :2], 1.0, 1)), ValueError, "alpha must be"),
        (
            lambda: F.path_conv2d(x, weight, route, noise=(alpha, [1.0], 1)),
            ValueError,
            "lam and seed must hold",
        ),
        (lambda: F.path_conv2d(x, weight, route, noise=alpha), TypeError, "noise must be a tuple"),
        (lambda: F.path_conv2d(x.double(), weight, route), TypeError, "x must have the weight's dtype"),
        (lambda: F.path_conv2d(x[:, :2], weight, route), ValueError, "x has 2 channels"),
        (lambda: F.path_linear(x, weight, route), ValueError, r"weight must be \[S, out, in\]"),
        (lambda: F.path_linear(x[0, 0, 0], weight[:, :, 0, 0, 0], route), ValueError, "x must have rank"),
        (lambda: F.route_sort(route, 2), ValueError, r"route values must lie in \[0, 2\)"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_cpp_kernels_reject_bad_inputs():
    require_backend("cpp")
    ops = torch.ops.robustkernels
    weight, _, mask, alpha = make_bank((4, 3, 3, 3), 3)
    cases = [
        (lambda: ops.route_sort_kernel(torch.tensor([0, 5]), 3), ValueError, r"route values must lie in \[0, 3\)"),
        (lambda: ops.route_sort_kernel(torch.tensor([0.0]), 3), TypeError, "route must be an int32 or int64"),
        (lambda: ops.route_sort_kernel(torch.zeros(2, 2, dtype=torch.long), 3), ValueError, "route must be 1-D"),
        (lambda: ops.path_weights_fwd_kernel(weight, mask, alpha, [1.0] * 2, [0] * 2, None), ValueError, "weight must hold"),
        (lambda: ops.path_weights_fwd_kernel(weight, mask, alpha, [1.0] * 3, [0] * 2, None), ValueError, "seeds must hold"),
        (lambda: ops.path_weights_fwd_kernel(weight, mask[:, :2], alpha, [1.0] * 3, [0] * 3, None), ValueError, "mask must have shape"),
        (lambda: ops.path_weights_fwd_kernel(weight, None, None, [1.0] * 3, [0] * 3, None), ValueError, "alpha is required"),
        (lambda: ops.path_weights_fwd_kernel(weight, None, alpha[:, :2], [1.0] * 3, [0] * 3, None), ValueError, "alpha must hold"),
        (lambda: ops.path_weights_fwd_kernel(weight.int(), None, None, [0.0] * 3, [0] * 3, None), TypeError, "weight must be a floating"),
        (lambda: ops.path_weights_fwd_kernel(weight, None, None, [0.0] * 3, [0] * 3, torch.ones(2, dtype=torch.long)), ValueError, "counts must be"),
        (lambda: ops.path_weights_bwd_kernel(weight, 2, None, None, torch.zeros(2), [0.0] * 3, [0] * 3, None, False), ValueError, "entries must be"),
    ]  # fmt: skip
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stacked_layout(backend):
    """route="stacked": path p's input in channel block p, one grouped convolution / batched matmul."""
    require_backend(backend)
    weight, bias, mask, alpha = make_bank((6, 2, 3, 3), 3)
    x = make_x((4, 6, 7, 7))

    def ours(x, w, b, a):
        with robustkernels.use_backend(backend):
            return F.path_conv2d(
                x, w, "stacked", bias_bank=b, mask_bank=mask, noise=(a, LAMS, SEEDS), padding=1
            )

    def per_path(x, w, b, a):
        effective = reference.path_weights(w, LAMS, SEEDS, a, mask)
        blocks = x.split(2, dim=1)
        return torch.cat([TF.conv2d(blocks[p], effective[p], b[p], padding=1) for p in range(3)], dim=1)

    tensors = (x, weight, bias, alpha)
    assert_all_close(grads_of(ours, tensors), grads_of(per_path, tensors))
    lw, lb, _, _ = make_bank((5, 4), 3)
    lx = make_x((3, 12))
    y = F.path_linear(lx, lw, "stacked", bias_bank=lb)
    expected = torch.cat([TF.linear(lx[:, 4 * p : 4 * p + 4], lw[p], lb[p]) for p in range(3)], dim=1)
    torch.testing.assert_close(y, expected, **TOLERANCE[torch.float32])
    with pytest.raises(ValueError, match='route="stacked" needs x with 3 x 4 channels'):
        F.path_linear(lx[:, :8], lw, "stacked")
