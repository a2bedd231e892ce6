"""Statistics of the multi-resolution stack's randomness: the shifts, the noise and the contrast
follow their distributions (the C++ kernels; the other backends match them, test_multires_stack.py)."""

import pytest
import torch
from helpers import require_backend

from robustkernels import functional as F
from robustkernels import reference


def _single_view(x, **kwargs):
    return F.multires_stack(x, ((x.shape[2], x.shape[3]),), **kwargs)


def test_shift_statistics():
    """Shifts are uniform over [-jitter, jitter]^2: a one-pixel image shows each image's shift."""
    require_backend("cpp")
    jitter, size, n = 2, 12, 4000
    x = torch.zeros((n, 1, size, size))
    x[:, :, size // 2, size // 2] = 1.0
    out = _single_view(x, jitter=jitter, noise=0.0, contrast=(1.0, 1.0), seed=4)
    where = out.flatten(1).argmax(dim=1)
    dy, dx = where // size - size // 2, where % size - size // 2
    assert int(dy.min()) == int(dx.min()) == -jitter and int(dy.max()) == int(dx.max()) == jitter
    counts = torch.bincount(((dy + jitter) * (2 * jitter + 1) + dx + jitter).long(), minlength=25).double()
    expected = n / 25
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 52.6  # chi-square, 24 degrees of freedom, p = 0.001


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_noise_statistics(kind):
    """Full-size view of a constant image: 0.5 + two independent noise draws per element."""
    require_backend("cpp")
    amplitude = 0.1
    x = torch.full((64, 3, 16, 16), 0.5)
    out = _single_view(x, jitter=0, noise=amplitude, noise_kind=kind, contrast=(1.0, 1.0), seed=9) - 0.5
    if kind == "uniform":
        # the sum of two U[0, a) has mean a and variance a^2 / 6, range [0, 2a)
        assert abs(float(out.mean()) - amplitude) < 2e-3
        assert abs(float(out.var()) - amplitude**2 / 6) < 2e-4
        assert float(out.min()) >= 0 and float(out.max()) < 2 * amplitude
        assert float(out.min()) < 0.01 * amplitude and float(out.max()) > 1.98 * amplitude
    else:
        assert abs(float(out.mean())) < 2e-3
        assert abs(float(out.std()) - amplitude * 2**0.5) < 2e-3


def test_uniform_stream_is_uniform():
    draws = reference.philox.philox_uniform(3, 200_000, offset=5)
    assert float(draws.min()) >= 0.0 and float(draws.max()) < 1.0
    counts = torch.histc(draws, bins=20, min=0.0, max=1.0)
    expected = draws.numel() / 20
    assert float(((counts - expected) ** 2 / expected).sum()) < 43.8  # 19 degrees of freedom, p = 0.001


def test_contrast_statistics():
    """c ~ U[low, high]: an image whose channels differ gives c back per image."""
    require_backend("cpp")
    low, high, n = 0.3, 0.9, 4000
    x = torch.zeros((n, 2, 4, 4))
    x[:, 0] = 1.0  # mean over channels 0.5: channel 0 becomes c + (1 - c) / 2
    # the colour mix alone (adjust_contrast would blend with the grey mean too)
    out = _single_view(x, jitter=0, noise=0.0, contrast=(low, high), adjust_contrast=False, seed=6)
    c = 2 * out[:, 0, 0, 0] - 1
    assert float(c.min()) >= low and float(c.max()) <= high
    assert abs(float(c.mean()) - (low + high) / 2) < 0.01
    assert abs(float(c.var()) - (high - low) ** 2 / 12) < 0.003
