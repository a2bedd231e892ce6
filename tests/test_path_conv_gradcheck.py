"""float64 gradcheck of the routed layers (path_conv2d, path_linear): noisy and masked banks, and
the plain banks that skip the weight kernels."""

import torch
from path_banks import make_bank, make_x

from robustkernels import functional as F

LAMS, SEEDS = [0.0, 0.8, 1.3], [5, 6, 7]


def test_gradcheck_float64():
    """std(W) is a constant of the backward by definition (as in PNI): the check runs x, bias and
    alpha with the noise on, and the weight bank with the noise off."""
    weight, bias, mask, alpha = make_bank((3, 2, 3, 3), 3, dtype=torch.float64)
    x = make_x((5, 2, 5, 5), torch.float64)
    route = torch.tensor([2, 0, 2, 2, 0])

    def run(x, w, b, a, lams=LAMS):
        return F.path_conv2d(x, w, route, bias_bank=b, mask_bank=mask, noise=(a, lams, SEEDS), padding=1)

    x, bias, alpha = (t.clone().requires_grad_(True) for t in (x, bias, alpha))
    assert torch.autograd.gradcheck(lambda x, b, a: run(x, weight, b, a), (x, bias, alpha))
    bank = weight.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: run(x, w, bias, alpha, [0.0] * 3), (bank,))
    shared = weight[0, :, :, 0, 0].clone().requires_grad_(True)  # [3, 2]
    assert torch.autograd.gradcheck(
        lambda x, w: F.path_linear(x, w, [2, 3, 0], mask_bank=mask[:, :, :, 0, 0]), (x[:, :, 0, 0], shared)
    )


def test_gradcheck_plain_bank_float64():
    """A bank with neither masks nor noise skips the weight kernels (W' is W): every gradient, a
    bank per path and one weight shared by the paths (its dW sums theirs), several groups."""
    weight, bias, _, _ = make_bank((3, 2, 3, 3), 3, dtype=torch.float64)
    x = make_x((5, 2, 5, 5), torch.float64).requires_grad_(True)
    route = torch.tensor([2, 0, 2, 1, 0])
    bank, bias = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: F.path_conv2d(x, w, route, bias_bank=b, padding=1), (x, bank, bias)
    )
    shared = weight[1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, w: F.path_conv2d(x, w, route, num_paths=3, padding=1), (x, shared)
    )


def test_gradcheck_one_path_float64():
    """The whole batch on one path of a plain bank: dW is that path's dW' in its entry and zeros
    in the others (filled directly for a small CPU bank), or the shared weight's own."""
    weight, _, _, _ = make_bank((3, 2, 3, 3), 3, dtype=torch.float64)
    x = make_x((4, 2, 5, 5), torch.float64).requires_grad_(True)
    bank = weight.clone().requires_grad_(True)
    for route in (torch.full((4,), 1), 2):
        assert torch.autograd.gradcheck(lambda x, w, r=route: F.path_conv2d(x, w, r, padding=1), (x, bank))
    shared = weight[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, w: F.path_conv2d(x, w, torch.zeros(4, dtype=torch.int64), num_paths=3, padding=1),
        (x, shared),
    )


def test_one_path_large_bank_matches_reference():
    """Past 32768 elements the one-path bank gradient takes the general zeros + copy."""
    weight, _, _, _ = make_bank((64, 64, 3, 3), 2)
    bank = weight.clone().requires_grad_(True)
    x = make_x((2, 64, 4, 4))
    route = torch.ones(2, dtype=torch.int64)
    F.path_conv2d(x, bank, route, padding=1).square().sum().backward()
    expected = torch.zeros_like(weight)
    w1 = weight[1].clone().requires_grad_(True)
    torch.nn.functional.conv2d(x, w1, padding=1).square().sum().backward()
    expected[1] = w1.grad
    assert bank.numel() > 32768
    torch.testing.assert_close(bank.grad, expected)
