"""Shared test helpers: tolerances per dtype and backend availability."""

import pytest
import torch

from robustkernels.ops.backend import unavailable_reason

TOLERANCE = {
    torch.float64: {"atol": 1e-10, "rtol": 1e-10},
    torch.float32: {"atol": 2e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 1.6e-2},
}


def require_backend(name: str, device: str = "cpu") -> None:
    reason = unavailable_reason(name, device)
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable on {device}: {reason}")
