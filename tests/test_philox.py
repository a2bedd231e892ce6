"""One seed, one noise tensor: the Philox normals agree across C++, Triton and the reference."""

import pytest
import torch
from helpers import require_backend

import robustkernels
from robustkernels import functional as F
from robustkernels import reference

SEEDS = [0, 1, 123456789, 2**31 + 7, 2**62 + 12345]


@pytest.mark.parametrize("seed", SEEDS)
def test_cpp_matches_reference(seed):
    require_backend("cpp")
    like = torch.empty(3001)
    with robustkernels.use_backend("cpp"):
        got = F.philox_normal(like, seed=seed, offset=17)
    torch.testing.assert_close(got, reference.philox_normal(seed, 3001, offset=17), atol=1e-6, rtol=1e-6)


@pytest.mark.triton
@pytest.mark.parametrize("seed", SEEDS)
def test_triton_matches_cpp(seed):
    require_backend("triton")
    require_backend("cpp")
    like = torch.empty(2 * 1024 + 5)
    with robustkernels.use_backend("triton"):
        triton_noise = F.philox_normal(like, seed=seed)
    with robustkernels.use_backend("cpp"):
        cpp_noise = F.philox_normal(like, seed=seed)
    torch.testing.assert_close(triton_noise, cpp_noise, atol=1e-6, rtol=1e-6)


@pytest.mark.triton
def test_triton_matches_tl_randn_directly():
    """The library's generator is Triton's own tl.randn, not a look-alike."""
    require_backend("triton")
    import triton
    import triton.language as tl

    @triton.jit
    def randn_kernel(out_ptr, seed, n, BLOCK: tl.constexpr):
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out_ptr + index, tl.randn(seed, index), mask=index < n)

    out = torch.empty(100)
    randn_kernel[(1,)](out, 99, 100, BLOCK=128)
    torch.testing.assert_close(out, reference.philox_normal(99, 100), atol=1e-6, rtol=1e-6)


def test_statistics_of_normals():
    noise = F.philox_normal(torch.empty(400_000), seed=5)
    assert abs(noise.mean().item()) < 0.01
    assert abs(noise.std().item() - 1.0) < 0.01
    # tails: P(|z| > 2) = 0.0455
    assert abs((noise.abs() > 2).float().mean().item() - 0.0455) < 0.003
    # neighbouring offsets are uncorrelated
    assert abs(torch.corrcoef(torch.stack([noise[:-1], noise[1:]]))[0, 1].item()) < 0.01


def test_offset_shifts_the_stream():
    full = F.philox_normal(torch.empty(100), seed=3)
    shifted = F.philox_normal(torch.empty(50), seed=3, offset=50)
    assert torch.equal(full[50:], shifted)
