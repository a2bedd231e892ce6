"""Tiny-ImageNet (200 classes, 64x64 JPEGs) from the tiny-imagenet-200/ folder.

The official test images have no public labels, so split "test" reads the labelled
validation folder, as the robustness literature does.
"""

from pathlib import Path

import numpy as np
import torch

from ..optional import require
from .files import find_dataset_dir

__all__ = ["load_tiny_imagenet"]

_SOURCE = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _read_images(paths: list[Path]) -> torch.Tensor:
    image_module = require("PIL.Image", "reading Tiny-ImageNet JPEGs", "Pillow")
    out = np.empty((len(paths), 64, 64, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with image_module.open(path) as image:
            rgb = image.convert("RGB")  # a few images are grey-scale
            if rgb.size != (64, 64):
                raise ValueError(f"{path}: expected a 64x64 image, got {rgb.size[0]}x{rgb.size[1]}")
            out[i] = np.asarray(rgb)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def load_tiny_imagenet(data_dir, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny-ImageNet from `data_dir/tiny-imagenet-200/` (or `data_dir` itself).

    Classes are the lines of wnids.txt in order. "train" reads train/<wnid>/images/*.JPEG,
    "test" reads val/images/ labelled by val/val_annotations.txt. Returns (images uint8
    [N, 3, 64, 64], labels int64 [N]).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    required = ("wnids.txt", "train") if split == "train" else ("wnids.txt", "val/val_annotations.txt")
    directory = find_dataset_dir(data_dir, "tiny-imagenet-200", required, "Tiny-ImageNet", _SOURCE)
    wnids = (directory / "wnids.txt").read_text().split()
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if split == "train":
        pairs = [
            (path, index[wnid])
            for wnid in wnids
            for path in sorted((directory / "train" / wnid / "images").glob("*.JPEG"))
        ]
    else:
        pairs = []
        for line in (directory / "val" / "val_annotations.txt").read_text().splitlines():
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise ValueError(f"{directory / 'val' / 'val_annotations.txt'}: bad line {line!r}")
            pairs.append((directory / "val" / "images" / fields[0], index[fields[1]]))
    if not pairs:
        raise ValueError(f"{directory}: no images found for split {split!r}")
    labels = torch.tensor([label for _, label in pairs], dtype=torch.int64)
    return _read_images([path for path, _ in pairs]), labels
