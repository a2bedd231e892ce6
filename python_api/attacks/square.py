"""The Square attack under L-inf (Andriushchenko et al., "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020): gradient-free random search, a
check that a defence's robustness does not rest on its gradients alone.

From vertical stripes of +-eps, each query redraws the signs (one per channel) of a random
square window whose side shrinks on the paper's schedule (p_init = 0.8, halved at 10, 50, 200,
500, 1000, 2000, 4000, 6000, 8000 of 10,000 queries, rescaled to the budget) and keeps the
change where the margin z_y - max_{j != y} z_j went down. On a randomised model
(`eot_draws` > 1) the margin is the mean over that many passes and the current point is
measured again beside each candidate: kept as the minimum of noisy draws, its margin would be
biased low and turn good candidates away. A window whose new signs would leave the point as it
is (one sign per channel: 1 in 2^C of the windows inside a stripe) is drawn again, as in the
paper's code, so that no query is wasted on an unchanged point. A sample is done once its
margin is <= 0 (a tie is wrong, as in scoring). Our own code: torchattacks (the suites' Square) is optional and not
installed everywhere.
"""

import torch

from .arguments import check_batch, check_count, check_nonnegative
from .guard import untouched

__all__ = ["square"]

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
P_INIT = 0.8
# a window that cannot change (eps 0, or pixels clamped either way) must not loop for ever
_REDRAWS = 16


def _margin(model, x, y, draws: int) -> torch.Tensor:
    total = 0.0
    for _ in range(draws):
        logits = model(x)
        true = logits.gather(1, y[:, None]).squeeze(1)
        total = total + (true - logits.scatter(1, y[:, None], float("-inf")).amax(dim=1))
    return total / draws


def _fraction(query: int, queries: int) -> float:
    scaled = int(query / queries * 10_000)
    return P_INIT / 2 ** sum(scaled > h for h in _HALVINGS)


def _on(generator) -> torch.device:
    # the caller's generator may live on the GPU; a draw must be made where it lives
    return generator.device if generator is not None else torch.device("cpu")


def _signs(shape, generator, x) -> torch.Tensor:
    signs = torch.randint(0, 2, shape, generator=generator, device=_on(generator))
    return signs.to(device=x.device, dtype=x.dtype) * 2 - 1


def _new_window(base, current, eps: float, generator) -> torch.Tensor:
    """The window's values for each sample (base: its clean pixels), with signs drawn again
    where they equal the current ones."""
    window, pending = base.clone(), torch.arange(len(base), device=base.device)
    for _ in range(1 + _REDRAWS):
        signs = _signs((len(pending), base.shape[1], 1, 1), generator, base)
        window[pending] = (base[pending] + eps * signs).clamp(0, 1)
        pending = pending[(window[pending] == current[pending]).flatten(1).all(dim=1)]
        if pending.numel() == 0:
            break
    return window


@torch.no_grad()
def square(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    queries: int = 1000,
    eot_draws: int = 1,
    generator=None,
):
    """Square-attack points for x [B, C, H, W] in [0, 1] (the best found, per sample); eot_draws
    forward passes per margin on a randomised model (module docstring)."""
    check_batch(x, y)
    check_nonnegative("eps", eps)
    check_count("queries", queries)
    check_count("eot_draws", eot_draws)
    b, c, h, w = x.shape
    with untouched(model):
        x_adv = (x + eps * _signs((b, c, 1, w), generator, x)).clamp(0, 1)
        margin = _margin(model, x_adv, y, eot_draws)
        for query in range(queries):
            active = (margin > 0).nonzero().squeeze(1)
            if eot_draws > 1 and query > 0 and active.numel() > 0:  # query 0: measured just now
                margin[active] = _margin(model, x_adv[active], y[active], eot_draws)
                active = active[margin[active] > 0]
            if active.numel() == 0:
                break
            side = max(min(round((_fraction(query, queries) * h * w) ** 0.5), min(h, w) - 1), 1)
            top = int(torch.randint(0, h - side + 1, (), generator=generator, device=_on(generator)))
            left = int(torch.randint(0, w - side + 1, (), generator=generator, device=_on(generator)))
            candidate = x_adv[active].clone()
            rows, cols = slice(top, top + side), slice(left, left + side)
            candidate[:, :, rows, cols] = _new_window(
                x[active, :, rows, cols], candidate[:, :, rows, cols], eps, generator
            )
            new_margin = _margin(model, candidate, y[active], eot_draws)
            better = new_margin < margin[active]
            x_adv[active[better]] = candidate[better]
            margin[active[better]] = new_margin[better]
    return x_adv
