"""The routed convolution and linear layers' fakes: what torch.compile traces them with.

robustkernels::path_conv2d / path_linear(x, weight, bias, mask, alpha, lams, seeds, route, segments, ...,
    seed_tensor?) -> (y, perm, counts): y[b] = layer(x[b], W'_{route[b]}) + bias_{route[b]}
robustkernels::path_conv2d_backward / path_linear_backward(...) -> (dx, dW, dbias, dalpha)

The ops and their autograd are C++ (csrc/ops/path_conv.cpp): the samples are grouped by path
(the route sort and one small read of the per-path counts for a route tensor; nothing for
segments), every used path's W' is built in one launch, each group runs through the platform
convolution / matmul. The backward rebuilds W' and regenerates the noise (neither is saved).
"""

import torch
import torch.nn.functional as F

from robustkernels import _extension
from robustkernels.ops import validation
from robustkernels.ops.validation import check_route, path_layout


def check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, op, groups=1):
    paths, entries = path_layout(weight, mask, alpha, lams, seeds, op)[:2]
    validation.check_input(x, weight, op, (4,) if op == "path_conv2d" else tuple(range(2, 9)))
    if bias is not None:
        validation.check_tensor("bias", bias, op)
        if bias.dim() != 2 or bias.shape[0] not in (1, paths):
            raise ValueError(
                f"robustkernels.{op}: bias must be [1 or {paths}, {weight.shape[1]}], got {tuple(bias.shape)}"
            )
        validation.check_bias(bias[0], weight[0], op)
    if op == "path_conv2d" and weight.dim() != 5:
        raise ValueError(
            f"robustkernels.{op}: weight must be [S, C_out, C_in/groups, kh, kw], got {tuple(weight.shape)}"
        )
    if op == "path_conv2d" and (
        groups < 1 or x.shape[1] != weight.shape[2] * groups or weight.shape[1] % groups
    ):
        raise ValueError(
            f"robustkernels.{op}: x has {x.shape[1]} channels but weight {tuple(weight.shape)} with "
            f"groups={groups} expects {weight.shape[2] * groups}"
        )
    if op == "path_linear" and (weight.dim() != 3 or x.shape[-1] != weight.shape[2]):
        raise ValueError(
            f"robustkernels.{op}: weight must be [S, out, in] with in = x.shape[-1] = {x.shape[-1]}, "
            f"got {tuple(weight.shape)}"
        )
    batch = x.shape[0]
    if route is not None:
        check_route(route, paths, op)
        if route.shape[0] != batch:
            raise ValueError(
                f"robustkernels.{op}: route must hold one path per sample ({batch}), got {route.shape[0]}"
            )
        if route.device != x.device:
            raise ValueError(
                f"robustkernels.{op}: route must be on x's device {x.device}, got {route.device}"
            )
        if segments:
            raise ValueError(f"robustkernels.{op}: give either a route tensor or segments, not both")
    elif len(segments) != paths or any(s < 0 for s in segments) or sum(segments) != batch:
        raise ValueError(
            f"robustkernels.{op}: segments must be {paths} non-negative sizes summing to the batch {batch}, "
            f"got {list(segments)}"
        )
    return paths, entries


