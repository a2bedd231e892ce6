"""Inputs of the routed multi-path tests (test_path_conv.py, test_path_weights.py): weight banks
with their biases, masks and alpha, inputs and routes, each from its own seeded generator."""

import torch


def make_bank(w_shape, paths, *, shared=False, alpha_kind="channel", dtype=torch.float32, seed=0):
    """weight bank (or one shared weight), per-path bias, masks and alpha [P, A]."""
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn((1 if shared else paths, *w_shape), generator=gen) * 0.3).to(dtype)
    bias = torch.randn(paths, w_shape[0], generator=gen).to(dtype)
    mask = torch.rand((paths, *w_shape), generator=gen) > 0.3
    numel = weight[0].numel()
    a = {"layer": 1, "channel": w_shape[0], "element": numel}[alpha_kind]
    alpha = (0.1 + torch.rand(paths, a, generator=gen)).to(dtype)
    return weight, bias, mask, alpha


def make_x(shape, dtype=torch.float32, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def random_route(batch, paths, dtype=torch.int64, seed=2):
    return torch.randint(paths, (batch,), generator=torch.Generator().manual_seed(seed)).to(dtype)
