"""Convolution and linear layers over the noisy / masked weight: their checks and fakes.

robustkernels::noisy_conv2d and noisy_linear, their backward ops and their autograd are C++
(csrc/ops/noisy_layers.cpp): the forward builds W' with the fused weight kernel and runs the
platform's convolution or matmul; the backward saves only what a plain layer saves, rebuilds W'
from the seed and sends dW' through the weight backward kernel. Here: the argument checks the
public functions run once before the op (C++ checks again with TORCH_CHECK), and the fakes
torch.compile traces with.
"""

import torch
import torch.nn.functional as F

from robustkernels import _extension
from robustkernels.ops.seed_tensor import check_layer_seed
from robustkernels.ops.validation import alpha_mode, check_bias, check_input


def check_conv_args(x, weight, bias, alpha, mask, groups) -> None:
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


def check_linear_args(x, weight, bias, alpha, mask) -> None:
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


def _conv_fake(x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups, seed_tensor=None):
    check_conv_args(x, weight, bias, alpha, mask, groups)
    check_layer_seed(seed_tensor, weight, "noisy_conv2d")
    # W' is always built contiguous, whatever the weight's memory format
    effective = torch.empty_like(weight, memory_format=torch.contiguous_format)
    return F.conv2d(x, effective, bias, stride, padding, dilation, groups)


def _check_backward_args(op, grad_y, x, weight, alpha, mask) -> None:
    """The checks the C++ backward op makes, for the fake (a meta argument beside CPU ones
    dispatches to it)."""
    for name, value in (("x", x), ("weight", weight), ("alpha", alpha), ("mask", mask)):
        if value is not None and value.device != grad_y.device:
            raise ValueError(
                f"robustkernels.{op}: {name} must be on grad_y's device {grad_y.device}, got {value.device}"
            )
    if weight is not None:
        alpha_mode(weight, alpha, mask, op)


def _layer_grads_fake(grad_y, alpha, x_shape, weight_shape, has_bias, output_mask):
    need_x, need_weight, need_bias, need_alpha = output_mask
    return (
        grad_y.new_empty(x_shape) if need_x else None,
        grad_y.new_empty(weight_shape) if need_weight else None,
        grad_y.new_empty(weight_shape[0]) if need_bias and has_bias else None,
        torch.empty_like(alpha, memory_format=torch.contiguous_format) if need_alpha else None,
    )


def _conv_backward_fake(
    grad_y, x, weight, alpha, lam, seed, mask, stride, padding, dilation, groups, seed_tensor,
    x_size, weight_size, has_bias, output_mask,
):  # fmt: skip
    _check_backward_args("noisy_conv2d_backward", grad_y, x, weight, alpha, mask)
    check_layer_seed(seed_tensor, grad_y, "noisy_conv2d_backward")
    return _layer_grads_fake(grad_y, alpha, x_size, weight_size, has_bias, output_mask)


def _linear_fake(x, weight, bias, alpha, lam, seed, mask, seed_tensor=None):
    check_linear_args(x, weight, bias, alpha, mask)
    check_layer_seed(seed_tensor, weight, "noisy_linear")
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_backward_fake(
    grad_y, x, weight, alpha, lam, seed, mask, seed_tensor, weight_size, has_bias, output_mask
):
    _check_backward_args("noisy_linear_backward", grad_y, x, weight, alpha, mask)
    check_layer_seed(seed_tensor, grad_y, "noisy_linear_backward")
    x_shape = (*grad_y.shape[:-1], weight_size[1])
    return _layer_grads_fake(grad_y, alpha, x_shape, weight_size, has_bias, output_mask)


if _extension.is_loaded():
    noisy_conv2d = torch.ops.robustkernels.noisy_conv2d.default
    noisy_linear = torch.ops.robustkernels.noisy_linear.default
    torch.library.register_fake("robustkernels::noisy_conv2d")(_conv_fake)
    torch.library.register_fake("robustkernels::noisy_conv2d_backward")(_conv_backward_fake)
    torch.library.register_fake("robustkernels::noisy_linear")(_linear_fake)
    torch.library.register_fake("robustkernels::noisy_linear_backward")(_linear_backward_fake)
