"""EED stage 6 and the team network: the stopping rule, batch compaction, the batched team
against its members one after another, and the sparse FLOP counter."""

import math

import pytest
import torch
from torch import nn

from robustkernels.api.eed.criteria import erm_scores
from robustkernels.api.eed.dynamic import DynamicEnsemble, stop_rule
from robustkernels.api.eed.flops import dense_flops, sparse_flops, team_flops
from robustkernels.api.eed.masks import apply_masks, global_topk_masks
from robustkernels.api.eed.team import TeamNetwork
from robustkernels.api.models import SmallCNN, resnet20


class Fixed(nn.Module):
    """Returns given log-probabilities per sample (indexed by x[:, 0]) and records batch sizes."""

    def __init__(self, probs):
        super().__init__()
        self.log_probs = torch.tensor(probs).log()
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.log_probs[x[:, 0].long()] + 0 * x[:, :1]


def test_stop_rule_tests_confidence_then_uncertainty():
    average = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.9, 0.1]])
    previous = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
    # c = 0.81, 0.36, 0.81; KL = 0, 0, 0.9 ln 1.8 + 0.1 ln 0.2 = 0.368
    assert stop_rule(average, None, tau_u=0.01, tau_c=0.5).tolist() == [True, False, True]
    assert stop_rule(average, previous, tau_u=0.01, tau_c=0.5).tolist() == [True, False, False]
    assert stop_rule(average, previous, tau_u=0.4, tau_c=0.3).tolist() == [True, True, True]


def test_dynamic_ensemble_stops_per_sample_and_compacts_the_batch():
    # sample 0: confident at once; sample 1: confident from member 2 on, the averages then agree;
    # sample 2: never confident, runs all three
    members = [
        Fixed([[0.95, 0.05], [0.5, 0.5], [0.5, 0.5]]),
        Fixed([[0.95, 0.05], [0.99, 0.01], [0.5, 0.5]]),
        Fixed([[0.95, 0.05], [0.99, 0.01], [0.5, 0.5]]),
    ]
    x = torch.arange(3.0).reshape(3, 1)
    model = DynamicEnsemble(members, tau_u=0.05, tau_c=0.5)
    out = model(x)
    # member 2's average for sample 1: (0.5 + 0.99) / 2 = 0.745, c = 0.555 but KL vs (0.5, 0.5) is large
    assert model.members_used.tolist() == [1, 3, 3]
    assert [m.batches for m in members] == [[3], [2], [2]]  # stopped samples are not run again
    expected = torch.tensor([[0.95, 0.05], [(0.5 + 0.99 + 0.99) / 3, (0.5 + 0.01 + 0.01) / 3], [0.5, 0.5]])
    torch.testing.assert_close(out.exp(), expected)


def _brute_force(members, x, tau_u, tau_c):
    """Every member on every sample, then the stopping rule per sample."""
    probs = torch.stack([m(x).softmax(dim=1) for m in members])
    out, used = [], []
    for i in range(x.shape[0]):
        previous = None
        for t in range(1, len(members) + 1):
            average = probs[:t, i].mean(dim=0, keepdim=True)
            if t == len(members) or bool(stop_rule(average, previous, tau_u=tau_u, tau_c=tau_c)):
                out.append(average[0].log())
                used.append(t)
                break
            previous = average
    return torch.stack(out), used


def _members(build, count=3, density=0.3):
    members = []
    for k in range(count):
        torch.manual_seed(k)
        model = build()
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):  # non-trivial statistics, so folding is exercised
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.data.uniform_(0.5, 1.5)
                bn.bias.data.uniform_(-0.1, 0.1)
        members.append(apply_masks(model.eval(), global_topk_masks(erm_scores(model), density)))
    return members


def test_compaction_matches_every_member_on_every_sample():
    members = _members(SmallCNN)
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        full = torch.stack([m(x).softmax(dim=1) for m in members]).mean(dim=0).log()
        never = DynamicEnsemble(members, tau_c=2.0)  # c <= 1 < 2: nobody stops early
        torch.testing.assert_close(never(x), full)
        assert never.members_used.tolist() == [3] * 16
        torch.testing.assert_close(DynamicEnsemble(members, dynamic=False)(x), full)
        # thresholds that stop some samples at each member
        top = torch.stack([m(x).softmax(dim=1) for m in members]).amax(dim=2)
        tau_c = float(top[0].square().median())
        model = DynamicEnsemble(members, tau_u=1.0, tau_c=tau_c)
        expected, used = _brute_force(members, x, 1.0, tau_c)
        torch.testing.assert_close(model(x), expected)
        assert model.members_used.tolist() == used and 1 in used


def test_dynamic_forward_has_gradients_through_the_members_it_ran():
    members = _members(SmallCNN)
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    out = DynamicEnsemble(members, tau_c=0.0)(x)  # everyone stops after member 1
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    x2 = x.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(members[0](x2).log_softmax(dim=1)[:, 0].sum(), x2)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("build", [SmallCNN, resnet20], ids=["small-cnn", "resnet20"])
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "batchnorm"])
def test_team_network_equals_the_members_one_after_another(build, fold):
    members = _members(build)
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            TeamNetwork(members, x, fold=fold)(x), torch.stack([m(x) for m in members]), rtol=1e-4, atol=1e-5
        )


def test_sparse_flops_count_the_surviving_weights_per_position():
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    masks = {"0": torch.zeros(4, 2, 3, 3, dtype=torch.bool), "3": torch.ones(3, 4, dtype=torch.bool)}
    masks["0"][0, 0, 1, 1] = True
    masks["0"][1, 1] = True  # one 3x3 kernel
    apply_masks(model, masks)
    x = torch.rand(1, 2, 5, 5)
    assert sparse_flops(model, x) == 10 * 25 + 12
    assert dense_flops(model, x) == 72 * 25 + 12
    assert team_flops([10, 20, 30], torch.tensor([1, 3, 2, 2])) == pytest.approx((10 + 60 + 30 + 30) / 4)
    assert math.isclose(team_flops([5], torch.tensor([1])), 5)
