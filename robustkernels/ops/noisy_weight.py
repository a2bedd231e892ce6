"""The noisy / masked weight transform's kernels from Python, and its ops' fake registrations.

robustkernels::noisy_weight(weight, alpha, lam, seed, mask, seed_tensor=None) -> (W', std(W))
robustkernels::noisy_weight_backward(grad, alpha, sigma, lam, seed, mask, need_alpha_grad, seed_tensor=None)
    -> (dW, dalpha)

The ops and their autograd are C++ (csrc/ops/noisy_weight.cpp): the dispatcher runs the weight
kernel of the tensors' device with no Python in between. This module adds what Python provides:
the Triton kernels as the CUDA kernels where no CUDA C++ kernel is built, the kernels the
use_backend override chooses (Triton under its interpreter, the reference), and the fakes that
torch.compile traces with. std(W) is an output so that the backward can reuse it; it is a
constant for autograd, as in PNI.
"""

import itertools

import torch

from robustkernels import _extension, reference
from robustkernels.ops import backend, validation
from robustkernels.ops.seed_tensor import check_layer_seed, check_seed_offset, offset_or_zero
from robustkernels.ops.seed_tensor import seed_offset as seed_offset_value
from robustkernels.reference.noisy_weight import weight_std as reference_weight_std
from robustkernels.triton import available as _triton_available

if _triton_available:
    import triton

    from robustkernels.triton.noisy_weight import (
        noisy_weight_bwd_kernel,
        noisy_weight_fwd_kernel,
        std_partials_kernel,
    )
    from robustkernels.triton.philox import philox_normal_kernel
    from robustkernels.triton.specialisation import (
        CHECKED_DTYPES,
        MAX_REGISTERS,
        accumulator,
        accumulator_dtype,
        specialise,
    )

NOISE_BLOCK = 1024
# Warps of the kernels that draw noise for a block of NOISE_BLOCK elements: 4 elements a thread,
# which keeps the Philox and Box-Muller registers from spilling.
_NOISE_WARPS = 8
# Every forward program re-reads the std partials, so keep them few (bigger partial blocks instead);
# a power of two, the one block in which the forward kernels read them.
MAX_STD_PARTIALS = 256


def sigma_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def std_partials_launch(dtype: torch.dtype) -> dict:
    return dict(BLOCK=NOISE_BLOCK, ACC=accumulator(dtype))


def noise_block_launch(dtype: torch.dtype) -> dict:
    """The constexprs and warps shared by the kernels that draw noise for blocks of NOISE_BLOCK
    elements (with one block size for every weight, short rows leave lanes idle)."""
    return dict(BLOCK=NOISE_BLOCK, ACC=accumulator(dtype), num_warps=_NOISE_WARPS, maxnreg=MAX_REGISTERS)


def _forward_launch(mode: int, has_mask: bool, add_noise: bool, dtype: torch.dtype) -> dict:
    return dict(
        # alpha is not read without noise: one specialisation for every mode
        ALPHA_MODE=mode if add_noise else validation.ALPHA_LAYER,
        HAS_MASK=has_mask,
        ADD_NOISE=add_noise,
        NUM_PARTIALS=MAX_STD_PARTIALS,
        **noise_block_launch(dtype),
    )


def _backward_launch(
    inner: int, has_mask: bool, alpha_grad: bool, elementwise: bool, dtype: torch.dtype
) -> dict:
    return dict(
        HAS_MASK=has_mask,
        ALPHA_GRAD=alpha_grad,
        # without an alpha gradient the noise is not regenerated: one specialisation
        ELEMENTWISE=alpha_grad and elementwise,
        ALIGNED=alpha_grad and inner % 4 == 0,
        **noise_block_launch(dtype),
    )


def _philox_launch() -> dict:
    return dict(BLOCK=NOISE_BLOCK, num_warps=_NOISE_WARPS, maxnreg=MAX_REGISTERS)


