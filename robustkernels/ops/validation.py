"""Argument checks run before any backend, so every backend raises the same clear errors."""

import torch

ALPHA_LAYER, ALPHA_CHANNEL, ALPHA_ELEMENT = 0, 1, 2
_MAX_SEED = 2**63


def check_tensor(name: str, value, op: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"robustkernels.{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def check_seed(seed, op: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"robustkernels.{op}: seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < _MAX_SEED:
        raise ValueError(f"robustkernels.{op}: seed must be in [0, 2**63), got {seed}")


def check_lam(lam, op: str) -> None:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"robustkernels.{op}: lam must be a float, got {type(lam).__name__}")


def alpha_mode(weight: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor | None, op: str) -> int:
    """Checks weight, alpha and mask; returns how alpha broadcasts over weight."""
    check_tensor("weight", weight, op)
    check_tensor("alpha", alpha, op)
    if not weight.is_floating_point():
        raise TypeError(f"robustkernels.{op}: weight must be a floating-point tensor, got {weight.dtype}")
    if weight.dim() < 1:
        raise ValueError(f"robustkernels.{op}: weight must have at least one dimension")
    if weight.numel() == 0:
        raise ValueError(f"robustkernels.{op}: weight must not be empty, got shape {tuple(weight.shape)}")
    if alpha.dtype != weight.dtype:
        raise TypeError(
            f"robustkernels.{op}: alpha must have the weight's dtype {weight.dtype}, got {alpha.dtype}"
        )
    if alpha.device != weight.device:
        raise ValueError(
            f"robustkernels.{op}: alpha must be on the weight's device {weight.device}, got {alpha.device}"
        )
    if mask is not None:
        check_tensor("mask", mask, op)
        if mask.dtype != torch.bool:
            raise TypeError(f"robustkernels.{op}: mask must be a bool tensor, got {mask.dtype}")
        if mask.shape != weight.shape:
            raise ValueError(
                f"robustkernels.{op}: mask must have the weight's shape {tuple(weight.shape)}, got {tuple(mask.shape)}"
            )
        if mask.device != weight.device:
            raise ValueError(
                f"robustkernels.{op}: mask must be on the weight's device {weight.device}, got {mask.device}"
            )
    if alpha.numel() == 1:
        return ALPHA_LAYER
    if alpha.shape == weight.shape:
        return ALPHA_ELEMENT
    out_channels = weight.shape[0]
    if alpha.numel() == out_channels and 1 <= alpha.dim() <= weight.dim() and alpha.shape[0] == out_channels:
        return ALPHA_CHANNEL
    raise ValueError(
        f"robustkernels.{op}: alpha must hold one value (layerwise), one per output channel (channelwise, "
        f"shape [{out_channels}] or [{out_channels}, 1, ...]) or one per weight element (elementwise, shape "
        f"{list(weight.shape)}), got shape {list(alpha.shape)}"
    )


def check_input(x, weight: torch.Tensor, op: str, ranks: tuple[int, ...]) -> None:
    check_tensor("x", x, op)
    if x.dim() not in ranks:
        raise ValueError(
            f"robustkernels.{op}: x must have rank {' or '.join(map(str, ranks))}, got shape {tuple(x.shape)}"
        )
    if x.dtype != weight.dtype:
        raise TypeError(f"robustkernels.{op}: x must have the weight's dtype {weight.dtype}, got {x.dtype}")
    if x.device != weight.device:
        raise ValueError(
            f"robustkernels.{op}: x must be on the weight's device {weight.device}, got {x.device}"
        )


def check_bias(bias, weight: torch.Tensor, op: str) -> None:
    if bias is None:
        return
    check_tensor("bias", bias, op)
    if bias.shape != (weight.shape[0],):
        raise ValueError(
            f"robustkernels.{op}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    if bias.dtype != weight.dtype:
        raise TypeError(
            f"robustkernels.{op}: bias must have the weight's dtype {weight.dtype}, got {bias.dtype}"
        )
    if bias.device != weight.device:
        raise ValueError(
            f"robustkernels.{op}: bias must be on the weight's device {weight.device}, got {bias.device}"
        )
