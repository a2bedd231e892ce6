"""The embedded default dataset: scikit-learn's bundled handwritten digits.

`sklearn.datasets.load_digits` ships 1,797 real 8x8 grey-scale images (pixel values
0..16, ten classes) inside the scikit-learn package, so nothing is downloaded. They are
scaled to [0, 1], upsampled to 32x32 with bilinear interpolation (align_corners=False,
a convex combination of pixels, so the range stays [0, 1]) and replicated to three
channels, giving CIFAR-shaped inputs for the CIFAR-style models.

The train/test split is fixed: a stratified 80/20 split (`train_test_split` with
`test_size=0.2`, `random_state=SPLIT_SEED`), i.e. 1,437 training and 360 test images,
the same on every machine and every call.
"""

from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = [
    "DIGITS_MEAN",
    "DIGITS_STD",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "load_digits",
]

NUM_CLASSES = 10
IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# Pixel mean and standard deviation of the training split after scaling and upsampling
# (the same for all three channels); SmallCNN normalises its input with them.
DIGITS_MEAN = 0.3054
DIGITS_STD = 0.3237

_SPLITS = ("train", "test")


@lru_cache(maxsize=1)
def _prepared() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits as _sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = _sklearn_digits()
    images = torch.from_numpy(digits.images).to(torch.float32).div_(16.0).unsqueeze(1)  # [N, 1, 8, 8]
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target).to(torch.int64)

    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return {
        "train": (images[train_idx], labels[train_idx]),
        "test": (images[test_idx], labels[test_idx]),
    }


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the digits data: (images float32 [N, 3, 32, 32] in [0, 1], labels int64 [N]).

    split is "train" (1,437 images) or "test" (360 images). The tensors are fresh
    copies, so callers may modify them in place.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _prepared()[split]
    return images.clone(), labels.clone()
