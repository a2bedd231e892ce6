"""DVERGE's black-box protocol: the transfer set's versions, its storage and all-or-nothing scoring."""

import torch
from torch import nn

from robustkernels.api.evaluate.transfer_set import (
    TransferSetConfig,
    build_transfer_set,
    load_or_build,
    sgm_modules,
    transfer_set_accuracy,
)
from robustkernels.api.models import AveragedEnsemble, resnet20


class ByBrightness(nn.Module):
    """Class 1 when the image's mean exceeds 0.5, else class 0 (a model whose errors are planted)."""

    def forward(self, x):
        score = (x.flatten(1).mean(dim=1) - 0.5) * 50
        return torch.stack([-score, score], dim=1)


def _planted_set():
    # 4 images: labels by brightness, so the model is right on every clean image but image 3
    x = torch.tensor([0.2, 0.8, 0.3, 0.7]).reshape(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    y = torch.tensor([0, 1, 0, 0])
    versions = x.unsqueeze(0).repeat(3, 1, 1, 1, 1)
    versions[1, 0] = 0.9  # version 1 fools image 0 only
    versions[2, 1] = 0.45  # version 2 fools image 1 only
    return {"x": x, "y": y, "versions": versions, "names": ["a", "b", "c"]}


def test_an_image_counts_only_if_every_version_and_its_clean_input_are_right():
    result = transfer_set_accuracy(ByBrightness(), _planted_set())
    # image 0 falls to version 1, image 1 to version 2, image 3 is wrong when clean: only image 2 counts
    assert result["blackbox_accuracy"] == 0.25
    assert result["clean_accuracy"] == 0.75
    assert result["per_version"] == {"a": 0.75, "b": 0.5, "c": 0.5}
    assert result["n"] == 4


def test_scoring_in_batches_gives_the_same_accuracy():
    assert transfer_set_accuracy(ByBrightness(), _planted_set(), batch_size=1)["blackbox_accuracy"] == 0.25


def test_a_randomised_model_must_be_right_on_every_draw():
    class Flaky(nn.Module):
        """Right on image 2 on every other call only."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            logits = ByBrightness()(x)
            if self.calls % 2 == 0:
                logits[2] = logits[2].flip(0)
            return logits

    planted = _planted_set()
    assert transfer_set_accuracy(Flaky(), planted, draws=1)["blackbox_accuracy"] == 0.25
    assert transfer_set_accuracy(Flaky(), planted, draws=2)["blackbox_accuracy"] == 0.0


def _surrogates():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
    return {"tiny2": AveragedEnsemble([net, nn.Sequential(nn.Flatten(), nn.Linear(192, 3))])}


def test_the_versions_are_named_bounded_and_stored_once(tmp_path):
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    config = TransferSetConfig(eps=0.05, steps=3, starts=2, batch_size=3)
    built = build_transfer_set(_surrogates(), x, y, config)
    # (2 random starts + DI + SGM) x (CE, CW) per surrogate
    assert len(built["names"]) == 8 and built["versions"].shape == (8, 5, 3, 8, 8)
    assert "tiny2/mpgd1-cw" in built["names"] and "tiny2/sgm-ce" in built["names"]
    assert float((built["versions"] - x).abs().max()) <= 0.05 + 1e-6
    assert float(built["versions"].min()) >= 0 and float(built["versions"].max()) <= 1
    assert not torch.equal(built["versions"][0], built["versions"][1])  # the starts differ
    described = {"surrogates": ["tiny2"]}
    first = load_or_build(tmp_path, _surrogates(), x, y, config, described)
    again = load_or_build(tmp_path, _surrogates(), x, y, config, described)
    assert not first["reused"] and again["reused"]
    assert torch.equal(first["versions"], again["versions"]) and again["names"] == first["names"]
    assert list(tmp_path.glob("*.safetensors")) == [tmp_path / "transfer-eps0.0500.safetensors"]
    changed = load_or_build(
        tmp_path, _surrogates(), x, y, TransferSetConfig(eps=0.05, steps=4, starts=2), described
    )
    assert not changed["reused"]


def test_a_stored_set_is_reused_only_over_the_same_clean_images(tmp_path):
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    config, described = TransferSetConfig(eps=0.05, steps=1, starts=1), {"surrogates": ["tiny2"]}
    load_or_build(tmp_path, _surrogates(), x, y, config, described)
    # the same settings over other images (another eval_images, another test draw) are another set
    fewer = load_or_build(tmp_path, _surrogates(), x[:4], y[:4], config, described)
    assert not fewer["reused"] and fewer["versions"].shape[1] == 4
    other = load_or_build(tmp_path, _surrogates(), x[:4].flip(0), y[:4], config, described)
    assert not other["reused"]
    assert load_or_build(tmp_path, _surrogates(), x[:4].flip(0), y[:4], config, described)["reused"]


def test_sgm_scales_the_residual_branches_of_a_resnet():
    names = sgm_modules(resnet20())
    assert len(names) == 9 and names[0] == "layer1.0.bn2"
