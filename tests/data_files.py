"""Locating the shared real-data slice for tests, and writing tiny fake data-set files."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """$ROBUSTKERNELS_SHARED_DATA, else <repo root>/../shared/data."""
    return Path(os.environ.get("ROBUSTKERNELS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def cifar10_subset() -> Path:
    """The real CIFAR-10 slice (skips the test when it is absent)."""
    path = shared_data_dir() / "cifar-10-subset"
    if not (path / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.skip(f"the shared CIFAR-10 slice is not at {path} (set ROBUSTKERNELS_SHARED_DATA)")
    return path


def write_cifar_batch(path: Path, images: np.ndarray, labels, label_key: str, bytes_keys: bool) -> None:
    """A CIFAR "python version" batch; bytes_keys mimics the official Python 2 pickles."""
    batch = {"data": images.reshape(len(images), -1), label_key: list(labels), "batch_label": "fake"}
    if bytes_keys:
        batch = {key.encode(): value for key, value in batch.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
