"""Multiply-accumulates of one image's forward pass, the compute figure the papers report beside
the parameters (convolutions and fully-connected layers, as FLOAT's Appendix A.2 counts them, plus
OAT's FiLM: its two fully-connected layers and its per-element affine transform)."""

import torch
from torch import nn

from robustkernels.nn import MaskedExpertConv2d
from robustkernels.nn.film import FiLMAfter

__all__ = ["forward_macs"]


def _conv_macs(module, inputs, output) -> int:
    in_channels = inputs[0].shape[1] // module.groups
    weight = module.weight[: output.shape[1], :in_channels]
    masks = getattr(module, "masks", None)
    route = getattr(module, "route", 0)
    if masks is not None and isinstance(route, int):  # a sparse expert path: its kept weights only
        kept = int(masks[route][: output.shape[1], :in_channels].sum())
    else:
        kept = weight.numel()
    return output.shape[-2] * output.shape[-1] * kept


def forward_macs(model: nn.Module, image: torch.Tensor) -> int:
    """The multiply-accumulates of model(image) for one image [1, C, H, W] in the model's current
    setting (route, width, lam): a convolution's output positions times the weights it uses (a
    sparse expert path's kept weights), a linear layer's in x out features (FiLM's included), and
    one multiply-add per element of each FiLM's affine transform. Batch norms are left out."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be one image [1, C, H, W], got shape {tuple(image.shape)}")
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d | MaskedExpertConv2d):
            total[0] += _conv_macs(module, inputs, output)
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * inputs[0].shape[-1]
        elif isinstance(module, FiLMAfter):  # FiLM's affine, folded into the batch norm or not
            total[0] += output[0].numel()

    counted = (nn.Conv2d, MaskedExpertConv2d, nn.Linear, FiLMAfter)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, counted)]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]
