"""EED stage 5: the ensemble-learning losses by hand and one short training run."""

import pytest
import torch
from torch import nn

from robustkernels.api.eed.ensemble import (
    EnsembleWeights,
    activation_l1,
    distillation_layers,
    misclassification_loss,
    train_team,
    weight_l1,
)
from robustkernels.api.eed.loop import LoopConfig
from robustkernels.api.eed.masks import apply_masks, model_masks
from robustkernels.api.models import SmallCNN


def test_misclassification_term_by_hand():
    y = torch.tensor([0, 1])
    member_a = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]).log()  # right, wrong (p_other 0.6)
    member_b = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.8, 0.1]]).log()  # wrong (p_other 0.5), right
    loss = misclassification_loss([member_a, member_b], y)
    assert float(loss) == pytest.approx((0.5 + 0.6) / 2)


def test_weight_and_activation_terms():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2).eval())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    apply_masks(model, {"0": torch.tensor([[True, True], [False, True]])})
    assert float(weight_l1([model]).detach()) == pytest.approx(7.0)
    with activation_l1([model]) as collected:
        model(torch.tensor([[1.0, 1.0]]))  # outputs -1, 4 (BN at its initial statistics: ~identity)
    assert len(collected) == 1 and float(collected[0].detach()) == pytest.approx(2.0, rel=1e-4)
    assert distillation_layers(SmallCNN()) == ["block1", "block2", "block3"]


def test_train_team_keeps_the_masks_and_moves_the_weights():
    members = []
    for k in range(2):
        torch.manual_seed(k)
        model = SmallCNN(width=4)
        masks = {
            n: torch.rand_like(m.weight) < 0.3
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)
        }
        members.append(apply_masks(model, masks))
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in members]
    masks = [model_masks(m) for m in members]
    x, y = torch.rand(16, 3, 32, 32), torch.randint(10, (16,))
    weights = EnsembleWeights(distill_steps=1)
    losses = train_team(members, (x, y), LoopConfig(steps=2, batch_size=8, lr=0.05, flip=False), eps=0.03, step=0.01,
                        attack_steps=1, weights=weights)  # fmt: skip
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    for member, old, mask in zip(members, before, masks, strict=True):
        assert all(torch.equal(model_masks(member)[n], mask[n]) for n in mask)
        assert not torch.equal(member.state_dict()["fc.weight"], old["fc.weight"])
