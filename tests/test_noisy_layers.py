"""noisy_conv2d and noisy_linear: the transform fused with the platform convolution / matmul, on
every backend and device (see helpers.py for the device convention)."""

import pytest
import torch
import torch.nn.functional as TF
from helpers import TOLERANCE, assert_half_close, grads_of, targets

import robustkernels
from robustkernels import functional as F
from robustkernels import reference

CONV_CASES = [
    # (x shape, weight shape, stride, padding, dilation, groups)
    ((3, 4, 9, 7), (6, 4, 3, 3), 1, 1, 1, 1),
    ((2, 6, 11, 10), (8, 3, 3, 2), 2, (1, 0), 1, 2),
    ((1, 3, 8, 8), (5, 3, 1, 1), 1, 0, 1, 1),
    ((2, 4, 12, 13), (4, 1, 3, 3), 1, 2, 2, 4),
]


def conv_inputs(x_shape, w_shape, alpha_kind="channel", dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=gen).to(dtype)
    weight = (torch.randn(w_shape, generator=gen) * 0.2).to(dtype)
    bias = torch.randn(w_shape[0], generator=gen).to(dtype)
    shape = {"layer": (1,), "channel": (w_shape[0], 1, 1, 1), "element": w_shape}[alpha_kind]
    alpha = (0.1 + torch.rand(shape, generator=gen)).to(dtype)
    mask = torch.rand(w_shape, generator=gen) > 0.3
    return x, weight, bias, alpha, mask


TARGETS = targets("cpp", "reference", "triton", "cuda")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("alpha_kind", ["layer", "channel", "element"])
def test_conv2d_matches_reference(target, case, alpha_kind):
    x_shape, w_shape, stride, padding, dilation, groups = case
    x, weight, bias, alpha, mask = conv_inputs(x_shape, w_shape, alpha_kind)
    conv = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    (device_mask,) = target.to(mask)

    def ours(x, w, b, a):
        with robustkernels.use_backend(target.backend):
            return F.noisy_conv2d(x, w, b, a, lam=0.9, seed=11, mask=device_mask, **conv)

    def ref(x, w, b, a):
        return reference.noisy_conv2d(x, w, b, a, 0.9, 11, mask, **conv)

    for got, expected in zip(
        grads_of(ours, (x, weight, bias, alpha), target.device),
        grads_of(ref, (x, weight, bias, alpha)),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_conv2d_half_precision(target, dtype):
    """By the rule of helpers.assert_half_close: the reference in the same dtype and in float64 on
    the same values."""
    x, weight, bias, alpha, mask = conv_inputs((2, 4, 8, 8), (6, 4, 3, 3), dtype=dtype)
    try:
        TF.conv2d(*target.to(x, weight))
    except RuntimeError as exc:  # fp16 convolution is not implemented on every CPU build
        pytest.skip(f"platform conv2d has no {dtype} kernel on {target.device} here: {exc}")
    tensors = (x, weight, bias, alpha)
    (device_mask,) = target.to(mask)

    def ours(*t):
        with robustkernels.use_backend(target.backend):
            return F.noisy_conv2d(*t, lam=1.0, seed=4, mask=device_mask, padding=1)

    def ref(*t):
        return reference.noisy_conv2d(*t, 1.0, 4, mask, padding=1)

    got = grads_of(ours, tensors, target.device)
    oracle = grads_of(ref, [t.double() for t in tensors])
    for what, g, r, e in zip(
        ("out", "x", "weight", "bias", "alpha"), got, grads_of(ref, tensors), oracle, strict=True
    ):
        assert g.dtype == dtype
        assert_half_close(g, r, e, what)


def test_conv2d_non_contiguous_inputs():
    x, weight, bias, alpha, mask = conv_inputs((3, 4, 9, 7), (6, 4, 3, 3))
    x_nc = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, other strides
    x_cl = x.contiguous(memory_format=torch.channels_last)
    w_nc = weight.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_nc.is_contiguous() and not w_nc.is_contiguous()
    expected = grads_of(
        lambda *t: reference.noisy_conv2d(*t, 1.0, 4, mask, padding=1), (x, weight, bias, alpha)
    )
    for xin, win in ((x_nc, w_nc), (x_cl, weight)):
        got = grads_of(
            lambda *t: F.noisy_conv2d(*t, lam=1.0, seed=4, mask=mask, padding=1), (xin, win, bias, alpha)
        )
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("padding", ["same", "valid", (2, 1)])
def test_conv2d_padding_forms_match_torch(padding):
    x, weight, bias, alpha, _ = conv_inputs((2, 4, 9, 8), (5, 4, 4, 3))
    got = F.noisy_conv2d(x, weight, bias, alpha, lam=0.0, seed=0, padding=padding)
    torch.testing.assert_close(got, TF.conv2d(x, weight, bias, padding=padding))


def test_conv2d_unbatched_input():
    x, weight, bias, alpha, mask = conv_inputs((1, 4, 9, 7), (6, 4, 3, 3))
    batched = F.noisy_conv2d(x, weight, bias, alpha, lam=1.0, seed=2, mask=mask)
    unbatched = F.noisy_conv2d(x[0], weight, bias, alpha, lam=1.0, seed=2, mask=mask)
    torch.testing.assert_close(unbatched, batched[0])


def test_conv2d_gradcheck_float64():
    x, weight, bias, alpha, mask = conv_inputs((2, 2, 5, 4), (3, 2, 3, 3), "channel", dtype=torch.float64)
    for t in (x, weight, bias, alpha):
        t.requires_grad_(True)
    # std(W) is a constant of the backward by definition, so W is checked with the noise off.
    assert torch.autograd.gradcheck(
        lambda x, b, a: F.noisy_conv2d(x, weight.detach(), b, a, lam=0.8, seed=6, mask=mask, padding=1),
        (x, bias, alpha),
    )
    assert torch.autograd.gradcheck(
        lambda x, w: F.noisy_conv2d(x, w, None, alpha.detach(), lam=0.0, seed=6, mask=mask, stride=2),
        (x, weight),
    )


def test_linear_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    alpha = torch.rand(4, 1, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, b, a: F.noisy_linear(x, weight.detach(), b, a, lam=0.7, seed=3), (x, bias, alpha)
    )
    assert torch.autograd.gradcheck(
        lambda x, w: F.noisy_linear(x, w, bias.detach(), alpha.detach(), lam=0.0, seed=3), (x, weight)
    )


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("x_shape", [(5, 7), (2, 3, 7), (7,)])
def test_linear_matches_reference(target, x_shape):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(x_shape, generator=gen)
    weight, bias = torch.randn(9, 7, generator=gen), torch.randn(9, generator=gen)
    alpha, mask = torch.rand(9, 7, generator=gen), torch.rand(9, 7, generator=gen) > 0.5
    (device_mask,) = target.to(mask)

    def ours(x, w, b, a):
        with robustkernels.use_backend(target.backend):
            return F.noisy_linear(x, w, b, a, lam=1.0, seed=8, mask=device_mask)

    def ref(x, w, b, a):
        return reference.noisy_linear(x, w, b, a, 1.0, 8, mask)

    for got, expected in zip(
        grads_of(ours, (x, weight, bias, alpha), target.device),
        grads_of(ref, (x, weight, bias, alpha)),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])


