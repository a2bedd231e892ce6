"""Tiny models and data for the attack and evaluation tests: sklearn's 8x8 digits and
small networks that normalise inside, trained in well under a second (seeded)."""

from functools import lru_cache

import torch
from torch import nn


class Normalize(nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x):
        return (x - self.mean) / self.std


def mlp(hidden: int = 32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(0.3, 0.4),
        nn.Flatten(),
        nn.Linear(64, hidden),
        nn.Sequential(nn.ReLU()),
        nn.Linear(hidden, 10),
    )


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(0.3, 0.4),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
        nn.Flatten(),
        nn.Linear(8 * 64, 10),
    )


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)  # [1797, 1, 8, 8] in [0, 1]
    return images, torch.from_numpy(digits.target).long()


def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """First 1,400 images for training, the rest for testing (copies)."""
    images, labels = _digits()
    part = slice(0, 1400) if split == "train" else slice(1400, None)
    return images[part].clone(), labels[part].clone()


@lru_cache(maxsize=2)
def _trained_state(kind: str) -> dict:
    model = mlp() if kind == "mlp" else small_cnn()
    x, y = digits("train")
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):  # full batch: few, cheap steps
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained(kind: str = "mlp") -> nn.Module:
    """A freshly built model with the cached trained weights, in eval mode."""
    model = mlp() if kind == "mlp" else small_cnn()
    model.load_state_dict(_trained_state(kind))
    return model.eval()


class NoisyLogits(nn.Module):
    """A randomised defence: Gaussian noise of scale sigma on the hidden activations on every pass."""

    def __init__(self, base: nn.Module, sigma: float):
        super().__init__()
        self.base, self.sigma = base, sigma

    def forward(self, x):
        features = self.base[:4](x)
        return self.base[4](features + self.sigma * torch.randn_like(features))
