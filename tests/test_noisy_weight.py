"""The fused noisy / masked weight transform against its reference, on every backend and device
(see helpers.py for the device convention)."""

import pytest
import torch
from helpers import HALF_DTYPES, TOLERANCE, assert_half_close, require_backend, targets

import robustkernels
from robustkernels import functional as F
from robustkernels import reference

ALPHA_SHAPES = {
    "layer": lambda w: (1,),
    "channel": lambda w: (w.shape[0], *([1] * (w.dim() - 1))),
    "channel_flat": lambda w: (w.shape[0],),
    "element": lambda w: tuple(w.shape),
}
# (3, 1500): rows longer than one Triton block, so std and dalpha combine several partials
WEIGHT_SHAPES = [(5, 3, 3, 3), (7, 2, 1, 5), (13, 11), (3,), (3, 1500)]
TARGETS = targets("cpp", "reference", "triton", "cuda")


def make_inputs(shape, alpha_kind, dtype=torch.float32, masked=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=gen).to(dtype)
    alpha = (0.1 + torch.rand(ALPHA_SHAPES[alpha_kind](weight), generator=gen)).to(dtype)
    mask = torch.rand(shape, generator=gen) > 0.4 if masked else None
    return weight, alpha, mask


def incoming_grad(out, grad_seed, grad_dtype=None):
    """The gradient handed to out's backward: seeded CPU draws in `grad_dtype` (default out's),
    then in out's dtype on out's device."""
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed))
    return grad.to(grad_dtype or out.dtype).to(dtype=out.dtype, device=out.device)


def run_with_grads(backend, weight, alpha, mask, lam, seed, grad_seed=1):
    weight = weight.detach().clone().requires_grad_(True)
    alpha = alpha.detach().clone().requires_grad_(True)
    with robustkernels.use_backend(backend):
        out = F.noisy_weight(weight, alpha, lam=lam, seed=seed, mask=mask)
        grad_weight, grad_alpha = torch.autograd.grad(out, (weight, alpha), incoming_grad(out, grad_seed))
    return out, grad_weight, grad_alpha


def reference_grads(weight, alpha, mask, lam, seed, grad_seed=1, grad_dtype=None):
    """Autograd through robustkernels.reference in the inputs' dtype."""
    weight = weight.detach().clone().requires_grad_(True)
    alpha = alpha.detach().clone().requires_grad_(True)
    out = reference.noisy_weight(weight, alpha, lam, seed, mask)
    grad_weight, grad_alpha = torch.autograd.grad(
        out, (weight, alpha), incoming_grad(out, grad_seed, grad_dtype)
    )
    return out, grad_weight, grad_alpha


def reference_with_grads(weight, alpha, mask, lam, seed, grad_seed=1):
    """The reference in float32 (float64 for float64 inputs), the oracle of float32 results."""
    compute = torch.float64 if weight.dtype == torch.float64 else torch.float32
    return reference_grads(weight.to(compute), alpha.to(compute), mask, lam, seed, grad_seed)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", WEIGHT_SHAPES, ids=str)
