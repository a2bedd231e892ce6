"""The multi-resolution input stack of the multi-resolution self-ensemble (Fort &
Lakshminarayanan, "Ensemble everything everywhere") in plain PyTorch: the oracle.

For each view v (one per resolution) every image b gets, with its own randomness
c ~ U[contrast] and shifts, what the public notebook's `apply_transformations` does:
  0. (adjust_contrast=True) torchvision's adjust_contrast with factor c:
     clamp(c * img + (1 - c) * m, 0, 1), m the mean over H, W of the image's grey level
     (0.2989 R + 0.587 G + 0.114 B for 3 channels, the plain channel mean otherwise;
     torchvision accepts only 1 or 3);
  1. a colour mix with the same c:  c * img + (1 - c) * mean over channels(img)
     (the notebook's `color_amounts = contrasts = ...`: one c for both);
  2. a circular shift by integers (dy, dx) in [-jitter, jitter] (torch.roll);
  3. a resize to rh x rw (antialiased only with antialias=True; the notebook's
     F.interpolate has none), plus noise, a resize back to H x W (never antialiased),
     plus noise, and a clip to [0, 1].
The notebook shifts before the colour mix; both steps before the shift are per pixel
(m is shift-invariant), so the order does not matter. Views with (rh, rw) == (H, W)
skip the two resizes (they would be identities) but still get both noises. The result
stacks the views on channels: [B, C * V, H, W], view 0's channels first.
adjust_contrast=False, antialias=True is the recipe as an earlier summary had it.

Randomness comes from the library's Philox stream keyed by `seed`:
  - per (view v, image b), counter v * B + b: word 0 gives c = lo + (hi - lo) * u,
    words 1 and 2 the shifts ((word * (2 * jitter + 1)) >> 32) - jitter;
  - noise elements after those: each view's low-resolution noise [B, C, rh, rw],
    then its full-resolution noise [B, C, H, W], regions in view order, each starting
    at a multiple of 4 (see `noise_layout`); "uniform" noise is noise * U[0, 1)
    (element i: uniform i % 4 of tl.rand4x(seed, i // 4)), "gaussian" noise * N(0, 1).
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from robustkernels.reference.philox import philox_normal, philox_uniform, philox_words, uint32_to_uniform

INTERPOLATIONS = ("bilinear", "bicubic", "area")
NOISE_KINDS = ("uniform", "gaussian")
# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma), used by adjust_contrast
RGB_GREY = (0.2989, 0.587, 0.114)


def grey_weights(channels: int) -> tuple[float, ...]:
    """The weights of each channel in adjust_contrast's grey level: RGB_GREY for 3 channels,
    1 / C each otherwise (for one channel torchvision's own rule; other counts are ours)."""
    return RGB_GREY if channels == 3 else (1.0 / channels,) * channels


def contrast_means(images: torch.Tensor) -> torch.Tensor:
    """adjust_contrast's m per image: the mean over H, W of the grey level, [B, 1, 1, 1]."""
    weights = torch.tensor(grey_weights(images.shape[1]), dtype=images.dtype, device=images.device)
    grey = (images * weights.reshape(1, -1, 1, 1)).sum(dim=1, keepdim=True)
    return grey.mean(dim=(2, 3), keepdim=True)


def view_sizes(resolutions: Sequence, height: int, width: int) -> list[tuple[int, int]]:
    """(rh, rw) per view: an int r means r x r, a pair (rh, rw) is taken as given."""
    sizes = []
    for r in resolutions:
        size = (int(r), int(r)) if isinstance(r, int) else (int(r[0]), int(r[1]))
        sizes.append(size)
    return sizes


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def noise_layout(
    batch: int, channels: int, height: int, width: int, sizes: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Element offsets (low, high) of each view's two noise streams."""
    offset = _align4(4 * len(sizes) * batch)
    layout = []
    for rh, rw in sizes:
        low = offset
        high = _align4(low + batch * channels * rh * rw)
        offset = _align4(high + batch * channels * height * width)
        layout.append((low, high))
    return layout


def view_parameters(
    seed: int, num_views: int, batch: int, jitter: int, contrast: tuple[float, float], device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c, shift_y, shift_x), each [V, B]: c float32, the shifts int64."""
    counter = torch.arange(num_views * batch, dtype=torch.int64, device=device)
    w0, w1, w2, _ = philox_words(seed, counter)
    low = torch.tensor(contrast[0], dtype=torch.float32, device=device)
    high = torch.tensor(contrast[1], dtype=torch.float32, device=device)
    c = low + (high - low) * uint32_to_uniform(w0)
    span = 2 * jitter + 1
    shift_y = ((w1 * span) >> 32) - jitter
    shift_x = ((w2 * span) >> 32) - jitter
    shape = (num_views, batch)
    return c.reshape(shape), shift_y.reshape(shape), shift_x.reshape(shape)


def resize(images: torch.Tensor, size: tuple[int, int], interpolation: str, antialias: bool) -> torch.Tensor:
    """F.interpolate with align_corners=False (area has no such option and no antialias)."""
    if interpolation == "area":
        return F.interpolate(images, size=size, mode="area")
    return F.interpolate(images, size=size, mode=interpolation, align_corners=False, antialias=antialias)


def _noise(
    seed, generator, shape, offset: int, amplitude: float, kind: str, like: torch.Tensor
) -> torch.Tensor:
    if generator is not None:
        draw = torch.rand if kind == "uniform" else torch.randn
        return amplitude * draw(shape, generator=generator, dtype=like.dtype, device=like.device)
    numel = math.prod(shape)
    draw = philox_uniform if kind == "uniform" else philox_normal
    return (amplitude * draw(seed, numel, offset=offset, device=like.device)).reshape(shape).to(like.dtype)


def roll_per_image(images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """torch.roll with a different (dy, dx) per image: out[y, x] = in[(y - dy) % H, (x - dx) % W]."""
    b, _, h, w = images.shape
    rows = (torch.arange(h, device=images.device) - shift_y.unsqueeze(1)) % h  # [B, H]
    cols = (torch.arange(w, device=images.device) - shift_x.unsqueeze(1)) % w  # [B, W]
    batch = torch.arange(b, device=images.device)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def multires_views(
    x: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    *,
    jitter: int,
    noise: float,
    noise_kind: str,
    contrast: tuple[float, float],
    interpolation: str,
    seed: int | None,
    generator: torch.Generator | None = None,
    antialias: bool = False,
    adjust_contrast: bool = True,
) -> list[torch.Tensor]:
    """Each view before the clip, [B, C, H, W] (half inputs are computed in float32).

    The randomness comes from the library's Philox stream of `seed` (what every kernel
    reproduces) or, when `generator` is given instead, from torch's generator with
    torch.rand / randn / randint, as the public recipe draws it (the benchmark baseline).
    """
    if (seed is None) == (generator is None):
        raise ValueError("multires_views: give exactly one of seed and generator")
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    b, ch, h, w = work.shape
    if generator is None:
        c, shift_y, shift_x = view_parameters(seed, len(sizes), b, jitter, contrast, x.device)
    else:
        # drawn on x's device: torch requires the generator to live there too
        shape, device = (len(sizes), b), x.device
        c = contrast[0] + (contrast[1] - contrast[0]) * torch.rand(shape, generator=generator, device=device)
        shift_y, shift_x = (
            torch.randint(-jitter, jitter + 1, shape, generator=generator, device=device) for _ in range(2)
        )
    grey_mean = contrast_means(work) if adjust_contrast else None
    views = []
    for v, ((rh, rw), (low_offset, high_offset)) in enumerate(
        zip(sizes, noise_layout(b, ch, h, w, sizes), strict=True)
    ):
        cv = c[v].to(work.dtype).reshape(b, 1, 1, 1)
        img = (cv * work + (1 - cv) * grey_mean).clamp(0, 1) if adjust_contrast else work
        view = roll_per_image(cv * img + (1 - cv) * img.mean(dim=1, keepdim=True), shift_y[v], shift_x[v])
        resized = (rh, rw) != (h, w)
        if resized:
            view = resize(view, (rh, rw), interpolation, antialias)
        if noise != 0:
            view = view + _noise(seed, generator, (b, ch, rh, rw), low_offset, noise, noise_kind, view)
        if resized:
            view = resize(view, (h, w), interpolation, antialias=False)
        if noise != 0:
            view = view + _noise(seed, generator, (b, ch, h, w), high_offset, noise, noise_kind, view)
        views.append(view)
    return views


def multires_stack(
    x: torch.Tensor,
    resolutions: Sequence = (32, 16, 8, 4),
    *,
    jitter: int = 3,
    noise: float = 0.2,
    noise_kind: str = "uniform",
    contrast: tuple[float, float] = (0.5, 1.0),
    interpolation: str = "bicubic",
    antialias: bool = False,
    adjust_contrast: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[B, C, H, W] in [0, 1] -> [B, C * len(resolutions), H, W] (see the module docstring).

    Exactly one of `seed` (the library's Philox stream, which the kernels reproduce) and
    `generator` (torch's own generator, the public recipe's randomness) is given."""
    sizes = view_sizes(resolutions, x.shape[-2], x.shape[-1])
    views = multires_views(
        x,
        sizes,
        jitter=jitter,
        noise=noise,
        noise_kind=noise_kind,
        contrast=contrast,
        interpolation=interpolation,
        seed=seed,
        generator=generator,
        antialias=antialias,
        adjust_contrast=adjust_contrast,
    )
    return torch.cat([v.clamp(0, 1) for v in views], dim=1).to(x.dtype)
