"""What training runs and evaluations of their checkpoints share, for the CLI and `reproduce` alike:
preparing a data set, the model description a checkpoint stores, and the network rebuilt from it."""

from pathlib import Path

import torch
from torch import nn

from ..data import channel_mean_std, dataset_spec, load_dataset, train_val_split
from ..models import build_model
from .checkpoint import Checkpoint
from .once_for_all import convert

__all__ = ["build_from_info", "model_from_checkpoint", "model_info", "prepare_training_data"]


def prepare_training_data(dataset: str, data_dir: str | Path | None, val_fraction: float, split_seed: int):
    """(train (images, labels), validation (images, labels) or None) of `dataset`'s training split."""
    images, labels = load_dataset(dataset, "train", data_dir)
    if val_fraction == 0:
        return (images, labels), None
    return train_val_split(images, labels, val_fraction, split_seed)


def model_info(model_name: str, dataset: str, train_images: torch.Tensor, method: str | None = None) -> dict:
    """The model description a checkpoint stores: enough to rebuild the network for evaluation.

    The input normalisation uses the per-channel mean and std of the training images; `method`
    names the once-for-all method (float, floats, smart) whose layers the model has, if any.
    """
    spec = dataset_spec(dataset)
    mean, std = channel_mean_std(train_images)
    return {
        "name": model_name,
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "mean": mean,
        "std": std,
        "method": method,
    }


def build_from_info(info: dict, seed: int = 0) -> nn.Module:
    """The network `info` (model_info's dict) describes, freshly initialised, converted for its
    once-for-all method when it names one (SMART's masks drawn with `seed`)."""
    model = build_model(info["name"], info["num_classes"], info["in_channels"], info["mean"], info["std"])
    if info.get("method") is not None:
        convert(info["method"], model, seed, info.get("method_options"))
    return model


def model_from_checkpoint(checkpoint: Checkpoint) -> tuple[nn.Module, dict]:
    """The trained network of `checkpoint` (in eval mode) and the run description it was trained with."""
    run = checkpoint.record.get("run", {})
    if "model" not in run or "dataset" not in run:
        raise ValueError(
            f"{checkpoint.path} does not describe its model and data set (not written by `train`?)"
        )
    info = run["model"]
    model = build_from_info(info)
    model.load_state_dict(checkpoint.model_state)  # a once-for-all model's saved masks included
    return model.eval(), run
