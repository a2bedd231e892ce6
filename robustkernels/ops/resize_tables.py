"""Resize weights of F.interpolate as matrices, for the multires_stack Triton kernels and reference.

Every mode F.interpolate offers here (bilinear, bicubic, area, with or without
antialias, align_corners=False) is separable and linear, so one 1-D resize of n_in
samples to n_out is a matrix R [n_out, n_in]. The matrix is read off torch itself
(F.interpolate of the identity basis in float64), so the kernels use exactly
torch's conventions (border clamping, the antialias filter widths, area's uneven
windows) without re-deriving them. The Triton kernels take R dense and zero-padded; the C++ kernels build
the same matrices in banded form themselves (csrc/cpu/resize_tables.h).
"""

import functools

import torch

from robustkernels.reference.multires_stack import resize


@functools.cache
def resize_matrix(n_in: int, n_out: int, interpolation: str, antialias: bool) -> torch.Tensor:
    """R [n_out, n_in] (float64, CPU) with resize(x)[o] = sum_i R[o, i] x[i] along one dimension."""
    # Two identical columns, not one: torch 2.13's antialiased CPU resize of width-1
    # images returns the first output row everywhere.
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1).expand(n_in, 1, n_in, 2)
    probe = resize(basis.contiguous(), (n_out, 2), interpolation, antialias)  # [n_in, 1, n_out, 2]
    return probe[:, 0, :, 0].T.contiguous()


def view_matrices(
    height: int, width: int, size: tuple[int, int], interpolation: str, antialias: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(down rows, down columns, up rows, up columns) of one view: the down resize is
    antialiased when `antialias` and torch offers it (bilinear, bicubic), the up resize never."""
    antialias = antialias and interpolation != "area"
    rh, rw = size
    return (
        resize_matrix(height, rh, interpolation, antialias),
        resize_matrix(width, rw, interpolation, antialias),
        resize_matrix(rh, height, interpolation, False),
        resize_matrix(rw, width, interpolation, False),
    )


@functools.lru_cache(maxsize=64)
def dense_tables(
    height: int,
    width: int,
    sizes: tuple[tuple[int, int], ...],
    interpolation: str,
    antialias: bool,
    block_r: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense matrices of all views, zero-padded to block_r low-resolution rows / columns:
    down rows [V, block_r, H], down columns [V, block_r, W], up rows [V, H, block_r],
    up columns [V, W, block_r]. Full-size views get identities."""
    stacks = ([], [], [], [])
    for size in sizes:
        if size == (height, width):
            matrices = (torch.eye(height), torch.eye(width), torch.eye(height), torch.eye(width))
        else:
            matrices = view_matrices(height, width, size, interpolation, antialias)
        for k, matrix in enumerate(matrices):
            padded = torch.zeros((block_r, matrix.shape[1]) if k < 2 else (matrix.shape[0], block_r))
            padded = padded.to(torch.float64)
            padded[: matrix.shape[0], : matrix.shape[1]] = matrix
            stacks[k].append(padded)
    return tuple(torch.stack(s).to(device=device, dtype=dtype).contiguous() for s in stacks)
