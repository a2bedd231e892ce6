"""The multires backbone, its heads trained on the frozen backbone, and the self-ensemble."""

import pytest
import torch

from python_api.models import ModelEnsemble, SelfEnsemble, resnet20, to_multires_model
from python_api.train import FGSMTraining, train_heads
from robustkernels import functional as F
from robustkernels.nn import IntermediateHeads

TAPS = ("layer2.0", "layer3.0")


def _ensemble(pool=None, **options):
    torch.manual_seed(0)
    backbone = to_multires_model(resnet20(num_classes=4, mean=0.5, std=0.25), (8, 4, 2))
    sizes = (32 * 4 * 4, 64 * 2 * 2) if pool is None else (32, 64)
    return SelfEnsemble(backbone, IntermediateHeads(sizes, 4, pool=pool), TAPS, **options)


def _data(n=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def test_stem_takes_every_view_and_normalises_each():
    backbone = to_multires_model(resnet20(num_classes=4, mean=(0.1, 0.2, 0.3), std=0.5), (8, 4))
    assert backbone.net.conv1.in_channels == 6
    assert backbone.net.normalize.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3] * 2)
    x, _ = _data(4)
    assert backbone(x).shape == (4, 4)
    assert torch.equal(backbone(x, seed=3), backbone(x, seed=3))
    assert not torch.equal(backbone(x), backbone(x))  # a fresh draw per forward
    with pytest.raises(ValueError, match="no Conv2d named 'stem'"):
        to_multires_model(resnet20(), (8,), stem="stem")


@pytest.mark.parametrize("pool", [None, "avg"])
def test_self_ensemble_is_crossmax_of_its_predictors(pool):
    ensemble = _ensemble(pool).eval()
    x, _ = _data(5)
    predictors = ensemble.predictors(x, seed=7)
    assert predictors.shape == (3, 5, 4)  # two heads and the backbone
    torch.testing.assert_close(ensemble(x, seed=7), F.crossmax(predictors, k=3, reduction="kth"))
    ensemble.aggregation = "mean"
    torch.testing.assert_close(ensemble(x, seed=7), predictors.mean(dim=0))


@pytest.mark.parametrize("freeze_backbone_bn", [True, False])
def test_heads_train_on_the_frozen_backbone(freeze_backbone_bn):
    ensemble = _ensemble()
    before = {k: v.clone() for k, v in ensemble.backbone.state_dict().items()}
    heads_before = [p.clone() for p in ensemble.heads.parameters()]
    losses = train_heads(
        ensemble, _data(), steps=3, batch_size=8, lr=1e-2, freeze_backbone_bn=freeze_backbone_bn
    )
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    after = ensemble.backbone.state_dict()
    for name, value in before.items():
        is_statistic = "running" in name or "num_batches" in name
        if freeze_backbone_bn or not is_statistic:
            assert torch.equal(after[name], value), name  # the backbone's weights never move
    moved_statistics = any(not torch.equal(after[n], v) for n, v in before.items() if "running_mean" in n)
    assert moved_statistics != freeze_backbone_bn  # the notebook's quirk, unless frozen
    assert all(not torch.equal(a, b) for a, b in zip(ensemble.heads.parameters(), heads_before, strict=True))
    assert all(p.requires_grad for p in ensemble.backbone.parameters())


def test_model_ensemble_median_and_mean():
    models = [torch.nn.Linear(6, 4) for _ in range(3)]
    x = torch.rand(2, 6)
    stacked = torch.stack([m(x) for m in models])
    median = ModelEnsemble(models)
    mean = ModelEnsemble(models, aggregation="mean")
    torch.testing.assert_close(median(x), F.crossmax(stacked, reduction="median"))
    torch.testing.assert_close(mean(x), stacked.mean(dim=0))
    with pytest.raises(ValueError, match="aggregation"):
        ModelEnsemble(models, aggregation="vote")


def test_fgsm_training_uses_the_fgsm_batch():
    backbone = _ensemble().backbone
    x, y = _data(6)
    loss, logits = FGSMTraining(8 / 255).loss(backbone, x, y, attack_model=backbone, generator=None)
    assert logits.shape == (6, 4) and loss.requires_grad
