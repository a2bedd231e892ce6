"""CIFAR-10 and CIFAR-100 from the standard "python version" pickle files.

The official files were pickled by Python 2, so their keys read back as bytes
(b"data"); re-pickled copies have str keys. Both spellings are accepted. The unpickler
only rebuilds numpy arrays, so a tampered file cannot run code.
"""

import pickle
from pathlib import Path

import numpy as np
import torch

from .files import find_dataset_dir

__all__ = ["load_cifar10", "load_cifar100"]

_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html, the python version"
# Everything a numpy-array pickle needs (numpy 1.x and 2.x module names); nothing else.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"CIFAR file refers to {module}.{name}, which a CIFAR batch never does"
            )
        return super().find_class(module, name)


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")

    def field(key: str):
        for spelling in (key, key.encode()):
            if spelling in batch:
                return batch[spelling]
        raise ValueError(f"{path}: no {key!r} entry (keys: {sorted(map(str, batch))})")

    data = np.asarray(field("data"), dtype=np.uint8)
    labels = np.asarray(field(label_key), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: data must be N x 3072 with N labels, got {data.shape} and {labels.shape}")
    return data, labels


def _load(directory: Path, files: tuple[str, ...], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_read_batch(directory / name, label_key) for name in files]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    # Each row holds the red, green and blue 32x32 planes in turn.
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def load_cifar10(data_dir, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from `data_dir/cifar-10-batches-py/` (or `data_dir` itself).

    Returns (images uint8 [N, 3, 32, 32], labels int64 [N]); train reads data_batch_1..5,
    test reads test_batch.
    """
    _check_split(split)
    files = _CIFAR10_TRAIN if split == "train" else ("test_batch",)
    directory = find_dataset_dir(data_dir, "cifar-10-batches-py", files, "CIFAR-10", _SOURCE)
    return _load(directory, files, "labels")


def load_cifar100(data_dir, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-100 from `data_dir/cifar-100-python/` (or `data_dir` itself), fine labels (100 classes).

    Returns (images uint8 [N, 3, 32, 32], labels int64 [N]) from the file `train` or `test`.
    """
    _check_split(split)
    directory = find_dataset_dir(data_dir, "cifar-100-python", (split,), "CIFAR-100", _SOURCE)
    return _load(directory, (split,), "fine_labels")