def triton_specialisations():
    """Every kernel specialisation the Triton launchers below can launch
    (tests/test_triton_compile.py compiles each)."""
    flags = (False, True)
    modes = (validation.ALPHA_LAYER, validation.ALPHA_CHANNEL, validation.ALPHA_ELEMENT)
    yield specialise(philox_normal_kernel, _philox_launch(), torch.float32, seed="i64", offset="i64")
    for dtype in CHECKED_DTYPES:
        acc = accumulator_dtype(dtype)
        yield specialise(std_partials_kernel, std_partials_launch(dtype), dtype, sum_ptr=acc, m2_ptr=acc)
        for mode, has_mask, add_noise in itertools.product(modes, flags, flags):
            yield specialise(
                noisy_weight_fwd_kernel, _forward_launch(mode, has_mask, add_noise, dtype), dtype,
                mask_ptr=torch.uint8 if has_mask else dtype, sigma_ptr=acc, sum_ptr=acc, m2_ptr=acc,
                lam="fp32", seed="i64", seed_offset_ptr=torch.int64,
            )  # fmt: skip
        for inner, has_mask, alpha_grad, elementwise in itertools.product((3, 4), flags, flags, flags):
            launch = _backward_launch(inner, has_mask, alpha_grad, elementwise, dtype)
            yield specialise(
                noisy_weight_bwd_kernel, launch, dtype,
                mask_ptr=torch.uint8 if has_mask else dtype, sigma_ptr=acc,
                grad_alpha_ptr=acc if alpha_grad and not elementwise else dtype, lam="fp32", seed="i64",
                seed_offset_ptr=torch.int64,
            )  # fmt: skip


def _forward_triton(weight, alpha, lam, seed, mask, mode, seed_offset=None):
    weight = weight.contiguous()
    n = weight.numel()
    partial_block = max(NOISE_BLOCK, triton.cdiv(n, MAX_STD_PARTIALS))  # elements per std chunk
    num_partials = triton.cdiv(n, partial_block)
    acc_dtype = sigma_dtype(weight)
    sums = torch.empty(num_partials, dtype=acc_dtype, device=weight.device)
    m2 = torch.empty_like(sums)
    std_partials_kernel[(num_partials,)](
        weight, sums, m2, n, partial_block, **std_partials_launch(weight.dtype)
    )
    out = torch.empty_like(weight)
    sigma = torch.empty((), dtype=acc_dtype, device=weight.device)
    mask_bytes = mask.contiguous().view(torch.uint8) if mask is not None else weight
    noisy_weight_fwd_kernel[(triton.cdiv(n, NOISE_BLOCK),)](
        weight,
        alpha.contiguous(),
        mask_bytes,
        out,
        sigma,
        sums,
        m2,
        n,
        n // weight.shape[0],
        float(lam),
        seed,
        offset_or_zero(seed_offset, weight.device),
        num_partials,
        partial_block,
        **_forward_launch(mode, mask is not None, lam != 0, weight.dtype),
    )
    return out, sigma


def _backward_triton(grad, alpha, sigma, lam, seed, mask, need_alpha_grad, mode, seed_offset=None):
    grad = grad.contiguous()
    rows = grad.shape[0]
    inner = grad.numel() // rows
    blocks_per_row = triton.cdiv(inner, NOISE_BLOCK)
    alpha_grad = need_alpha_grad and lam != 0
    grad_weight = torch.empty_like(grad)
    if alpha_grad and mode == validation.ALPHA_ELEMENT:
        grad_alpha = torch.empty_like(grad)
    elif alpha_grad:
        grad_alpha = torch.empty((rows, blocks_per_row), dtype=sigma.dtype, device=grad.device)
    else:
        grad_alpha = grad_weight  # not written
    mask_bytes = mask.contiguous().view(torch.uint8) if mask is not None else grad
    noisy_weight_bwd_kernel[(rows, blocks_per_row)](
        grad,
        mask_bytes,
        sigma,
        grad_weight,
        grad_alpha,
        inner,
        float(lam),
        seed,
        offset_or_zero(seed_offset, grad.device),
        blocks_per_row,
        **_backward_launch(inner, mask is not None, alpha_grad, mode == validation.ALPHA_ELEMENT, grad.dtype),
    )
    if not need_alpha_grad:
        return grad_weight, grad.new_empty(0)
    if not alpha_grad:
        return grad_weight, torch.zeros_like(alpha)
    if mode == validation.ALPHA_CHANNEL:
        grad_alpha = grad_alpha.sum(dim=1).reshape(alpha.shape)
    elif mode == validation.ALPHA_LAYER:
        grad_alpha = grad_alpha.sum().reshape(alpha.shape)
    return grad_weight, grad_alpha.to(alpha.dtype)


