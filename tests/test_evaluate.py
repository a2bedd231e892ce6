"""Evaluation of robustkernels.api.evaluate on tiny models; every sanity check catches a planted broken evaluation."""

import json

import pytest
import torch
from tiny_models import NoisyLogits, digits, trained
from torch import nn

from robustkernels.api import attacks
from robustkernels.api import evaluate as ev
from robustkernels.nn import NoisyLinear


def data(n=64):
    x, y = digits("test")
    return x[:n], y[:n]


def test_clean_accuracy_from_tensors_and_loaders():
    model = trained()
    x, y = data()
    expected = (model(x).argmax(dim=1) == y).float().mean().item()
    assert ev.clean_accuracy(model, (x, y), batch_size=10) == pytest.approx(expected)
    loader = [(x[:40], y[:40]), (x[40:], y[40:])]
    assert ev.clean_accuracy(model, loader) == pytest.approx(expected)


def test_robust_accuracy_is_all_or_nothing_over_restarts():
    model = trained()
    x, y = data()
    result = ev.robust_accuracy(model, (x, y), attack="pgd", eps=0.05, steps=3, restarts=3, batch_size=32)
    per_restart = result["robust_accuracy_per_restart"]
    assert len(per_restart) == 3 and per_restart == sorted(per_restart, reverse=True)
    assert result["robust_accuracy"] == per_restart[-1] <= result["clean_accuracy"]
    # the same restarts by hand: robust only if clean-correct and every restart fails
    gen = torch.Generator().manual_seed(0)
    robust = torch.zeros(0, dtype=torch.bool)
    for start in (0, 32):
        xb, yb = x[start : start + 32], y[start : start + 32]
        ok = model(xb).argmax(dim=1) == yb
        for _ in range(3):
            idx = ok.nonzero().squeeze(1)
            x_adv = attacks.pgd(
                model, xb[idx], yb[idx], eps=0.05, step=2.5 * 0.05 / 3, steps=3, generator=gen
            )
            ok[idx] = model(x_adv).argmax(dim=1) == yb[idx]
        robust = torch.cat([robust, ok])
    assert result["robust_accuracy"] == pytest.approx(robust.float().mean().item())


@pytest.mark.parametrize("attack", ["fgsm", "apgd", "autoattack"])
def test_every_attack_name(attack):
    model = trained()
    x, y = data(32)
    result = ev.robust_accuracy(model, (x, y), attack=attack, eps=0.1, steps=5)
    assert 0 <= result["robust_accuracy"] < result["clean_accuracy"]
    if attack == "autoattack":
        assert result["suite_attacks"][:2] == ["apgd-ce", "apgd-t"]
    json.loads(ev.to_json(result))


def test_transfer_accuracy_is_all_or_nothing_over_versions():
    target = trained("cnn")
    surrogates = {"mlp": trained("mlp"), "cnn_copy": trained("cnn")}
    x, y = data(48)
    result = ev.transfer_accuracy(target, surrogates, (x, y), eps=0.1, steps=5, restarts=2)
    per = result["per_surrogate"]
    assert set(per) == {"mlp", "cnn_copy"}
    assert result["transfer_accuracy"] <= min(per.values()) <= max(per.values()) <= result["clean_accuracy"]
    assert per["cnn_copy"] < per["mlp"]  # a copy of the target is a white-box attack
    assert "transfer accuracy" in ev.format_report(result)


def test_eps_sweep_is_monotone_for_a_sound_attack():
    model = trained()
    sweep = ev.eps_sweep(model, data(), [0.0, 0.05, 0.1, 0.2], steps=5)
    assert sweep["eps"] == [0.0, 0.05, 0.1, 0.2]
    assert sweep["robust_accuracy"] == sorted(sweep["robust_accuracy"], reverse=True)
    assert sweep["robust_accuracy"][0] == sweep["results"][0]["clean_accuracy"]


def flagged(checks):
    return {c["name"] for c in checks if not c["passed"]}


def test_sound_evaluation_raises_no_flag():
    model = trained()
    x, y = data()
    result = ev.evaluate(model, x, y, attack="pgd", eps=0.1, steps=5)
    assert result["flagged"] == []
    assert {c["name"] for c in result["sanity_checks"]} == {
        "eps_zero", "monotone_in_eps", "large_eps", "more_steps", "more_restarts", "converged",
        "eot_for_randomness",
    }  # fmt: skip
    assert result["draws"] == 1 and result["robust_accuracy"] <= result["robust_accuracy_as_run"]
    report = ev.format_report(result)
    assert "FLAGGED" not in report and "[ok] large_eps" in report
    assert json.loads(ev.to_json(result))["flagged"] == []


