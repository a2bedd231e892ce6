"""An ensemble of separately trained models that predicts with the log of the mean softmax (DVERGE's
and the surrogates' ensembles): the output is a log-probability, so argmax and the attacks' CE and
CW losses read it as logits."""

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["AveragedEnsemble"]


class AveragedEnsemble(nn.Module):
    """log(mean_k softmax(member_k(x))) of the members (an nn.ModuleList, `members`)."""

    def __init__(self, members: Iterable[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        if len(self.members) == 0:
            raise ValueError("an ensemble needs at least one member")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([member(x).log_softmax(dim=1) for member in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
