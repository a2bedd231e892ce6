"""OAT and OATS: FiLM (hand-computed), the conversion (dual BN + FiLM, slimmable for OATS), the
test-time setting, the per-batch lam and its loss, and the MAC / parameter counts with FiLM."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustkernels.api.models import SmallCNN
from robustkernels.api.train.macs import forward_macs
from robustkernels.api.train.oat import (
    OAT_LAMS,
    OATSTraining,
    OATTraining,
    oat_inference,
    oats_inference,
    to_oat_model,
)
from robustkernels.api.train.parameter_counts import path_parameters
from robustkernels.nn import MaskedExpertConv2d, PathBatchNorm2d
from robustkernels.nn.film import FiLM2d


def _oat_cnn(widths=None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return to_oat_model(SmallCNN(width=4), widths, generator=torch.Generator().manual_seed(seed))


def _batch(n: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.randint(10, (n,), generator=generator)


def test_film_is_the_affine_its_two_layers_compute():
    film = FiLM2d(3, 5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(film(x), x)  # the second layer starts at zero: the identity
    nn.init.normal_(film.fc2.weight)
    film.lam = 0.3
    e = 0.7 * film.codes[0] + 0.3 * film.codes[1]
    hidden = F.leaky_relu(e @ film.fc1.weight.T + film.fc1.bias, 0.2)
    gamma, beta = (hidden @ film.fc2.weight.T + film.fc2.bias).view(2, 3)
    torch.testing.assert_close(film(x), x * (1 + gamma).view(1, 3, 1, 1) + beta.view(1, 3, 1, 1))
    torch.testing.assert_close(film(x[:, :2]), film(x)[:, :2])  # a slimmed input: its leading channels
    with pytest.raises(ValueError, match="FiLM2d expects"):
        film(torch.randn(2, 4, 4, 4))


def test_conversion_puts_film_after_every_dual_bn():
    model = _oat_cnn()
    films = [m for m in model.modules() if isinstance(m, FiLM2d)]
    assert len(films) == 3 and not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert not any(isinstance(m, MaskedExpertConv2d) for m in model.modules())  # plain convs: no noise
    slim = _oat_cnn(widths=(0.5, 1.0))
    assert len([m for m in slim.modules() if isinstance(m, FiLM2d)]) == 3
    with pytest.raises(ValueError, match=r"no nn\.BatchNorm2d"):
        to_oat_model(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_inference_sets_film_lam_and_the_bn_and_restores_them():
    model = _oat_cnn().eval()
    for film in (m for m in model.modules() if isinstance(m, FiLM2d)):
        nn.init.normal_(film.fc2.weight, std=0.5)
    x, _ = _batch()
    outputs = {}
    for lam in (0.0, 0.2, 1.0):
        with oat_inference(model, lam):
            norms = [m for m in model.modules() if isinstance(m, PathBatchNorm2d)]
            assert {m.route for m in norms} == {1 if lam else 0}
            outputs[lam] = model(x)
            assert torch.equal(outputs[lam], model(x))  # deterministic
    assert not torch.allclose(outputs[0.2], outputs[1.0])  # the FiLM conditioning matters
    assert all(m.lam == 0.0 for m in model.modules() if isinstance(m, FiLM2d))
    with pytest.raises(ValueError, match="lam must lie"):
        oat_inference(model, 1.5).__enter__()
    slim = _oat_cnn(widths=(0.5, 1.0)).eval()
    with oats_inference(slim, 0.5, 0.7):
        assert slim(x).shape == (8, 10)


def test_loss_is_lam_weighted_at_the_lam_drawn_per_batch():
    model = _oat_cnn().eval()  # eval: batch statistics would couple clean and adversarial halves
    x, y = _batch(6)
    method = OATTraining(eps=8 / 255, step=2 / 255, steps=1)
    drawn = [method.draw_lam(torch.Generator().manual_seed(s)) for s in range(200)]
    assert set(drawn) == set(OAT_LAMS)
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    loss, _ = method.loss_at(model, x, y, 0.3, attack_model=model, generator=generator())
    # the reference: the same PGD examples, CE at lam 0.3 of both halves by hand
    from robustkernels.api.attacks import pgd

    with oat_inference(model, 0.3):
        x_adv = pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=1, generator=generator())
        expected = 0.7 * F.cross_entropy(model(x), y) + 0.3 * F.cross_entropy(model(x_adv), y)
    torch.testing.assert_close(loss, expected)
    clean_loss, _ = method.loss_at(model, x, y, 0.0, attack_model=model, generator=generator())
    with oat_inference(model, 0.0):
        torch.testing.assert_close(clean_loss, F.cross_entropy(model(x), y))
    with pytest.raises(ValueError, match="lams"):
        OATTraining(lams=(0.0, 2.0))


def test_oats_sums_the_widths_gradients_at_one_lam():
    model = _oat_cnn(widths=(0.5, 1.0)).train()
    x, y = _batch()
    method = OATSTraining((0.5, 1.0), eps=8 / 255, step=2 / 255, steps=1)
    loss, logits = method.loss(model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert method._lam in OAT_LAMS and logits.shape == (8, 10) and torch.isfinite(loss)
    films = [m for m in model.modules() if isinstance(m, FiLM2d)]
    assert all(f.fc2.weight.grad.abs().sum() > 0 for f in films)  # FiLM is trained


def test_macs_and_parameters_count_film():
    plain = SmallCNN(width=4).eval()
    model = _oat_cnn().eval()
    image = torch.rand(1, 3, 32, 32)
    films = [m for m in model.modules() if isinstance(m, FiLM2d)]
    for film in films:  # as trained: non-zero (the second layer starts at zero)
        nn.init.normal_(film.fc2.weight), nn.init.normal_(film.fc2.bias)
    film_weights = sum(f.fc1.weight.numel() + f.fc2.weight.numel() for f in films)
    film_biases = sum(f.fc1.bias.numel() + f.fc2.bias.numel() for f in films)
    # SmallCNN's blocks: conv-bn-relu at 32x32, 16x16, 8x8, channels 4, 8, 16
    affine = 4 * 32 * 32 + 8 * 16 * 16 + 16 * 8 * 8
    assert forward_macs(model, image) == forward_macs(plain, image) + film_weights + affine
    film_parameters = film_weights + film_biases
    assert path_parameters(model)["clean_path"] == path_parameters(plain)["clean_path"] + film_parameters


def test_macs_of_a_tiny_net_by_hand_and_of_a_sparse_path():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    assert forward_macs(net, torch.rand(1, 2, 5, 5)) == 25 * 3 * 2 * 9 + 75 * 4
    conv = MaskedExpertConv2d(2, 3, 3, padding=1, density=0.5, overlap=0.25)
    kept = int(conv.masks[1].sum())
    conv.route = 1
    assert forward_macs(nn.Sequential(conv), torch.rand(1, 2, 5, 5)) == 25 * kept
    with pytest.raises(ValueError, match="one image"):
        forward_macs(net, torch.rand(2, 2, 5, 5))


@pytest.mark.parametrize("widths", [None, (0.5, 1.0)])
def test_folded_film_equals_batch_norm_then_film(widths):
    """FiLM folded into the batch norm's affine: the same outputs, gradients and running
    statistics as the batch norm followed by a separate FiLM pass, in training and in eval."""
    from robustkernels.nn.film import FiLMAfter

    folded, unfused = _oat_cnn(widths), _oat_cnn(widths)
    for film in (m for m in folded.modules() if isinstance(m, FiLM2d)):
        nn.init.normal_(film.fc2.weight, std=0.3), nn.init.normal_(film.fc2.bias, std=0.3)
    unfused.load_state_dict(folded.state_dict())
    for m in unfused.modules():
        if isinstance(m, FiLMAfter):
            m.fold = False
    x, y = _batch()
    separate_passes = []
    for film in (m for m in folded.modules() if isinstance(m, FiLM2d)):
        film.register_forward_hook(lambda *_args: separate_passes.append(1))
    for lam in (0.0, 0.3):
        for model in (folded, unfused):
            model.train()
            with oat_inference(model, lam):
                F.cross_entropy(model(x), y).backward()
        for (name, a), b in zip(folded.named_parameters(), unfused.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, msg=name)
        for (name, a), b in zip(folded.named_buffers(), unfused.buffers(), strict=True):
            torch.testing.assert_close(a, b, msg=name)
        folded.eval(), unfused.eval()
        with oat_inference(folded, lam), oat_inference(unfused, lam):
            torch.testing.assert_close(folded(x), unfused(x))
    assert not separate_passes  # the folded model never ran FiLM's own pass
