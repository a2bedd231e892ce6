"""Reference of the routed multi-path layers, and the eager baselines of their benchmarks.

Path p's effective weight is W'_p = M_p * (W_s(p) + lam_p * alpha_p * std(W_s(p)) * eta(seed_p)),
the foundation's noisy weight transform per path (s(p) = p for a bank of P weights,
0 for one shared weight); sample b goes through path route[b]. The oracle loops over
samples; the baselines are what ports of gated blocks write by hand.
"""

import torch
import torch.nn.functional as F

from robustkernels.reference.noisy_weight import noisy_weight


def _alpha_for_entry(alpha: torch.Tensor, entry: torch.Tensor) -> torch.Tensor:
    """One path's alpha row (1, C_out or numel values) shaped to broadcast over its weight."""
    if alpha.numel() == 1:
        return alpha.reshape(())
    if alpha.numel() == entry.shape[0]:
        return alpha.reshape(entry.shape[0], *([1] * (entry.dim() - 1)))
    return alpha.reshape(entry.shape)


def path_weights(
    weight: torch.Tensor,
    lams: list[float],
    seeds: list[int],
    alpha: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """W' [P, ...] from weight [S, ...] (S = 1 or P), alpha [P, A] and mask [P, ...]."""
    effective = []
    for p, (lam, seed) in enumerate(zip(lams, seeds, strict=True)):
        entry = weight[0 if weight.shape[0] == 1 else p]
        a = weight.new_zeros(()) if lam == 0 else _alpha_for_entry(alpha[p], entry)
        effective.append(noisy_weight(entry, a, lam, seed, None if mask is None else mask[p]))
    return torch.stack(effective)


def _per_sample_route(route: torch.Tensor | list[int]) -> list[int]:
    if isinstance(route, torch.Tensor):
        return [int(r) for r in route.tolist()]
    return [p for p, size in enumerate(route) for _ in range(size)]


def path_conv2d(
    x, weight, bias, route, lams, seeds, alpha=None, mask=None, stride=1, padding=0, dilation=1, groups=1
):
    """y[b] = conv(x[b], W'_{route[b]}) + bias_{route[b]}, one sample at a time (the oracle).

    route: int tensor [B], or segment sizes (path p takes the next route[p] samples).
    """
    effective = path_weights(weight, lams, seeds, alpha, mask)
    out = []
    for b, p in enumerate(_per_sample_route(route)):
        b_p = None if bias is None else bias[0 if bias.shape[0] == 1 else p]
        out.append(F.conv2d(x[b : b + 1], effective[p], b_p, stride, padding, dilation, groups))
    return torch.cat(out)


def path_linear(x, weight, bias, route, lams, seeds, alpha=None, mask=None):
    """y[b] = linear(x[b], W'_{route[b]}) + bias_{route[b]}, one sample at a time (the oracle)."""
    effective = path_weights(weight, lams, seeds, alpha, mask)
    out = []
    for b, p in enumerate(_per_sample_route(route)):
        b_p = None if bias is None else bias[0 if bias.shape[0] == 1 else p]
        out.append(F.linear(x[b : b + 1], effective[p], b_p))
    return torch.cat(out)


def every_path_conv2d(x, weights, route, stride=1, padding=0):
    """A direct port of a gated block: every path over the whole batch, then each sample's row selected."""
    outputs = torch.stack([F.conv2d(x, w, None, stride, padding) for w in weights])
    return outputs[route, torch.arange(x.shape[0], device=x.device)]


def index_loop_conv2d(x, weights, route, stride=1, padding=0):
    """The hand-written eager loop: index_select each path's samples, convolve, index_copy_ back."""
    out = None
    for p, w in enumerate(weights):
        index = (route == p).nonzero().squeeze(1)
        if index.numel() == 0:
            continue
        y = F.conv2d(x.index_select(0, index), w, None, stride, padding)
        if out is None:
            out = y.new_empty((x.shape[0], *y.shape[1:]))
        out.index_copy_(0, index, y)
    return out
