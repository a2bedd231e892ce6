"""Routed convolution and linear layers over a bank of path weights, as custom ops.

Forward: the samples are grouped by path (device counting sort and one small read of
the per-path counts for a route tensor; nothing for segments), every used path's W'
is built in one launch, each group runs through the platform convolution / matmul,
and the results return to the batch order with one index_copy_. Backward: W' is
rebuilt and the noise regenerated (neither is saved); each group's platform backward
gives its dx and dW'_p; dW'_p of unused paths stay zero, so their dW is exactly zero.
"""

import torch
import torch.nn.functional as F

from robustkernels.ops import backend, validation
from robustkernels.ops.path_conv import check_route, path_layout, path_weights, path_weights_backward

# layer kinds: forward(x, w, b, conv_args) and backward(gy, x, w, conv_args, needs) -> (dx, dw, db)


def _conv_forward(x, w, b, conv):
    return F.conv2d(x, w, b, *conv)


def _conv_backward(grad_y, x, w, conv, needs):
    stride, padding, dilation, groups = conv
    return torch.ops.aten.convolution_backward(
        grad_y,
        x,
        w,
        [w.shape[0]] if needs[2] else None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        list(needs),
    )


def _linear_forward(x, w, b, _):
    return F.linear(x, w, b)


def _linear_backward(grad_y, x, w, _, needs):
    flat_grad = grad_y.reshape(-1, grad_y.shape[-1])
    grad_x = grad_y @ w if needs[0] else None
    grad_w = flat_grad.t() @ x.reshape(-1, x.shape[-1]) if needs[1] else None
    grad_b = flat_grad.sum(0) if needs[2] else None
    return grad_x, grad_w, grad_b


_KINDS = {"path_conv2d": (_conv_forward, _conv_backward), "path_linear": (_linear_forward, _linear_backward)}


def _check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, op):
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


def _group(x, route, segments, paths: int, op: str):
    """(x grouped by path, sizes per path, counts tensor, perm)."""
    if route is None:
        counts = torch.tensor(segments, dtype=torch.int64, device=x.device)
        return x, list(segments), counts, x.new_empty(0, dtype=torch.int64)
    counts, perm = torch.ops.robustkernels.route_sort(route, paths)
    sizes = counts.tolist()  # the one host read: the group sizes
    if sum(sizes) != x.shape[0]:
        raise ValueError(f"robustkernels.{op}: route values must lie in [0, {paths})")
    return x.index_select(0, perm), sizes, counts, perm


def _scatter_back(parts: list[torch.Tensor], perm: torch.Tensor, routed: bool) -> torch.Tensor:
    grouped = parts[0] if len(parts) == 1 else torch.cat(parts)
    if not routed:
        return grouped
    return torch.empty_like(grouped).index_copy_(0, perm, grouped)


def _bias_of(bias, p):
    return None if bias is None else bias[0 if bias.shape[0] == 1 else p]


def _routed_forward(op, x, weight, bias, mask, alpha, lams, seeds, route, segments, conv):
    paths, _ = _check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, op)
    forward = _KINDS[op][0]
    grouped, sizes, counts, perm = _group(x, route, segments, paths, op)
    effective, _ = path_weights(weight, mask, alpha, lams, seeds, counts)
    parts = [
        forward(chunk, effective[p], _bias_of(bias, p), conv)
        for p, chunk in enumerate(grouped.split(sizes))
        if sizes[p]
    ]
    if not parts:  # empty batch
        parts = [forward(x, effective[0], _bias_of(bias, 0), conv)]
    return _scatter_back(parts, perm, route is not None), perm, counts


def _routed_setup_context(ctx, inputs, output):
    x, weight, bias, mask, alpha, lams, seeds, route, segments = inputs[:9]
    ctx.save_for_backward(x, weight, mask, alpha, output[1], output[2])
    ctx.lams, ctx.seeds, ctx.segments, ctx.routed = lams, seeds, segments, route is not None
    ctx.bias_shape = None if bias is None else bias.shape
    ctx.conv = tuple(inputs[9:])
    ctx.backend = backend.explicit_choice()


