"""EED stage 4: generalised diversity on constructed failure matrices and the team search."""

import pytest
import torch

from robustkernels.api.eed.diversity import all_teams, robust_diversity, select_team


def _rd(rows, team):
    failures = torch.tensor(rows, dtype=torch.bool)
    teams = torch.zeros(1, failures.shape[0], dtype=torch.bool)
    teams[0, team] = True
    return float(robust_diversity(failures, teams)[0])


def test_rd_by_hand():
    # two members, 4 inputs: p_0 = 1/4, p_1 = 2/4, p_2 = 1/4 -> P1 = 1/2, P2 = 1/4, RD = 1/2
    assert _rd([[1, 1, 0, 0], [1, 0, 1, 0]], [0, 1]) == pytest.approx(0.5)
    assert _rd([[1, 1, 0, 0], [0, 0, 1, 1]], [0, 1]) == pytest.approx(1.0)  # never fail together
    assert _rd([[1, 1, 0, 0], [1, 1, 0, 0]], [0, 1]) == pytest.approx(0.0)  # always together
    # three members, inputs failed by 3, 1, 2, 0 members: p = (1/4, 1/4, 1/4, 1/4)
    rows = [[1, 1, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0]]
    p1 = (1 / 3 + 2 / 3 + 1) / 4
    p2 = (1 / 3 + 1) / 4
    assert _rd(rows, [0, 1, 2]) == pytest.approx(1 - p2 / p1)
    assert _rd([[0, 0], [0, 0]], [0, 1]) == 1.0  # nobody fails: no joint failure
    with pytest.raises(ValueError, match="two members"):
        _rd(rows, [1])


def test_team_search_takes_the_smallest_team_over_the_threshold_under_the_cap():
    # members 0 and 1 fail together; 2 and 3 fail on disjoint inputs
    failures = torch.tensor(
        [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]], dtype=torch.bool
    )
    chosen = select_team(failures, [10, 10, 10, 10], max_nonzeros=40)
    assert chosen["team"] == [2, 3] or chosen["team"] == [0, 3] or chosen["team"] == [1, 3]
    assert chosen["size"] == 2 and chosen["rd"] == pytest.approx(1.0) and chosen["reached_threshold"]
    assert chosen["teams_scored"] == 11
    # make member 3 too big for the cap: only pairs without it, the best of which is RD 1/2 < 0.7
    chosen = select_team(failures, [10, 10, 10, 100], max_nonzeros=40)
    assert 3 not in chosen["team"] and not chosen["reached_threshold"]
    with pytest.raises(ValueError, match="no team"):
        select_team(failures, [10, 10, 10, 10], max_nonzeros=15)
    with pytest.raises(ValueError, match="nonzeros"):
        select_team(failures, [1, 2], max_nonzeros=15)


def test_team_search_matches_a_loop_on_a_pool_of_12():
    generator = torch.Generator().manual_seed(0)
    failures = torch.rand(12, 1000, generator=generator) < 0.3
    teams = all_teams(12)
    assert teams.shape == (2**12 - 12 - 1, 12)
    rd = robust_diversity(failures, teams)
    for index in (0, 100, 4082):
        members = teams[index].nonzero().flatten()
        counts = failures[members].sum(dim=0).double()
        m = len(members)
        p1 = (counts / m).mean()
        p2 = (counts * (counts - 1) / (m * (m - 1))).mean()
        assert float(rd[index]) == pytest.approx(float(1 - p2 / p1))
