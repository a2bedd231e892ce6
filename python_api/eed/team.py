"""The EED team as one batched network: the members' masked weights stacked into the
library's EnsembleConv2d / PathLinear (convert_ensemble) and run by EnsembleModel, in
evaluation with each member's batch norm folded into its convolution (W * gamma / sigma,
bias beta - mean * gamma / sigma), so the team is K-times-wider convolutions and ReLUs only."""

import copy

import torch
from torch import nn

from robustkernels.nn import EnsembleConv2d, EnsembleModel, PathBatchNorm2d, PathLinear, convert_ensemble

from ..models.normalize import Normalize
from .criteria import following_batchnorms, prunable_layers
from .masks import masked_weights

__all__ = ["TeamNetwork", "plain_copy"]


@torch.no_grad()
def plain_copy(model: nn.Module, x: torch.Tensor, *, fold: bool = True) -> nn.Module:
    """A copy of a (masked) model in eval mode with plain nn.Conv2d / nn.Linear layers holding
    W * M; with fold=True every batch norm fed by a layer is folded into it and becomes an
    Identity (evaluation only). x: an example batch (finds which batch norm follows which layer)."""
    followed = following_batchnorms(model, x) if fold else {}
    weights = masked_weights(model)
    plain = copy.deepcopy(model).eval()
    for name, layer in prunable_layers(model).items():
        weight = weights[name].detach()
        bias = None if layer.bias is None else layer.bias.detach()
        bn = followed.get(name)
        if bn is not None:
            scale = (bn.weight if bn.weight is not None else 1) / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.bias is not None else 0) - bn.running_mean * scale
            weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
            bias = shift if bias is None else bias * scale + shift
        if isinstance(layer, nn.Conv2d):
            new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                            layer.padding, layer.dilation, layer.groups, bias is not None, layer.padding_mode)  # fmt: skip
        else:
            new = nn.Linear(layer.in_features, layer.out_features, bias is not None)
        new = new.to(weight).eval()
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
        _set(plain, name, new)
    names = {id(m): n for n, m in model.named_modules()}
    for bn in followed.values():
        _set(plain, names[id(bn)], nn.Identity())
    return plain


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _take_normalize(model: nn.Module) -> nn.Module:
    """Removes the model's input normalisation (a Normalize child) and returns it (Identity if none):
    the stacked layout repeats the input along its channels, so it runs before the team."""
    for name, child in model.named_children():
        if isinstance(child, Normalize):
            setattr(model, name, nn.Identity())
            return child
    return nn.Identity()


class TeamNetwork(nn.Module):
    """The members as one network: forward(x) gives their logits [M, B, C] in one pass
    (EnsembleModel's stacked layout). Built in eval mode from trained members; fold=True
    folds each member's batch norms into its convolutions."""

    def __init__(self, members, x: torch.Tensor, *, fold: bool = True, layout: str = "stacked", chunk_size=8):
        super().__init__()
        plains = [plain_copy(m, x, fold=fold) for m in members]
        skeleton = copy.deepcopy(plains[0])
        self.normalize = _take_normalize(skeleton)
        for plain in plains:
            _take_normalize(plain)
        count = len(plains)
        convert_ensemble(skeleton, count)
        with torch.no_grad():
            for name, module in skeleton.named_modules():
                sources = [p.get_submodule(name) for p in plains] if isinstance(module, _STACKED) else None
                if isinstance(module, EnsembleConv2d | PathLinear):
                    module.weight.copy_(torch.stack([s.weight for s in sources]))
                    if module.bias is not None:
                        module.bias.copy_(torch.stack([s.bias for s in sources]))
                elif isinstance(module, PathBatchNorm2d):
                    for field in ("weight", "bias", "running_mean", "running_var"):
                        if getattr(module, field) is not None:
                            getattr(module, field).copy_(torch.stack([getattr(s, field) for s in sources]))
        self.members = count
        self.ensemble = EnsembleModel(skeleton.eval(), count, layout=layout, chunk_size=chunk_size)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ensemble(self.normalize(x))


_STACKED = (EnsembleConv2d, PathLinear, PathBatchNorm2d)
