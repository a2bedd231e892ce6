"""EED stages 1-2: the data split, fixed top-k masks, HARP's straight-through top-a mask and
compression loss, and masks put on a model as the library's masked layers."""

import math

import pytest
import torch
from torch import nn

from robustkernels.api.eed.harp import (
    attach_harp,
    compression_loss,
    detach_harp,
    final_fractions,
    harp_prune,
    top_fraction,
)
from robustkernels.api.eed.loop import LoopConfig
from robustkernels.api.eed.masks import apply_masks, global_topk_masks, model_masks, nonzero_parameters
from robustkernels.api.eed.subsets import split_subsets
from robustkernels.api.models import SmallCNN
from robustkernels.nn import NoisyConv2d, NoisyLinear


def test_split_subsets_shares_one_part_and_keeps_the_rest_private():
    parts = split_subsets(100, 4, torch.Generator().manual_seed(0))
    assert len(parts) == 3 and all(len(p) == 50 for p in parts)
    shared = set(parts[0].tolist()) & set(parts[1].tolist()) & set(parts[2].tolist())
    assert len(shared) == 25
    private = [set(p.tolist()) - shared for p in parts]
    assert all(len(p) == 25 for p in private) and not (private[0] & private[1] or private[1] & private[2])
    assert set().union(*map(set, (p.tolist() for p in parts))) == set(range(100))
    other = split_subsets(100, 4, torch.Generator().manual_seed(1))  # reshuffled per criterion
    assert not torch.equal(other[0], parts[0])
    assert [len(p) for p in split_subsets(10, 1)] == [10]
    with pytest.raises(ValueError, match="d must"):
        split_subsets(10, 0)


def test_global_topk_keeps_the_highest_scores_with_a_floor_per_layer():
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0) / 100}
    masks = global_topk_masks(scores, 0.5, floor=0.4)
    assert masks["a"].sum() == 9 and masks["b"].tolist() == [False] * 8 + [True] * 2  # floor: 0.4*0.5*10
    plain = global_topk_masks(scores, 0.25, floor=0.0)
    assert plain["a"].sum() == 5 and plain["b"].sum() == 1  # b ranks below a; one weight kept
    with pytest.raises(ValueError, match="density"):
        global_topk_masks(scores, 1.5)


def test_top_fraction_is_straight_through():
    magnitude = torch.tensor([0.1, 0.5, 0.3, 0.9], requires_grad=True)
    fraction = torch.tensor(0.5, requires_grad=True)
    mask = top_fraction(magnitude, fraction)
    assert mask.tolist() == [0.0, 1.0, 0.0, 1.0]
    (mask * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert magnitude.grad.tolist() == [1.0, 2.0, 3.0, 4.0] and float(fraction.grad) == 10.0


def test_harp_masks_start_at_the_density_and_the_compression_loss_is_harps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5))
    scores = {name: model.get_submodule(name).weight.detach().abs() for name in ("0", "2")}
    harp = attach_harp(model, scores, 0.3)
    for name, m in harp.items():
        assert math.isclose(float(m.fraction().detach()), 0.3, rel_tol=1e-5)
        # the initial mask is the criterion's top 30 %
        kept = m.mask().bool()
        assert int(kept.sum()) == round(0.3 * kept.numel())
        assert bool(scores[name][kept].min() >= scores[name][~kept].max())
    assert float(compression_loss(harp, 0.3).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        harp["0"].rate_logit.fill_(10.0)  # layer 0 (200 of 250 weights) nearly dense
    a0 = float(harp["0"].fraction().detach())
    expected = (a0 * 200 + 0.3 * 50) / 250 / 0.3 - 1
    assert float(compression_loss(harp, 0.3).detach()) == pytest.approx(expected, rel=1e-5)
    weight = model[0].parametrizations.weight.original.clone()
    masks = detach_harp(model, harp)
    assert torch.equal(model[0].weight, weight) and model[0].weight.requires_grad
    assert masks["0"].dtype == torch.bool


def test_apply_masks_uses_the_librarys_masked_layers():
    torch.manual_seed(0)
    model = SmallCNN(width=4).eval()
    masks = {
        name: torch.rand_like(layer.weight) < 0.2
        for name, layer in model.named_modules()
        if isinstance(layer, nn.Conv2d | nn.Linear)
    }
    x = torch.rand(2, 3, 32, 32)
    apply_masks(model, masks)
    assert isinstance(model.block1[0], NoisyConv2d) and isinstance(model.fc, NoisyLinear)
    reference = SmallCNN(width=4).eval()
    reference.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.endswith(("alpha", "mask"))}
    )
    with torch.no_grad():
        for name, mask in masks.items():
            reference.get_submodule(name).weight.mul_(mask)
    torch.testing.assert_close(model(x), reference(x))
    assert all(torch.equal(model_masks(model)[n], masks[n]) for n in masks)
    expected = sum(int(reference.get_submodule(n).weight.count_nonzero()) for n in masks) + 10  # fc bias
    assert nonzero_parameters(model) == expected
    with pytest.raises(ValueError, match="masks name layers"):
        apply_masks(model, {"nope": masks["fc"]})


