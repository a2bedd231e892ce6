"""Conversion of plain models into routed ones (convert_gated, convert_masked_experts,
convert_ensemble, all through one _replace), EIO paths over gated blocks, and derive."""

import contextlib

import torch
from torch import nn

from robustkernels.nn.noisy import ALPHA_INIT

from .path_conv import EnsembleConv2d, GatedConv2d, MaskedExpertConv2d, PathLinear, _PathConv
from .path_norm import PathBatchNorm2d
from .restore import restoring
from .routing import _Routed

ROUTED = (GatedConv2d, MaskedExpertConv2d, EnsembleConv2d, PathLinear, PathBatchNorm2d)


def _conv_geometry(conv: nn.Conv2d) -> dict:
    factory = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    return dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        **factory,
    )


def _copy_into(new: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        new.weight.copy_(weight.expand_as(new.weight))
        if bias is not None:
            new.bias.copy_(bias.expand_as(new.bias))
    new.weight.requires_grad_(weight.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(bias.requires_grad)
    return new


def _replace(model: nn.Module, build, skip: tuple[str, ...]) -> nn.Module:
    """Replaces, in module order, each child for which build(child) returns a module; a layer
    shared by several parents stays shared. A PathBatchNorm2d built here follows the routed
    convolution converted just before it."""
    replaced: dict[int, nn.Module] = {}
    last_conv: list[_Routed] = []
    for name, module in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(module._modules.items()):
            qualified = f"{name}.{child_name}" if name else child_name
            if child is None or qualified in skip:
                continue
            if id(child) not in replaced:
                new = build(child)
                if new is None:
                    continue
                new.train(child.training)
                if isinstance(new, PathBatchNorm2d) and last_conv:
                    new.follow(last_conv[-1])
                elif isinstance(new, _PathConv):
                    last_conv.append(new)
                replaced[id(child)] = new
            setattr(module, child_name, replaced[id(child)])
    return model


def _check_model(model: nn.Module, helper: str) -> None:
    if type(model) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d):
        raise TypeError(
            f"{helper} swaps the layers inside a model; to convert a single {type(model).__name__}, "
            "wrap it (e.g. nn.Sequential(layer)) or build the routed module directly"
        )


def convert_gated(
    model: nn.Module, n: int = 2, *, batchnorm: bool = True, linear: bool = False, skip: tuple[str, ...] = ()
) -> nn.Module:
    """Ensemble-in-One: every nn.Conv2d becomes a GatedConv2d of n gates, each a copy of the
    conv's weights (with batchnorm=True every nn.BatchNorm2d a PathBatchNorm2d of n paths following
    the conv before it; with linear=True every nn.Linear a PathLinear). Returns the model."""
    _check_model(model, "convert_gated")

    def build(child):
        if type(child) is nn.Conv2d:
            return _copy_into(GatedConv2d(**_conv_geometry(child), n=n), child.weight, child.bias)
        if batchnorm and type(child) is nn.BatchNorm2d:
            return PathBatchNorm2d.from_batchnorm(child, n)
        if linear and type(child) is nn.Linear:
            new = PathLinear(
                child.in_features, child.out_features, child.bias is not None, num_paths=n, route="random"
            )
            return _copy_into(new.to(child.weight), child.weight, child.bias)
        return None

    return _replace(model, build, skip)


def convert_masked_experts(
    model: nn.Module,
    *,
    density: float | None = 0.5,
    overlap: float = 0.25,
    lam: float = 1.0,
    alpha_granularity: str = "layer",
    alpha_init: float = ALPHA_INIT,
    batchnorm: bool = True,
    skip: tuple[str, ...] = (),
    generator: torch.Generator | None = None,
) -> nn.Module:
    """SMART (density < 1, masks of the given overlap) or FLOAT (density=None: no masks): every
    nn.Conv2d not in `skip` becomes a MaskedExpertConv2d keeping its weights; with batchnorm=True
    every nn.BatchNorm2d becomes a dual PathBatchNorm2d following the conv before it."""
    _check_model(model, "convert_masked_experts")
    noise = dict(
        density=density, overlap=overlap, lam=lam, alpha_granularity=alpha_granularity, alpha_init=alpha_init
    )

    def build(child):
        if type(child) is nn.Conv2d:
            new = MaskedExpertConv2d(**_conv_geometry(child), **noise, generator=generator)
            return _copy_into(new, child.weight, child.bias)
        if batchnorm and type(child) is nn.BatchNorm2d:
            return PathBatchNorm2d.from_batchnorm(child, 2)
        return None

    return _replace(model, build, skip)


def convert_ensemble(
    model: nn.Module,
    members: int = 8,
    *,
    density: float | None = None,
    batchnorm: bool = True,
    linear: bool = True,
    skip: tuple[str, ...] = (),
) -> nn.Module:
    """EED: every nn.Conv2d becomes an EnsembleConv2d of `members` copies of its weights (pruned to
    the largest-magnitude `density` fraction when given; EnsembleConv2d.set_masks sets others), every
    nn.BatchNorm2d a PathBatchNorm2d and every nn.Linear a PathLinear, all routed "split".
    Wrap the result in EnsembleModel to evaluate all members on one batch at once."""
    _check_model(model, "convert_ensemble")

    def build(child):
        if type(child) is nn.Conv2d:
            new = _copy_into(
                EnsembleConv2d(**_conv_geometry(child), members=members), child.weight, child.bias
            )
            if density is not None:
                new.prune(density)
            return new
        if batchnorm and type(child) is nn.BatchNorm2d:
            return PathBatchNorm2d.from_batchnorm(child, members, route="split")
        if linear and type(child) is nn.Linear:
            new = PathLinear(child.in_features, child.out_features, child.bias is not None, num_paths=members)
            new.route = "split"
            return _copy_into(new.to(child.weight), child.weight, child.bias)
        return None

    return _replace(model, build, skip)


def gated_blocks(model: nn.Module) -> list[GatedConv2d]:
    """The model's GatedConv2d blocks in module order (the order of a path's gates)."""
    return [m for m in model.modules() if isinstance(m, GatedConv2d)]


@contextlib.contextmanager
def use_path(model: nn.Module, path):
    """`with use_path(model, path):` gives the i-th GatedConv2d the route path[i] (an int gate for
    the whole batch, or a tensor [B] of per-sample gates), e.g. a row of sample_paths(...)."""
    blocks = gated_blocks(model)
    path = path.tolist() if isinstance(path, torch.Tensor) and path.dim() == 1 else list(path)
    if len(path) != len(blocks):
        raise ValueError(f"path must name one gate per gated block ({len(blocks)}), got {len(path)}")
    with restoring(blocks, "route"):
        for block, gate in zip(blocks, path, strict=True):
            block.route = gate
        yield model


def derive(model: nn.Module, path) -> nn.Module:
    """A plain copy of a converted model on one path: every routed module replaced by its derived
    plain layer (GatedConv2d blocks take path[i] in module order when `path` is a sequence, every
    other routed module, and every block when `path` is an int, takes path itself)."""
    import copy

    plain = copy.deepcopy(model)
    blocks = gated_blocks(plain)
    gates = [path] * len(blocks) if isinstance(path, int) else [int(g) for g in path]
    if len(gates) != len(blocks):
        raise ValueError(f"path must name one gate per gated block ({len(blocks)}), got {len(gates)}")
    gate_of = {id(b): g for b, g in zip(blocks, gates, strict=True)}
    last_gate = [gates[0] if gates else 0]

    def build(child):
        if not isinstance(child, ROUTED):
            return None
        if isinstance(child, GatedConv2d):
            last_gate[0] = gate_of[id(child)]
            return child.derive(last_gate[0])
        if (
            isinstance(child, PathBatchNorm2d)
            and child._follows
            and isinstance(child._follows[0], GatedConv2d)
        ):
            return child.derive(gate_of[id(child._follows[0])])
        return child.derive(path if isinstance(path, int) else last_gate[0])

    return _replace(plain, build, ())
