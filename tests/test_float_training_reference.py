"""The eager FLOAT baseline (benchmarks/float_reference.py) is the same model and the same
training step as FLOATTraining on robustkernels' layers, so the benchmark times the layers only.

Noise-free settings (lam=0, or alpha=0 so lam=1 adds exactly nothing) must agree to rounding;
with noise the draws differ (torch.randn against the library's Philox), so only the spread of
the outputs over many draws is compared."""

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from robustkernels.api.models import SmallCNN
from robustkernels.api.train.float_at import CLEAN, NOISY, FLOATTraining, float_inference, to_float_model
from robustkernels.nn import MaskedExpertConv2d, PathBatchNorm2d

# the baseline is a benchmark helper, not part of the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from float_reference import (
    DualBatchNorm2d,
    EagerFLOATTraining,
    PNIConv2d,
    eager_setting,
    to_eager_float_model,
)


def _pair(dtype=torch.float32, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(FLOAT model, eager model) of one SmallCNN, with BN_C and BN_A made different."""
    torch.manual_seed(seed)
    base = SmallCNN(width=4).to(dtype)
    ours, eager = to_float_model(copy.deepcopy(base)), to_eager_float_model(copy.deepcopy(base))
    with torch.no_grad():
        for norm in (m for m in ours.modules() if isinstance(m, PathBatchNorm2d)):
            for tensor in (norm.weight, norm.bias, norm.running_mean):
                tensor.add_(0.1 * torch.randn_like(tensor))
            norm.running_var.mul_(1 + 0.2 * torch.rand_like(norm.running_var))
    eager_norms = [m for m in eager.modules() if isinstance(m, DualBatchNorm2d)]
    our_norms = [m for m in ours.modules() if isinstance(m, PathBatchNorm2d)]
    for norm, dual in zip(our_norms, eager_norms, strict=True):
        for path in (CLEAN, NOISY):
            dual.bns[path].load_state_dict(norm.derive(path).state_dict())
    return ours, eager


def _our_layout(named: dict) -> dict:
    """An eager model's named tensors under the FLOAT model's names: "x.bns.p.leaf" of both
    paths stacked into "x.leaf" (a path without a gradient counts as zeros)."""
    out, paths = {}, {}
    for name, tensor in named.items():
        if ".bns." in name:
            prefix, rest = name.split(".bns.")
            path, leaf = rest.split(".", 1)
            paths.setdefault(f"{prefix}.{leaf}", {})[int(path)] = tensor
        else:
            out[name] = tensor
    for name, by_path in paths.items():
        like = next(t for t in by_path.values() if t is not None)
        out[name] = torch.stack(
            [by_path.get(p) if by_path.get(p) is not None else torch.zeros_like(like) for p in (0, 1)]
        )
    return out


def _batch(n: int = 8, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=generator).to(dtype)
    return x, torch.randint(10, (n,), generator=generator)


def test_conversion_gives_the_same_architecture_in_eager_layers():
    ours, eager = _pair()
    assert sum(isinstance(m, PNIConv2d) for m in eager.modules()) == sum(
        isinstance(m, MaskedExpertConv2d) for m in ours.modules()
    )
    assert sum(isinstance(m, DualBatchNorm2d) for m in eager.modules()) == sum(
        isinstance(m, PathBatchNorm2d) for m in ours.modules()
    )
    assert not any(type(m) in (nn.Conv2d, nn.BatchNorm2d) for m in ours.modules())
    our_params = {n: p.shape for n, p in ours.named_parameters()}
    eager_params = {n: t.shape for n, t in _our_layout(dict(eager.named_parameters())).items()}
    assert eager_params == our_params


@pytest.mark.parametrize("training", [True, False])
def test_clean_path_gives_the_same_logits_and_gradients(training):
    ours, eager = _pair()
    ours.train(training), eager.train(training)
    x, y = _batch()
    x_ours, x_eager = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with float_inference(ours, 0.0):
        logits = ours(x_ours)
    with eager_setting(eager, 0.0, CLEAN):
        eager_logits = eager(x_eager)
    torch.testing.assert_close(eager_logits, logits)
    nn.functional.cross_entropy(logits, y).backward()
    nn.functional.cross_entropy(eager_logits, y).backward()
    torch.testing.assert_close(x_eager.grad, x_ours.grad)
    grads = {n: p.grad for n, p in ours.named_parameters()}
    eager_grads = _our_layout({n: p.grad for n, p in eager.named_parameters()})
    for name, grad in grads.items():
        if name.endswith("alpha"):  # lam=0: the noise scale gets nothing
            assert eager_grads[name] is None and (grad is None or not grad.any())
        else:
            torch.testing.assert_close(eager_grads[name], grad, msg=name)
    if training:  # BN_C's statistics moved, BN_A's did not
        torch.testing.assert_close(_our_layout(eager.state_dict()), ours.state_dict())


def test_noise_free_training_step_matches_float_training():
    """Algorithm 1 with alpha = 0 (lam=1 then adds exactly zero): the same PGD examples, loss,
    logits, parameter gradients and batch-norm statistics (float64, so PGD's signs agree)."""
    ours, eager = _pair(torch.float64)
    for model in (ours, eager):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("alpha"):
                    p.zero_()
        model.train()
    x, y = _batch(dtype=torch.float64)
    losses = {}
    for name, model, method in (
        ("ours", ours, FLOATTraining(steps=2)),
        ("eager", eager, EagerFLOATTraining(steps=2)),
    ):
        generator = torch.Generator().manual_seed(1)
        loss, logits = method.loss(model, x, y, attack_model=model, generator=generator)
        loss.backward()
        losses[name] = loss, logits
    torch.testing.assert_close(losses["eager"], losses["ours"])
    eager_grads = _our_layout({n: p.grad for n, p in eager.named_parameters() if not n.endswith("alpha")})
    grads = {n: p.grad for n, p in ours.named_parameters() if not n.endswith("alpha")}
    torch.testing.assert_close(eager_grads, grads)
    torch.testing.assert_close(_our_layout(eager.state_dict()), ours.state_dict())
    assert all(p.training for p in ours.modules()) and all(p.training for p in eager.modules())


def test_noisy_outputs_have_the_same_spread():
    """lam=1 with BN_A in eval mode: over many noise draws, the logits' mean and spread agree
    loosely (the draws themselves differ by construction)."""
    ours, eager = _pair()
    for model in (ours, eager):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("alpha"):
                    p.fill_(1.0)
        model.eval()
    x, _ = _batch()
    torch.manual_seed(2)
    with torch.no_grad(), float_inference(ours, 1.0, 0.0):
        draws = torch.stack([ours(x) for _ in range(100)])
    with torch.no_grad(), eager_setting(eager, 1.0, NOISY):
        eager_draws = torch.stack([eager(x) for _ in range(100)])
    spread, eager_spread = draws.std(dim=0), eager_draws.std(dim=0)
    assert spread.mean() > 0.05 * draws.mean(dim=0).abs().mean()  # the noise is really there
    assert 0.8 < (eager_spread.mean() / spread.mean()).item() < 1.25
    mean_gap = (eager_draws.mean(dim=0) - draws.mean(dim=0)).abs().mean()
    assert mean_gap < 0.5 * spread.mean()


def test_eager_noise_scale_is_trained():
    _, eager = _pair()
    x, y = _batch()
    with eager_setting(eager, 1.0, NOISY):
        nn.functional.cross_entropy(eager(x), y).backward()
    alphas = [m.alpha.grad for m in eager.modules() if isinstance(m, PNIConv2d)]
    assert all(g is not None and g.abs().sum() > 0 for g in alphas)


def test_a_shared_layer_stays_shared():
    conv, bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
    model = to_eager_float_model(nn.Sequential(conv, bn, conv, bn))
    assert isinstance(model[0], PNIConv2d) and model[0] is model[2]
    assert isinstance(model[1], DualBatchNorm2d) and model[1] is model[3]
    torch.testing.assert_close(model[0].weight, conv.weight)