def test_opcheck_layers():
    x, weight, bias, alpha, mask = conv_inputs((2, 4, 6, 5), (6, 2, 3, 3), "element")
    for t in (x, weight, bias, alpha):
        t.requires_grad_(True)
    torch.library.opcheck(
        torch.ops.robustkernels.noisy_conv2d.default,
        (x, weight, bias, alpha, 0.5, 9, mask, [1, 1], [1, 1], [1, 1], 2),
    )
    torch.library.opcheck(
        torch.ops.robustkernels.noisy_conv2d.default,
        (x, weight, None, alpha, 0.5, 9, None, [2, 1], [0, 1], [1, 2], 2),
    )
    lx = torch.randn(3, 5, requires_grad=True)
    lw = torch.randn(4, 5, requires_grad=True)
    la = torch.rand(1, requires_grad=True)
    torch.library.opcheck(torch.ops.robustkernels.noisy_linear.default, (lx, lw, None, la, 0.5, 9, None))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_conv2d_torch_compile_fullgraph(compile_backend):
    x, weight, bias, alpha, mask = conv_inputs((2, 4, 8, 8), (6, 4, 3, 3))
    params = [t.requires_grad_(True) for t in (weight, bias, alpha)]

    def loss(x, w, b, a):
        y = F.noisy_conv2d(x, w, b, a, lam=1.0, seed=21, mask=mask, padding=1)
        return TF.relu(y).mean()

    compiled = torch.compile(loss, backend=compile_backend, fullgraph=True)
    eager = torch.autograd.grad(loss(x, *params), params)
    got = torch.autograd.grad(compiled(x, *params), params)
    for g, e in zip(got, eager, strict=True):
        torch.testing.assert_close(g, e)


