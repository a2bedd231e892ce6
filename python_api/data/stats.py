"""Per-channel statistics of an image set, for the models' input normalisation."""

import torch

__all__ = ["channel_mean_std", "to_unit_interval"]


def to_unit_interval(images: torch.Tensor) -> torch.Tensor:
    """Float32 images in [0, 1]: uint8 pixels are divided by 255, float images pass through."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images


def channel_mean_std(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of `images` [N, C, H, W] after `to_unit_interval`.

    Accumulated in float64 over chunks of `chunk` images, so uint8 data sets never get a
    full float copy.
    """
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [N, C, H, W] tensor, got shape {tuple(images.shape)}")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        part = to_unit_interval(images[start : start + chunk]).to(torch.float64).transpose(0, 1).flatten(1)
        total += part.sum(dim=1)
        squares += (part * part).sum(dim=1)
    count = images.numel() // channels
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0.0).sqrt()
    return mean.tolist(), std.tolist()
