"""Attacks of robustkernels.api.attacks on tiny models (8x8 digits, models that normalise inside)."""

import pytest
import torch
from tiny_models import NoisyLogits, digits, mlp, small_cnn, trained
from torch import nn

from robustkernels.api import attacks
from robustkernels.api.attacks.apgd import checkpoint_lengths

EPS = {"linf": 0.1, "l2": 1.0}


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def batch(n=64):
    x, y = digits("test")
    return x[:n], y[:n]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def perturbation_size(x_adv, x, norm):
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "cw", "dlr"])
def test_pgd_stays_in_ball_and_box(norm, loss):
    model = trained()
    x, y = batch(32)
    eps = EPS[norm]
    x_adv = attacks.pgd(
        model, x, y, eps=eps, step=eps / 4, steps=5, norm=norm, loss=loss, restarts=2, generator=gen()
    )
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert bool((perturbation_size(x_adv, x, norm) <= eps * (1 + 1e-5)).all())
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_stronger_settings_never_raise_accuracy(norm):
    model = trained()
    x, y = batch()
    eps = EPS[norm]
    fgsm = accuracy(model, attacks.fgsm(model, x, y, eps=eps, norm=norm), y)
    pgd_runs = [
        attacks.pgd(
            model, x, y, eps=eps, step=eps / 4, steps=steps, norm=norm, restarts=restarts, generator=gen()
        )
        for steps, restarts in ((10, 1), (10, 3))
    ]
    pgd_one, pgd_three = (accuracy(model, x_adv, y) for x_adv in pgd_runs)
    assert accuracy(model, x, y) >= fgsm >= pgd_one >= pgd_three
    sweep = [
        accuracy(model, attacks.pgd(model, x, y, eps=e, step=e / 4, steps=10, norm=norm, generator=gen()), y)
        for e in (0.0, eps / 4, eps / 2, eps)
    ]
    assert sweep[0] == accuracy(model, x, y)
    assert sweep == sorted(sweep, reverse=True)


def test_fgsm_is_one_signed_step():
    model = trained()
    x, y = batch(16)
    x_in = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x_in), y, reduction="sum"), x_in)
    expected = (x + 0.05 * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(attacks.fgsm(model, x, y, eps=0.05), expected)


def test_restarts_keep_the_first_success():
    """Samples fooled by restart 1 keep that example; the others get the last restart's."""
    model = trained()
    x, y = batch(64)
    kwargs = {"eps": 0.05, "step": 0.02, "steps": 3}
    first = attacks.pgd(model, x, y, restarts=1, generator=gen(3), **kwargs)
    both = attacks.pgd(model, x, y, restarts=2, generator=gen(3), **kwargs)
    fooled_first = model(first).argmax(dim=1) != y
    assert fooled_first.any() and (~fooled_first).any()
    assert torch.equal(both[fooled_first], first[fooled_first])
    assert not torch.equal(both[~fooled_first], first[~fooled_first])


def test_targeted_attacks_hit_their_targets():
    model = trained()
    x, y = batch(32)
    target = (y + 1) % 10
    for loss in ("ce", "cw"):
        x_adv = attacks.pgd(
            model, x, target, eps=0.5, step=0.05, steps=30, loss=loss, targeted=True, generator=gen()
        )
        assert torch.equal(model(x_adv).argmax(dim=1), target)
    # the targeted DLR loss lifts the target above the true class: it misclassifies
    x_adv = attacks.pgd(model, x, y, eps=0.5, step=0.05, steps=30, loss="dlr-targeted", target=target)
    assert bool((model(x_adv).argmax(dim=1) != y).all())
    x_adv = attacks.apgd(model, x, y, eps=0.5, steps=30, loss="dlr-targeted", target=target, generator=gen())
    assert bool((model(x_adv).argmax(dim=1) != y).all())


def test_apgd_beats_or_ties_pgd_at_equal_steps():
    model = trained("cnn")
    x, y = batch(96)
    for norm, eps in (("linf", 0.06), ("l2", 0.6)):
        pgd_acc = accuracy(
            model, attacks.pgd(model, x, y, eps=eps, step=eps / 4, steps=20, norm=norm, generator=gen()), y
        )
        apgd_acc = accuracy(
            model, attacks.apgd(model, x, y, eps=eps, steps=20, norm=norm, generator=gen()), y
        )
        assert apgd_acc <= pgd_acc, norm


@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_stays_in_ball_and_box(loss, norm):
    model = trained()
    x, y = batch(24)
    eps = EPS[norm] / 2
    x_adv = attacks.apgd(
        model, x, y, eps=eps, steps=12, norm=norm, loss=loss, n_target_classes=2, generator=gen()
    )
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert bool((perturbation_size(x_adv, x, norm) <= eps * (1 + 1e-5)).all())
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)