def _saved_bytes(fn, *args) -> tuple[int, int]:
    """(total bytes, bytes not shared with any argument) of the tensors saved for backward."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn(*args)
    argument_storages = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
    total = sum(t.untyped_storage().nbytes() for t in saved)
    new = sum(
        t.untyped_storage().nbytes() for t in saved if t.untyped_storage().data_ptr() not in argument_storages
    )
    return total, new


def test_saves_no_more_than_plain_conv():
    x, weight, bias, alpha, mask = conv_inputs((8, 16, 16, 16), (32, 16, 3, 3), "element")
    for t in (weight, bias, alpha):
        t.requires_grad_(True)
    plain_total, plain_new = _saved_bytes(lambda x, w, b: TF.conv2d(x, w, b, padding=1), x, weight, bias)
    ours_total, ours_new = _saved_bytes(
        lambda x, w, b, a, m: F.noisy_conv2d(x, w, b, a, lam=1.0, seed=1, mask=m, padding=1),
        x,
        weight,
        bias,
        alpha,
        mask,
    )
    # Nothing new is allocated for backward: no noise tensor, no copy of W'.
    assert plain_new == 0
    assert ours_new == 0
    # Besides x and W, only the existing alpha parameter and mask buffer are referenced.
    assert ours_total <= plain_total + alpha.numel() * alpha.element_size() + mask.numel()
    reference_total, _ = _saved_bytes(
        lambda x, w, b, a, m: reference.noisy_conv2d(x, w, b, a, 1.0, 1, m, padding=1),
        x,
        weight,
        bias,
        alpha,
        mask,
    )
    assert ours_total < reference_total


def test_saves_no_more_than_plain_linear():
    x = torch.randn(64, 128, requires_grad=True)
    weight, alpha = torch.randn(256, 128, requires_grad=True), torch.rand(1, requires_grad=True)
    plain_total, _ = _saved_bytes(lambda x, w: TF.linear(x, w), x, weight)
    ours_total, ours_new = _saved_bytes(
        lambda x, w, a: F.noisy_linear(x, w, None, a, lam=1.0, seed=1), x, weight, alpha
    )
    assert ours_new == 0
    assert ours_total <= plain_total + alpha.element_size()


@pytest.mark.parametrize("needs", [(False, True, False), (True, False, False), (False, True, True)])
def test_saves_only_what_backward_needs(needs):
    """First layers (x without grad) and frozen weights save no more than a plain layer needs."""
    x, weight, _bias, alpha, _mask = conv_inputs((4, 8, 10, 10), (8, 8, 3, 3))
    x.requires_grad_(needs[0])
    weight.requires_grad_(needs[1])
    alpha.requires_grad_(needs[2])
    _, new = _saved_bytes(
        lambda x, w, a: F.noisy_conv2d(x, w, None, a, lam=1.0, seed=3, padding=1), x, weight, alpha
    )
    assert new == 0
    out = F.noisy_conv2d(x, weight, None, alpha, lam=1.0, seed=3, padding=1)
    grads = torch.autograd.grad(out.square().sum(), [t for t in (x, weight, alpha) if t.requires_grad])
    reference_out = reference.noisy_conv2d(x, weight, None, alpha, 1.0, 3, None, padding=1)
    expected = torch.autograd.grad(
        reference_out.square().sum(), [t for t in (x, weight, alpha) if t.requires_grad]
    )
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-5)


def test_lam_zero_equals_plain_conv():
    x, weight, bias, alpha, mask = conv_inputs((2, 4, 9, 7), (6, 4, 3, 3))
    got = F.noisy_conv2d(x, weight, bias, alpha, lam=0.0, seed=0, mask=mask, padding=1)
    torch.testing.assert_close(got, TF.conv2d(x, weight * mask, bias, padding=1), atol=0, rtol=0)


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_channels_last_weight_under_compile(compile_backend):
    """W' is built contiguous, so the output layout follows x, as the fake says."""
    x, weight, bias, alpha, mask = conv_inputs((2, 4, 8, 8), (6, 4, 3, 3))
    weight = weight.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    torch.library.opcheck(
        torch.ops.robustkernels.noisy_conv2d.default,
        (x, weight, bias, alpha, 0.5, 9, mask, [1, 1], [1, 1], [1, 1], 1),
    )

    def fn(x, w):
        return F.noisy_conv2d(x, w, bias, alpha, lam=1.0, seed=2, mask=mask, padding=1)

    torch.testing.assert_close(
        torch.compile(fn, backend=compile_backend, fullgraph=True)(x, weight), fn(x, weight)
    )
