"""EIO's and DVERGE's training losses against hand computations, and their steps."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustkernels.api.models import AveragedEnsemble
from robustkernels.api.train import build_sgd
from robustkernels.api.train.dverge import DVERGETraining
from robustkernels.api.train.eio import EIODiversification, EIOPretraining, cross_path_loss, distill_against
from robustkernels.api.train.eio_model import (
    derive_eio,
    eio_blocks,
    layer_features,
    to_eio_model,
    use_eio_path,
)


class TinyNet(nn.Module):
    """Two conv-BN units and a shared classifier (8x8 inputs)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def _batch(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=generator), torch.randint(3, (n,), generator=generator)


def _hand_ce(logits, labels):
    """Mean cross-entropy written out: -log softmax of the label, averaged."""
    log_probs = logits - logits.exp().sum(dim=1, keepdim=True).log()
    return -log_probs[torch.arange(len(labels)), labels].mean()


def test_cross_path_loss_is_the_sum_over_ordered_pairs_with_source_labels():
    model = to_eio_model(TinyNet(), 2, generator=torch.Generator().manual_seed(1)).eval()
    paths = [[0, 0], [0, 1], [1, 0]]
    distilled = [_batch(seed=s)[0] for s in (1, 2, 3)]
    _, y_source = _batch(seed=9)
    loss, shown = cross_path_loss(model, paths, distilled, y_source)
    expected = 0.0
    for i, path in enumerate(paths):
        plain = derive_eio(model, path).eval()
        for j in range(3):
            if i != j:
                expected += _hand_ce(plain(distilled[j]), y_source)
    torch.testing.assert_close(loss, expected)
    assert shown.shape == (6, 3)
    # the targets' labels would give another loss (Eq. 3 uses y_s)
    other, _ = cross_path_loss(model, paths, distilled, (y_source + 1) % 3)
    assert not torch.allclose(other, loss)


def test_cross_path_loss_rejects_mismatched_inputs():
    model = to_eio_model(TinyNet())
    with pytest.raises(ValueError, match="one distilled batch per path"):
        cross_path_loss(model, [[0, 0], [1, 1]], [torch.rand(2, 3, 8, 8)], torch.zeros(2, dtype=torch.long))


def test_distillation_stays_in_the_ball_and_moves_towards_the_target_features():
    model = to_eio_model(TinyNet(), generator=torch.Generator().manual_seed(2)).eval()
    x_source, _ = _batch(seed=3)
    x_target, _ = _batch(seed=4)
    path = [1, 0]
    distilled = distill_against(model, path, 2, x_source, x_target, eps=0.07, steps=10)
    assert float((distilled - x_source).abs().max()) <= 0.07 + 1e-6
    with use_eio_path(model, path):
        features = layer_features(model, 2)
        before = (features(x_source) - features(x_target)).square().mean()
        after = (features(distilled) - features(x_target)).square().mean()
    assert after < before


def test_one_diversification_step_reaches_exactly_the_gates_of_the_sampled_paths():
    model = to_eio_model(TinyNet(), generator=torch.Generator().manual_seed(3)).train()
    method = EIODiversification(p=3, eps=0.07, steps=2)
    x, y = _batch(8)
    loss, logits = method.loss(model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0))
    assert method.last_layer == 2  # two blocks of two gates: only l = 2 holds 3 distinct prefixes
    loss.backward()
    for block in eio_blocks(model):
        used = [float(block.weight.grad[g].abs().sum()) > 0 for g in range(2)]
        assert all(used)  # 3 distinct 2-gate prefixes use both gates of both blocks
    assert logits.shape == (8, 3) and torch.isfinite(loss)


def test_a_gated_classifier_is_never_the_distillation_layer(monkeypatch):
    import robustkernels.api.train.eio as eio

    model = to_eio_model(TinyNet(), gate_classifier=True, generator=torch.Generator().manual_seed(3)).train()
    assert len(eio_blocks(model)) == 3  # two convs and the classifier; two feature layers
    drawn, rule = [], eio.diversification_paths

    def deepest(num_blocks, n, p, generator=None, *, layer=None, max_layer=None):
        drawn.append(max_layer)  # the deepest layer the rule may draw, forced
        return rule(num_blocks, n, p, generator, layer=max_layer)

    monkeypatch.setattr(eio, "diversification_paths", deepest)
    x, y = _batch(8)
    loss, _ = EIODiversification(p=2, steps=1).loss(
        model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0)
    )
    assert drawn == [2] and torch.isfinite(loss)


