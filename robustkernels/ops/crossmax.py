"""CrossMax (multi-resolution self-ensemble aggregation): its kernels from Python and its ops' fakes.

robustkernels::crossmax(logits [N, B, C], k, reduction) -> (out [B, C], class_idx [N, B],
    pred_idx [B, C], sel_idx [S, B, C])
robustkernels::crossmax_backward(grad [B, C], class_idx, pred_idx, sel_idx) -> d logits [N, B, C]

The int32 index outputs are what the backward needs (argmax over classes per
predictor and sample, argmax over predictors per sample and class, the selected
predictors: S = k for "topk_mean", else 1), saved instead of recomputed. Ties go
to the lowest index on every backend.

The ops and their autograd are C++ (csrc/ops/crossmax.cpp): the dispatcher runs the kernel of the
logits' device, the C++ one on CPU (robustkernels::crossmax_*_kernel) and on CUDA the Triton
kernels registered here (there is no CUDA C++ kernel). This module adds the kernels the
use_backend override chooses (the C++ kernels, Triton, the reference) and the fakes that
torch.compile traces with.
"""

import itertools

import torch

from robustkernels import _extension
from robustkernels.ops import backend, validation
from robustkernels.triton import available as _triton_available

if _triton_available:
    import triton

    from robustkernels.triton.crossmax import crossmax_bwd_kernel, crossmax_fwd_kernel
    from robustkernels.triton.specialisation import CHECKED_DTYPES, MAX_REGISTERS, accumulator, specialise