def test_apgd_checkpoints_follow_the_paper():
    """p_1 = 0.22, interval decrease 0.03 and minimum 0.06 of the iterations."""
    assert checkpoint_lengths(100) == (22, 6, 3)
    assert checkpoint_lengths(5) == (1, 1, 1)


def test_eot_gradient_is_the_mean_over_draws():
    model = NoisyLogits(trained(), sigma=1.0)
    x, y = batch(8)
    torch.manual_seed(5)
    grad, loss, logits = attacks.loss_gradient(model, x, y, "ce", draws=4)
    torch.manual_seed(5)
    singles = [attacks.loss_gradient(model, x, y, "ce") for _ in range(4)]
    torch.testing.assert_close(grad, torch.stack([s[0] for s in singles]).mean(dim=0))
    torch.testing.assert_close(loss, torch.stack([s[1] for s in singles]).mean(dim=0))
    torch.testing.assert_close(logits, torch.stack([s[2] for s in singles]).mean(dim=0))


def test_eot_wrapper_averages_draws():
    model = NoisyLogits(trained(), sigma=1.0)
    x, _ = batch(4)
    x = x.requires_grad_(True)
    torch.manual_seed(2)
    wrapped = attacks.EOT(model, draws=3)(x)
    (grad,) = torch.autograd.grad(wrapped[:, 0].sum(), x)
    torch.manual_seed(2)
    draws = [model(x) for _ in range(3)]
    torch.testing.assert_close(wrapped, torch.stack(draws).mean(dim=0))
    singles = [torch.autograd.grad(d[:, 0].sum(), x)[0] for d in draws]
    torch.testing.assert_close(grad, torch.stack(singles).mean(dim=0))


def test_eot_reaches_every_attack():
    """eot_draws=k makes k forward passes per gradient in pgd and apgd."""
    calls = []
    base = trained()

    def counting(x):
        calls.append(len(x))
        return base(x)

    x, y = batch(4)
    attacks.pgd(counting, x, y, eps=0.1, step=0.02, steps=2, eot_draws=3)
    assert len(calls) == 2 * 3
    calls.clear()
    attacks.apgd(counting, x, y, eps=0.1, steps=2, eot_draws=3)
    assert len(calls) == 3 * 3  # the start and two steps


def _state(model):
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize(
    "run",
    [
        lambda m, x, y: attacks.pgd(m, x, y, eps=0.1, step=0.05, steps=2, momentum=1.0, input_diversity=0.5),
        lambda m, x, y: attacks.fgsm(m, x, y, eps=0.1),
        lambda m, x, y: attacks.apgd(m, x, y, eps=0.1, steps=3, loss="dlr-targeted", n_target_classes=2),
        lambda m, x, y: attacks.autoattack(m, x, y, eps=0.1, steps=2, n_target_classes=1)[0],
    ],
    ids=["pgd", "fgsm", "apgd-t", "autoattack"],
)
def test_attacks_leave_the_model_as_they_found_it(run):
    model = trained()
    model.train()
    model[2].weight.requires_grad_(False)  # a frozen layer stays frozen, the others trainable
    before = _state(model)
    weights = [p.detach().clone() for p in model.parameters()]
    x, y = batch(8)
    run(model, x, y)
    assert _state(model) == before
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))


