"""The self-ensemble of "Ensemble everything everywhere" (Fort & Lakshminarayanan) and its
model-ensemble form.

- `SelfEnsemble`: one multi-resolution draw -> the backbone, tapped at named layers -> one
  linear head per tap plus the backbone's own logits -> CrossMax (k = 3, "kth": the notebook's
  third-highest). `aggregation="mean"` averages the predictors instead (the BPDA-style
  surrogate of the adaptive evaluation); `predictors(x)` gives all of them, [N, B, classes].
- `ModelEnsemble`: separately trained models aggregated by CrossMax with the median (the
  paper's Algorithm 1 for ensembles of equivalent models) or by the mean of their logits.

Deviation: the notebook computes the backbone's own logits on a second, independent draw;
here one draw serves heads and backbone unless `second_draw=True` (one backbone pass fewer).
"""

from collections.abc import Sequence

import torch
from torch import nn

from robustkernels import functional
from robustkernels.nn import IntermediateHeads

from .features import tap_features
from .multires import MultiResModel

__all__ = ["AGGREGATIONS", "ModelEnsemble", "SelfEnsemble", "SinglePredictor", "aggregate"]

AGGREGATIONS = ("crossmax", "mean")


def aggregate(predictors: torch.Tensor, aggregation: str, k: int, reduction: str) -> torch.Tensor:
    """[N, B, C] -> [B, C] by CrossMax(k, reduction) or the mean over predictors."""
    if aggregation == "mean":
        return predictors.mean(dim=0)
    return functional.crossmax(predictors, k=k, reduction=reduction)


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


class _Aggregated(nn.Module):
    """Predictors [N, B, C] aggregated by CrossMax or the mean (self.aggregation, k, reduction)."""

    def combine(self, predictors: torch.Tensor) -> torch.Tensor:
        """The output of predictors [N, B, C]: the forward is combine(predictors(x))."""
        return aggregate(predictors, self.aggregation, self.k, self.reduction)

    def forward(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        return self.combine(self.predictors(x, seed))


class SelfEnsemble(_Aggregated):
    """A MultiResModel's heads at `taps` (layer names of backbone.net) and, with
    include_backbone, its own logits, aggregated per forward (see the module docstring)."""

    def __init__(
        self,
        backbone: MultiResModel,
        heads: IntermediateHeads,
        taps: Sequence[str],
        *,
        k: int = 3,
        reduction: str = "kth",
        aggregation: str = "crossmax",
        include_backbone: bool = True,
        second_draw: bool = False,
    ):
        super().__init__()
        if len(taps) != len(heads.in_features):
            raise ValueError(f"SelfEnsemble: {len(taps)} taps for {len(heads.in_features)} heads")
        _check_aggregation(aggregation)
        self.backbone, self.heads, self.taps = backbone, heads, tuple(taps)
        self.k, self.reduction, self.aggregation = k, reduction, aggregation
        self.include_backbone, self.second_draw = include_backbone, second_draw

    def features(self, x: torch.Tensor, seed: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the tapped layers' outputs, the backbone's logits) of one multires draw of x."""
        with tap_features(self.backbone.net, self.taps) as tapped:
            logits = self.backbone(x, seed)
        return [tapped[name] for name in self.taps], logits

    def predictors(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Every predictor's logits, [N, B, classes]: the heads in tap order, then the backbone."""
        features, logits = self.features(x, seed)
        heads = self.heads(features)
        if not self.include_backbone:
            return heads
        if self.second_draw:
            logits = self.backbone(x, None if seed is None else seed + 1)
        return torch.cat([heads, logits.unsqueeze(0)])


class ModelEnsemble(_Aggregated):
    """Models' logits [N, B, C] aggregated by CrossMax (`reduction`, default the median) or the mean."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        aggregation: str = "crossmax",
        reduction: str = "median",
        k: int = 3,
    ):
        super().__init__()
        _check_aggregation(aggregation)
        self.models = nn.ModuleList(models)
        self.aggregation, self.reduction, self.k = aggregation, reduction, k

    def predictors(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """[N, B, C]; a seed is passed on as seed + i to member i (members that take one, e.g.
        MultiResModel: a fixed draw per member)."""
        if seed is None:
            return torch.stack([model(x) for model in self.models])
        return torch.stack([model(x, seed + i) for i, model in enumerate(self.models)])


class SinglePredictor(nn.Module):
    """One model in the predictors interface of the ensembles ([1, B, C]), so a plain
    (multires) model gets the same adaptive evaluation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def predictors(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        return (self.model(x) if seed is None else self.model(x, seed)).unsqueeze(0)

    def combine(self, predictors: torch.Tensor) -> torch.Tensor:
        return predictors[0]

    def forward(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        return self.model(x) if seed is None else self.model(x, seed)
