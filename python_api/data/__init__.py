"""Data for the method layer: the embedded digits, readers for the standard image data sets
(from a local directory, never downloaded), tensor augmentation and deterministic splits."""

from .augment import random_crop_flip
from .batches import iterate_batches
from .cifar import load_cifar10, load_cifar100
from .digits import DIGITS_MEAN, DIGITS_STD, IMAGE_SIZE, NUM_CLASSES, SPLIT_SEED, TEST_FRACTION, load_digits
from .files import MissingDataError
from .registry import DATASETS, DatasetSpec, dataset_spec, load_dataset
from .split import train_val_split
from .stats import channel_mean_std, to_unit_interval
from .stl10 import load_stl10
from .svhn import load_svhn
from .tiny_imagenet import load_tiny_imagenet

__all__ = [
    "DATASETS",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "DatasetSpec",
    "MissingDataError",
    "channel_mean_std",
    "dataset_spec",
    "iterate_batches",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_stl10",
    "load_svhn",
    "load_tiny_imagenet",
    "random_crop_flip",
    "to_unit_interval",
    "train_val_split",
]
