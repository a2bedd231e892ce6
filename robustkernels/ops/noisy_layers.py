"""Convolution and linear layers over the noisy / masked weight, as custom ops.

The forward builds W' with the fused weight kernel and runs the platform's
convolution or matmul (oneDNN / cuDNN / cuBLAS). For backward it saves only what
a plain layer saves (the input and the weight; alpha and the mask are existing
parameters and buffers): W' and the noise are recomputed from the seed rather
than stored, then dW' from the platform backward goes through the fused weight
backward to give dW and dalpha. The seed is `seed` plus, when given, the value of
`seed_tensor` (see seed_tensor.py), which the backward saves.
"""

import torch
import torch.nn.functional as F

from robustkernels.ops import backend
from robustkernels.ops.noisy_weight import (
    noisy_weight,
    noisy_weight_backward,
    noisy_weight_forward,
    sigma_dtype,
)
from robustkernels.ops.validation import alpha_mode, check_bias, check_input


def _check_conv_args(x, weight, bias, alpha, mask, groups):
    alpha_mode(weight, alpha, mask, "noisy_conv2d")
    check_input(x, weight, "noisy_conv2d", (4,))
    check_bias(bias, weight, "noisy_conv2d")
    if weight.dim() != 4:
        raise ValueError(
            f"robustkernels.noisy_conv2d: weight must have rank 4, got shape {tuple(weight.shape)}"
        )
    if groups < 1 or x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups != 0:
        raise ValueError(
            f"robustkernels.noisy_conv2d: x has {x.shape[1]} channels but weight {tuple(weight.shape)} "
            f"with groups={groups} expects {weight.shape[1] * groups}"
        )


@torch.library.custom_op("robustkernels::noisy_conv2d", mutates_args=())
def noisy_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    alpha: torch.Tensor,
    lam: float,
    seed: int,
    mask: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    seed_tensor: torch.Tensor | None = None,
) -> torch.Tensor:
    _check_conv_args(x, weight, bias, alpha, mask, groups)
    # inside the op nothing is differentiated: the weight op's function, not its dispatch
    effective, _ = noisy_weight_forward(weight, alpha, lam, seed, mask, seed_tensor)
    return F.conv2d(x, effective, bias, stride, padding, dilation, groups)


@noisy_conv2d.register_fake
def _noisy_conv2d_fake(
    x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups, seed_tensor=None
):
    _check_conv_args(x, weight, bias, alpha, mask, groups)
    # W' is always built contiguous, whatever the weight's memory format
    effective = torch.empty_like(weight, memory_format=torch.contiguous_format)
    return F.conv2d(x, effective, bias, stride, padding, dilation, groups)


def _saved_operands(ctx, x, weight):
    """x and W only where the backward needs them, as a plain layer saves them.

    x is needed for dW' (hence dW and dalpha); W to rebuild W' for dx and to
    recompute std(W) for dalpha.
    """
    need_x, need_weight, _, need_alpha = ctx.needs_input_grad[:4]
    return (x if need_weight or need_alpha else None), (weight if need_x or need_alpha else None)


def _unused_sigma(grad_y):
    """Placeholder std for a backward that computes no dalpha (W was not saved)."""
    return grad_y.new_zeros((), dtype=sigma_dtype(grad_y))


def _conv_setup_context(ctx, inputs, output):
    x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups, seed_tensor = inputs
    ctx.save_for_backward(*_saved_operands(ctx, x, weight), alpha, mask, seed_tensor)
    ctx.shapes = (x.shape, weight.shape)
    ctx.backend = backend.explicit_choice()
    ctx.bias_sizes = [weight.shape[0]] if bias is not None else None
    ctx.lam, ctx.seed = lam, seed
    ctx.conv = (stride, padding, dilation, groups)


def _conv_backward(ctx, grad_y):
    with backend.restore_choice(ctx.backend):
        return _conv_backward_impl(ctx, grad_y)