def test_pretraining_trains_one_path_per_batch():
    model = to_eio_model(TinyNet(), generator=torch.Generator().manual_seed(4)).train()
    x, y = _batch(8)
    loss, _ = EIOPretraining().loss(
        model, x, y, attack_model=model, generator=torch.Generator().manual_seed(1)
    )
    loss.backward()
    for block in eio_blocks(model):
        touched = [float(block.weight.grad[g].abs().sum()) > 0 for g in range(2)]
        assert touched.count(True) == 1


def test_eio_arguments_are_checked():
    with pytest.raises(ValueError, match="p must be an int >= 2"):
        EIODiversification(p=1)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        EIODiversification(steps=0)


def test_averaged_ensemble_predicts_with_the_log_of_the_mean_softmax():
    members = [TinyNet(seed) for seed in range(3)]
    ensemble = AveragedEnsemble(members).eval()
    x, _ = _batch(4)
    expected = torch.stack([m.eval()(x).softmax(dim=1) for m in members]).mean(dim=0).log()
    torch.testing.assert_close(ensemble(x), expected)


def _dverge_loss_by_hand(ensemble, method, x, y, generator_seed):
    generator = torch.Generator().manual_seed(generator_seed)
    x_target = x[torch.randperm(len(x), generator=generator)]
    from robustkernels.api.attacks import feature_distillation

    distilled = [
        feature_distillation(layer_features(m, method.layer), x, x_target, eps=method.eps, steps=method.steps)
        for m in ensemble.members
    ]
    return [
        sum(_hand_ce(m(distilled[j]), y) for j in range(len(distilled)) if j != i)
        for i, m in enumerate(ensemble.members)
    ]


def test_dverge_loss_and_one_sgd_step_equal_separate_members_with_their_own_optimisers():
    ensemble = AveragedEnsemble([TinyNet(seed) for seed in range(3)]).train()
    method = DVERGETraining(eps=0.07, steps=2, seed=5)
    method.start_step(0, 0)
    x, y = _batch(8)
    separate = copy.deepcopy(ensemble)
    loss, _ = method.loss(ensemble, x, y, attack_model=ensemble, generator=torch.Generator().manual_seed(7))
    per_member = _dverge_loss_by_hand(separate, method, x, y, 7)
    torch.testing.assert_close(loss, sum(per_member))
    # the trainer's one SGD over the ensemble on the summed loss ...
    joint = build_sgd(ensemble, 0.1, weight_decay=1e-4)
    joint.zero_grad()
    loss.backward()
    joint.step()
    # ... is each member's own optimiser stepping on its own loss
    for member, member_loss in zip(separate.members, per_member, strict=True):
        own = build_sgd(member, 0.1, weight_decay=1e-4)
        own.zero_grad()
        member_loss.backward()
        own.step()
    for a, b in zip(ensemble.parameters(), separate.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_dverge_draws_its_layer_once_per_epoch():
    ensemble = AveragedEnsemble([TinyNet(seed) for seed in range(2)])
    method = DVERGETraining(seed=0)
    layers = {}
    for epoch in range(12):
        for step in range(3):
            method.start_step(step, epoch)
            layers.setdefault(epoch, set()).add(method._layer(ensemble))
    assert all(len(drawn) == 1 for drawn in layers.values())
    assert {next(iter(d)) for d in layers.values()} == {1, 2}


def test_dverge_redraws_its_layer_every_redraw_every_steps_in_a_short_run():
    ensemble = AveragedEnsemble([TinyNet(seed) for seed in range(2)])
    method = DVERGETraining(seed=0, redraw_every=2)
    drawn = []
    for step in range(40):
        method.start_step(step, epoch=0)  # all in one epoch: per epoch, one layer all run long
        drawn.append(method._layer(ensemble))
    assert drawn[0::2] == drawn[1::2]  # one draw per 2 steps
    assert set(drawn) == {1, 2}
    assert method.settings()["redraw_every"] == 2  # a checkpoint of another schedule does not resume
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="redraw_every"):
            DVERGETraining(redraw_every=bad)


def test_dverge_plus_adv_adds_each_members_ce_on_its_own_pgd_examples():
    ensemble = AveragedEnsemble([TinyNet(seed) for seed in range(2)]).eval()  # eval: BN stays put
    x, y = _batch(6)
    plain = DVERGETraining(eps=0.07, steps=1, seed=1)
    # adv_eps = 0: PGD returns x itself, so the added terms are each member's clean CE
    plus = DVERGETraining(eps=0.07, steps=1, seed=1, plus_adv=True, adv_eps=0.0, adv_steps=1)
    without, _ = plain.loss(ensemble, x, y, attack_model=ensemble, generator=torch.Generator().manual_seed(2))
    with_adv, _ = plus.loss(ensemble, x, y, attack_model=ensemble, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(with_adv - without, sum(_hand_ce(m(x), y) for m in ensemble.members))
