"""Setting attributes of a model's layers for the length of a block (routes, widths, noise
scales), restoring each layer's own value afterwards, even when the block raises."""

import contextlib
from collections.abc import Iterable

from torch import nn

__all__ = ["restoring"]


@contextlib.contextmanager
def restoring(modules: Iterable[nn.Module], *attributes: str):
    """`with restoring(layers, "route", "lam"):` saves those attributes of every layer and puts
    them back when the block ends."""
    modules = list(modules)
    saved = [[getattr(module, name) for name in attributes] for module in modules]
    try:
        yield modules
    finally:
        for module, values in zip(modules, saved, strict=True):
            for name, value in zip(attributes, values, strict=True):
                setattr(module, name, value)
