"""Data sets by name, as the trainer and the CLI see them."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .cifar import load_cifar10, load_cifar100
from .digits import load_digits
from .stl10 import load_stl10
from .svhn import load_svhn
from .tiny_imagenet import load_tiny_imagenet

__all__ = ["DATASETS", "DatasetSpec", "dataset_spec", "load_dataset"]


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a data set, and how to read one split of it."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    needs_data_dir: bool
    reader: Callable[[str | Path | None, str], tuple[torch.Tensor, torch.Tensor]]
    flip: bool = True  # a mirrored image is still of its class (not so for digits)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("digits", 10, 3, 32, False, lambda _data_dir, split: load_digits(split), flip=False),
        DatasetSpec("cifar10", 10, 3, 32, True, load_cifar10),
        DatasetSpec("cifar100", 100, 3, 32, True, load_cifar100),
        DatasetSpec("svhn", 10, 3, 32, True, load_svhn, flip=False),
        DatasetSpec("stl10", 10, 3, 96, True, load_stl10),
        DatasetSpec("tiny-imagenet", 200, 3, 64, True, load_tiny_imagenet),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """The DatasetSpec called `name`, or a ValueError listing the known names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, split: str = "train", data_dir: str | Path | None = None):
    """(images [N, C, H, W] uint8 or float in [0, 1], labels int64 [N]) of one split of data set `name`.

    "digits" is embedded; the others are read from `data_dir` (see each reader).
    """
    return dataset_spec(name).reader(data_dir, split)
