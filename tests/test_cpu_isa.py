"""Every instruction-set path of the C++ CPU kernels (scalar, AVX2, AVX-512), forced on
purpose whichever path this CPU would pick, against the reference; and the paths against
each other, bit for bit except where the scalar path's Philox normals (libm's log / sin /
cos instead of SLEEF's) enter. A path this CPU lacks is skipped with the reason."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import TOLERANCE, Target, require_backend
from test_multires_stack import assert_matches_reference, images

import robustkernels
from robustkernels import cpu_isa, reference
from robustkernels import functional as F


def _inputs(*shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for shape in shapes]


def _with_grads(fn, tensors, seed=1):
    """fn's output and the gradients of tensors for a fixed random incoming gradient."""
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*tensors)
    incoming = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return [out.detach(), *torch.autograd.grad(out, tensors, incoming)]


def philox_normals(ops):
    return [ops.philox_normal(torch.empty(1000), seed=77, offset=3)]


def noisy_weight(ops, alpha_shape):
    weight, alpha = _inputs((16, 8, 3, 3), alpha_shape)
    mask = torch.rand(weight.shape, generator=torch.Generator().manual_seed(2)) > 0.3
    return _with_grads(
        lambda w, a: ops.noisy_weight(w, a.abs() + 0.1, lam=0.8, seed=1234, mask=mask), [weight, alpha]
    )


def multires(ops, noise_kind):
    return _with_grads(
        lambda t: ops.multires_stack(t, **multires_arguments(noise_kind)), [images((3, 3, 16, 16))]
    )


def multires_arguments(noise_kind):
    # failure 6 of issue 11 (a clip decision at a near-tie, see test_multires_stack.py)
    return dict(
        resolutions=(16, 8, 5), jitter=3, noise=0.2, noise_kind=noise_kind, interpolation="bilinear", seed=11
    )


def crossmax(ops, reduction):
    (logits,) = _inputs((12, 5, 21))
    return _with_grads(lambda t: ops.crossmax(t, k=3, reduction=reduction), [logits])


def pgd_step(ops, norm, normalize):
    x_orig, grad, step = _inputs((6, 3, 7, 5), (6, 3, 7, 5), (6,))
    x_adv = (x_orig + 0.05 * grad.flip(0)).clamp(-1, 1)
    return [ops.pgd_step(x_adv, grad, x_orig, step.abs() * 0.1, 0.1, norm, -1.0, 1.0, normalize)]


def path_weights(ops, alpha_size):
    bank, alpha = _inputs((3, 8, 4, 3, 3), (3, alpha_size))
    mask = torch.rand(bank.shape, generator=torch.Generator().manual_seed(2)) > 0.3
    lams, seeds = [0.0, 0.8, 1.3], [5, 6, 7]
    return _with_grads(lambda w, a: ops.path_weights(w, mask, (a.abs() + 0.1, lams, seeds)), [bank, alpha])


class Ours:
    """The public functional API, run with the C++ backend."""

    philox_normal = staticmethod(F.philox_normal)
    crossmax = staticmethod(F.crossmax)

    @staticmethod
    def noisy_weight(w, a, lam, seed, mask):
        return F.noisy_weight(w, a, lam=lam, seed=seed, mask=mask)

    multires_stack = staticmethod(F.multires_stack)

    @staticmethod
    def pgd_step(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize):
        return F.pgd_step(
            x_adv, grad, x_orig, step=step, eps=eps, norm=norm, lo=lo, hi=hi, normalize=normalize
        )

    @staticmethod
    def path_weights(bank, mask, noise):
        return F.path_weights(bank, mask_bank=mask, noise=noise)


class Oracle:
    """The same calls on robustkernels.reference, differentiated by autograd."""

    @staticmethod
    def philox_normal(like, seed, offset):
        return reference.philox_normal(seed, like.numel(), offset=offset)

    crossmax = staticmethod(reference.crossmax)
    noisy_weight = staticmethod(reference.noisy_weight)

    pgd_step = staticmethod(reference.pgd_step)

    @staticmethod
    def path_weights(bank, mask, noise):
        alpha, lams, seeds = noise
        return reference.path_weights(bank, lams, seeds, alpha, mask)