def test_harp_prune_learns_masks_near_the_target_density():
    torch.manual_seed(0)
    model = SmallCNN(width=4)
    x, y = torch.rand(32, 3, 32, 32), torch.randint(10, (32,))
    scores = {
        n: m.weight.detach().abs() for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
    }
    config = LoopConfig(steps=3, batch_size=16, lr=0.1, flip=False)
    masks = harp_prune(model, scores, 0.1, (x, y), config, eps=0.03, step=0.01, attack_steps=1, epochs=3)
    total = sum(m.numel() for m in masks.values())
    assert 0.05 <= sum(int(m.sum()) for m in masks.values()) / total <= 0.2
    fixed = harp_prune(
        model, scores, 0.1, (x, y), config, eps=0.03, step=0.01, attack_steps=1, learn_rates=False
    )
    for mask in fixed.values():  # HYDRA: every layer at the density
        assert int(mask.sum()) == round(0.1 * mask.numel())


def test_static_pool_member_keeps_the_global_top_k_through_fine_tuning(tmp_path):
    from robustkernels.api.eed.criteria import erm_scores
    from robustkernels.api.eed.pipeline import EEDConfig, build_pool

    torch.manual_seed(0)
    base = SmallCNN(width=4).eval()
    data = (torch.rand(32, 3, 32, 32), torch.randint(10, (32,)))
    config = EEDConfig(eps=0.03, step=0.01, attack_steps=1, batch_size=16, criteria=("erm",), subsets=1,
                       static=True, finetune_steps=2, score_images=8, flip=False)  # fmt: skip
    expected = global_topk_masks(erm_scores(base), config.member_density)
    (entry,) = build_pool(base, data, config, tmp_path)
    assert entry["criterion"] == "erm" and entry["part"] == 0
    masks = model_masks(entry["model"])
    assert all(torch.equal(masks[n], expected[n]) for n in expected)
    assert entry["nonzeros"] == nonzero_parameters(entry["model"])
    assert isinstance(base.fc, nn.Linear) and not isinstance(
        base.fc, NoisyLinear
    )  # the base is left as it was


def test_final_fractions_scale_an_overshoot_back_to_the_density():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5))
    scores = {name: model.get_submodule(name).weight.detach().abs() for name in ("0", "2")}
    harp = attach_harp(model, scores, 0.2)
    with torch.no_grad():
        harp["0"].rate_logit.fill_(0.0)  # layer 0 grows to a = 0.02 + 0.98 / 2 = 0.51
    fractions = final_fractions(harp, 0.2)
    assert (fractions["0"] * 200 + fractions["2"] * 50) / 250 == pytest.approx(0.2)
    assert fractions["0"] / fractions["2"] == pytest.approx(0.51 / 0.2, rel=1e-4)  # the allocation is kept
    masks = detach_harp(model, harp, 0.2)
    assert int(masks["0"].sum()) + int(masks["2"].sum()) == pytest.approx(50, abs=1)
