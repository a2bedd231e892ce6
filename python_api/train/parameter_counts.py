"""Non-zero parameters and weight-noise additions of a once-for-all model's paths (SMART's
expert masks, FLOAT's noisy path, FLOAT-Slim's widths), the figures the papers report beside
CA and RA."""

import torch
from torch import nn

from robustkernels.nn import MaskedExpertConv2d

__all__ = ["path_parameters"]

CLEAN, NOISY = 0, 1


def _active_slices(model: nn.Module, x: torch.Tensor) -> dict[int, tuple[int, int]]:
    """(output, input) channels each convolution and linear layer uses in one forward of x: a
    slimmable model at a reduced width uses the leading slice of its weights."""
    used: dict[int, tuple[int, int]] = {}

    def record(module, inputs, output):
        used[id(module)] = (output.shape[1], inputs[0].shape[1])

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear | MaskedExpertConv2d)]
    handles = [layer.register_forward_hook(record) for layer in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return used


def path_parameters(model: nn.Module, x: torch.Tensor | None = None) -> dict:
    """Non-zero weights and biases of the convolutions and linear layers on each path and on the
    union of both (batch-norm affine parameters, 2 per channel and path, are left out), and the
    noise additions per inference of each path: the noisy path adds one noise value to each
    weight it keeps, once per forward, whatever the batch size. With an input `x` (one image is
    enough), only the weights a forward of x uses are counted (a slimmable model's width)."""
    used = {} if x is None else _active_slices(model, x)
    clean = adversarial = union = noise_additions = 0
    for module in model.modules():
        if not isinstance(module, nn.Conv2d | nn.Linear | MaskedExpertConv2d):
            continue
        out_channels, in_channels = used.get(id(module), (None, None))
        weight = module.weight.detach()[:out_channels, :in_channels]
        bias = 0 if module.bias is None else int(module.bias[:out_channels].count_nonzero())
        masks = getattr(module, "masks", None)
        if masks is not None:
            masks = masks[:, :out_channels, :in_channels]
            kept = [int((weight * masks[p]).count_nonzero()) for p in (CLEAN, NOISY)]
            both = int((weight * (masks[CLEAN] | masks[NOISY])).count_nonzero())
            noisy = int(masks[NOISY].sum())
        else:
            kept = [int(weight.count_nonzero())] * 2
            both = kept[0]
            noisy = weight.numel() if isinstance(module, MaskedExpertConv2d) else 0
        clean += kept[0] + bias
        adversarial += kept[1] + bias
        union += both + bias
        noise_additions += noisy
    return {
        "clean_path": clean,
        "adversarial_path": adversarial,
        "union": union,
        "noise_additions": {"clean_path": 0, "adversarial_path": noise_additions},
    }