# name: (run(ops), whether it draws Philox normals)
CASES = {
    "philox_normal": (philox_normals, True),
    **{
        f"noisy_weight-{k}": (lambda ops, s=s: noisy_weight(ops, s), True)
        for k, s in [("layer", (1,)), ("channel", (16, 1, 1, 1)), ("element", (16, 8, 3, 3))]
    },
    "multires-uniform": (lambda ops: multires(ops, "uniform"), False),
    "multires-gaussian": (lambda ops: multires(ops, "gaussian"), True),
    **{f"crossmax-{r}": (lambda ops, r=r: crossmax(ops, r), False) for r in ("kth", "topk_mean", "median")},
    **{
        f"pgd_step-{n}-{z}": (lambda ops, n=n, z=z: pgd_step(ops, n, z), False)
        for n in ("linf", "l2")
        for z in (True, False)
    },
    **{
        f"path_weights-{k}": (lambda ops, a=a: path_weights(ops, a), True)
        for k, a in [("layer", 1), ("channel", 8), ("element", 8 * 4 * 9)]
    },
}


def run_on(isa: str, case: str) -> list[torch.Tensor]:
    with cpu_isa.use_cpu_isa(isa), robustkernels.use_backend("cpp"):
        return CASES[case][0](Ours)


def require_isa(isa: str) -> None:
    require_backend("cpp")
    reason = cpu_isa.unsupported_reason(isa)
    if reason is not None:
        pytest.skip(f"path {isa!r} unavailable: {reason}")


@pytest.mark.parametrize("case", [case for case in CASES if not case.startswith("multires")])
@pytest.mark.parametrize("isa", cpu_isa.ISAS)
def test_path_matches_reference(isa, case):
    require_isa(isa)
    got = run_on(isa, case)
    expected = CASES[case][0](Oracle)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("noise_kind", ["uniform", "gaussian"])
@pytest.mark.parametrize("isa", cpu_isa.ISAS)
def test_multires_path_matches_reference(isa, noise_kind):
    require_isa(isa)
    with cpu_isa.use_cpu_isa(isa):
        assert_matches_reference(
            Target("cpp", "cpu"), images((3, 3, 16, 16)), **multires_arguments(noise_kind)
        )


@pytest.mark.parametrize("case", list(CASES))
def test_paths_agree_bitwise(case):
    """The SIMD paths agree bit for bit; the scalar path with them too, wherever no
    Philox normal enters (there within the float32 tolerance)."""
    require_backend("cpp")
    supported = cpu_isa.supported_isas()
    if len(supported) < 2:
        pytest.skip(f"this CPU has one path only ({supported[0]})")
    results = {isa: run_on(isa, case) for isa in supported}
    simd = [isa for isa in supported if isa != "scalar"]
    for isa in simd[1:]:
        for got, expected in zip(results[isa], results[simd[0]], strict=True):
            assert torch.equal(got, expected), f"{case}: {isa} differs from {simd[0]}"
    draws_normals = CASES[case][1]
    for got, expected in zip(results["scalar"], results[simd[0]], strict=True):
        if draws_normals:
            torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])
        else:
            assert torch.equal(got, expected), f"{case}: scalar differs from {simd[0]}"


def test_switch_selects_restores_and_refuses():
    require_backend("cpp")
    supported = cpu_isa.supported_isas()
    before = cpu_isa.selected_isa()
    assert supported[0] == "scalar" and before in supported
    for isa in supported:
        with cpu_isa.use_cpu_isa(isa):
            assert cpu_isa.selected_isa() == isa
    assert cpu_isa.selected_isa() == before
    with cpu_isa.use_cpu_isa("best"):
        assert cpu_isa.selected_isa() == supported[-1]
    for isa in cpu_isa.ISAS:
        if isa not in supported:
            with pytest.raises(ValueError, match=f"this CPU has no {isa} path"):
                cpu_isa.set_cpu_isa(isa)
    with pytest.raises(ValueError, match="must be 'scalar', 'avx2', 'avx512' or 'best'"):
        cpu_isa.set_cpu_isa("sse9")
    assert cpu_isa.selected_isa() == before


@pytest.mark.parametrize("isa", cpu_isa.ISAS)
def test_environment_sets_the_default(isa):
    """ROBUSTKERNELS_CPU_SIMD selects the path at the first kernel call, or refuses it."""
    require_backend("cpp")
    code = "import torch, robustkernels.functional as F, robustkernels.cpu_isa as c; print(c.selected_isa())"
    env = {**os.environ, "ROBUSTKERNELS_CPU_SIMD": isa}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    reason = cpu_isa.unsupported_reason(isa)
    if reason is None:
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [isa]
    else:
        assert result.returncode != 0
        assert f"ROBUSTKERNELS_CPU_SIMD: this CPU has no {isa} path" in result.stderr
