"""Argument types for the command line, with messages that say what was expected."""

import argparse
import math
from collections.abc import Callable
from fractions import Fraction

__all__ = ["epsilon", "non_negative_float", "non_negative_int", "positive_float", "positive_int", "seed"]


def _parse_number(text: str, kind: Callable[[str], float], ok: Callable[[float], bool], requirement: str):
    try:
        value = kind(text)
    except (ValueError, ZeroDivisionError):
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _parse_number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _parse_number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _parse_number(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def non_negative_float(text: str) -> float:
    return _parse_number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def seed(text: str) -> int:
    return _parse_number(text, int, lambda v: 0 <= v < 2**63, "an integer in [0, 2**63)")


def epsilon(text: str) -> float:
    """A perturbation size as a number or a fraction of pixel levels: "0.03", "8/255"."""
    return _parse_number(
        text,
        lambda t: float(Fraction(t.strip())),
        lambda v: math.isfinite(v) and v >= 0,
        "a number >= 0 such as 8/255",
    )
