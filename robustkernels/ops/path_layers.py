"""Routed convolution and linear layers over a bank of path weights, as custom ops.

Forward: the samples are grouped by path (device counting sort and one small read of
the per-path counts for a route tensor; nothing for segments), every used path's W'
is built in one launch, each group runs through the platform convolution / matmul,
and the results return to the batch order with one index_copy_. Backward: W' is
rebuilt and the noise regenerated (neither is saved); each group's platform backward
gives its dx and dW'_p; dW'_p of unused paths stay zero, so their dW is exactly zero.
An optional `seed_tensor` (added to every seed inside the op, see seed_tensor.py) is saved
for the backward.
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


def _check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, op, groups=1):
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


def _group(x, route, segments, paths: int, op: str):
    """(x grouped by path, sizes per path, counts tensor, perm)."""
    if route is None:
        counts = torch.tensor(segments, dtype=torch.int64, device=x.device)
        return x, list(segments), counts, x.new_empty(0, dtype=torch.int64)
    counts, perm = torch.ops.robustkernels.route_sort(route, paths)
    sizes = counts.tolist()  # the one host read: the group sizes
    if sum(sizes) != x.shape[0]:
        raise ValueError(f"robustkernels.{op}: route values must lie in [0, {paths})")
    # advanced indexing gathers in parallel; index_select ran ~4x slower on a [128, 64, 32, 32] CPU batch
    return x[perm], sizes, counts, perm


def _scatter_back(
    parts: list[torch.Tensor], perm: torch.Tensor, sizes: list[int], routed: bool
) -> torch.Tensor:
    """The per-path results in batch order: each group written straight to its samples' rows."""
    if not routed:
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    out = parts[0].new_empty((perm.shape[0], *parts[0].shape[1:]))
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    for part, (start, size) in zip(
        parts, [(a, n) for a, n in zip(starts, sizes, strict=False) if n], strict=True
    ):
        out.index_copy_(0, perm[start : start + size], part)
    return out


def _bias_of(bias, p):
    return None if bias is None else bias[0 if bias.shape[0] == 1 else p]


def _routed_forward(op, x, weight, bias, mask, alpha, lams, seeds, route, segments, conv, seed_tensor):
    groups = conv[3] if conv else 1
    paths, _ = _check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, op, groups)
    forward = _KINDS[op][0]
    grouped, sizes, counts, perm = _group(x, route, segments, paths, op)
    effective, _ = path_weights(weight, mask, alpha, lams, seeds, counts, seed_tensor)
    parts = [
        forward(chunk, effective[p], _bias_of(bias, p), conv)
        for p, chunk in enumerate(grouped.split(sizes))
        if sizes[p]
    ]
    routed = route is not None
    # the grouped input is what the weight gradients need: returned so that the backward
    # saves it instead of gathering x again
    saved_input = grouped if routed else x.new_empty(0)
    if not parts:  # empty batch
        return forward(x, effective[0], _bias_of(bias, 0), conv), perm, counts, saved_input
    return _scatter_back(parts, perm, sizes, routed), perm, counts, saved_input


def _routed_setup_context(ctx, inputs, output):
    x, weight, bias, mask, alpha, lams, seeds, _, segments = inputs[:9]
    seed_tensor = inputs[-1]
    ctx.save_for_backward(output[3] if segments == [] else x, weight, mask, alpha, *output[1:3], seed_tensor)
    ctx.lams, ctx.seeds, ctx.segments = lams, seeds, segments
    ctx.bias_entries = 0 if bias is None else bias.shape[0]
    ctx.conv = list(inputs[9:-1])
    ctx.backend = backend.explicit_choice()


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


def _routed_grads(
    op,
    grad_y,
    x,
    weight,
    mask,
    alpha,
    perm,
    counts,
    lams,
    seeds,
    segments,
    bias_entries,
    conv,
    needs,
    seed_tensor,
):
    """(dx, dW, dbias, dalpha), empty where not asked for. With a route tensor (segments == []) x is
    the grouped input saved by the forward, grad_y is grouped by the saved perm, and the counts
    are read once more (the group sizes)."""
    _check_grads_args(
        op, grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, needs
    )
    need_x, need_weight, need_bias, need_alpha = needs
    need_bias = need_bias and bias_entries > 0
    need_effective = need_weight or need_alpha
    backward = _KINDS[op][1]
    routed = not segments
    sizes = list(segments)
    if routed:
        # the one host read: the group sizes and perm's bounds (perm indexes grad_y)
        bounds = torch.stack(torch.aminmax(perm)) if perm.numel() else perm.new_zeros(2)
        *sizes, low, high = torch.cat([counts, bounds]).tolist()
        batch = x.shape[0]
        if sum(sizes) != batch or min(sizes) < 0:
            raise ValueError(
                f"robustkernels.{op}_backward: counts must be non-negative and sum to the batch {batch}, got {sizes}"
            )
        if low < 0 or high >= max(batch, 1):
            raise ValueError(
                f"robustkernels.{op}_backward: perm must index the batch [0, {batch}), got values in [{low}, {high}]"
            )
    effective, sigma = path_weights(weight, mask, alpha, lams, seeds, counts, seed_tensor)
    grouped_grad = grad_y[perm] if routed else grad_y
    grad_effective = torch.zeros_like(effective) if need_effective else None
    grad_bias = grad_y.new_zeros((bias_entries, weight.shape[1])) if need_bias else grad_y.new_empty(0)
    grad_parts = []
    start = 0
    for p, size in enumerate(sizes):
        if not size:
            continue
        rows = slice(start, start + size)
        start += size
        gx, gw, gb = backward(
            grouped_grad[rows], x[rows], effective[p], conv, (need_x, need_effective, need_bias)
        )
        if need_x:
            grad_parts.append(gx)
        if need_effective:
            grad_effective[p] = gw
        if need_bias:
            grad_bias[0 if bias_entries == 1 else p] += gb
    grad_x = grad_y.new_empty(0)
    if need_x:
        grad_x = _scatter_back(grad_parts, perm, sizes, routed) if grad_parts else torch.zeros_like(x)
    # two tensors: a custom op's outputs may not alias each other
    grad_weight, grad_alpha = grad_y.new_empty(0), grad_y.new_empty(0)
    if need_effective:
        grad_weight, grad_alpha = path_weights_backward(
            grad_effective, weight.shape[0], mask, alpha, sigma, lams, seeds, counts, need_alpha, seed_tensor
        )
    return grad_x, grad_weight, grad_bias, grad_alpha