def _pgd(model, x, y, *, eps, steps, step, generator, random_start=True):
    return attacks.pgd(
        model, x, y, eps=eps, step=step, steps=steps, generator=generator, random_start=random_start
    )


def ignores_eps(model, x, y, *, eps, norm, steps, eot_draws, generator):
    """Broken: attacks with a fixed budget whatever eps is asked for."""
    return _pgd(model, x, y, eps=0.2, steps=steps, step=0.05, generator=generator)


def step_shrinks_with_eps(model, x, y, *, eps, norm, steps, eot_draws, generator):
    """Broken: the step size is inverted (step = c / eps), so larger budgets take tiny steps."""
    if eps == 0:
        return x
    return _pgd(model, x, y, eps=eps, steps=steps, step=1e-4 / eps, generator=generator, random_start=False)


def capped_budget(model, x, y, *, eps, norm, steps, eot_draws, generator):
    """Broken: never uses more than 0.02 of the budget (e.g. a leftover clamp)."""
    return _pgd(model, x, y, eps=min(eps, 0.02), steps=steps, step=0.01, generator=generator)


def step_over_steps_squared(model, x, y, *, eps, norm, steps, eot_draws, generator):
    """Broken: the step size falls with the square of the steps, so more steps travel less."""
    return _pgd(model, x, y, eps=eps, steps=steps, step=2.5 * eps / steps**2, generator=generator)


@pytest.mark.parametrize(
    ("attack", "check"),
    [
        (ignores_eps, "eps_zero"),
        (step_shrinks_with_eps, "monotone_in_eps"),
        (capped_budget, "large_eps"),
        (step_over_steps_squared, "more_steps"),
    ],
)
def test_each_check_catches_its_planted_attack(attack, check):
    model = trained()
    x, y = data()
    result = ev.evaluate(model, x, y, attack=attack, eps=0.1, steps=4)
    assert check in result["flagged"]
    report = ev.format_report(result)
    assert f"[FLAGGED] {check}" in report and report.startswith("WARNING")


def any_restart_counts(model, data, *, eps, steps, restarts, seed, **_settings):
    """Broken evaluation: a sample counts as robust if ANY restart fails (instead of every one)."""
    x, y = data
    generator = torch.Generator().manual_seed(seed)
    survived = torch.zeros_like(y, dtype=torch.bool)
    for _ in range(restarts):
        x_adv = attacks.pgd(model, x, y, eps=eps, step=eps / 10, steps=steps, generator=generator)
        survived |= model(x_adv).argmax(dim=1) == y
    clean = (model(x).argmax(dim=1) == y).float().mean().item()
    return {"robust_accuracy": survived.float().mean().item(), "clean_accuracy": clean, "n": len(y)}


def test_more_restarts_check_catches_an_any_restart_evaluation():
    model = trained()
    checks = ev.sanity_checks(model, data(), eps=0.2, steps=2, evaluator=any_restart_counts)
    assert "more_restarts" in flagged(checks)
    assert "more_restarts" not in flagged(ev.sanity_checks(model, data(), eps=0.2, steps=2))


def test_randomised_model_needs_eot():
    model = NoisyLogits(trained(), sigma=2.0)
    x, y = data(32)
    assert ev.looks_randomized(model, (x, y)) and not ev.looks_randomized(trained(), (x, y))
    without = ev.evaluate(model, x, y, eps=0.1, steps=2)
    assert "eot_for_randomness" in without["flagged"]
    with_eot = ev.evaluate(model, x, y, eps=0.1, steps=2, eot_draws=2)
    assert "eot_for_randomness" not in with_eot["flagged"]
    declared = ev.evaluate(trained(), x, y, eps=0.1, steps=2, randomized=True)
    assert "eot_for_randomness" in declared["flagged"]


def test_bad_arguments():
    x, y = data(4)
    with pytest.raises(ValueError, match="attack"):
        ev.robust_accuracy(trained(), (x, y), attack="cw", eps=0.1)
    with pytest.raises(ValueError, match="restarts"):
        ev.robust_accuracy(trained(), (x, y), eps=0.1, restarts=0)
    with pytest.raises(ValueError, match="surrogates"):
        ev.transfer_accuracy(trained(), {}, (x, y), eps=0.1)
    with pytest.raises(ValueError, match="length"):
        ev.clean_accuracy(trained(), (x, y[:2]))


