"""Efficient Ensemble Defense (EED, "Two is Better than One", spec part B): pruning criteria,
HARP/HYDRA robust pruning, robust-diversity team selection, ensemble learning, dynamic inference,
the team as one batched network and the sparse FLOP counter. `robustkernels reproduce eed` runs
the pipeline end to end (python_api/reproduce/eed.py)."""

from .criteria import (
    CRITERIA,
    ase_scores,
    bnsf_scores,
    criterion_scores,
    erm_scores,
    nis_scores,
    prunable_layers,
)
from .diversity import PoolAverage, failure_matrix, robust_diversity, select_team
from .dynamic import DynamicEnsemble, stop_rule
from .ensemble import EnsembleWeights, train_team
from .flops import dense_flops, sparse_flops, team_flops
from .harp import harp_prune
from .masks import apply_masks, global_topk_masks, model_masks, nonzero_parameters
from .pipeline import EEDConfig
from .subsets import split_subsets
from .team import TeamNetwork

__all__ = [
    "CRITERIA",
    "DynamicEnsemble",
    "EEDConfig",
    "EnsembleWeights",
    "PoolAverage",
    "TeamNetwork",
    "apply_masks",
    "ase_scores",
    "bnsf_scores",
    "criterion_scores",
    "dense_flops",
    "erm_scores",
    "failure_matrix",
    "global_topk_masks",
    "harp_prune",
    "model_masks",
    "nis_scores",
    "nonzero_parameters",
    "prunable_layers",
    "robust_diversity",
    "select_team",
    "sparse_flops",
    "split_subsets",
    "stop_rule",
    "team_flops",
    "train_team",
]
