"""When an attack counts a sample as fooled and which point it keeps: a tie is wrong (CrossMax
ties at exactly 0), APGD keeps its last misclassified iterate (as AutoAttack does) or, on a
stand-in model, its highest-loss one, and Square averages a randomised model's margins."""

import importlib

import pytest
import torch

from robustkernels.api.attacks import score
from robustkernels.api.attacks.scoring import right
from robustkernels.api.attacks.square import square

apgd_module = importlib.import_module("robustkernels.api.attacks.apgd")  # the package exports the function


def test_a_tie_is_wrong_and_a_nan_too():
    logits = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]])
    y = torch.zeros(4, dtype=torch.long)
    assert right(logits, y).tolist() == [False, True, False, False]  # argmax would take rows 0 and 2
    assert score(lambda x: logits, torch.zeros(4, 1), y).robust.tolist() == [False, True, False, False]


def _scripted(monkeypatch, wrong_at, loss_at):
    """APGD's loss_gradient replaced by a script: call i (0 = the start) is misclassified when i is
    in wrong_at and has loss loss_at[i]; the gradient's sign alternates, so the iterates differ."""
    seen = []

    def loss_gradient(model, x, y, loss, *, target=None, draws=1):
        i = len(seen)
        seen.append(x.clone())
        logits = torch.tensor([[0.0, 1.0]] if i in wrong_at else [[1.0, 0.0]])
        return torch.full_like(x, (-1.0) ** i), torch.tensor([loss_at[i]]), logits

    monkeypatch.setattr(apgd_module, "loss_gradient", loss_gradient)
    return seen


def test_apgd_keeps_its_last_misclassified_iterate(monkeypatch):
    seen = _scripted(monkeypatch, wrong_at={2, 4}, loss_at=[0.0, 1.0, 2.0, 9.0, 3.0, 1.0])
    x = torch.full((1, 4), 0.5)
    x_adv = apgd_module.apgd(lambda t: t, x, torch.tensor([0]), eps=0.1, steps=5,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert len(seen) == 6 and not torch.equal(seen[2], seen[4])
    assert torch.equal(x_adv, seen[4])  # not the first (call 2), nor the highest-loss one (call 3)


def test_apgd_on_a_stand_in_runs_to_the_end_and_keeps_its_highest_loss_point(monkeypatch):
    seen = _scripted(monkeypatch, wrong_at={2, 4}, loss_at=[0.0, 1.0, 2.0, 9.0, 3.0, 1.0])
    x = torch.full((1, 4), 0.5)
    x_adv = apgd_module.apgd(lambda t: t, x, torch.tensor([0]), eps=0.1, steps=5, stop_when_fooled=False,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(x_adv, seen[3])


class NoisyMargin(torch.nn.Module):
    """Right on average (margin +0.5 at every point) but wrong on about one draw in six."""

    def __init__(self):
        super().__init__()
        self.noise = torch.Generator().manual_seed(0)

    def forward(self, x):
        margin = 0.5 + 0.5 * torch.randn(len(x), generator=self.noise)
        return torch.stack([margin, torch.zeros_like(margin)], dim=1)


def test_square_on_a_randomised_model_averages_its_margins(monkeypatch):
    x, y = torch.full((2, 1, 4, 4), 0.5), torch.zeros(2, dtype=torch.long)
    model = NoisyMargin()
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    # one lucky draw (margin <= 0) no longer ends the attack on a sample: 10 queries of 2 x 8 passes
    square(model, x, y, eps=0.1, queries=10, eot_draws=8, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 8 + 8 + 9 * 2 * 8  # the first query has the start just measured
    calls.clear()
    square(model, x, y, eps=0.1, queries=10, generator=torch.Generator().manual_seed(0))
    assert len(calls) <= 1 + 10  # one pass per margin, the current point's not measured again
    with pytest.raises(ValueError, match="eot_draws"):
        square(model, x, y, eps=0.1, eot_draws=0)


class Unfooled(torch.nn.Module):
    """Never fooled, and keeps every point it is shown."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.tensor([[1.0, 0.0]]).expand(len(x), 2)


def test_square_never_spends_a_query_on_an_unchanged_point():
    # one channel, one-pixel-wide stripes (a 5 x 1 image): every window is one sign, so half the draws of the
    # window's sign would repeat the current point if they were not drawn again
    x, y = torch.rand(6, 1, 5, 1), torch.zeros(6, dtype=torch.long)
    model = Unfooled()
    square(model, x, y, eps=0.1, queries=20, generator=torch.Generator().manual_seed(0))
    start, *candidates = model.seen
    assert len(candidates) == 20
    for candidate in candidates:  # nothing is ever kept (the margin never falls), so compare to the start
        assert ((candidate != start).flatten(1).any(dim=1)).all()


def test_square_with_a_window_that_cannot_change_ends():
    x, y = torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(square(Unfooled(), x, y, eps=0.0, queries=5), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_adaptive_evaluation_runs_on_a_gpu_with_a_gpu_generator():
    """reproduce eee hands the attacks a generator on the evaluation's device: Square's draws too."""
    from robustkernels.api.evaluate.adaptive import adaptive_evaluation
    from robustkernels.api.models import SelfEnsemble, resnet20, to_multires_model
    from robustkernels.nn import IntermediateHeads

    ensemble = SelfEnsemble(
        to_multires_model(resnet20(num_classes=4), (8, 4)), IntermediateHeads((32, 64), 4), ("layer2.0", "layer3.0")
    ).cuda().eval()  # fmt: skip
    x, y = torch.rand(3, 3, 8, 8, device="cuda"), torch.tensor([0, 1, 2], device="cuda")
    result = adaptive_evaluation(ensemble, x, y, eps=0.03, steps=2, rand_eot_draws=1, adaptive_eot_draws=1, draws=2,
                                 n_target_classes=2, square_queries=4,
                                 generator=torch.Generator(device="cuda").manual_seed(0))  # fmt: skip
    assert 0 <= result["adaptive_accuracy"] <= result["rand_accuracy"] <= 1
    x_adv = square(ensemble, x, y, eps=0.03, queries=4, eot_draws=2, generator=torch.Generator(device="cuda"))
    assert x_adv.device.type == "cuda" and float((x_adv - x).abs().max()) <= 0.03 + 1e-6
