"""SVHN (cropped digits) from the MATLAB files train_32x32.mat / test_32x32.mat."""

import numpy as np
import torch

from ..optional import require
from .files import find_dataset_dir

__all__ = ["load_svhn"]

_SOURCE = "http://ufldl.stanford.edu/housenumbers/, format 2 (cropped digits)"


def load_svhn(data_dir, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """SVHN from `data_dir/svhn/` (or `data_dir` itself): `{split}_32x32.mat`.

    split is "train", "test" or "extra". Returns (images uint8 [N, 3, 32, 32], labels
    int64 [N] in 0..9); the files label the digit 0 as 10, which becomes 0.
    """
    if split not in ("train", "test", "extra"):
        raise ValueError(f"split must be 'train', 'test' or 'extra', got {split!r}")
    name = f"{split}_32x32.mat"
    directory = find_dataset_dir(data_dir, "svhn", (name,), "SVHN", _SOURCE)
    loadmat = require("scipy.io", "reading SVHN .mat files", "scipy").loadmat
    contents = loadmat(directory / name)
    if "X" not in contents or "y" not in contents:
        raise ValueError(f"{directory / name}: expected variables 'X' and 'y', got {sorted(contents)}")
    images = np.asarray(contents["X"], dtype=np.uint8)  # [32, 32, 3, N]
    labels = np.asarray(contents["y"], dtype=np.int64).reshape(-1) % 10
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
        raise ValueError(f"{directory / name}: X must be 32x32x3xN with N labels, got {images.shape}")
    return torch.from_numpy(images.transpose(3, 2, 0, 1).copy()), torch.from_numpy(labels)
