"""Importing an optional dependency with an error that says how to install it."""

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, purpose: str, package: str) -> ModuleType:
    """`importlib.import_module(module)`, or an ImportError naming the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs the {package!r} package: pip install {package}") from error