@pytest.mark.parametrize("alpha_kind", list(ALPHA_SHAPES))
@pytest.mark.parametrize("masked", [False, True])
def test_matches_reference_float32(target, shape, alpha_kind, masked):
    weight, alpha, mask = make_inputs(shape, alpha_kind, masked=masked)
    got = run_with_grads(target.backend, *target.to(weight, alpha, mask), lam=0.8, seed=1234)
    expected = reference_with_grads(weight, alpha, mask, lam=0.8, seed=1234)
    for g, e in zip(got, expected, strict=True):
        assert g.device.type == target.device
        torch.testing.assert_close(g.cpu(), e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("alpha_kind", ["layer", "channel", "element"])
def test_matches_reference_other_dtypes(target, dtype, alpha_kind):
    """Half precision by the rule of helpers.assert_half_close (the reference in the same dtype
    and in float64 on the same values); float64 to float32's precision, as eta is float32 on
    every backend and a device's logf / cosf may round it one ulp away from the CPU's."""
    weight, alpha, mask = make_inputs((6, 4, 3, 3), alpha_kind, dtype=dtype)
    got = run_with_grads(target.backend, *target.to(weight, alpha, mask), lam=1.0, seed=77)
    oracle = reference_grads(weight.double(), alpha.double(), mask, 1.0, 77, grad_dtype=dtype)
    same_dtype = reference_grads(weight, alpha, mask, 1.0, 77) if dtype in HALF_DTYPES else oracle
    for what, g, r, e in zip(("forward", "grad weight", "grad alpha"), got, same_dtype, oracle, strict=True):
        assert g.dtype == dtype
        if dtype in HALF_DTYPES:
            assert_half_close(g, r, e, what)
        else:
            torch.testing.assert_close(
                g.cpu(), e, atol=1e-6, rtol=1e-6, msg=lambda m, what=what: f"{what}: {m}"
            )


@pytest.mark.parametrize("target", TARGETS)
def test_non_contiguous_weight(target):
    base = torch.randn(9, 6, 3, 3)
    weight = base.transpose(0, 1)  # [6, 9, 3, 3], non-contiguous
    alpha = torch.rand(6, 1, 1, 1) + 0.1
    device_weight, device_alpha = target.to(weight, alpha)
    assert not device_weight.is_contiguous()
    got = run_with_grads(target.backend, device_weight, device_alpha, None, lam=0.5, seed=5)
    expected = reference_with_grads(weight.contiguous(), alpha, None, lam=0.5, seed=5)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.cpu(), e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
def test_lam_zero_is_exact_and_noise_free(target):
    weight, alpha, mask = target.to(*make_inputs((8, 4, 3, 3), "channel"))
    out, _grad_weight, grad_alpha = run_with_grads(target.backend, weight, alpha, mask, lam=0.0, seed=3)
    assert torch.equal(out, weight * mask)
    assert torch.count_nonzero(grad_alpha) == 0


@pytest.mark.parametrize("target", TARGETS)
def test_mask_keeps_pruned_weights_zero(target):
    weight, alpha, mask = target.to(*make_inputs((16, 8, 3, 3), "element"))
    out, grad_weight, grad_alpha = run_with_grads(target.backend, weight, alpha, mask, lam=1.0, seed=3)
    assert torch.all(out[~mask] == 0)
    assert torch.all(grad_weight[~mask] == 0)
    assert torch.all(grad_alpha[~mask] == 0)
    assert torch.all(out[mask] != weight[mask])  # kept weights do get noise


@pytest.mark.parametrize("alpha_kind", ["element", "channel"])
@pytest.mark.parametrize("shape", [(6, 2, 3, 3), (4, 4, 3, 3)], ids=["rows-unaligned", "rows-aligned"])
@pytest.mark.parametrize("target", targets("triton"))
def test_triton_noise_paths_equal_cpp(target, shape, alpha_kind):
    """Both noise paths of the Triton backward kernel (rows of a multiple of 4 elements or not)."""
    require_backend("cpp")
    weight, alpha, mask = make_inputs(shape, alpha_kind)
    triton_result = run_with_grads("triton", *target.to(weight, alpha, mask), lam=0.3, seed=2**40 + 1)
    cpp_result = run_with_grads("cpp", weight, alpha, mask, lam=0.3, seed=2**40 + 1)
    for t, c in zip(triton_result, cpp_result, strict=True):
        torch.testing.assert_close(t.cpu(), c, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_std_over_many_partial_blocks(target):
    """std(W) combined from several block partials (Chan's formula) equals torch's."""
    weight = torch.randn(3, 2500, generator=torch.Generator().manual_seed(0)) * 2 + 5
    with robustkernels.use_backend(target.backend):
        _, sigma = torch.ops.robustkernels.noisy_weight(*target.to(weight, torch.ones(1)), 1.0, 0, None)
    torch.testing.assert_close(sigma.cpu(), weight.std(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_conv2d_matches_reference_on_the_same_device(target):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=gen)
    x, weight, alpha, mask = target.to(x, *make_inputs((4, 3, 3, 3), "channel"))
    with robustkernels.use_backend(target.backend):
        got = F.noisy_conv2d(x, weight, None, alpha, lam=1.0, seed=5, mask=mask, padding=1)
    with robustkernels.use_backend("reference"):
        expected = F.noisy_conv2d(x, weight, None, alpha, lam=1.0, seed=5, mask=mask, padding=1)
    torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])


def test_seed_determinism_and_fresh_noise():
    weight, alpha, _ = make_inputs((8, 4, 3, 3), "layer")
    a = F.noisy_weight(weight, alpha, lam=1.0, seed=10)
    b = F.noisy_weight(weight, alpha, lam=1.0, seed=10)
    c = F.noisy_weight(weight, alpha, lam=1.0, seed=11)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_noise_scale_statistics():
    """W' - W = lam * alpha * std(W) * eta with eta ~ N(0, 1)."""
    weight = torch.randn(256, 128, 3, 3) * 0.05
    alpha = torch.tensor([0.25])
    delta = F.noisy_weight(weight, alpha, lam=0.6, seed=2024) - weight
    expected_scale = 0.6 * 0.25 * weight.std().item()
    eta = delta / expected_scale
    assert abs(eta.mean().item()) < 0.01
    assert abs(eta.std().item() - 1.0) < 0.01


def test_channelwise_alpha_gradient_is_per_channel_sum():
    weight, alpha, mask = make_inputs((4, 3, 3, 3), "channel")
    _, _, grad_alpha = run_with_grads("cpp", weight, alpha, mask, lam=1.0, seed=9)
    _, _, grad_alpha_element = run_with_grads(
        "cpp", weight, alpha.reshape(4, 1, 1, 1).expand(4, 3, 3, 3).contiguous(), mask, lam=1.0, seed=9
    )
    torch.testing.assert_close(
        grad_alpha.flatten(), grad_alpha_element.sum(dim=(1, 2, 3)), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("alpha_kind", ["layer", "channel", "element"])
def test_gradcheck_float64(alpha_kind):
    weight, alpha, mask = make_inputs((3, 2, 3, 3), alpha_kind, dtype=torch.float64)
    weight.requires_grad_(True)
    alpha.requires_grad_(True)

    def fn(w, a):
        return F.noisy_weight(w, a, lam=0.9, seed=42, mask=mask)

    # std(W) is a constant of the backward by definition (as in PNI), so the check
    # holds W's contribution through std fixed: compare with the reference's gradient.
    assert torch.autograd.gradcheck(lambda a: fn(weight.detach(), a), (alpha,))
    out = fn(weight, alpha)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, weight, grad)[0]
    expected = torch.autograd.grad(reference.noisy_weight(weight, alpha, 0.9, 42, mask), weight, grad)[0]
    torch.testing.assert_close(got, expected)


def test_gradcheck_with_std_held_constant():
    """Full gradcheck of W' in W when the noise term does not depend on W (lam = 0) and masked."""
    weight, alpha, mask = make_inputs((3, 2, 3, 3), "channel", dtype=torch.float64)
    weight.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: F.noisy_weight(w, alpha, lam=0.0, seed=1, mask=mask), (weight,))


