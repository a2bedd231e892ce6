"""One seed, one noise tensor: the Philox normals agree across C++, Triton, CUDA and the reference."""

import pytest
import torch
from helpers import require_backend, targets

import robustkernels
from robustkernels import functional as F
from robustkernels import reference

SEEDS = [0, 1, 123456789, 2**31 + 7, 2**62 + 12345]
DEVICE_TARGETS = targets("triton", "cuda")


@pytest.mark.parametrize("seed", SEEDS)
def test_cpp_matches_reference(seed):
    require_backend("cpp")
    like = torch.empty(3001)
    with robustkernels.use_backend("cpp"):
        got = F.philox_normal(like, seed=seed, offset=17)
    torch.testing.assert_close(got, reference.philox_normal(seed, 3001, offset=17), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("target", DEVICE_TARGETS)
@pytest.mark.parametrize("seed", SEEDS)
def test_device_kernels_match_cpp(target, seed):
    require_backend("cpp")
    with robustkernels.use_backend(target.backend):
        device_noise = F.philox_normal(torch.empty(2 * 1024 + 5, device=target.device), seed=seed)
    with robustkernels.use_backend("cpp"):
        cpp_noise = F.philox_normal(torch.empty(2 * 1024 + 5), seed=seed)
    # the same Philox bits; a device's logf / cosf may differ from the CPU's by an ulp
    torch.testing.assert_close(device_noise.cpu(), cpp_noise, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("target", targets("triton"))
def test_stream_is_tl_randn4x(target):
    """Element 4 j + k of the library's stream is output k of Triton's own tl.randn4x(seed, j)."""
    import triton
    import triton.language as tl

    @triton.jit
    def randn4x_kernel(out_ptr, seed, BLOCK: tl.constexpr):
        counter = tl.arange(0, BLOCK)
        n0, n1, n2, n3 = tl.randn4x(seed, counter)
        tl.store(out_ptr + 4 * counter, n0)
        tl.store(out_ptr + 4 * counter + 1, n1)
        tl.store(out_ptr + 4 * counter + 2, n2)
        tl.store(out_ptr + 4 * counter + 3, n3)

    out = torch.empty(4 * 32, device=target.device)
    randn4x_kernel[(1,)](out, 99, BLOCK=32)
    torch.testing.assert_close(out.cpu(), reference.philox_normal(99, 128), atol=1e-6, rtol=1e-6)


def test_scalar_and_simd_cpu_paths_agree():
    """ROBUSTKERNELS_CPU_SIMD caps the C++ path at scalar or AVX2; every path gives the same stream."""
    require_backend("cpp")
    code = (
        "import torch, robustkernels.functional as F;"
        "torch.save(F.philox_normal(torch.empty(1000), seed=77, offset=3), '{path}')"
    )
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for simd in ("scalar", "avx2", "best"):
            path = os.path.join(tmp, f"noise{simd}.pt")
            env = {**os.environ, "ROBUSTKERNELS_CPU_SIMD": simd}
            subprocess.run([sys.executable, "-c", code.format(path=path)], check=True, env=env)
            results.append(torch.load(path))
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(results[1], results[2], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(results[0], reference.philox_normal(77, 1000, offset=3), atol=1e-6, rtol=1e-6)


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


@pytest.mark.parametrize("target", [*targets("cpp"), *DEVICE_TARGETS])
@pytest.mark.parametrize("offset", [2**31 - 10, 2**32 - 6, 2**33 + 3])
def test_offsets_past_32_bits(target, offset):
    """Offsets that cross 2**31 and 2**32 give the same stream on every backend."""
    with robustkernels.use_backend(target.backend):
        noise = F.philox_normal(torch.empty(64, device=target.device), seed=7, offset=offset)
    expected = reference.philox_normal(7, 64, offset=offset)
    torch.testing.assert_close(noise.cpu(), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_negative_offset_is_rejected_on_every_backend(backend):
    with robustkernels.use_backend(backend), pytest.raises(ValueError, match="offset"):
        F.philox_normal(torch.empty(3), seed=1, offset=-4)