class Detached(torch.nn.Module):
    """Gradient masking: the model cuts the graph to its input."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x.detach())


def test_masked_gradients_are_flagged_not_crashed():
    x, y = data()
    result = ev.evaluate(Detached(trained()), x, y, eps=0.1, steps=4)
    assert result["robust_accuracy"] > 0.5  # the attack is blind, so accuracy looks high
    assert "large_eps" in result["flagged"]


def fixed_small_step(model, x, y, *, eps, norm, steps, eot_draws, generator):
    """Too few steps: a step of eps/16 whatever the steps, so a few steps stop far inside the ball."""
    return _pgd(model, x, y, eps=eps, steps=steps, step=eps / 16, generator=generator, random_start=False)


def test_a_too_few_steps_evaluation_is_flagged_and_the_lower_number_is_the_headline():
    x, y = data()
    result = ev.evaluate(trained(), x, y, attack=fixed_small_step, eps=0.1, steps=2)
    assert "converged" in result["flagged"] and "more_steps" not in result["flagged"]
    more_steps = next(c for c in result["sanity_checks"] if c["name"] == "more_steps")
    fall = result["robust_accuracy_as_run"] - more_steps["robust_accuracy"]
    assert fall > 2 * ev.standard_error(result["robust_accuracy_as_run"], len(y))
    assert result["robust_accuracy"] <= more_steps["robust_accuracy"]  # every image's worst over all runs
    assert result["robust_accuracy_from"] == "every image's worst over: as run, more_steps, more_restarts"
    assert "[FLAGGED] converged" in ev.format_report(result)
    assert "per_image" not in result and all("per_image" not in c for c in result["sanity_checks"])


def test_the_headline_counts_an_image_only_if_every_run_left_it_robust():
    def run(robust, name=None):
        per_image = {"robust": robust, "correct_fraction": [float(r) for r in robust]}
        return {"robust_accuracy": sum(robust) / 4, "robust_accuracy_mean_over_draws": sum(robust) / 4,
                "per_image": per_image, **({"name": name} if name else {})}  # fmt: skip

    # each run leaves 2 or 3 of 4 images robust, not the same ones: together only 1
    as_run = run([True, True, True, False])
    checks = [run([True, False, True, True], "more_steps"), run([True, False, False, True], "twin_transfer")]
    best = ev.headline(as_run, checks)
    assert best["robust_accuracy"] == 0.25 and best["robust_accuracy_mean_over_draws"] == 0.25
    # a run without images (a custom evaluator) falls back to the lowest run
    checks[0].pop("per_image")
    assert ev.headline(as_run, checks) == {"robust_accuracy": 0.5, "robust_accuracy_mean_over_draws": 0.5,
                                           "from": "twin_transfer"}  # fmt: skip


class CoinFlip(nn.Module):
    """A randomised model right on each pass with probability 1/2 whatever the input (on a wrong
    pass its logits are rolled by one class): in the worst case over draws it withstands nothing."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        logits = self.base(x)
        wrong = torch.rand(len(x), 1) < 0.5
        return torch.where(wrong, logits.roll(1, dims=1), logits)


def test_the_rand_suite_gives_a_randomised_model_no_second_chance():
    """Regression: the suite returned the clean x of every sample its one-pass check did not fool,
    and the evaluation predicted again with a fresh draw, so a coin flip scored about a quarter."""
    torch.manual_seed(0)
    x, y = data()
    model = CoinFlip(trained())
    result = ev.robust_accuracy(model, (x, y), attack="autoattack", version="rand", eps=0.05, steps=2)
    assert result["robust_accuracy"] == 0.0
    assert result["draws"] == attacks.DRAWS
    assert 0.3 < result["robust_accuracy_mean_over_draws"] < 0.7  # one pass: right about half the time


def test_worst_of_k_is_all_or_nothing_over_draws():
    x, y = data(32)
    noisy = NoisyLogits(trained(), sigma=1.0)
    torch.manual_seed(1)
    result = ev.robust_accuracy(noisy, (x, y), attack="pgd", eps=0.05, steps=2, eot_draws=2, draws=5)
    assert result["draws"] == 5
    assert result["robust_accuracy"] <= result["clean_accuracy_every_draw"] <= result["clean_accuracy"]
    assert result["robust_accuracy"] <= result["robust_accuracy_mean_over_draws"]
    for attack in ("pgd", "autoattack"):
        # a point is scored once: at eps = 0 the attacks return x, whose clean draws decide
        at_zero = ev.robust_accuracy(noisy, (x, y), attack=attack, version="rand", eps=0.0, steps=1, draws=5)
        assert at_zero["robust_accuracy"] == at_zero["clean_accuracy_every_draw"] < at_zero["clean_accuracy"]
    one_pass = ev.robust_accuracy(noisy, (x, y), attack="pgd", eps=0.05, steps=2, draws=5, randomized=False)
    assert one_pass["draws"] == 1  # declared deterministic: one pass per point
    assert ev.robust_accuracy(trained(), (x, y), eps=0.05, steps=2)["draws"] == 1  # detected


