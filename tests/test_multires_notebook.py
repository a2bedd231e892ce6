"""multires_stack against an eager transcription of the public notebook's recipe
(`apply_transformations` of "Ensemble everything everywhere"), with the library's random
draws put in: one c for adjust_contrast and the colour mix, torch.roll, bicubic
F.interpolate without antialiasing, both noises also at full resolution, the clip. The
transcription is written per image with torch ops, as the notebook loops, and differentiated
by autograd; every backend's forward and backward must match it."""

import pytest
import torch
import torch.nn.functional as F
from helpers import TOLERANCE, targets

import robustkernels
from robustkernels import functional as rkF
from robustkernels.reference.multires_stack import noise_layout, view_parameters, view_sizes
from robustkernels.reference.philox import philox_uniform

TARGETS = targets("cpp", "reference", "triton")


def torchvision_adjust_contrast(image: torch.Tensor, factor) -> torch.Tensor:
    """torchvision.transforms.functional.adjust_contrast on one float image [C, H, W]
    (rgb_to_grayscale's weights for 3 channels, the image itself for 1), written out:
    torchvision is not a dependency of the library."""
    if image.shape[0] == 3:
        grey = 0.2989 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    else:
        grey = image
    mean = grey.mean()
    return (factor * image + (1.0 - factor) * mean).clamp(0, 1)


def notebook_stack(x, resolutions, *, jitter, noise, contrast, seed):
    """The notebook's stack of x [B, C, H, W] with the draws of the library's seed."""
    b, channels, h, w = x.shape
    sizes = view_sizes(resolutions, h, w)
    c, shift_y, shift_x = view_parameters(seed, len(sizes), b, jitter, contrast, x.device)
    views = []
    for v, ((rh, rw), (low_offset, high_offset)) in enumerate(
        zip(sizes, noise_layout(b, channels, h, w, sizes), strict=True)
    ):
        collected = []
        for i in range(b):
            image = torchvision_adjust_contrast(x[i], c[v, i].to(x.dtype))
            image = torch.roll(image, shifts=(int(shift_y[v, i]), int(shift_x[v, i])), dims=(-2, -1))
            amount = c[v, i].to(x.dtype)
            collected.append(amount * image + image.mean(dim=0, keepdim=True) * (1 - amount))
        images = torch.stack(collected)
        images = F.interpolate(images, size=(rh, rw), mode="bicubic")  # no antialias, as the notebook
        low = philox_uniform(seed, b * channels * rh * rw, offset=low_offset).reshape(b, channels, rh, rw)
        images = images + noise * low.to(x.dtype)
        images = F.interpolate(images, size=(h, w), mode="bicubic")
        high = philox_uniform(seed, b * channels * h * w, offset=high_offset).reshape(b, channels, h, w)
        images = images + noise * high.to(x.dtype)
        views.append(torch.clip(images, 0, 1))
    return torch.cat(views, dim=1)


def _stack_and_grad(function, x, grad_out):
    x = x.detach().clone().requires_grad_(True)
    out = function(x)
    return out.detach(), torch.autograd.grad(out, x, grad_out.to(out))[0]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    ("shape", "resolutions", "contrast"),
    [
        ((3, 3, 16, 16), (16, 8, 4, 2), (0.5, 1.0)),  # the notebook's c range and its resolutions' ratios
        # c above 1 (the range the notebook meant to use): adjust_contrast's clamp clips pixels
        ((2, 3, 12, 12), (12, 5), (0.7, 1.5)),
        ((2, 1, 10, 10), (10, 4), (0.5, 1.4)),  # one channel: torchvision's grey level is the image
    ],
)
def test_matches_the_notebook_recipe(target, shape, resolutions, contrast):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator, dtype=torch.float64)
    settings = dict(jitter=3, noise=0.2, contrast=contrast, seed=21)
    grad_out = torch.randn((shape[0], shape[1] * len(resolutions), *shape[2:]), generator=generator)
    expected_out, expected_grad = _stack_and_grad(
        lambda t: notebook_stack(t, resolutions, **settings), x, grad_out.double()
    )
    if contrast[1] > 1:  # the case is meant to exercise the clamp
        assert bool((notebook_stack(x, resolutions, **settings) < 1).any())
    with robustkernels.use_backend(target.backend):
        out, grad = _stack_and_grad(
            lambda t: rkF.multires_stack(t, resolutions, **settings), *target.to(x.float()), grad_out
        )
    # the output's clip decisions can differ where a pre-clip value lies within float32 rounding
    # of a bound; the inputs here are far enough from that for the gradient to match everywhere
    torch.testing.assert_close(out.cpu().double(), expected_out, **TOLERANCE[torch.float32])
    torch.testing.assert_close(grad.cpu().double(), expected_grad, **TOLERANCE[torch.float32])


def test_adjust_contrast_clamp_passes_no_gradient():
    """A pixel that adjust_contrast clips gets no gradient from its own value (only through the
    image's mean grey level): the gradient is exact, not the unclamped blend's."""
    x = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    x[0, 0, 0, 0] = 1.0  # with c = 1.5: 1.5 * 1 - 0.5 * m > 1, clipped
    settings = dict(jitter=0, noise=0.0, contrast=(1.5, 1.5), seed=0)
    for backend in ("cpp", "reference"):
        with robustkernels.use_backend(backend):
            _, grad = _stack_and_grad(
                lambda t: rkF.multires_stack(t, (4,), **settings), x, torch.ones(1, 1, 4, 4)
            )
        # d/dx of sum over the 15 unclipped pixels of 1.5 x_p - 0.5 m, m = mean of all 16
        mean_term = -0.5 * 15 / 16
        assert float(grad[0, 0, 0, 0]) == pytest.approx(mean_term)
        assert float(grad[0, 0, 1, 1]) == pytest.approx(1.5 + mean_term)


def test_the_earlier_recipe_stays_reachable():
    """adjust_contrast=False, antialias=True is the library's earlier stack: no contrast step,
    an antialiased down resize; it differs from the notebook's."""
    x = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(3))
    settings = dict(jitter=2, noise=0.1, seed=5)
    with robustkernels.use_backend("reference"):
        earlier = rkF.multires_stack(x, (16, 4), adjust_contrast=False, antialias=True, **settings)
        notebook = rkF.multires_stack(x, (16, 4), **settings)
    for backend in ("cpp",):
        with robustkernels.use_backend(backend):
            torch.testing.assert_close(
                rkF.multires_stack(x, (16, 4), adjust_contrast=False, antialias=True, **settings), earlier
            )
    assert not torch.allclose(earlier, notebook, atol=1e-3)