def _conv_backward_impl(ctx, grad_y):
    x, weight, alpha, mask, seed_tensor = ctx.saved_tensors
    need_x, need_weight, need_bias, need_alpha = ctx.needs_input_grad[:4]
    stride, padding, dilation, groups = ctx.conv
    x_shape, weight_shape = ctx.shapes
    if weight is not None:
        effective, sigma = noisy_weight(weight, alpha, ctx.lam, ctx.seed, mask, seed_tensor)
    else:  # only dW' is needed: shape-only stand-ins, as torch.nn.grad.conv2d_weight uses
        effective, sigma = grad_y.new_empty(1).expand(weight_shape), _unused_sigma(grad_y)
    grad_x, grad_effective, grad_bias = torch.ops.aten.convolution_backward(
        grad_y,
        x if x is not None else grad_y.new_empty(1).expand(x_shape),
        effective,
        ctx.bias_sizes,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [need_x, need_weight or need_alpha, need_bias and ctx.bias_sizes is not None],
    )
    grad_weight = grad_alpha = None
    if need_weight or need_alpha:
        grad_weight, grad_alpha = noisy_weight_backward(
            grad_effective, alpha, sigma, ctx.lam, ctx.seed, mask, need_alpha, seed_tensor
        )
    return (
        grad_x,
        grad_weight if need_weight else None,
        grad_bias,
        grad_alpha if need_alpha else None,
        *(None,) * 8,
    )


noisy_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup_context)


def _check_linear_args(x, weight, bias, alpha, mask):
    alpha_mode(weight, alpha, mask, "noisy_linear")
    if weight.dim() != 2:
        raise ValueError(
            f"robustkernels.noisy_linear: weight must have rank 2, got shape {tuple(weight.shape)}"
        )
    check_input(x, weight, "noisy_linear", tuple(range(1, 9)))
    check_bias(bias, weight, "noisy_linear")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"robustkernels.noisy_linear: x has {x.shape[-1]} features in its last dimension, weight expects {weight.shape[1]}"
        )


@torch.library.custom_op("robustkernels::noisy_linear", mutates_args=())
def noisy_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    alpha: torch.Tensor,
    lam: float,
    seed: int,
    mask: torch.Tensor | None,
    seed_tensor: torch.Tensor | None = None,
) -> torch.Tensor:
    _check_linear_args(x, weight, bias, alpha, mask)
    effective, _ = noisy_weight_forward(weight, alpha, lam, seed, mask, seed_tensor)
    return F.linear(x, effective, bias)


@noisy_linear.register_fake
def _noisy_linear_fake(x, weight, bias, alpha, lam, seed, mask, seed_tensor=None):
    _check_linear_args(x, weight, bias, alpha, mask)
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_setup_context(ctx, inputs, output):
    x, weight, bias, alpha, lam, seed, mask, seed_tensor = inputs
    ctx.save_for_backward(*_saved_operands(ctx, x, weight), alpha, mask, seed_tensor)
    ctx.has_bias = bias is not None
    ctx.backend = backend.explicit_choice()
    ctx.lam, ctx.seed = lam, seed


def _linear_backward(ctx, grad_y):
    with backend.restore_choice(ctx.backend):
        return _linear_backward_impl(ctx, grad_y)


def _linear_backward_impl(ctx, grad_y):
    x, weight, alpha, mask, seed_tensor = ctx.saved_tensors
    need_x, need_weight, need_bias, need_alpha = ctx.needs_input_grad[:4]
    if weight is not None:
        effective, sigma = noisy_weight(weight, alpha, ctx.lam, ctx.seed, mask, seed_tensor)
    else:
        effective, sigma = None, _unused_sigma(grad_y)
    grad_x = grad_y @ effective if need_x else None
    grad_bias = grad_y.reshape(-1, grad_y.shape[-1]).sum(0) if need_bias and ctx.has_bias else None
    grad_weight = grad_alpha = None
    if need_weight or need_alpha:
        grad_effective = grad_y.reshape(-1, grad_y.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        grad_weight, grad_alpha = noisy_weight_backward(
            grad_effective, alpha, sigma, ctx.lam, ctx.seed, mask, need_alpha, seed_tensor
        )
    return (
        grad_x,
        grad_weight if need_weight else None,
        grad_bias,
        grad_alpha if need_alpha else None,
        *(None,) * 4,
    )


noisy_linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)
