"""Masks of EED's sub-models: fixed top-k masks from criterion scores (the static mode), putting
masks on a model as the library's masked layers, and counting what survives."""

import math

import torch
from torch import nn

from robustkernels.nn import NoisyConv2d, NoisyLinear, convert

from .criteria import prunable_layers

__all__ = ["apply_masks", "global_topk_masks", "masked_weights", "model_masks", "nonzero_parameters"]


def _check_density(density: float) -> None:
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ValueError(f"density must lie in (0, 1], got {density!r}")


def global_topk_masks(scores: dict[str, torch.Tensor], density: float, floor: float = 0.1) -> dict:
    """Keeps the `density` fraction of all weights with the highest scores, one ranking over
    every layer (the static mode). Each layer keeps at least floor * density of its weights,
    HARP's a_min = 0.1 * a_target: a global ranking may otherwise empty a layer and cut the
    network. [I: the spec's static mode names no floor; HARP's is the one the method uses.]"""
    _check_density(density)
    flat = torch.cat([s.flatten().float() for s in scores.values()])
    keep = max(1, round(density * flat.numel()))
    threshold = flat.topk(keep).values[-1]
    masks = {}
    for name, score in scores.items():
        mask = score >= threshold
        least = max(1, math.ceil(floor * density * score.numel()))
        if int(mask.sum()) < least:
            mask = torch.zeros_like(mask).flatten()
            mask[score.flatten().topk(least).indices] = True
            mask = mask.reshape(score.shape)
        masks[name] = mask
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Puts each mask on its layer as a library masked layer (NoisyConv2d / NoisyLinear with
    the noise off, lam = 0: the fused masked op, pruned weights exactly zero and without
    gradient), weights kept; the unused noise scales are frozen. Returns the model (in place)."""
    layers = prunable_layers(model)
    unknown = sorted(set(masks) - set(layers))
    if unknown:
        raise ValueError(f"masks name layers the model does not have: {unknown}")
    if any(not isinstance(layer, NoisyConv2d | NoisyLinear) for layer in layers.values()):
        convert(model, linear=True, lam=0.0)
        layers = prunable_layers(model)
    for name, layer in layers.items():
        layer.lam = 0.0
        layer.alpha.requires_grad_(False)
        if name in masks:
            layer.set_mask(masks[name])
    return model


def model_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """{layer name: bool mask} of the model's masked layers."""
    return {
        name: layer.mask.clone()
        for name, layer in prunable_layers(model).items()
        if getattr(layer, "mask", None) is not None
    }


def masked_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """{layer name: weight * mask} (the weight itself where a layer has no mask)."""
    weights = {}
    for name, layer in prunable_layers(model).items():
        mask = getattr(layer, "mask", None)
        weights[name] = layer.weight if mask is None else layer.weight * mask
    return weights


@torch.no_grad()
def nonzero_parameters(model: nn.Module) -> int:
    """Non-zero weights (under their masks) and biases of the convolutions and linear layers;
    batch-norm affine parameters are left out, as the parameter counts of `reproduce` do."""
    total = 0
    for name, weight in masked_weights(model).items():
        layer = model.get_submodule(name)
        total += int(weight.count_nonzero()) + (0 if layer.bias is None else int(layer.bias.count_nonzero()))
    return total
