"""Reference of the noisy / masked weight transform and the layers built on it.

W' = M * (W + lam * alpha * std(W) * eta(seed)), with std(W) a constant for autograd,
eta the library's Philox normals and alpha layerwise, channelwise or elementwise.
`pni_noisy_weight` is the same transform written as PNI's public code writes it
(torch's own generator, noise drawn per call): the eager baseline of the benchmarks.
"""

import torch
import torch.nn.functional as F

from robustkernels.reference.philox import philox_normal


def alpha_for_weight(alpha: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """alpha reshaped to broadcast over weight (one value, one per output channel, or one per element)."""
    if alpha.numel() == 1:
        return alpha.reshape(())
    if alpha.shape == weight.shape:
        return alpha
    return alpha.reshape(weight.shape[0], *([1] * (weight.dim() - 1)))


def weight_std(weight: torch.Tensor) -> torch.Tensor:
    """Unbiased std over the whole tensor, defined as 0 below two elements (no noise
    rather than NaN for a single-weight layer)."""
    if weight.numel() < 2:
        return weight.new_zeros(())
    return weight.std()


def noisy_weight(
    weight: torch.Tensor,
    alpha: torch.Tensor,
    lam: float,
    seed: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    sigma = weight_std(weight.detach())
    eta = philox_normal(seed, weight.numel(), device=weight.device).view(weight.shape).to(weight.dtype)
    out = weight + lam * alpha_for_weight(alpha, weight) * sigma * eta if lam != 0 else weight
    if mask is not None:
        out = out * mask
    return out


def noisy_conv2d(x, weight, bias, alpha, lam, seed, mask=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x, noisy_weight(weight, alpha, lam, seed, mask), bias, stride, padding, dilation, groups)


def noisy_linear(x, weight, bias, alpha, lam, seed, mask=None):
    return F.linear(x, noisy_weight(weight, alpha, lam, seed, mask), bias)


def pni_noisy_weight(weight: torch.Tensor, alpha: torch.Tensor, lam: float, mask: torch.Tensor | None = None):
    # PNI calls .item() on the std (a device sync per layer); the baseline keeps it a
    # tensor so that torch.compile can trace it and the comparison stays fair.
    with torch.no_grad():
        noise = torch.randn_like(weight) * weight.std()
    out = weight + lam * alpha_for_weight(alpha, weight) * noise
    if mask is not None:
        out = out * mask
    return out


def pni_noisy_conv2d(x, weight, bias, alpha, lam, mask=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x, pni_noisy_weight(weight, alpha, lam, mask), bias, stride, padding, dilation, groups)