def _check_grads_args(
    op, grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, needs
):
    """The backward op's arguments, as far as their shapes tell (the fake runs this too)."""
    op = f"{op}_backward"
    paths = path_layout(weight, mask, alpha, lams, seeds, op)[0]
    for name, value in (("x", x), ("grad_y", grad_y)):
        validation.check_tensor(name, value, op)
        validation.check_like(name, value, weight, "weight", op)
        if value.dim() < 1 or value.shape[0] != x.shape[0]:
            raise ValueError(
                f"robustkernels.{op}: {name} must hold the batch of x ({x.shape[0]}), got {tuple(value.shape)}"
            )
    batch = x.shape[0]
    for name, value, shape in (("perm", perm, (batch if not segments else 0,)), ("counts", counts, (paths,))):
        validation.check_tensor(name, value, op)
        if value.dtype != torch.int64:
            raise TypeError(f"robustkernels.{op}: {name} must be an int64 tensor, got {value.dtype}")
        if value.shape != shape:
            raise ValueError(f"robustkernels.{op}: {name} must have shape {shape}, got {tuple(value.shape)}")
        if value.device != weight.device:
            raise ValueError(
                f"robustkernels.{op}: {name} must be on the weight's device {weight.device}, got {value.device}"
            )
    if segments and (len(segments) != paths or any(s < 0 for s in segments) or sum(segments) != batch):
        raise ValueError(
            f"robustkernels.{op}: segments must be {paths} non-negative sizes summing to the batch {batch}, "
            f"got {list(segments)}"
        )
    if bias_entries not in (0, 1, paths):
        raise ValueError(f"robustkernels.{op}: bias_entries must be 0, 1 or {paths}, got {bias_entries}")
    if len(needs) != 4:
        raise ValueError(
            f"robustkernels.{op}: needs must hold 4 flags (x, weight, bias, alpha), got {len(needs)}"
        )


def _routed_grads_fake(grad_y, x, weight, alpha, bias_entries, needs):
    need_x, need_weight, need_bias, need_alpha = needs
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else None,
        torch.empty_like(weight, memory_format=torch.contiguous_format)
        if need_weight or need_alpha
        else None,
        grad_y.new_empty((bias_entries, weight.shape[1])) if need_bias and bias_entries else None,
        alpha.new_empty(alpha.shape) if need_alpha and alpha is not None else None,
    )


def _path_conv2d_fake(
    x,
    weight,
    bias,
    mask,
    alpha,
    lams,
    seeds,
    route,
    segments,
    stride,
    padding,
    dilation,
    groups,
    seed_tensor=None,
):
    paths, _ = check_layer_args(
        x, weight, bias, mask, alpha, lams, seeds, route, segments, "path_conv2d", groups
    )
    y = F.conv2d(x, torch.empty_like(weight[0]), None, stride, padding, dilation, groups)
    perm = x.new_empty((x.shape[0] if route is not None else 0,), dtype=torch.int64)
    return y, perm, x.new_empty((paths,), dtype=torch.int64)


def _path_conv2d_backward_fake(
    grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, stride, padding, dilation,
    groups, needs, seed_tensor=None,
):  # fmt: skip
    _check_grads_args(
        "path_conv2d", grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, needs
    )  # fmt: skip
    return _routed_grads_fake(grad_y, x, weight, alpha, bias_entries, needs)


def _path_linear_fake(x, weight, bias, mask, alpha, lams, seeds, route, segments, seed_tensor=None):
    paths, _ = check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, "path_linear")
    perm = x.new_empty((x.shape[0] if route is not None else 0,), dtype=torch.int64)
    y = x.new_empty((*x.shape[:-1], weight.shape[1]))
    return y, perm, x.new_empty((paths,), dtype=torch.int64)


def _path_linear_backward_fake(
    grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, needs, seed_tensor=None
):
    _check_grads_args(
        "path_linear", grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, needs
    )  # fmt: skip
    return _routed_grads_fake(grad_y, x, weight, alpha, bias_entries, needs)


if _extension.is_loaded():
    # The ops are defined, and dispatched with their autograd, in C++ (csrc/ops/path_conv.cpp).
    path_conv2d = torch.ops.robustkernels.path_conv2d.default
    path_linear = torch.ops.robustkernels.path_linear.default
    torch.library.register_fake("robustkernels::path_conv2d")(_path_conv2d_fake)
    torch.library.register_fake("robustkernels::path_conv2d_backward")(_path_conv2d_backward_fake)
    torch.library.register_fake("robustkernels::path_linear")(_path_linear_fake)
    torch.library.register_fake("robustkernels::path_linear_backward")(_path_linear_backward_fake)
