"""Philox4x32-10 normals in plain PyTorch integer arithmetic.

The same bits as Triton's tl.randn4x and csrc/philox.h. 32x32-bit
products are split into 16-bit halves so every intermediate fits in int64.
"""

import torch

_MASK32 = 0xFFFFFFFF
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57


def _mul_hi_lo(constant: int, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of constant * value for 32-bit unsigned operands."""
    c_hi, c_lo = constant >> 16, constant & 0xFFFF
    low_part = c_lo * value
    upper = c_hi * value + (low_part >> 16)
    hi = upper >> 16
    lo = ((upper & 0xFFFF) << 16) | (low_part & 0xFFFF)
    return hi, lo


def philox4x32_10(counter: tuple[torch.Tensor, ...], seed: int) -> tuple[torch.Tensor, ...]:
    c0, c1, c2, c3 = counter
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(10):
        hi_b, lo_b = _mul_hi_lo(_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def uint32_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    signed = torch.where(bits >= 2**31, bits - 2**32, bits)
    signed = torch.where(signed < 0, -signed - 1, signed)
    return signed.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32, device=bits.device)


def _box_muller(bits1: torch.Tensor, bits2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u1 = uint32_to_uniform(bits1).clamp_min(1.0e-7)
    theta = torch.tensor(6.283185307179586, dtype=torch.float32, device=bits2.device) * uint32_to_uniform(
        bits2
    )
    radius = torch.sqrt(-2.0 * torch.log(u1))
    return radius * torch.cos(theta), radius * torch.sin(theta)


def philox_normal(
    seed: int, numel: int, *, offset: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """float32 N(0, 1) samples for element offsets offset .. offset + numel - 1.

    Element i is normal i % 4 of tl.randn4x(seed, i // 4): Box-Muller over the
    Philox output words (0, 1) gives normals 0 and 1, over words (2, 3) normals 2 and 3.
    """
    index = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
    w0, w1, w2, w3 = philox_words(seed, index >> 2)
    n0, n1 = _box_muller(w0, w1)
    n2, n3 = _box_muller(w2, w3)
    return torch.stack((n0, n1, n2, n3), dim=1).gather(1, (index & 3).unsqueeze(1)).squeeze(1)


def philox_words(seed: int, counter: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The four uint32 output words (as int64) of tl.randint4x(seed, counter) for int64 counters."""
    zero = torch.zeros_like(counter)
    seed = seed & 0xFFFFFFFFFFFFFFFF  # two's complement of a negative seed, as a uint64 key
    return philox4x32_10((counter & _MASK32, (counter >> 32) & _MASK32, zero, zero), seed)


def philox_uniform(
    seed: int, numel: int, *, offset: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """float32 U[0, 1) samples: element i is uniform i % 4 of tl.rand4x(seed, i // 4)."""
    index = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
    words = torch.stack(philox_words(seed, index >> 2), dim=1)
    return uint32_to_uniform(words.gather(1, (index & 3).unsqueeze(1)).squeeze(1))
