"""The routed multi-path weight transform and route sort: their kernels from Python, and fakes.

robustkernels::path_weights(weight [S, ...], mask [P, ...]?, alpha [P, A]?, lams, seeds, counts [P]?,
    seed_tensor?) -> (W' [P, ...], std [S]): every path's effective weight in one launch
robustkernels::path_weights_backward(...) -> (dW [S, ...], dalpha [P, A])
robustkernels::route_sort(route [B], num_paths) -> (counts [P], perm [B]): stable counting sort

S = 1 (one weight shared by all paths, as SMART and FLOAT) or P (a bank, as Ensemble-in-One
and EED). The ops and path_weights' autograd are C++ (csrc/ops/path_weights.cpp). This module
adds what Python provides: the Triton kernels as the CUDA kernels (there is no CUDA C++ path
kernel), the kernels the use_backend override chooses (Triton under its interpreter, the
reference), and the fakes that torch.compile traces with. The layers that route samples over
these weights are in path_conv.py.
"""

import itertools

import torch

from robustkernels import _extension, reference
from robustkernels.ops import backend, validation
from robustkernels.ops.device_values import constant_tensor, staged_tensor
from robustkernels.ops.noisy_weight import sigma_dtype
from robustkernels.ops.seed_tensor import check_seed_offset
from robustkernels.ops.seed_tensor import seed_offset as seed_offset_value
from robustkernels.ops.validation import check_counts, check_route, path_layout
from robustkernels.reference.noisy_weight import weight_std as reference_weight_std
from robustkernels.triton import available as _triton_available

if _triton_available:
    import triton

    from robustkernels.ops.noisy_weight import (
        MAX_STD_PARTIALS,
        NOISE_BLOCK,
        noise_block_launch,
        std_partials_launch,
    )
    from robustkernels.triton.noisy_weight import std_partials_kernel
    from robustkernels.triton.path_conv import (
        path_weights_bwd_kernel,
        path_weights_fwd_kernel,
        route_sort_kernel,
    )
    from robustkernels.triton.specialisation import (
        CHECKED_DTYPES,
        accumulator_dtype,
        specialise,
    )

# Elements of the [samples, paths] tile of the Triton counting sort, and the most paths it
# sorts (a tile of at least 16 samples); more paths sort with torch.
_SORT_TILE = 4096
_MAX_SORTED_PATHS = 256


# ---- path_weights -------------------------------------------------------------------------------


def _weights_forward_launch(has_mask, noisy, dtype) -> dict:
    return dict(
        HAS_MASK=has_mask,
        HAS_NOISE=noisy,
        NUM_PARTIALS=MAX_STD_PARTIALS,
        **noise_block_launch(dtype),
    )


def _weights_backward_launch(has_mask, alpha_grad, elementwise, dtype) -> dict:
    return dict(
        HAS_MASK=has_mask,
        ALPHA_GRAD=alpha_grad,
        # without an alpha gradient nothing is written per element: one specialisation
        ELEMENTWISE=alpha_grad and elementwise,
        **noise_block_launch(dtype),
    )