def test_model_state_restored_after_an_error():
    model = trained()
    before = _state(model)

    def failing(x):
        model.train()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), attacks.untouched(model):
        failing(torch.zeros(1, 1, 8, 8))
    assert _state(model) == before


def test_momentum_and_input_diversity_stay_in_ball():
    model = trained("cnn")
    x, y = batch(16)
    x_adv = attacks.pgd(
        model, x, y, eps=0.1, step=0.01, steps=10, momentum=1.0, input_diversity=1.0, random_start=False,
        generator=gen(),
    )  # fmt: skip
    assert bool((perturbation_size(x_adv, x, "linf") <= 0.1 + 1e-6).all())
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)


def test_input_diversity_keeps_shape_and_is_identity_at_probability_zero():
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(attacks.input_diversity(x, probability=0.0), x)
    out = attacks.input_diversity(x, probability=1.0, scale=1.5, generator=gen())
    assert out.shape == x.shape and not torch.equal(out, x)


def test_skip_gradient_scales_residual_gradients():
    model = mlp()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    assert attacks.residual_relus(model) == ["3.0"]
    (plain,) = torch.autograd.grad(model(x).sum(), x)
    with attacks.skip_gradient(model, gamma=0.25) as names:
        assert names == ["3.0"]
        (scaled,) = torch.autograd.grad(model(x).sum(), x)
        torch.testing.assert_close(model(x), model[4](model[3](model[2](model[1](model[0](x))))))
    torch.testing.assert_close(scaled, 0.25 * plain)
    (after,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(after, plain)


def test_losses():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -2.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(attacks.attack_loss("cw", logits, y), torch.tensor([-2.0, 2.0]))
    dlr = attacks.attack_loss("dlr", logits, y)
    torch.testing.assert_close(attacks.attack_loss("dlr", 5 * logits + 3, y), dlr)
    torch.testing.assert_close(dlr, torch.tensor([-2.0 / 3.0, 2.0 / 2.0]))
    target = torch.tensor([2, 1])
    torch.testing.assert_close(
        attacks.attack_loss("dlr-targeted", logits, y, target), torch.tensor([-3.0 / 3.5, 2.0 / 3.0])
    )
    with pytest.raises(ValueError, match="target"):
        attacks.attack_loss("dlr-targeted", logits, y)


def test_feature_distillation_moves_features_toward_the_target():
    model = trained("cnn")
    features = model[:4]  # normalise, conv, relu, second conv block
    x, _ = batch(16)
    source, target = x[:8], x[8:]
    with torch.no_grad():
        before = attacks.feature_mse(features(source), features(target))
    distilled = attacks.feature_distillation(features, source, target)
    with torch.no_grad():
        after = attacks.feature_mse(features(distilled), features(target))
    assert bool((after < before).all())
    assert bool((perturbation_size(distilled, source, "linf") <= 0.07 + 1e-6).all())
    assert all(p.grad is None for p in model.parameters())
    plain = attacks.feature_distillation(features, source, target, momentum=0.0, steps=3, step=0.01)
    assert bool((perturbation_size(plain, source, "linf") <= 0.03 + 1e-6).all())


def test_autoattack_standard_reports_what_it_ran():
    model = trained()
    x, y = batch(32)
    x_adv, info = attacks.autoattack(model, x, y, eps=0.1, steps=10, n_target_classes=2, generator=gen())
    assert info["attacks"][:2] == ["apgd-ce", "apgd-t"]
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        assert set(info["skipped"]) == {"fab-t", "square"}
        assert all("torchattacks" in reason for reason in info["skipped"].values())
    assert info["robust_accuracy"] == accuracy(model, x_adv, y) <= info["clean_accuracy"]
    assert bool((perturbation_size(x_adv, x, "linf") <= 0.1 + 1e-6).all())


def test_autoattack_rand_uses_eot():
    calls = []
    noisy = NoisyLogits(trained(), sigma=0.5)

    def counting(x):
        calls.append(len(x))
        return noisy(x)

    x, y = batch(8)
    _, info = attacks.autoattack(counting, x, y, eps=0.1, version="rand", steps=1)
    assert info["attacks"] == ["apgd-ce", "apgd-dlr"] and info["eot_draws"] == 20 and info["draws"] == 10
    assert len(calls) >= 2 * 20  # the start and one step of APGD-CE, each with 20 draws


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"eps": -1.0}, ValueError, "eps"),
        ({"steps": 0}, ValueError, "steps"),
        ({"restarts": 0}, ValueError, "restarts"),
        ({"norm": "l1"}, ValueError, "norm"),
        ({"loss": "mse"}, ValueError, "loss"),
        ({"loss": "dlr", "targeted": True}, ValueError, "loss"),
        ({"loss": "dlr-targeted"}, ValueError, "target"),
        ({"eot_draws": 0}, ValueError, "eot_draws"),
        ({"input_diversity": 2.0}, ValueError, "input_diversity"),
    ],
)
def test_pgd_bad_arguments(kwargs, error, name):
    x, y = batch(2)
    args = {"eps": 0.1, "step": 0.01, "steps": 1, **kwargs}
    with pytest.raises(error, match=name):
        attacks.pgd(mlp(), x, y, **args)