def _routed_backward(op, ctx, grad_y):
    with backend.restore_choice(ctx.backend):
        return _routed_backward_impl(op, ctx, grad_y)


def _routed_backward_impl(op, ctx, grad_y):
    x, weight, mask, alpha, perm, counts = ctx.saved_tensors
    need_x, need_weight, need_bias, _, need_alpha = ctx.needs_input_grad[:5]
    need_bias = need_bias and ctx.bias_shape is not None
    need_effective = need_weight or need_alpha
    backward = _KINDS[op][1]
    sizes = counts.tolist() if ctx.routed else list(ctx.segments)
    effective, sigma = path_weights(weight, mask, alpha, ctx.lams, ctx.seeds, counts)
    grouped_grad = grad_y.index_select(0, perm) if ctx.routed else grad_y
    grouped_x = x.index_select(0, perm) if ctx.routed and need_effective else x
    grad_effective = torch.zeros_like(effective) if need_effective else None
    grad_bias = grad_y.new_zeros(ctx.bias_shape) if need_bias else None
    grad_parts = []
    start = 0
    for p, size in enumerate(sizes):
        if not size:
            continue
        rows = slice(start, start + size)
        start += size
        gx, gw, gb = backward(
            grouped_grad[rows], grouped_x[rows], effective[p], ctx.conv, (need_x, need_effective, need_bias)
        )
        if need_x:
            grad_parts.append(gx)
        if need_effective:
            grad_effective[p] = gw
        if need_bias:
            grad_bias[0 if ctx.bias_shape[0] == 1 else p] += gb
    grad_x = None
    if need_x:
        grad_x = _scatter_back(grad_parts, perm, ctx.routed) if grad_parts else torch.zeros_like(x)
    grad_weight = grad_alpha = None
    if need_effective:
        grad_weight, grad_alpha = path_weights_backward(
            grad_effective, weight.shape[0], mask, alpha, sigma, ctx.lams, ctx.seeds, counts, need_alpha
        )
    nones = (None,) * (len(ctx.needs_input_grad) - 5)
    return (
        grad_x,
        grad_weight if need_weight else None,
        grad_bias,
        None,
        grad_alpha if need_alpha else None,
        *nones,
    )


@torch.library.custom_op("robustkernels::path_conv2d", mutates_args=())
def path_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    alpha: torch.Tensor | None,
    lams: list[float],
    seeds: list[int],
    route: torch.Tensor | None,
    segments: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    conv = (stride, padding, dilation, groups)
    return _routed_forward("path_conv2d", x, weight, bias, mask, alpha, lams, seeds, route, segments, conv)


@path_conv2d.register_fake
def _path_conv2d_fake(
    x, weight, bias, mask, alpha, lams, seeds, route, segments, stride, padding, dilation, groups
):
    paths, _ = _check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, "path_conv2d")
    y = F.conv2d(x, torch.empty_like(weight[0]), None, stride, padding, dilation, groups)
    perm = x.new_empty((x.shape[0] if route is not None else 0,), dtype=torch.int64)
    return y, perm, x.new_empty((paths,), dtype=torch.int64)


path_conv2d.register_autograd(
    lambda ctx, grad_y, _perm, _counts: _routed_backward("path_conv2d", ctx, grad_y),
    setup_context=_routed_setup_context,
)


@torch.library.custom_op("robustkernels::path_linear", mutates_args=())
def path_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    alpha: torch.Tensor | None,
    lams: list[float],
    seeds: list[int],
    route: torch.Tensor | None,
    segments: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _routed_forward("path_linear", x, weight, bias, mask, alpha, lams, seeds, route, segments, ())


@path_linear.register_fake
def _path_linear_fake(x, weight, bias, mask, alpha, lams, seeds, route, segments):
    paths, _ = _check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, "path_linear")
    perm = x.new_empty((x.shape[0] if route is not None else 0,), dtype=torch.int64)
    return x.new_empty((*x.shape[:-1], weight.shape[1])), perm, x.new_empty((paths,), dtype=torch.int64)


path_linear.register_autograd(
    lambda ctx, grad_y, _perm, _counts: _routed_backward("path_linear", ctx, grad_y),
    setup_context=_routed_setup_context,
)