# Elements of one [BLOCK_N, BLOCK_C] Triton tile, and the predictors it holds: at least
# _MIN_PREDICTOR_BLOCK rows (fewer predictors leave rows idle), at most _MAX_PREDICTORS
# (more run with the reference).
_TILE = 4096
_MIN_PREDICTOR_BLOCK = 16
_MAX_PREDICTORS = 64
# 16 tile elements a thread
_WARPS = 8


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _blocks(num_predictors: int) -> dict:
    # a whole tile of classes whatever their number: one specialisation per predictor block
    block_n = max(_MIN_PREDICTOR_BLOCK, triton.next_power_of_2(num_predictors))
    return dict(BLOCK_N=block_n, BLOCK_C=max(2, _TILE // block_n), num_warps=_WARPS, maxnreg=MAX_REGISTERS)


def _forward_launch(num_predictors: int, mean: bool, from_top: bool, dtype: torch.dtype) -> dict:
    return dict(MEAN=mean, FROM_TOP=from_top, **_blocks(num_predictors), ACC=accumulator(dtype))


def _backward_launch(num_predictors: int, dtype: torch.dtype) -> dict:
    return dict(**_blocks(num_predictors), ACC=accumulator(dtype))


def triton_specialisations():
    """Every kernel specialisation the Triton launchers below can launch
    (tests/test_triton_compile.py compiles each)."""
    indices = dict(class_ptr=torch.int32, pred_ptr=torch.int32, sel_ptr=torch.int32)
    for dtype, num_predictors in itertools.product(CHECKED_DTYPES, range(1, _MAX_PREDICTORS + 1)):
        # topk_mean takes the top k; a single rank is reached from the top or from the bottom
        for mean, from_top in ((True, True), (False, True), (False, False)):
            launch = _forward_launch(num_predictors, mean, from_top, dtype)
            yield specialise(crossmax_fwd_kernel, launch, dtype, **indices)
        yield specialise(crossmax_bwd_kernel, _backward_launch(num_predictors, dtype), dtype, **indices)


def _fits_triton(num_predictors: int) -> bool:
    return num_predictors <= _MAX_PREDICTORS


def _forward_triton(logits, k, reduction, rank, count):
    n, b, c = logits.shape
    device = logits.device
    out = torch.empty((b, c), dtype=logits.dtype, device=device)
    class_idx = torch.empty((n, b), dtype=torch.int32, device=device)
    pred_idx = torch.empty((b, c), dtype=torch.int32, device=device)
    sel_idx = torch.empty((count, b, c), dtype=torch.int32, device=device)
    mean = reduction == "topk_mean"
    # rank r is the (r + 1)-th extraction from the top or the (n - r)-th from the bottom.
    from_top = mean or rank + 1 <= n - rank
    steps = count if mean else (rank + 1 if from_top else n - rank)
    crossmax_fwd_kernel[(b,)](
        logits,
        out,
        class_idx,
        pred_idx,
        sel_idx,
        n,
        b,
        c,
        logits.stride(0),
        logits.stride(1),
        logits.stride(2),
        steps,
        **_forward_launch(n, mean, from_top, logits.dtype),
    )
    return out, class_idx, pred_idx, sel_idx


def _backward_triton(grad, class_idx, pred_idx, sel_idx):
    n, (b, c) = class_idx.shape[0], grad.shape
    grad = grad.contiguous()
    out = torch.empty((n, b, c), dtype=grad.dtype, device=grad.device)
    crossmax_bwd_kernel[(b,)](
        grad,
        class_idx.contiguous(),
        pred_idx.contiguous(),
        sel_idx.contiguous(),
        out,
        n,
        b,
        c,
        sel_idx.shape[0],
        **_backward_launch(n, grad.dtype),
    )
    return out


def _forward_reference(logits, rank, count):
    """The same result and indices from torch ops (argmax and stable sort keep the lowest index)."""
    x = logits.to(_acc_dtype(logits))
    class_idx = x.argmax(dim=2)
    y = x - x.gather(2, class_idx.unsqueeze(2))
    pred_idx = y.argmax(dim=0)
    z = y - y.gather(0, pred_idx.unsqueeze(0))
    values, order = torch.sort(z, dim=0, descending=True, stable=True)
    if count == 1:
        out, sel_idx = values[rank], order[rank : rank + 1]
    else:
        out, sel_idx = values[:count].mean(dim=0), order[:count]
    as_int = lambda t: t.to(torch.int32).contiguous()  # noqa: E731
    return out.to(logits.dtype), as_int(class_idx), as_int(pred_idx), as_int(sel_idx)


def _backward_reference(grad, class_idx, pred_idx, sel_idx):
    n, (b, c) = class_idx.shape[0], grad.shape
    s = sel_idx.shape[0]
    g = (grad.to(_acc_dtype(grad)) / s).unsqueeze(0).expand(s, b, c)
    sel, pred = sel_idx.long(), pred_idx.long().unsqueeze(0).expand(s, b, c)
    # d z-terms per class: +g at the selected predictor, -g at the argmax predictor
    dz = torch.zeros((n, b, c), dtype=g.dtype, device=grad.device)
    dz.scatter_add_(0, sel, g).scatter_add_(0, pred, -g)
    # the max over classes: minus each row's sum, at the row's argmax class
    return dz.scatter_add_(2, class_idx.long().unsqueeze(2), -dz.sum(dim=2, keepdim=True)).to(grad.dtype)


def check_types(k, reduction, predictor_dim) -> None:
    """The public function's type checks (the op's schema would reject these with a generic
    message); the kernels check the values."""
    for name, value in (("k", k), ("predictor_dim", predictor_dim)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"robustkernels.crossmax: {name} must be an int, got {type(value).__name__}")
    if not isinstance(reduction, str):
        raise TypeError(f"robustkernels.crossmax: reduction must be a str, got {type(reduction).__name__}")


def _forward(logits, k, reduction, name):
    rank, count = validation.crossmax_args(logits, k, reduction, "crossmax")
    if name == "cpp":
        return torch.ops.robustkernels.crossmax_fwd_kernel(logits, k, reduction)
    if name == "triton" and _fits_triton(logits.shape[0]):
        return _forward_triton(logits, k, reduction, rank, count)
    return _forward_reference(logits, rank, count)


def _check_backward_args(grad, class_idx, pred_idx, sel_idx, op: str) -> None:
    for name, value in (
        ("grad", grad),
        ("class_idx", class_idx),
        ("pred_idx", pred_idx),
        ("sel_idx", sel_idx),
    ):
        validation.check_tensor(name, value, op)
    if grad.dtype not in validation.KERNEL_FLOAT_DTYPES:
        raise TypeError(
            f"robustkernels.{op}: grad must be float32, float64, float16 or bfloat16, got {grad.dtype}"
        )
    for name, value in (("class_idx", class_idx), ("pred_idx", pred_idx), ("sel_idx", sel_idx)):
        if value.dtype != torch.int32:
            raise TypeError(f"robustkernels.{op}: {name} must be an int32 tensor, got {value.dtype}")
        if value.device != grad.device:
            raise ValueError(
                f"robustkernels.{op}: {name} must be on grad's device {grad.device}, got {value.device}"
            )
    if grad.dim() != 2 or class_idx.dim() != 2 or sel_idx.dim() != 3 or pred_idx.shape != grad.shape:
        raise ValueError(
            f"robustkernels.{op}: expected grad [B, C], class_idx [N, B], pred_idx [B, C], sel_idx [S, B, C], "
            f"got {tuple(grad.shape)}, {tuple(class_idx.shape)}, {tuple(pred_idx.shape)}, {tuple(sel_idx.shape)}"
        )
    batch, classes = grad.shape
    if (
        class_idx.shape[1] != batch
        or sel_idx.shape[1:] != grad.shape
        or not 1 <= sel_idx.shape[0] <= class_idx.shape[0]
    ):
        raise ValueError(
            f"robustkernels.{op}: class_idx must be [N, {batch}] and sel_idx [S <= N, {batch}, {classes}], "
            f"got {tuple(class_idx.shape)} and {tuple(sel_idx.shape)}"
        )


def _check_index_ranges(grad, class_idx, pred_idx, sel_idx, op: str) -> None:
    """The indices address [N, B, C]; the Triton kernel and the reference read through them
    unchecked (the C++ kernel checks them itself). One host read for all three."""
    bounds = {"class_idx": (class_idx, grad.shape[1]), "pred_idx": (pred_idx, class_idx.shape[0])}
    bounds["sel_idx"] = (sel_idx, class_idx.shape[0])
    named = [(name, bound, t) for name, (t, bound) in bounds.items() if t.numel()]
    if not named:
        return
    spans = torch.stack([torch.stack(torch.aminmax(t)) for _, _, t in named]).tolist()
    for (name, bound, _), (low, high) in zip(named, spans, strict=True):
        if low < 0 or high >= bound:
            raise ValueError(
                f"robustkernels.{op}: {name} holds an index out of range [0, {bound}): its values span [{low}, {high}]"
            )


def _backward(grad, class_idx, pred_idx, sel_idx, name, trusted_indices=False):
    _check_backward_args(grad, class_idx, pred_idx, sel_idx, "crossmax_backward")
    if name == "cpp":
        return torch.ops.robustkernels.crossmax_bwd_kernel(grad, class_idx, pred_idx, sel_idx)
    if not trusted_indices:  # the autograd node's are the forward kernel's own
        _check_index_ranges(grad, class_idx, pred_idx, sel_idx, "crossmax_backward")
    if name == "triton" and _fits_triton(class_idx.shape[0]):
        return _backward_triton(grad, class_idx, pred_idx, sel_idx)
    return _backward_reference(grad, class_idx, pred_idx, sel_idx)


def _python_forward(logits, k, reduction):
    """The kernel of the backend use_backend chose (robustkernels::crossmax_fwd_python)."""
    return _forward(logits, k, reduction, backend.select_without_cuda("crossmax", logits.device, "CrossMax"))


def _python_backward(grad, class_idx, pred_idx, sel_idx, trusted_indices=False):
    """robustkernels::crossmax_bwd_python: the backward kernel of the backend use_backend chose."""
    name = backend.select_without_cuda("crossmax_backward", grad.device, "CrossMax")
    return _backward(grad, class_idx, pred_idx, sel_idx, name, trusted_indices)


def _cuda_forward(logits, k, reduction):
    """The CUDA kernel (there is no CUDA C++ one): Triton, else the reference."""
    return _forward(logits, k, reduction, "triton" if _triton_available else "reference")


def _cuda_backward(grad, class_idx, pred_idx, sel_idx, trusted_indices=False):
    name = "triton" if _triton_available else "reference"
    return _backward(grad, class_idx, pred_idx, sel_idx, name, trusted_indices)


def _crossmax_fake(logits, k, reduction):
    _, count = validation.crossmax_args(logits, k, reduction, "crossmax")
    n, b, c = logits.shape
    return (
        logits.new_empty((b, c)),
        logits.new_empty((n, b), dtype=torch.int32),
        logits.new_empty((b, c), dtype=torch.int32),
        logits.new_empty((count, b, c), dtype=torch.int32),
    )


def _crossmax_backward_fake(grad, class_idx, pred_idx, sel_idx, trusted_indices=False):
    _check_backward_args(grad, class_idx, pred_idx, sel_idx, "crossmax_backward")
    return grad.new_empty((class_idx.shape[0], *grad.shape))


def _backward_adjoint(ctx, grad_of_dlogits):
    """crossmax_backward's own backward (a double backward through CrossMax): dlogits is linear in
    grad, so its adjoint gathers through the same indices. Its gradients in the indices are None."""
    class_idx, pred_idx, sel_idx = ctx.saved_tensors
    v = grad_of_dlogits
    # dlogits = dz - (row sum of dz) at each row's argmax class
    vz = v - v.gather(2, class_idx.long().unsqueeze(2))
    # dz: +grad / S at each selected predictor, -grad / S at the argmax predictor, S times
    selected = vz.gather(0, sel_idx.long()).mean(dim=0)
    return selected - vz.gather(0, pred_idx.long().unsqueeze(0)).squeeze(0), None, None, None


def _save_indices(ctx, inputs, output):
    ctx.save_for_backward(*inputs[1:])


if _extension.is_loaded():
    # The ops are defined, and dispatched with their autograd, in C++ (csrc/ops/crossmax.cpp).
    # crossmax_backward's autograd (a double backward) is the adjoint above, in torch ops.
    torch.library.register_autograd(
        "robustkernels::crossmax_backward", _backward_adjoint, setup_context=_save_indices
    )
    crossmax = torch.ops.robustkernels.crossmax.default
    crossmax_backward = torch.ops.robustkernels.crossmax_backward.default
    torch.library.register_fake("robustkernels::crossmax")(_crossmax_fake)
    # the kernel ops too: the autograd node calls the backward kernel directly
    for _name in ("crossmax_backward", "crossmax_bwd_kernel", "crossmax_bwd_python"):
        torch.library.register_fake(f"robustkernels::{_name}")(_crossmax_backward_fake)
    torch.library.impl("robustkernels::crossmax_fwd_python", "CompositeExplicitAutograd")(_python_forward)
    torch.library.impl("robustkernels::crossmax_bwd_python", "CompositeExplicitAutograd")(_python_backward)
    torch.library.impl("robustkernels::crossmax_fwd_kernel", "CUDA")(_cuda_forward)
    torch.library.impl("robustkernels::crossmax_bwd_kernel", "CUDA")(_cuda_backward)