def _grouped_fake(x, route):
    return torch.empty_like(x, memory_format=torch.contiguous_format) if route is not None else x.new_empty(0)


def _routed_grads_fake(grad_y, x, weight, alpha, bias_entries, needs):
    need_x, need_weight, need_bias, need_alpha = needs
    empty = grad_y.new_empty(0)
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else empty,
        torch.empty_like(weight, memory_format=torch.contiguous_format)
        if need_weight or need_alpha
        else empty,
        grad_y.new_empty((bias_entries, weight.shape[1])) if need_bias and bias_entries else empty,
        alpha.new_empty(alpha.shape) if need_alpha and alpha is not None else empty,
    )


def _routed_backward(backward_op, ctx, grad_y):
    x, weight, mask, alpha, perm, counts, seed_tensor = ctx.saved_tensors
    needs = [ctx.needs_input_grad[i] for i in (0, 1, 2, 4)]
    with backend.restore_choice(ctx.backend):
        grad_x, grad_weight, grad_bias, grad_alpha = backward_op(
            grad_y, x, weight, mask, alpha, perm, counts, ctx.lams, ctx.seeds, ctx.segments, ctx.bias_entries,
            *ctx.conv, needs, seed_tensor,
        )  # fmt: skip
    grads = [
        g if need else None
        for g, need in zip((grad_x, grad_weight, grad_bias, grad_alpha), needs, strict=True)
    ]
    grads[2] = grads[2] if ctx.bias_entries else None
    nones = (None,) * (len(ctx.needs_input_grad) - 5)
    return grads[0], grads[1], grads[2], None, grads[3], *nones


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
    seed_tensor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    conv = (stride, padding, dilation, groups)
    return _routed_forward(
        "path_conv2d", x, weight, bias, mask, alpha, lams, seeds, route, segments, conv, seed_tensor
    )


@path_conv2d.register_fake
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
    paths, _ = _check_layer_args(
        x, weight, bias, mask, alpha, lams, seeds, route, segments, "path_conv2d", groups
    )
    y = F.conv2d(x, torch.empty_like(weight[0]), None, stride, padding, dilation, groups)
    perm = x.new_empty((x.shape[0] if route is not None else 0,), dtype=torch.int64)
    return y, perm, x.new_empty((paths,), dtype=torch.int64), _grouped_fake(x, route)


@torch.library.custom_op("robustkernels::path_conv2d_backward", mutates_args=())
def path_conv2d_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor | None,
    alpha: torch.Tensor | None,
    perm: torch.Tensor,
    counts: torch.Tensor,
    lams: list[float],
    seeds: list[int],
    segments: list[int],
    bias_entries: int,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    needs: list[bool],
    seed_tensor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    conv = (stride, padding, dilation, groups)
    return _routed_grads(
        "path_conv2d", grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, conv,
        needs, seed_tensor,
    )  # fmt: skip


@path_conv2d_backward.register_fake
def _path_conv2d_backward_fake(
    grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, stride, padding, dilation,
    groups, needs, seed_tensor=None,
):  # fmt: skip
    _check_grads_args(
        "path_conv2d", grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, needs
    )  # fmt: skip
    return _routed_grads_fake(grad_y, x, weight, alpha, bias_entries, needs)


path_conv2d.register_autograd(
    lambda ctx, grad_y, _perm, _counts, _grouped: _routed_backward(path_conv2d_backward, ctx, grad_y),
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
    seed_tensor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _routed_forward(
        "path_linear", x, weight, bias, mask, alpha, lams, seeds, route, segments, (), seed_tensor
    )


@path_linear.register_fake
def _path_linear_fake(x, weight, bias, mask, alpha, lams, seeds, route, segments, seed_tensor=None):
    paths, _ = _check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, "path_linear")
    perm = x.new_empty((x.shape[0] if route is not None else 0,), dtype=torch.int64)
    y = x.new_empty((*x.shape[:-1], weight.shape[1]))
    return y, perm, x.new_empty((paths,), dtype=torch.int64), _grouped_fake(x, route)


@torch.library.custom_op("robustkernels::path_linear_backward", mutates_args=())
def path_linear_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor | None,
    alpha: torch.Tensor | None,
    perm: torch.Tensor,
    counts: torch.Tensor,
    lams: list[float],
    seeds: list[int],
    segments: list[int],
    bias_entries: int,
    needs: list[bool],
    seed_tensor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _routed_grads(
        "path_linear", grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, (),
        needs, seed_tensor,
    )  # fmt: skip


@path_linear_backward.register_fake
def _path_linear_backward_fake(
    grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, needs, seed_tensor=None
):
    _check_grads_args(
        "path_linear", grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments, bias_entries, needs
    )  # fmt: skip
    return _routed_grads_fake(grad_y, x, weight, alpha, bias_entries, needs)


path_linear.register_autograd(
    lambda ctx, grad_y, _perm, _counts, _grouped: _routed_backward(path_linear_backward, ctx, grad_y),
    setup_context=_routed_setup_context,
)