@pytest.mark.parametrize("alpha_kind", ["layer", "channel", "element"])
def test_opcheck(alpha_kind):
    weight, alpha, mask = make_inputs((4, 3, 3, 3), alpha_kind)
    weight.requires_grad_(True)
    alpha.requires_grad_(True)
    torch.library.opcheck(torch.ops.robustkernels.noisy_weight.default, (weight, alpha, 0.5, 123, mask))
    torch.library.opcheck(torch.ops.robustkernels.noisy_weight.default, (weight, alpha, 0.5, 123, None))
    sigma = weight.detach().std()
    grad = torch.randn(4, 3, 3, 3)
    for need_alpha in (True, False):
        torch.library.opcheck(
            torch.ops.robustkernels.noisy_weight_backward.default,
            (grad, alpha.detach(), sigma, 0.5, 123, mask, need_alpha),
        )


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compile_backend):
    weight, alpha, mask = make_inputs((6, 3, 3, 3), "channel")
    weight.requires_grad_(True)
    alpha.requires_grad_(True)

    def step(w, a):
        return (F.noisy_weight(w, a, lam=0.7, seed=31, mask=mask) ** 2).sum()

    compiled = torch.compile(step, backend=compile_backend, fullgraph=True)
    eager_grads = torch.autograd.grad(step(weight, alpha), (weight, alpha))
    compiled_grads = torch.autograd.grad(compiled(weight, alpha), (weight, alpha))
    for c, e in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(c, e)