def _forward_reference(weight, alpha, lam, seed, mask):
    sigma = reference_weight_std(weight).to(sigma_dtype(weight))
    # a custom op's output may not alias its input (lam = 0 without a mask returns W itself)
    out = reference.noisy_weight(weight, alpha, lam, seed, mask).clone(memory_format=torch.contiguous_format)
    return out, sigma


def _backward_reference(grad, alpha, sigma, lam, seed, mask, need_alpha_grad):
    grad_weight = grad * mask if mask is not None else grad.clone()
    if not need_alpha_grad:
        return grad_weight.contiguous(), grad.new_empty(0)
    eta = reference.philox_normal(seed, grad.numel(), device=grad.device).view(grad.shape)
    per_element = grad_weight.to(sigma.dtype) * eta * (lam * sigma)
    if alpha.numel() == 1:
        grad_alpha = per_element.sum()
    elif alpha.shape == grad.shape:
        grad_alpha = per_element
    else:
        grad_alpha = per_element.reshape(grad.shape[0], -1).sum(dim=1)
    return grad_weight.contiguous(), grad_alpha.reshape(alpha.shape).to(alpha.dtype)


def _python_forward(weight, alpha, lam, seed, mask, seed_offset=None):
    """The weight kernel of the backend use_backend chose (robustkernels::noisy_weight_fwd_python)."""
    mode = validation.alpha_mode(weight, alpha, mask, "noisy_weight")
    validation.check_seed(seed, "noisy_weight")
    check_seed_offset(seed_offset, weight, "noisy_weight")
    name = backend.select("noisy_weight", weight.device)
    if name in ("cpp", "cuda"):
        return torch.ops.robustkernels.noisy_weight_fwd_kernel(weight, alpha, lam, seed, mask, seed_offset)
    if name == "triton":
        return _forward_triton(weight, alpha, lam, seed, mask, mode, seed_offset)
    return _forward_reference(weight, alpha, lam, seed + seed_offset_value(seed_offset), mask)


def _python_backward(grad, alpha, sigma, lam, seed, mask, need_alpha_grad, seed_offset=None):
    """The weight backward kernel of the backend use_backend chose (noisy_weight_bwd_python)."""
    op = "noisy_weight_backward"
    mode = validation.alpha_mode(grad, alpha, mask, op, "grad")
    validation.check_sigma(sigma, grad, op)
    if sigma.numel() != 1:
        raise ValueError(f"robustkernels.{op}: sigma must hold one value, got shape {tuple(sigma.shape)}")
    validation.check_seed(seed, op)
    check_seed_offset(seed_offset, grad, op)
    name = backend.select(op, grad.device)
    if name in ("cpp", "cuda"):
        return torch.ops.robustkernels.noisy_weight_bwd_kernel(
            grad, alpha, sigma, lam, seed, mask, need_alpha_grad, seed_offset
        )
    if name == "triton":
        return _backward_triton(grad, alpha, sigma, lam, seed, mask, need_alpha_grad, mode, seed_offset)
    seed = seed + seed_offset_value(seed_offset)
    return _backward_reference(grad, alpha, sigma, lam, seed, mask, need_alpha_grad)


