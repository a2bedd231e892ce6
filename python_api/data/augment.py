"""The standard CIFAR augmentation on batched tensors: random crop with zero padding, horizontal flip."""

import torch
import torch.nn.functional as F

__all__ = ["random_crop_flip"]


def random_crop_flip(
    images: torch.Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each image of `images` [N, C, H, W] padded by `padding` zeros, cropped back to H x W at a
    random offset and, with flip=True, mirrored left-right with probability 1/2.

    The offsets and flips are drawn on the CPU from `generator`, so a seeded generator gives
    the same batch on every device; the result is on the device of `images`.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    n, _, height, width = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    device = images.device
    # One gather for the whole batch: row / column indices into the padded images per sample.
    rows = (offsets[0].to(device)[:, None] + torch.arange(height, device=device)[None, :]).view(
        n, 1, height, 1
    )
    cols = offsets[1].to(device)[:, None] + torch.arange(width, device=device)[None, :]
    cols = torch.where(flips.to(device)[:, None], cols.flip(1), cols).view(n, 1, 1, width)
    padded = F.pad(images, (padding, padding, padding, padding))
    batch = torch.arange(n, device=device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]