def test_std_matches_torch_and_is_returned():
    weight = torch.randn(32, 16, 3, 3) * 3 + 1
    _, sigma = torch.ops.robustkernels.noisy_weight(weight, torch.ones(1), 1.0, 0, None)
    torch.testing.assert_close(sigma, weight.std(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_lam_zero_without_mask_returns_a_fresh_tensor(target):
    """A custom op may not return its input: lam = 0 without a mask must still copy."""
    weight, alpha, _ = target.to(*make_inputs((4, 3, 3, 3), "layer"))
    with robustkernels.use_backend(target.backend):
        out = F.noisy_weight(weight, alpha, lam=0.0, seed=1)
    assert torch.equal(out, weight)
    assert out.data_ptr() != weight.data_ptr()


@pytest.mark.parametrize("target", TARGETS)
def test_std_of_a_single_element_is_zero(target):
    weight, alpha = target.to(torch.tensor([0.5]), torch.ones(1))
    with robustkernels.use_backend(target.backend):
        out, sigma = torch.ops.robustkernels.noisy_weight(weight, alpha, 1.0, 3, None)
    assert sigma.item() == 0.0
    assert torch.equal(out, weight)


def test_std_does_not_depend_on_the_thread_count():
    weight = torch.randn(300_000, dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, single = torch.ops.robustkernels.noisy_weight(
            weight, torch.ones(1, dtype=torch.float64), 1.0, 0, None
        )
        torch.set_num_threads(2)
        _, double = torch.ops.robustkernels.noisy_weight(
            weight, torch.ones(1, dtype=torch.float64), 1.0, 0, None
        )
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, double)


@pytest.mark.parametrize("mask", [False, True])
def test_frozen_inputs_take_the_kernel_without_autograd_and_give_the_same_weight(mask):
    """With nothing to differentiate (an attack's frozen model, no_grad), functional.noisy_weight
    runs the kernel without the custom op's autograd wrapper: the same values, no graph."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 4, 3, 3, generator=generator)
    alpha = torch.full((6,), 0.3)
    keep = torch.rand(6, 4, 3, 3, generator=generator) > 0.5 if mask else None
    trainable = F.noisy_weight(weight.clone().requires_grad_(True), alpha, lam=0.7, seed=9, mask=keep)
    frozen = F.noisy_weight(weight, alpha, lam=0.7, seed=9, mask=keep)
    with torch.no_grad():
        no_grad = F.noisy_weight(weight.clone().requires_grad_(True), alpha, lam=0.7, seed=9, mask=keep)
    assert trainable.grad_fn is not None and frozen.grad_fn is None and no_grad.grad_fn is None
    torch.testing.assert_close(frozen, trainable.detach(), rtol=0, atol=0)
    torch.testing.assert_close(no_grad, trainable.detach(), rtol=0, atol=0)
