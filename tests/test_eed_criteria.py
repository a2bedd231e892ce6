"""EED's pruning criteria on tiny networks whose scores can be worked out by hand."""

import math

import pytest
import torch
from torch import nn

from robustkernels.api.eed.criteria import (
    ase_scores,
    bnsf_scores,
    criterion_scores,
    erm_scores,
    nis_scores,
    prunable_layers,
)
from robustkernels.api.models import SmallCNN, resnet20


def _linear(weight, bias=None):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


W1 = torch.tensor([[1.0, -2.0, 0.5], [-0.5, 1.0, 3.0]])
W2 = torch.tensor([[2.0, -1.0], [0.5, 4.0]])


def two_layer():
    return nn.Sequential(_linear(W1, torch.tensor([0.3, -7.0])), nn.ReLU(), _linear(W2, torch.ones(2)))


class Residual(nn.Module):
    """r = x + l2(relu(l1(x))); logits = head(r)."""

    def __init__(self):
        super().__init__()
        self.l1 = _linear(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
        self.l2 = _linear(torch.tensor([[0.5, 1.0], [-1.0, 2.0]]))
        self.head = _linear(torch.tensor([[1.0, -3.0], [2.0, 1.0], [0.0, 1.0]]))

    def forward(self, x):
        return self.head(x + self.l2(torch.relu(self.l1(x))))


def test_nis_two_layers_by_hand():
    scores = nis_scores(two_layer(), torch.zeros(1, 3))
    s_out = torch.full((2,), 0.5)  # 1 / C on the logits
    s_hidden = W2.abs().t() @ s_out
    torch.testing.assert_close(scores["2"], s_out[:, None] * W2.abs())
    torch.testing.assert_close(scores["0"], s_hidden[:, None] * W1.abs())


def test_nis_sums_the_residual_paths():
    model = Residual()
    scores = nis_scores(model, torch.zeros(1, 2))
    s_logits = torch.full((3,), 1 / 3)
    s_r = model.head.weight.abs().t() @ s_logits  # importance of r = x + l2(.)
    s_l1 = model.l2.weight.abs().t() @ s_r  # l1's outputs feed only l2
    torch.testing.assert_close(scores["head"], s_logits[:, None] * model.head.weight.abs())
    torch.testing.assert_close(scores["l2"], s_r[:, None] * model.l2.weight.abs())
    torch.testing.assert_close(scores["l1"], s_l1[:, None] * model.l1.weight.detach().abs())


def test_nis_folds_batch_norm_and_sums_conv_kernels():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    head = _linear(torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 1.0]]))
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    scores = nis_scores(model, torch.zeros(1, 2, 4, 4))
    s_logits = torch.full((2,), 0.5)
    s_pool = head.weight.abs().t() @ s_logits  # per channel, after the average pool
    bn_scale = bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)
    # the 16 positions each carry 1/16 of the pooled importance, summed back per channel
    s_conv = bn_scale * s_pool
    torch.testing.assert_close(
        scores["0"], s_conv[:, None, None, None] * conv.weight.abs(), rtol=1e-5, atol=1e-6
    )


def test_erm_is_hydras_scaled_magnitude():
    model = two_layer()
    scores = erm_scores(model)
    torch.testing.assert_close(scores["0"], math.sqrt(6 / 3) * W1.abs() / 3.0)
    torch.testing.assert_close(scores["2"], math.sqrt(6 / 2) * W2.abs() / 4.0)


def test_bnsf_folds_the_following_batch_norm_only():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([3.0, -2.0]).reshape(2, 1, 1, 1))
    bn = nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-0.5, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 16.0]) - bn.eps)
    head = _linear(torch.tensor([[1.0, -2.0]]))
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    scores = bnsf_scores(model, torch.zeros(1, 1, 2, 2))
    torch.testing.assert_close(scores["0"].flatten(), torch.tensor([3.0 * 0.5 / 2, 2.0 * 2 / 4]))
    torch.testing.assert_close(scores["5"], head.weight.detach().abs())


def test_ase_is_half_w_squared_times_the_per_sample_fisher():
    # eps 0: the PGD examples are the clean inputs, so F_ii is the plain empirical Fisher
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.rand(5, 3), torch.tensor([0, 1, 2, 1, 0])
    scores = ase_scores(model, x, y, eps=0.0, step=0.0, steps=1, batch_size=2)
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        for name, p in model.named_parameters():
            fisher[name] += p.grad.square() / len(y)
    for layer in ("0", "2"):
        weight = model.get_submodule(layer).weight.detach()
        torch.testing.assert_close(scores[layer], 0.5 * weight.square() * fisher[f"{layer}.weight"])


@pytest.mark.parametrize("build", [SmallCNN, resnet20], ids=["small-cnn", "resnet20"])
@pytest.mark.parametrize("name", ["nis", "erm", "ase", "bnsf"])
def test_every_criterion_scores_every_layer_of_library_models(build, name):
    torch.manual_seed(0)
    model = build().eval()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    scores = criterion_scores(name, model, x, y, eps=8 / 255, step=2 / 255, steps=1)
    layers = prunable_layers(model)
    assert list(scores) == list(layers)
    for layer_name, layer in layers.items():
        assert scores[layer_name].shape == layer.weight.shape
        assert bool((scores[layer_name] >= 0).all()) and bool(scores[layer_name].isfinite().all())


def test_unknown_criterion_and_missing_input_raise():
    with pytest.raises(ValueError, match="criterion"):
        criterion_scores("magnitude", two_layer(), torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="x must be"):
        nis_scores(two_layer(), None)
