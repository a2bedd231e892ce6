"""Independent random streams derived from one run seed."""

import hashlib

import torch

__all__ = ["derived_generator", "derived_seed"]


def derived_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed determined by `seed` and `parts` (e.g. "shuffle", epoch), the same in every process."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def derived_generator(seed: int, *parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with derived_seed(seed, *parts)."""
    return torch.Generator(device=device).manual_seed(derived_seed(seed, *parts))
