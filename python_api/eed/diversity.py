"""Stage 4 of EED: robust-diversity team selection (spec B.1, Eqs. 12-13, as generalised
diversity, Partridge & Krzanowski 1997).

F[k, n] = 1 where pool member k fails on adversarial input n. For a team of M members,
p_i = fraction of inputs on which exactly i members fail; P1 = sum_i (i / M) p_i (a random
member fails), P2 = sum_i i (i - 1) / (M (M - 1)) p_i (two distinct random members both fail)
and RD = 1 - P2 / P1. Every team's failure counts are one row of T @ F (T: teams x pool,
0/1), so all 2^K - K - 1 teams of a pool are scored in one matrix product.
"""

import itertools

import torch
from torch import nn

from ..attacks import pgd

__all__ = ["PoolAverage", "all_teams", "failure_matrix", "robust_diversity", "select_team"]

MAX_POOL = 20  # 2^20 teams; beyond, enumerating every team is no longer cheap


class PoolAverage(nn.Module):
    """The average combiner of a list of models: log of the mean softmax (DVERGE's ensemble)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-12).log()


@torch.no_grad()
def _failures(members, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([m(x_adv).argmax(dim=1) != y for m in members])


def failure_matrix(
    members, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int, generator=None,
    batch_size: int = 256,
) -> torch.Tensor:  # fmt: skip
    """F [K, N] bool: member k wrong on x_adv[n], x_adv one PGD set against the pool average
    (a common input set, so F measures joint failure on the same perturbed inputs)."""
    pool = PoolAverage(members).eval()
    rows = []
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        x_adv = pgd(pool, xb, yb, eps=eps, step=step, steps=steps, generator=generator)
        rows.append(_failures(members, x_adv, yb))
    return torch.cat(rows, dim=1)


def all_teams(pool_size: int, min_size: int = 2) -> torch.Tensor:
    """Every team of min_size..pool_size members as 0/1 rows [n_teams, pool_size], smallest first."""
    if not 1 <= pool_size <= MAX_POOL:
        raise ValueError(f"pool_size must lie in [1, {MAX_POOL}], got {pool_size}")
    rows = [
        [k in team for k in range(pool_size)]
        for size in range(min_size, pool_size + 1)
        for team in itertools.combinations(range(pool_size), size)
    ]
    return torch.tensor(rows, dtype=torch.bool).reshape(-1, pool_size)


def robust_diversity(failures: torch.Tensor, teams: torch.Tensor) -> torch.Tensor:
    """RD = 1 - P2 / P1 of every team (rows of `teams`, 0/1 over the pool) on the failure matrix
    [K, N]; a team no member of which ever fails gets RD 1 (no joint failure). Teams of one
    member have P2 = 0 / 0: they need at least two members."""
    if failures.dim() != 2 or teams.dim() != 2 or teams.shape[1] != failures.shape[0]:
        raise ValueError(
            f"failures must be [K, N] and teams [n_teams, K], got {tuple(failures.shape)} and {tuple(teams.shape)}"
        )
    sizes = teams.sum(dim=1).double()
    if bool((sizes < 2).any()):
        raise ValueError("every team needs at least two members")
    counts = teams.double() @ failures.double()  # failing members per team and input
    p1 = (counts / sizes[:, None]).mean(dim=1)
    p2 = (counts * (counts - 1) / (sizes * (sizes - 1))[:, None]).mean(dim=1)
    return torch.where(p1 > 0, 1 - p2 / p1.clamp_min(1e-300), torch.ones_like(p1))


def select_team(failures: torch.Tensor, nonzeros, *, max_nonzeros: float, threshold: float = 0.7) -> dict:
    """The smallest team with RD >= threshold whose summed non-zero parameters stay within
    max_nonzeros, the highest-RD one of that size; if none reaches the threshold, the team of
    highest RD (ties: the larger). Returns {"team": member indices, "rd", "size", "teams_scored"}."""
    nonzeros = torch.as_tensor(nonzeros, dtype=torch.float64)
    if nonzeros.shape != (failures.shape[0],):
        raise ValueError(
            f"nonzeros must give one count per pool member ({failures.shape[0]}), got {tuple(nonzeros.shape)}"
        )
    teams = all_teams(failures.shape[0])
    teams = teams[(teams.double() @ nonzeros) <= max_nonzeros]
    if teams.shape[0] == 0:
        raise ValueError(f"no team of two or more members fits max_nonzeros={max_nonzeros:g}")
    rd = robust_diversity(failures, teams)
    sizes = teams.sum(dim=1)
    passing = rd >= threshold
    if bool(passing.any()):
        smallest = int(sizes[passing].min())
        candidates = (passing & (sizes == smallest)).nonzero().flatten()
        best = candidates[rd[candidates].argmax()]
    else:
        top = (rd == rd.max()).nonzero().flatten()
        best = top[sizes[top].argmax()]  # ties to the larger team
    return {
        "team": teams[best].nonzero().flatten().tolist(),
        "rd": float(rd[best]),
        "size": int(sizes[best]),
        "reached_threshold": bool(passing.any()),
        "teams_scored": int(teams.shape[0]),
    }
