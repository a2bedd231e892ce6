"""The adaptive evaluation of self-ensembles: the surrogate's gradient path, the Square attack,
and the per-image minimum over attacks, with a planted gradient-masked model it must catch."""

import pytest
import torch
from torch import nn

from python_api.attacks.square import square
from python_api.evaluate.adaptive import (
    MeanSurrogate,
    StraightThroughMean,
    adaptive_evaluation,
    fixed_draw_twin,
    masking_gap,
    merge_adaptive_results,
)
from python_api.models import SelfEnsemble, resnet20, to_multires_model
from robustkernels.nn import IntermediateHeads


def _ensemble():
    torch.manual_seed(0)
    backbone = to_multires_model(resnet20(num_classes=4), (8, 4))
    return SelfEnsemble(backbone, IntermediateHeads((32, 64), 4), ("layer2.0", "layer3.0")).eval()


def _input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)[0]


def test_surrogate_gradient_flows_through_the_mean_of_all_predictors():
    ensemble = _ensemble()
    x, y = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    twin = fixed_draw_twin(ensemble, seed=5)
    expected = _input_grad(lambda t: ensemble.predictors(t, seed=5).mean(dim=0), x, y)
    torch.testing.assert_close(_input_grad(twin, x, y), expected)
    # CrossMax routes the gradient to one predictor per class: a different direction
    assert not torch.allclose(_input_grad(lambda t: ensemble(t, seed=5), x, y), expected)
    assert not torch.equal(MeanSurrogate(ensemble)(x), MeanSurrogate(ensemble)(x))  # fresh draws


class OneDraw(nn.Module):
    """The ensemble on its draw of seed 5 every time (a deterministic stand-in for a test)."""

    def __init__(self, ensemble):
        super().__init__()
        self.ensemble = ensemble

    def predictors(self, x, seed=None):
        return self.ensemble.predictors(x, seed=5)

    def combine(self, predictors):
        return self.ensemble.combine(predictors)


def test_bpda_is_the_real_model_forward_and_the_mean_of_predictors_backward():
    ensemble = _ensemble()
    x, y = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])
    bpda = StraightThroughMean(OneDraw(ensemble))
    torch.testing.assert_close(bpda(x), ensemble(x, seed=5))  # CrossMax, not the mean
    expected = _input_grad(lambda t: ensemble.predictors(t, seed=5).mean(dim=0), x, y)
    # the loss is CrossMax's (a different value), its gradient the mean's through the same softmax point
    x_in = x.clone().requires_grad_(True)
    logits = bpda(x_in)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y), x_in)
    mean_in = x.clone().requires_grad_(True)
    mean = ensemble.predictors(mean_in, seed=5).mean(dim=0)
    d_logits = (nn.functional.softmax(logits.detach(), 1) - nn.functional.one_hot(y, 4)) / len(y)
    (through_mean,) = torch.autograd.grad(mean, mean_in, d_logits)
    torch.testing.assert_close(grad, through_mean)
    assert not torch.allclose(grad, expected)  # not the mean model's own loss gradient either


def test_the_evaluation_refuses_a_model_in_train_mode():
    with pytest.raises(ValueError, match="eval mode"):
        adaptive_evaluation(_ensemble().train(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), eps=0.1)