def _cuda_forward(weight, alpha, lam, seed, mask, seed_offset=None):
    """The CUDA weight kernel where no CUDA C++ kernel is built: Triton, else the reference (which
    reads a device-held offset on the host: the Triton kernel reads it on the device)."""
    mode = validation.alpha_mode(weight, alpha, mask, "noisy_weight")
    check_seed_offset(seed_offset, weight, "noisy_weight")
    if _triton_available:
        return _forward_triton(weight, alpha, lam, seed, mask, mode, seed_offset)
    return _forward_reference(weight, alpha, lam, seed + seed_offset_value(seed_offset), mask)


def _cuda_backward(grad, alpha, sigma, lam, seed, mask, need_alpha_grad, seed_offset=None):
    mode = validation.alpha_mode(grad, alpha, mask, "noisy_weight_backward", "grad")
    check_seed_offset(seed_offset, grad, "noisy_weight_backward")
    if _triton_available:
        return _backward_triton(grad, alpha, sigma, lam, seed, mask, need_alpha_grad, mode, seed_offset)
    seed = seed + seed_offset_value(seed_offset)
    return _backward_reference(grad, alpha, sigma, lam, seed, mask, need_alpha_grad)


def _weight_fake(weight, alpha, lam, seed, mask, seed_tensor=None):
    validation.alpha_mode(weight, alpha, mask, "noisy_weight")
    check_layer_seed(seed_tensor, weight, "noisy_weight")
    return torch.empty_like(weight, memory_format=torch.contiguous_format), weight.new_empty(
        (), dtype=sigma_dtype(weight)
    )


def _weight_backward_fake(grad, alpha, sigma, lam, seed, mask, need_alpha_grad, seed_tensor=None):
    validation.alpha_mode(grad, alpha, mask, "noisy_weight_backward", "grad")
    validation.check_sigma(sigma, grad, "noisy_weight_backward")
    check_layer_seed(seed_tensor, grad, "noisy_weight_backward")
    grad_alpha = (
        torch.empty_like(alpha, memory_format=torch.contiguous_format)
        if need_alpha_grad
        else grad.new_empty(0)
    )
    return torch.empty_like(grad, memory_format=torch.contiguous_format), grad_alpha


if _extension.is_loaded():
    # The ops are defined, and dispatched with their autograd, in C++ (csrc/ops/noisy_weight.cpp).
    noisy_weight = torch.ops.robustkernels.noisy_weight.default
    noisy_weight_backward = torch.ops.robustkernels.noisy_weight_backward.default
    torch.library.register_fake("robustkernels::noisy_weight")(_weight_fake)
    torch.library.register_fake("robustkernels::noisy_weight_backward")(_weight_backward_fake)
    torch.library.impl("robustkernels::noisy_weight_fwd_python", "CompositeExplicitAutograd")(_python_forward)
    torch.library.impl("robustkernels::noisy_weight_bwd_python", "CompositeExplicitAutograd")(
        _python_backward
    )
    if not _extension.has_cuda_kernels:
        torch.library.impl("robustkernels::noisy_weight_fwd_kernel", "CUDA")(_cuda_forward)
        torch.library.impl("robustkernels::noisy_weight_bwd_kernel", "CUDA")(_cuda_backward)


def philox_normal(like: torch.Tensor, seed: int, offset: int = 0) -> torch.Tensor:
    """float32 Philox normals shaped like `like`, on its device, from the selected backend."""
    validation.check_tensor("like", like, "philox_normal")
    validation.check_seed(seed, "philox_normal")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"robustkernels.philox_normal: offset must be a non-negative int, got {offset!r}")
    name = backend.select("philox_normal", like.device)
    if name in ("cpp", "cuda"):
        return torch.ops.robustkernels.philox_normal_kernel(like, seed, offset)
    if name == "triton":
        out = torch.empty(like.shape, dtype=torch.float32, device=like.device)
        n = out.numel()
        philox_normal_kernel[(triton.cdiv(n, NOISE_BLOCK),)](out, seed, offset, n, **_philox_launch())
        return out
    return reference.philox_normal(seed, like.numel(), offset=offset, device=like.device).view(like.shape)
