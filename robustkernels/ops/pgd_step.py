"""One projected-gradient attack step: its kernels from Python, its backward and its fakes.

robustkernels::pgd_step(x_adv, grad, x_orig, step [B], eps, norm, lo, hi, normalize) -> x_adv'

The op and its autograd are C++ (csrc/ops/pgd_step.cpp): the dispatcher runs the step kernel
of the tensors' device (robustkernels::pgd_step_fwd_kernel: C++ on CPU; on CUDA the Triton
kernels, registered here, as there is no CUDA C++ kernel). use_backend switches the op to
pgd_step_fwd_python, which runs the chosen backend.

Attacks never differentiate through their own steps (each step starts from a
detached x_adv), so the backward is not a fused kernel: it is the closed-form
derivative written with torch ops (the same on every backend), recomputing the few
intermediates from the inputs instead of saving them. It follows torch.clamp's
conventions at the clamp bounds (a value equal to a bound passes its gradient to
the clamped input), so it matches autograd through the reference wherever the
reference is differentiable, and is there so that gradcheck, opcheck and methods
that do differentiate through a step (e.g. learned-step or meta-attacks) work.
"""

import torch

from robustkernels import _extension
from robustkernels.ops import backend, validation
from robustkernels.reference.pgd_step import NORM_FLOOR
from robustkernels.triton import available as _triton_available

if _triton_available:
    import triton

    from robustkernels.triton.pgd_step import pgd_step_l2_kernel, pgd_step_linf_kernel
    from robustkernels.triton.specialisation import (
        CHECKED_DTYPES,
        accumulator,
        accumulator_dtype,
        specialise,
    )

_LINF_BLOCK = 1024
# the L2 kernel's block, whatever the sample size: one specialisation (a sample loops over its blocks)
_L2_BLOCK_MAX = 1024


def _select(device: torch.device) -> str:
    name = backend.select("pgd_step", device)
    if name != "cuda":
        return name
    if backend.explicit_choice() == "cuda":
        raise RuntimeError(
            "robustkernels.pgd_step: backend 'cuda' has no pgd_step kernel; use 'triton' or 'reference'"
        )
    return "reference"


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _linf_launch(normalize: bool, dtype: torch.dtype) -> dict:
    return dict(NORMALIZE=normalize, BLOCK=_LINF_BLOCK, ACC=accumulator(dtype))


def _l2_launch(normalize: bool, dtype: torch.dtype) -> dict:
    return dict(NORMALIZE=normalize, BLOCK=_L2_BLOCK_MAX, ACC=accumulator(dtype))


def triton_specialisations():
    """Every kernel specialisation _forward_triton can launch (tests/test_triton_compile.py compiles each)."""
    scalars = dict(eps="fp32", lo="fp32", hi="fp32")
    for dtype in CHECKED_DTYPES:
        steps = accumulator_dtype(dtype)
        for normalize in (False, True):
            yield specialise(
                pgd_step_linf_kernel, _linf_launch(normalize, dtype), dtype, step_ptr=steps, **scalars
            )
            yield specialise(
                pgd_step_l2_kernel,
                _l2_launch(normalize, dtype),
                dtype,
                step_ptr=steps,
                floor="fp32",
                **scalars,
            )


def _forward_triton(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize):
    x, g, o = x_adv.contiguous(), grad.contiguous(), x_orig.contiguous()
    out = torch.empty_like(x)
    batch = x.shape[0]
    if x.numel() == 0:
        return out
    per_sample = x.numel() // batch
    steps = step.to(_acc_dtype(x)).contiguous()
    if norm == "linf":
        grid = (triton.cdiv(x.numel(), _LINF_BLOCK),)
        pgd_step_linf_kernel[grid](
            x, g, o, steps, out, x.numel(), per_sample, eps, lo, hi, **_linf_launch(normalize, x.dtype)
        )
    else:
        pgd_step_l2_kernel[(batch,)](
            x, g, o, steps, out, per_sample, eps, lo, hi, NORM_FLOOR, **_l2_launch(normalize, x.dtype)
        )
    return out


def _forward_reference(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize):
    from robustkernels.reference.pgd_step import pgd_step as reference_step

    return reference_step(x_adv, grad, x_orig, step.to(x_adv.dtype), eps, norm, lo, hi, normalize)


def _check(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize) -> None:
    validation.pgd_step_args(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize, "pgd_step")


def _python_forward(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize):
    """The step kernel of the backend use_backend chose (robustkernels::pgd_step_fwd_python)."""
    _check(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize)
    name = _select(x_adv.device)
    if name == "cpp":
        return torch.ops.robustkernels.pgd_step_fwd_kernel(
            x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize
        )
    if name == "triton":
        return _forward_triton(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize)
    return _forward_reference(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize).contiguous()