def test_bad_labels():
    x, y = batch(2)
    with pytest.raises(TypeError, match="y"):
        attacks.pgd(mlp(), x, y.float(), eps=0.1, step=0.01, steps=1)
    with pytest.raises(ValueError, match="y"):
        attacks.apgd(mlp(), x, y[:1], eps=0.1)
    with pytest.raises(ValueError, match="target"):
        attacks.apgd(mlp(), x, y, eps=0.1, loss="ce", target=y)
    with pytest.raises(ValueError, match="version"):
        attacks.autoattack(small_cnn(), x, y, eps=0.1, version="plus")


def test_autoattack_keeps_an_adversarial_point_for_every_sample_it_did_not_fool():
    """Regression: samples no attack fooled came back as their clean input."""
    model = trained()
    x, y = batch(64)
    x_adv, info = attacks.autoattack(model, x, y, eps=0.03, steps=3, n_target_classes=1, generator=gen())
    survived = model(x_adv).argmax(dim=1) == y
    assert survived.any()
    assert bool((perturbation_size(x_adv[survived], x[survived], "linf") > 0).all())
    # the suite's flags are the scores of the very points it returns
    assert torch.equal(info["scores"].robust, survived)
    assert info["robust_accuracy"] == survived.float().mean().item()


def test_scoring_is_right_on_every_draw_and_keeps_the_most_adversarial_point():
    x, y = batch(16)
    noisy = NoisyLogits(trained(), sigma=3.0)
    torch.manual_seed(0)
    scores = attacks.score(noisy, x, y, draws=8)
    assert torch.equal(scores.robust, scores.correct_fraction == 1)
    assert bool((scores.correct_fraction < 1).any())  # with this much noise some draw goes wrong
    model = trained()
    worst = attacks.WorstCase(model, x, y, draws=1)
    everything = torch.arange(len(y))
    weak = attacks.pgd(model, x, y, eps=0.01, step=0.01, steps=1, generator=gen())
    strong = attacks.pgd(model, x, y, eps=0.2, step=0.05, steps=5, generator=gen())
    worst.update(everything, strong)
    worst.update(everything, weak)  # a weaker point never replaces a stronger one
    strong_scores = attacks.score(model, strong, y)
    assert torch.equal(worst.robust, strong_scores.robust & worst.clean.robust)
    attacked = worst.clean.robust
    assert torch.equal(worst.x[attacked], strong[attacked])