def _sort_launch(num_paths: int) -> dict:
    paths = triton.next_power_of_2(num_paths)
    # the whole tile whatever the batch (small batches leave lanes idle): one specialisation per PATHS
    return dict(BLOCK=max(16, _SORT_TILE // paths), PATHS=paths)


def triton_specialisations():
    """Every kernel specialisation the Triton launchers below can launch
    (tests/test_triton_compile.py compiles each; std_partials_kernel is listed with its own launcher)."""
    flags = (False, True)
    tables = dict(lam_ptr=torch.float64, seed_ptr=torch.int64, count_ptr=torch.int64)
    for dtype in CHECKED_DTYPES:
        acc = accumulator_dtype(dtype)
        for has_mask, noisy in itertools.product(flags, flags):
            launch = _weights_forward_launch(has_mask, noisy, dtype)
            yield specialise(
                path_weights_fwd_kernel, launch, dtype, mask_ptr=torch.uint8 if has_mask else dtype,
                sigma_ptr=acc, sum_ptr=acc, m2_ptr=acc, **tables,
            )  # fmt: skip
        for has_mask, alpha_grad, elementwise in itertools.product(flags, flags, flags):
            launch = _weights_backward_launch(has_mask, alpha_grad, elementwise, dtype)
            yield specialise(
                path_weights_bwd_kernel, launch, dtype, mask_ptr=torch.uint8 if has_mask else dtype,
                sigma_ptr=acc, grad_alpha_ptr=acc if alpha_grad and not elementwise else dtype, **tables,
            )  # fmt: skip
    for num_paths, route in itertools.product(range(1, _MAX_SORTED_PATHS + 1), (torch.int32, torch.int64)):
        yield specialise(route_sort_kernel, _sort_launch(num_paths), torch.int64, route_ptr=route)


def _seed_table(seeds, seed_offset, device) -> torch.Tensor:
    """The per-path seeds the Triton kernels read: staged from the host, or, with a device-held
    offset, the kept seeds plus that offset on the device (a CUDA graph replays the add)."""
    if seed_offset is None:
        return staged_tensor(seeds, torch.int64, device)
    return constant_tensor(seeds, torch.int64, device) + seed_offset


def _host_seeds(seeds, seed_offset) -> list[int]:
    """The seeds with a seed_offset added on the host (the reference kernels)."""
    offset = seed_offset_value(seed_offset)
    return [seed + offset for seed in seeds]


def _weights_forward_triton(weight, mask, alpha, lams, seeds, counts, layout, seed_offset=None):
    paths, entries, rows, inner, alpha_size = layout
    weight = weight.contiguous()
    n = rows * inner
    noisy = any(lam != 0 for lam in lams)
    acc_dtype = sigma_dtype(weight)
    partial_block = max(NOISE_BLOCK, triton.cdiv(n, MAX_STD_PARTIALS))
    num_partials = triton.cdiv(n, partial_block)
    sums = torch.zeros((entries, num_partials), dtype=acc_dtype, device=weight.device)
    m2 = torch.zeros_like(sums)
    if noisy:
        for entry in range(entries):
            std_partials_kernel[(num_partials,)](
                weight[entry], sums[entry], m2[entry], n, partial_block, **std_partials_launch(weight.dtype)
            )
    device = weight.device
    sigma = torch.zeros(entries, dtype=acc_dtype, device=device)
    out = torch.empty((paths, *weight.shape[1:]), dtype=weight.dtype, device=device)
    launch = _weights_forward_launch(mask is not None, noisy, weight.dtype)
    path_weights_fwd_kernel[(paths, triton.cdiv(n, launch["BLOCK"]))](
        weight,
        mask.contiguous().view(torch.uint8) if mask is not None else weight,
        alpha.contiguous() if alpha is not None else weight,
        constant_tensor(lams, torch.float64, device),
        _seed_table(seeds, seed_offset, device),
        counts if counts is not None else torch.ones(paths, dtype=torch.int64, device=device),
        sigma,
        sums,
        m2,
        out,
        n,
        inner,
        alpha_size,
        num_partials,
        partial_block,
        entries,
        **launch,
    )
    return out, sigma


def _weights_backward_triton(
    grad, entries, mask, sigma, lams, seeds, counts, need_alpha, layout, seed_offset=None
):
    paths, _, rows, inner, alpha_size = layout
    grad = grad.contiguous()
    device = grad.device
    n = rows * inner
    blocks_per_row = triton.cdiv(inner, NOISE_BLOCK)
    alpha_grad = need_alpha and alpha_size > 0 and any(lam != 0 for lam in lams)
    elementwise = alpha_size == n and n > 1 and alpha_size != rows
    grad_weight = torch.empty((entries, *grad.shape[1:]), dtype=grad.dtype, device=device)
    if alpha_grad and elementwise:
        grad_alpha = torch.empty((paths, n), dtype=grad.dtype, device=device)
    elif alpha_grad:
        grad_alpha = torch.empty((paths, rows, blocks_per_row), dtype=sigma.dtype, device=device)
    else:
        grad_alpha = grad_weight  # not written
    path_weights_bwd_kernel[(entries * rows, blocks_per_row)](
        grad,
        mask.contiguous().view(torch.uint8) if mask is not None else grad,
        constant_tensor(lams, torch.float64, device),
        _seed_table(seeds, seed_offset, device),
        counts if counts is not None else torch.ones(paths, dtype=torch.int64, device=device),
        sigma,
        grad_weight,
        grad_alpha,
        paths,
        rows,
        inner,
        blocks_per_row,
        entries,
        **_weights_backward_launch(mask is not None, alpha_grad, elementwise, grad.dtype),
    )
    if not need_alpha or alpha_size == 0:
        return grad_weight, grad.new_empty(0)
    if not alpha_grad:
        return grad_weight, grad.new_zeros((paths, alpha_size))
    if not elementwise:
        grad_alpha = grad_alpha.sum(dim=2)
        grad_alpha = grad_alpha.sum(dim=1, keepdim=True) if alpha_size == 1 else grad_alpha
    return grad_weight, grad_alpha.to(grad.dtype)


def _active(counts, paths: int, device) -> torch.Tensor:
    if counts is None:
        return torch.ones(paths, dtype=torch.bool, device=device)
    return counts > 0


def _broadcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape + (1,) * (like.dim() - t.dim()))


def _weights_forward_reference(weight, mask, alpha, lams, seeds, counts, layout):
    paths, entries = layout[:2]
    sigma = torch.stack([reference_weight_std(weight[s]) for s in range(entries)]).to(sigma_dtype(weight))
    out = reference.path_weights(weight, lams, seeds, alpha, mask)
    out = torch.where(_broadcast(_active(counts, paths, weight.device), out), out, 0)
    return out.contiguous(), sigma


def _weights_backward_reference(grad, entries, mask, sigma, lams, seeds, counts, need_alpha, layout):
    paths, _, rows, _, alpha_size = layout
    active = _broadcast(_active(counts, paths, grad.device), grad)
    kept = torch.where(active, grad if mask is None else grad * mask, 0)
    grad_weight = kept.sum(dim=0, keepdim=True) if entries == 1 else kept
    if not need_alpha or alpha_size == 0:
        return grad_weight.contiguous(), grad.new_empty(0)
    grad_alpha = []
    for p in range(paths):
        noise = reference.philox_normal(seeds[p], kept[p].numel(), device=grad.device)
        scale = lams[p] * sigma[0 if entries == 1 else p]
        per_element = (kept[p].reshape(-1).to(sigma.dtype) * noise * scale).reshape(rows, -1)
        if alpha_size == 1:
            grad_alpha.append(per_element.sum().reshape(1))
        elif alpha_size == rows:
            grad_alpha.append(per_element.sum(dim=1))
        else:
            grad_alpha.append(per_element.reshape(-1))
    return grad_weight.contiguous(), torch.stack(grad_alpha).to(grad.dtype)


def _python_weights_forward(weight, mask, alpha, lams, seeds, counts, seed_offset=None):
    """The weight kernel of the backend use_backend chose (robustkernels::path_weights_fwd_python)."""
    layout = path_layout(weight, mask, alpha, lams, seeds, "path_weights")
    check_counts(counts, layout[0], weight, "path_weights")
    check_seed_offset(seed_offset, weight, "path_weights")
    name = backend.select_without_cuda("path_weights", weight.device, "path")
    if name == "cpp":
        return torch.ops.robustkernels.path_weights_fwd_kernel(
            weight, mask, alpha, lams, seeds, counts, seed_offset
        )
    if name == "triton":
        return _weights_forward_triton(weight, mask, alpha, lams, seeds, counts, layout, seed_offset)
    return _weights_forward_reference(
        weight, mask, alpha, lams, _host_seeds(seeds, seed_offset), counts, layout
    )


def _python_weights_backward(
    grad, entries, mask, alpha, sigma, lams, seeds, counts, need_alpha_grad, seed_offset=None
):
    """The weight backward kernel of the backend use_backend chose (path_weights_bwd_python)."""
    layout = _check_backward(grad, entries, mask, alpha, sigma, lams, seeds, counts, "grad_out")
    check_seed_offset(seed_offset, grad, "path_weights_backward")
    name = backend.select_without_cuda("path_weights_backward", grad.device, "path")
    if name == "cpp":
        return torch.ops.robustkernels.path_weights_bwd_kernel(
            grad, entries, mask, alpha, sigma, lams, seeds, counts, need_alpha_grad, seed_offset
        )
    if name == "triton":
        return _weights_backward_triton(
            grad, entries, mask, sigma, lams, seeds, counts, need_alpha_grad, layout, seed_offset
        )
    seeds = _host_seeds(seeds, seed_offset)
    return _weights_backward_reference(
        grad, entries, mask, sigma, lams, seeds, counts, need_alpha_grad, layout
    )


def _cuda_weights_forward(weight, mask, alpha, lams, seeds, counts, seed_offset=None):
    """The CUDA weight kernel (there is no CUDA C++ one): Triton, else the reference (which reads a
    device-held offset on the host)."""
    layout = path_layout(weight, mask, alpha, lams, seeds, "path_weights")
    check_counts(counts, layout[0], weight, "path_weights")
    check_seed_offset(seed_offset, weight, "path_weights")
    if _triton_available:
        return _weights_forward_triton(weight, mask, alpha, lams, seeds, counts, layout, seed_offset)
    return _weights_forward_reference(
        weight, mask, alpha, lams, _host_seeds(seeds, seed_offset), counts, layout
    )


def _cuda_weights_backward(
    grad, entries, mask, alpha, sigma, lams, seeds, counts, need_alpha_grad, seed_offset=None
):
    layout = _check_backward(grad, entries, mask, alpha, sigma, lams, seeds, counts, "grad_out")
    check_seed_offset(seed_offset, grad, "path_weights_backward")
    if _triton_available:
        return _weights_backward_triton(
            grad, entries, mask, sigma, lams, seeds, counts, need_alpha_grad, layout, seed_offset
        )
    seeds = _host_seeds(seeds, seed_offset)
    return _weights_backward_reference(
        grad, entries, mask, sigma, lams, seeds, counts, need_alpha_grad, layout
    )


def _path_weights_fake(weight, mask, alpha, lams, seeds, counts, seed_tensor=None):
    paths, entries = path_layout(weight, mask, alpha, lams, seeds, "path_weights")[:2]
    check_counts(counts, paths, weight, "path_weights")
    return weight.new_empty((paths, *weight.shape[1:])), weight.new_empty(
        (entries,), dtype=sigma_dtype(weight)
    )


def _check_backward(grad, entries, mask, alpha, sigma, lams, seeds, counts, grad_name="grad"):
    """The backward's arguments (the kernels name the gradient grad_out, the op grad)."""
    op = "path_weights_backward"
    layout = path_layout(grad, mask, alpha, lams, seeds, op, grad_name)
    paths = layout[0]
    check_counts(counts, paths, grad, op)
    if grad.shape[0] != paths:  # dW' holds every path's entry, whatever the bank shares
        raise ValueError(
            f"robustkernels.{op}: {grad_name} must hold one entry per path ({paths}), got {grad.shape[0]}"
        )
    validation.check_sigma(sigma, grad, op)
    if entries not in (1, paths) or sigma.shape != (entries,):
        raise ValueError(
            f"robustkernels.{op}: entries must be 1 or {paths} and sigma [entries], "
            f"got {entries} and {tuple(sigma.shape)}"
        )
    return layout


def _path_weights_backward_fake(
    grad, entries, mask, alpha, sigma, lams, seeds, counts, need_alpha_grad, seed_tensor=None
):
    paths, _, _, _, alpha_size = _check_backward(grad, entries, mask, alpha, sigma, lams, seeds, counts)
    grad_alpha = grad.new_empty((paths, alpha_size)) if need_alpha_grad and alpha_size else grad.new_empty(0)
    return grad.new_empty((entries, *grad.shape[1:])), grad_alpha


# ---- route_sort ---------------------------------------------------------------------------------


def _route_sort_triton(route, num_paths):
    batch = route.shape[0]
    counts = torch.empty(num_paths, dtype=torch.int64, device=route.device)
    perm = torch.empty(batch, dtype=torch.int64, device=route.device)
    route_sort_kernel[(1,)](route.contiguous(), counts, perm, batch, num_paths, **_sort_launch(num_paths))
    return counts, perm


def route_sort_reference(route, num_paths):
    valid = (route >= 0) & (route < num_paths)
    counts = torch.bincount(route[valid].long(), minlength=num_paths)
    # out-of-range entries sort last and are counted nowhere: the caller sees counts sum below B
    return counts, torch.argsort(torch.where(valid, route.long(), num_paths), stable=True)


def _python_route_sort(route, num_paths):
    """The route sort of the backend use_backend chose (robustkernels::route_sort_python)."""
    check_route(route, num_paths, "route_sort")
    name = backend.select_without_cuda("route_sort", route.device, "path")
    if name == "cpp":
        return torch.ops.robustkernels.route_sort_kernel(route, num_paths)
    if name == "triton" and num_paths <= _MAX_SORTED_PATHS:
        return _route_sort_triton(route, num_paths)
    return route_sort_reference(route, num_paths)


def _cuda_route_sort(route, num_paths):
    if _triton_available and num_paths <= _MAX_SORTED_PATHS:
        return _route_sort_triton(route, num_paths)
    return route_sort_reference(route, num_paths)


def _route_sort_fake(route, num_paths):
    check_route(route, num_paths, "route_sort")
    return route.new_empty((num_paths,), dtype=torch.int64), route.new_empty(route.shape, dtype=torch.int64)


if _extension.is_loaded():
    # The ops are defined, and dispatched with their autograd, in C++ (csrc/ops/path_weights.cpp).
    path_weights = torch.ops.robustkernels.path_weights.default
    path_weights_backward = torch.ops.robustkernels.path_weights_backward.default
    route_sort = torch.ops.robustkernels.route_sort.default
    torch.library.register_fake("robustkernels::path_weights")(_path_weights_fake)
    torch.library.register_fake("robustkernels::path_weights_backward")(_path_weights_backward_fake)
    torch.library.register_fake("robustkernels::route_sort")(_route_sort_fake)
    for _name, _python, _cuda in (
        ("path_weights_fwd", _python_weights_forward, _cuda_weights_forward),
        ("path_weights_bwd", _python_weights_backward, _cuda_weights_backward),
        ("route_sort", _python_route_sort, _cuda_route_sort),
    ):
        torch.library.impl(f"robustkernels::{_name}_python", "CompositeExplicitAutograd")(_python)
        torch.library.impl(f"robustkernels::{_name}_kernel", "CUDA")(_cuda)