def _cuda_forward(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize):
    """The CUDA step kernel: Triton, else the reference."""
    _check(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize)
    if _triton_available:
        return _forward_triton(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize)
    return _forward_reference(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize).contiguous()


def _pgd_step_fake(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize):
    _check(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize)
    return torch.empty_like(x_adv, memory_format=torch.contiguous_format)


def _sum_per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=1, keepdim=True)


def _derivatives(grad_out, x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize):
    """(d x_adv, d grad, d x_orig, d step) on [B, M] views, in the accumulation dtype."""
    batch = x_adv.shape[0]
    acc = _acc_dtype(x_adv)
    x, g, o, go = (t.reshape(batch, -1).to(acc) for t in (x_adv, grad, x_orig, grad_out))
    s = step.to(acc).reshape(batch, 1)
    if norm == "linf":
        direction = g.sign() if normalize else g
        u = x + s * direction
        in_ball = (u >= o - eps) & (u <= o + eps)
        v = torch.clamp(u, o - eps, o + eps)
        g_v = go * ((v >= lo) & (v <= hi))
        d_u = g_v * in_ball
        d_o = g_v * ~in_ball
        d_g = torch.zeros_like(g) if normalize else s * d_u
        return d_u, d_g, d_o, _sum_per_sample(d_u * direction)
    if normalize:
        g_norm = g.norm(dim=1, keepdim=True)
        g_norm_floored = g_norm.clamp_min(NORM_FLOOR)
        direction = g / g_norm_floored
    else:
        direction = g
    delta = x + s * direction - o
    d_norm = delta.norm(dim=1, keepdim=True)
    d_norm_floored = d_norm.clamp_min(NORM_FLOOR)
    ratio = eps / d_norm_floored
    factor = ratio.clamp_max(1.0)
    v = o + delta * factor
    g_v = go * ((v >= lo) & (v <= hi))
    d_factor = _sum_per_sample(g_v * delta)
    # factor = min(1, eps / max(||delta||, floor)): live where the ratio is <= 1 and the norm >= floor
    live = (ratio <= 1.0) & (d_norm >= NORM_FLOOR)
    d_delta = (
        g_v * factor + torch.where(live, -d_factor * eps / d_norm_floored.square() / d_norm, 0.0) * delta
    )
    d_direction = s * d_delta
    if normalize:
        radial = torch.where(
            g_norm >= NORM_FLOOR, _sum_per_sample(d_direction * g) / g_norm_floored.square(), 0.0
        )
        d_g = d_direction / g_norm_floored - radial * g / g_norm.clamp_min(NORM_FLOOR)
    else:
        d_g = d_direction
    return d_delta, d_g, g_v - d_delta, _sum_per_sample(d_delta * direction)


def _backward(grad_out, x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize, output_mask):
    """robustkernels::pgd_step_backward: the gradients output_mask asks for (empty elsewhere), in
    torch ops (CompositeImplicitAutograd: compiled graphs trace through it)."""
    _check(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize)
    if grad_out.shape != x_adv.shape:
        raise ValueError(
            f"robustkernels.pgd_step_backward: grad_out must have x_adv's shape {tuple(x_adv.shape)}, "
            f"got {tuple(grad_out.shape)}"
        )
    empty = x_adv.new_empty(0)
    if x_adv.numel() == 0:
        zeros = (
            torch.zeros_like(x_adv),
            torch.zeros_like(grad),
            torch.zeros_like(x_orig),
            torch.zeros_like(step),
        )
        return tuple(z if need else empty for z, need in zip(zeros, output_mask, strict=True))
    d_x, d_g, d_o, d_s = _derivatives(grad_out, x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize)
    shape = x_adv.shape
    grads = (
        d_x.reshape(shape).to(x_adv.dtype),
        d_g.reshape(shape).to(grad.dtype),
        d_o.reshape(shape).to(x_orig.dtype),
        d_s.reshape(step.shape).to(step.dtype),
    )
    return tuple(g if need else empty for g, need in zip(grads, output_mask, strict=True))


if _extension.is_loaded():
    pgd_step = torch.ops.robustkernels.pgd_step.default
    torch.library.register_fake("robustkernels::pgd_step")(_pgd_step_fake)
    torch.library.impl("robustkernels::pgd_step_fwd_python", "CompositeExplicitAutograd")(_python_forward)
    torch.library.impl("robustkernels::pgd_step_backward", "CompositeImplicitAutograd")(_backward)
    torch.library.impl("robustkernels::pgd_step_fwd_kernel", "CUDA")(_cuda_forward)
