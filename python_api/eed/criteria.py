"""EED's four pruning criteria (spec B.2): per-weight scores for the convolutions and linear
layers of any model, higher meaning keep. Each returns {layer name: score tensor of the
weight's shape} in the order of `prunable_layers`.

- NIS (NISP, Yu et al. 2018): neuron importance propagated backward from the logits through
  |W| (s_k = |W_{k+1}|^T s_{k+1}, s_n = 1/C), residual paths summed; a weight scores
  s_out(i) * |w_ij|.
- ERM (HYDRA's scaled init): |sqrt(6 / fan_in) * W / max|W||.
- ASE (MAD): 1/2 * w^2 * F_ii, F_ii the empirical Fisher (mean squared per-sample gradient of
  the adversarial loss) on PGD examples.
- BNSF (BNAP): |gamma / sqrt(var + eps) * W| with the batch norm that follows the layer
  folded in; |W| for a layer no batch norm follows.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd
from ..models.normalize import Normalize

__all__ = [
    "CRITERIA",
    "ase_scores",
    "bnsf_scores",
    "criterion_scores",
    "erm_scores",
    "hooked_forward",
    "nis_scores",
    "prunable_layers",
]


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's convolutions and linear layers (masked library layers included), by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def _example_input(model: nn.Module, like: torch.Tensor | None) -> torch.Tensor:
    if like is None:
        raise ValueError("x must be an example input batch (one image is enough)")
    return like[:1].detach()


def _record_outputs(layers: dict[str, nn.Module]):
    """Forward hooks keeping each layer's output (with its gradient) under its name."""
    outputs: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs, output):
            output.retain_grad()
            outputs[name] = output

        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    return outputs, handles


@torch.no_grad()
def _magnitude_network(model: nn.Module) -> nn.Module:
    """A copy of the model that is linear on the positive orthant: weights |W| with the
    following batch norms' |gamma| / sigma folded in (their shifts, and all biases, zero),
    normalisation off. Fed a positive input, every ReLU passes everything, so the gradient of
    sum_c logits_c / C with respect to a layer's output is NISP's backward importance, summed
    over both branches wherever a residual path joins."""
    linear = copy.deepcopy(model).eval()
    for module in linear.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.weight.abs_()
            if getattr(module, "mask", None) is not None:
                module.weight.mul_(module.mask)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            scale = 1 / torch.sqrt(module.running_var + module.eps)
            if module.weight is not None:
                scale = scale * module.weight.abs()
                module.weight.copy_(scale)
                module.bias.zero_()
            module.running_mean.zero_()
            module.running_var.fill_(1 - module.eps)
        elif isinstance(module, Normalize):
            module.mean.zero_()
            module.std.fill_(1.0)
    for p in linear.parameters():
        p.requires_grad_(False)
    return linear


def nis_scores(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """NIS scores: s_out(i) * |w_ij| with s_out a layer's output-neuron importance, propagated
    back from s_n = 1/C on the logits through |W| (spatial positions of a map summed per
    channel). x: an example batch fixing the input shape (its values are not used)."""
    linear = _magnitude_network(model)
    layers = prunable_layers(linear)
    outputs, handles = _record_outputs(layers)
    try:
        logits = linear(torch.ones_like(_example_input(model, x)).requires_grad_(True))
        (logits.sum(dim=1) / logits.shape[1]).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    scores = {}
    for name, layer in prunable_layers(model).items():
        grad = outputs[name].grad
        importance = grad.sum(dim=0) if grad.dim() == 2 else grad.sum(dim=(0, 2, 3))
        weight = layer.weight.detach().abs()
        scores[name] = importance.reshape(-1, *([1] * (weight.dim() - 1))) * weight
    return scores


@torch.no_grad()
def erm_scores(model: nn.Module, x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """ERM scores: |sqrt(6 / fan_in) * W / max|W||, fan_in = C_in * kh * kw (HYDRA's scaled init)."""
    scores = {}
    for name, layer in prunable_layers(model).items():
        weight = layer.weight.detach()
        fan_in = weight[0].numel()
        scores[name] = (math.sqrt(6 / fan_in) * weight / weight.abs().max().clamp_min(1e-12)).abs()
    return scores


def ase_scores(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step: float,
    steps: int,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """ASE scores 1/2 * w^2 * F_ii, F_ii the mean over the samples of (d CE(f(x_adv), y) / d w)^2,
    per sample (vmap), with x_adv PGD-`steps` (L-inf eps, step size `step`) against the model in eval mode."""
    was_training = model.training
    model.eval()
    layers = prunable_layers(model)
    names = [f"{name}.weight" for name in layers]
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b for name, b in model.named_buffers()}
    fisher = {name: torch.zeros_like(params[name]) for name in names}

    def sample_loss(weights, xi, yi):
        logits = torch.func.functional_call(model, ({**params, **weights}, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    per_sample = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0, 0))
    try:
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            x_adv = pgd(model, xb, yb, eps=eps, step=step, steps=steps, generator=generator)
            grads = per_sample({name: params[name] for name in names}, x_adv, yb)
            for name in names:
                fisher[name] += grads[name].square().sum(dim=0)
    finally:
        model.train(was_training)
    return {
        layer: 0.5 * params[f"{layer}.weight"].square() * fisher[f"{layer}.weight"] / len(y)
        for layer in layers
    }


def following_batchnorms(model: nn.Module, x: torch.Tensor) -> dict[str, nn.Module]:
    """{layer name: the batch norm fed directly by that layer's output}, found by one forward of x."""
    layers = prunable_layers(model)
    producer: dict[int, str] = {}
    followed: dict[str, nn.Module] = {}

    def record(name):
        def hook(module, inputs, output):
            producer[id(output)] = name

        return hook

    def check(module, inputs):
        name = producer.get(id(inputs[0]))
        if name is not None:
            followed[name] = module

    handles = [layer.register_forward_hook(record(name)) for name, layer in layers.items()]
    handles += [
        m.register_forward_pre_hook(check)
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)
    ]
    hooked_forward(model, _example_input(model, x), handles)
    return followed


def hooked_forward(model: nn.Module, x: torch.Tensor, handles) -> None:
    """One forward of x in eval mode without gradients (for the hooks behind `handles`), after
    which the hooks are removed and the model's mode is put back."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


@torch.no_grad()
def bnsf_scores(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """BNSF scores |gamma_i / sqrt(var_i + eps) * W_ij| with the batch norm fed by the layer
    (found by a forward of the example batch x); |W| where none follows."""
    followed = following_batchnorms(model, x)
    scores = {}
    for name, layer in prunable_layers(model).items():
        weight = layer.weight.detach()
        bn = followed.get(name)
        if bn is None:
            scores[name] = weight.abs()
            continue
        scale = 1 / torch.sqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        scores[name] = (scale.reshape(-1, *([1] * (weight.dim() - 1))) * weight).abs()
    return scores


CRITERIA = ("nis", "erm", "ase", "bnsf")


def criterion_scores(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **attack) -> dict:
    """Scores of criterion `name` (one of CRITERIA); ASE attacks with `attack` (eps, step, steps)."""
    if name == "nis":
        return nis_scores(model, x)
    if name == "erm":
        return erm_scores(model, x)
    if name == "ase":
        return ase_scores(model, x, y, **attack)
    if name == "bnsf":
        return bnsf_scores(model, x)
    raise ValueError(f"criterion must be one of {CRITERIA}, got {name!r}")
