"""Gate sampling for random gated networks (Ensemble-in-One).

A path through a network of `num_blocks` gated blocks with `n` gates each is one gate
index per block. EIO trains on p paths per step that differ pairwise in at least one of
the first l gates; at deployment the gates can be drawn per input.
"""

import torch


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"robustkernels.sample_paths: {name} must be a positive int, got {value!r}")


def sample_paths(
    num_blocks: int, n: int, p: int, *, distinct_prefix: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """p paths [p, num_blocks] (int64 gate indices in [0, n)), uniform over all paths subject to
    every two of them differing in at least one of the first `distinct_prefix` gates.

    The prefixes are drawn uniformly without replacement from the n ** l possible ones (so
    p <= n ** l is required when l > 0); the remaining gates are uniform and independent.
    """
    for name, value in (("num_blocks", num_blocks), ("n", n), ("p", p)):
        _check_positive(name, value)
    if isinstance(distinct_prefix, bool) or not isinstance(distinct_prefix, int):
        raise ValueError(
            f"robustkernels.sample_paths: distinct_prefix must be an int, got {distinct_prefix!r}"
        )
    if not 0 <= distinct_prefix <= num_blocks:
        raise ValueError(
            f"robustkernels.sample_paths: distinct_prefix must lie in [0, num_blocks={num_blocks}], got {distinct_prefix}"
        )
    paths = torch.randint(n, (p, num_blocks), generator=generator)
    if distinct_prefix == 0:
        return paths
    prefixes = n**distinct_prefix
    if p > prefixes:
        raise ValueError(
            f"robustkernels.sample_paths: {p} paths cannot differ pairwise in the first {distinct_prefix} "
            f"gates of {n} (only {prefixes} distinct prefixes)"
        )
    paths[:, :distinct_prefix] = _distinct_prefixes(n, distinct_prefix, p, generator)
    return paths


def _distinct_prefixes(n: int, length: int, count: int, generator) -> torch.Tensor:
    """count distinct gate prefixes [count, length], uniform without replacement."""
    total = n**length
    if total <= 1 << 20:
        codes = torch.randperm(total, generator=generator)[:count]
        return (codes.unsqueeze(1) // n ** torch.arange(length - 1, -1, -1)) % n
    # count << total here: draw prefixes and reject repeats (rare), never listing all of them
    chosen: dict[tuple[int, ...], None] = {}
    while len(chosen) < count:
        chosen.setdefault(tuple(torch.randint(n, (length,), generator=generator).tolist()))
    return torch.tensor(list(chosen))


def random_route(
    batch: int, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """A per-sample route [batch] (int64, uniform in [0, n)) for random-gated inference."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"robustkernels.random_route: batch must be a non-negative int, got {batch!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"robustkernels.random_route: n must be a positive int, got {n!r}")
    if generator is not None and device is not None and torch.device(device) != generator.device:
        return torch.randint(n, (batch,), generator=generator).to(device)
    return torch.randint(
        n, (batch,), generator=generator, device=device if generator is None else generator.device
    )
