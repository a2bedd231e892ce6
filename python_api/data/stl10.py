"""STL-10's labelled images from the binary files in stl10_binary/."""

import numpy as np
import torch

from .files import find_dataset_dir

__all__ = ["load_stl10"]

_SOURCE = "https://cs.stanford.edu/~acoates/stl10/, the binary version"
_SIDE = 96


def load_stl10(data_dir, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """STL-10 from `data_dir/stl10_binary/` (or `data_dir` itself): `{split}_X.bin`, `{split}_y.bin`.

    Returns (images uint8 [N, 3, 96, 96], labels int64 [N] in 0..9; the files count 1..10).
    The unlabelled split is not read.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = (f"{split}_X.bin", f"{split}_y.bin")
    directory = find_dataset_dir(data_dir, "stl10_binary", names, "STL-10", _SOURCE)
    pixels = np.fromfile(directory / names[0], dtype=np.uint8)
    labels = np.fromfile(directory / names[1], dtype=np.uint8).astype(np.int64) - 1
    per_image = 3 * _SIDE * _SIDE
    if pixels.size != len(labels) * per_image:
        raise ValueError(
            f"{directory}: {names[0]} holds {pixels.size} bytes, expected {len(labels)} images x {per_image}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{directory / names[1]}: labels must lie in 1..10")
    # Each image is stored column-major: channel, then column, then row.
    images = pixels.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 1, 3, 2)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)