def test_a_big_gap_between_worst_and_mean_over_draws_is_flagged():
    x, y = data()
    torch.manual_seed(2)
    noisy = ev.evaluate(NoisyLogits(trained(), sigma=2.0), x, y, eps=0.1, steps=2, eot_draws=2)
    assert "draw_gap" in noisy["flagged"]
    assert noisy["robust_accuracy_mean_over_draws"] > noisy["robust_accuracy"]
    assert "averaged over draws (not a worst case)" in ev.format_report(noisy)
    torch.manual_seed(2)
    calm = ev.evaluate(NoisyLogits(trained(), sigma=0.01), x, y, eps=0.1, steps=2, eot_draws=2)
    assert "draw_gap" not in calm["flagged"]


class MaskedWhileNoisy(nn.Module):
    """Planted gradient masking: while its noisy layer draws noise, the model cuts the graph to its
    input, so a white-box attack is blind; its deterministic twin (noise off) has the gradients."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.noisy = NoisyLinear(10, 10, bias=False)
        with torch.no_grad():
            self.noisy.weight.copy_(torch.eye(10))

    def forward(self, x):
        return self.noisy(self.base(x.detach() if self.noisy.lam else x))


def test_a_transfer_from_the_deterministic_twin_flags_masked_gradients():
    x, y = data()
    model = MaskedWhileNoisy(trained())
    twin = ev.deterministic_twin(model)
    assert twin.noisy.lam == 0 and model.noisy.lam == 1  # a copy: the model keeps its noise
    result = ev.evaluate(model, x, y, eps=0.1, steps=4, eot_draws=2)
    assert "twin_transfer" in result["flagged"]
    transfer = next(c for c in result["sanity_checks"] if c["name"] == "twin_transfer")
    assert transfer["robust_accuracy"] < result["robust_accuracy_as_run"]
    assert result["robust_accuracy"] <= transfer["robust_accuracy"]  # the headline is the lower one
    sound = ev.evaluate(
        NoisyLogits(trained(), sigma=0.01), x, y, eps=0.1, steps=4, eot_draws=2, twin=trained()
    )
    assert "twin_transfer" not in sound["flagged"]
    assert ev.deterministic_twin(trained()) is None


@pytest.mark.parametrize(
    ("model", "attack", "version"),
    [
        (trained, "pgd", "standard"),
        (lambda: MaskedWhileNoisy(trained()), "pgd", "rand"),
        (trained, "autoattack", "standard"),
    ],
    ids=["deterministic", "randomised-with-twin", "suite"],
)
def test_progress_counts_every_attack_run(model, attack, version):
    x, y = data(40)
    ticks = []
    model = model()
    randomized = ev.looks_randomized(model, (x, y))
    ev.evaluate(model, x, y, attack=attack, version=version, eps=0.1, steps=1, eot_draws=2, batch_size=32,
                n_target_classes=1, square_queries=2, progress=ticks.append)  # fmt: skip
    planned = ev.evaluation_passes(
        len(y), attack=attack, version=version, batch_size=32, randomized=randomized, twin=randomized
    )
    assert sum(ticks) == planned


def test_an_evaluation_draws_its_own_noise_whatever_ran_before():
    """The model's noisy layers run on the evaluation's streams (from `seed`): the same result
    after other forwards moved the layers' own streams, and those streams are put back."""
    x, y = data(32)
    model = nn.Sequential(trained(), NoisyLinear(10, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(10) * 4)
        model[1].alpha.fill_(2.0)
    settings = dict(eps=0.1, steps=2, eot_draws=2, draws=3, seed=5)
    first = ev.robust_accuracy(model, (x, y), **settings)
    before = int(model[1].noise_stream)
    with torch.no_grad():
        model(x)  # moves the layer's own stream
    assert int(model[1].noise_stream) != before
    moved = int(model[1].noise_stream)
    assert ev.robust_accuracy(model, (x, y), **settings) == first
    assert int(model[1].noise_stream) == moved
    assert first["robust_accuracy"] < first["robust_accuracy_mean_over_draws"] <= 1  # noise matters here