class GradientMasked(nn.Module):
    """A planted defence: its predictions are a linear model's, but its forward cuts the
    gradient to the input; its predictors (what the surrogate differentiates) do not."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 4)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(4).repeat(1, 3))
            self.linear.bias.zero_()

    def predictors(self, x, seed=None):
        z = self.linear(x.flatten(1))
        return torch.stack([z, z, z])

    def combine(self, predictors):
        return predictors.mean(dim=0)

    def forward(self, x, seed=None):
        return self.combine(self.predictors(x.detach()))


def _separable(n=16):
    y = torch.arange(n) % 4
    x = torch.full((n, 3, 2, 2), 0.4)
    # class y's pixel brighter by 0.32 in every channel: a margin of 0.96 that eps 0.2 breaks when
    # aimed (6 eps = 1.2); a random start can break it too (APGD's start is scaled to reach eps in
    # its largest coordinate), so the tests seed their starts
    x.flatten(2)[torch.arange(n), :, y] = 0.72
    return x, y


def test_min_over_attacks_catches_a_planted_masked_model():
    x, y = _separable()
    settings = dict(eps=0.2, steps=5, rand_eot_draws=1, adaptive_eot_draws=1, draws=1, n_target_classes=3)
    settings["generator"] = torch.Generator().manual_seed(0)
    result = adaptive_evaluation(GradientMasked().eval(), x, y, attacks=("bpda-mean",), **settings)
    assert result["clean_accuracy"] == 1.0
    assert result["rand_accuracy"] == 1.0  # no gradient: the paper's protocol sees full robustness
    assert result["adaptive_accuracy"] == 0.0  # the surrogate's points, scored on the real model
    assert result["gradient_masking"]
    assert result["zero_gradient_fraction"] == 1.0  # the cut gradient shows
    unchallenged = adaptive_evaluation(GradientMasked().eval(), x, y, attacks=(), **settings)
    assert unchallenged["adaptive_accuracy"] == unchallenged["rand_accuracy"]
    assert not unchallenged["gradient_masking"]


class CancellingHeads(GradientMasked):
    """A planted defence whose two heads have the same logits but opposite input gradients: their
    mean, and the sum of their cross-entropies, have no gradient; each head alone does."""

    def predictors(self, x, seed=None):
        z = self.linear(x.flatten(1))
        return torch.stack([z, 2 * z.detach() - z])


def test_per_head_attacks_catch_heads_whose_gradients_cancel():
    x, y = _separable()
    settings = dict(eps=0.2, steps=5, rand_eot_draws=1, adaptive_eot_draws=1, draws=1, n_target_classes=3)
    settings["generator"] = torch.Generator().manual_seed(0)
    pooled = adaptive_evaluation(
        CancellingHeads().eval(), x, y, attacks=("bpda-mean", "heads-sum-ce"), **settings
    )
    assert pooled["adaptive_accuracy"] == 1.0  # every pooled gradient is zero
    per_head = adaptive_evaluation(CancellingHeads().eval(), x, y, attacks=("per-head",), **settings)
    assert per_head["adaptive_accuracy"] == 0.0 and per_head["gradient_masking"]


def test_masking_gap_is_measured_against_noise():
    assert masking_gap(0.5, 0.45, 100) == (0.04999999999999999, 0.1, False)
    assert masking_gap(0.5, 0.2, 100)[2]


def _part(n, clean, rand, adaptive, after):
    gap, noise, flagged = masking_gap(rand, adaptive, n)
    return {"n": n, "clean_accuracy": clean, "clean_accuracy_every_draw": clean / 2, "zero_gradient_fraction": 0.1,
            "rand_accuracy": rand, "adaptive_accuracy": adaptive,
            "robust_after": {"autoattack-rand": rand, "square": after}, "gap": gap, "noise": noise,
            "gradient_masking": flagged, "draws": 3}  # fmt: skip


def test_results_on_disjoint_images_merge_into_the_whole_sets_result():
    # 30 images, 12 / 9 / 6 right clean / under rand / under everything; then 20 images, 10 / 4 / 4
    merged = merge_adaptive_results([_part(30, 0.4, 0.3, 0.2, 0.25), _part(20, 0.5, 0.2, 0.2, 0.2)])
    whole = _part(50, 22 / 50, 13 / 50, 10 / 50, 11.5 / 50)
    assert merged.keys() == whole.keys()
    for key, value in whole.items():
        assert merged[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    assert merged["robust_after"] == pytest.approx(whole["robust_after"])
    # the gap is judged on all 50 images (10 of 25 robust under rand, 6 of 25 under everything in
    # each part: within the noise of 25 images, beyond that of 50)
    assert merge_adaptive_results([_part(25, 1, 0.4, 0.24, 0.3)] * 2)["gradient_masking"]
    assert not _part(25, 1, 0.4, 0.24, 0.3)["gradient_masking"]
    with pytest.raises(ValueError, match="at least one"):
        merge_adaptive_results([])


def test_square_breaks_the_masked_model_without_gradients():
    x, y = _separable()
    x_adv = square(GradientMasked(), x, y, eps=0.2, queries=100, generator=torch.Generator().manual_seed(0))
    assert float((x_adv - x).abs().max()) <= 0.2 + 1e-6
    assert float((GradientMasked()(x_adv).argmax(dim=1) == y).float().mean()) < 0.5


class Flaky(nn.Module):
    """A planted randomised model that ignores its input: right on every draw for the samples
    whose first pixel is 0, right on some draws only (a coin per forward) where it is 0.5, wrong
    where it is 1."""

    def __init__(self):
        super().__init__()
        self.coins = torch.Generator().manual_seed(0)

    def predictors(self, x, seed=None):
        kind = x.detach().flatten(1)[:, 0]
        coin = bool(torch.rand((), generator=self.coins) < 0.5)
        right = (kind == 0) | ((kind == 0.5) & coin)
        return torch.stack([torch.where(right[:, None], torch.eye(4)[0], torch.eye(4)[1])] * 3)

    def combine(self, predictors):
        return predictors.mean(dim=0)

    def forward(self, x, seed=None):
        return self.combine(self.predictors(x))


def test_attacks_after_a_sample_is_wrong_on_a_draw_leave_it_alone(monkeypatch):
    """The reported accuracies count a sample only when it is right on every draw, and one wrong on
    some draw is never robust again: the adaptive set attacks the still-robust samples only."""
    import python_api.attacks.suites as suites
    import python_api.evaluate.adaptive as adaptive

    x, y = torch.zeros(6, 3, 2, 2), torch.zeros(6, dtype=torch.long)
    x[2:4, 0, 0, 0], x[4:, 0, 0, 0] = 0.5, 1.0
    attacked = []

    def spy(model, xs, ys, **kwargs):
        attacked.append(xs.flatten(1)[:, 0].tolist())
        return xs

    monkeypatch.setattr(suites, "apgd", spy)
    monkeypatch.setattr(adaptive, "apgd", spy)
    monkeypatch.setattr(adaptive, "heads_sum_ce", spy)
    monkeypatch.setattr(adaptive, "square", lambda model, xs, ys, **kwargs: spy(model, xs, ys))
    settings = dict(eps=0.1, steps=2, rand_eot_draws=1, adaptive_eot_draws=1, draws=8, n_target_classes=3)
    result = adaptive_evaluation(Flaky().eval(), x, y, **settings)
    # the suite's two attacks, then every adaptive one (per-head: one per predictor)
    assert len(attacked) == 2 + len(adaptive.ADAPTIVE_ATTACKS) - 1 + 3
    assert all(points == [0.0, 0.0] for points in attacked)  # never a flaky or a wrong sample
    assert result["clean_accuracy"] == pytest.approx((2 + 2 * 0.5) / 6, abs=0.15)
    assert result["rand_accuracy"] == result["adaptive_accuracy"] == pytest.approx(2 / 6)
    # the suite on its own still attacks every sample right on some draw, for its mean over draws
    attacked.clear()
    _, info = suites.autoattack(Flaky(), x, y, eps=0.1, version="rand", steps=2, eot_draws=1, draws=8)
    assert attacked[0] == [0.0, 0.0, 0.5, 0.5] and "robust_accuracy_mean_over_draws" in info
