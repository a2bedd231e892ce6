"""DeepFool-L2: the exact minimal step on a linear model, the eps projection, and a trained net."""

import pytest
import torch
from tiny_models import digits, trained
from torch import nn

from robustkernels.api import attacks


class Linear2(nn.Module):
    """logits = (0, w . x + b): the boundary is the hyperplane w . x + b = 0."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(torch.tensor(b))

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_deepfool_takes_the_minimal_step_on_a_linear_model():
    model = Linear2(torch.tensor([3.0, 4.0]), -2.0)
    x = torch.tensor([[0.2, 0.1]])  # w.x + b = -1: class 0, at distance 1/5 from the boundary
    y = torch.tensor([0])
    x_adv = attacks.deepfool(model, x, y, eps=10.0, lo=-10, hi=10)
    delta = x_adv - x
    expected = 1.02 * (1 + 1e-4) / 25 * torch.tensor([[3.0, 4.0]])  # (|f| + slack) / ||w||^2 * w, overshoot
    torch.testing.assert_close(delta, expected)
    assert int(model(x_adv).argmax()) == 1
    # a budget below the distance: projected onto the ball, the label holds
    x_small = attacks.deepfool(model, x, y, eps=0.1, lo=-10, hi=10)
    assert float((x_small - x).norm()) == pytest.approx(0.1, rel=1e-5)
    assert int(model(x_small).argmax()) == 0
    assert model.w.grad is None and model.w.requires_grad


def test_deepfool_fools_a_trained_net_within_the_box():
    model = trained()
    x, y = digits("test")
    x, y = x[:32], y[:32]
    x_adv = attacks.deepfool(model, x, y, eps=100.0, steps=50)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        right = model(x).argmax(dim=1) == y
        fooled = model(x_adv).argmax(dim=1) != y
    assert float(fooled[right].float().mean()) >= 0.9
    small = attacks.deepfool(model, x, y, eps=0.5)
    assert float((small - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
    with torch.no_grad():
        assert float((model(small).argmax(dim=1) == y).float().mean()) >= float(
            (model(x_adv).argmax(dim=1) == y).float().mean()
        )


def test_deepfool_checks_its_arguments():
    model = Linear2(torch.tensor([1.0, 1.0]), 0.0)
    with pytest.raises(ValueError, match="eps"):
        attacks.deepfool(model, torch.zeros(1, 2), torch.tensor([0]), eps=-1.0)
    with pytest.raises(ValueError, match="candidates"):
        attacks.deepfool(model, torch.zeros(1, 2), torch.tensor([0]), eps=1.0, candidates=1)
