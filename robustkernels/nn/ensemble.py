"""EnsembleModel: the K members of a convert_ensemble'd model evaluated in one pass."""

import torch
from torch import nn

from .routing import use_route


class EnsembleModel(nn.Module):
    """Evaluates the K members of a convert_ensemble'd model on one batch in one pass; the output
    is [K, B, ...].

    layout="stacked" (default) runs the members side by side in the channels: the input is
    repeated K times along its channels, every EnsembleConv2d is one grouped convolution, every
    PathBatchNorm2d one batch norm over K * C channels and the PathLinear head one batched
    matmul, so the whole ensemble is one network of K-times-wider layers; channels_last (the
    default on CPU, where oneDNN's grouped convolutions are fastest in it) sets the memory
    format; in evaluation the batch runs in chunks of chunk_size samples (None: at once). layout="split" stacks the K copies along the batch instead (route "split"). Models
    whose layers mix features across channels outside these modules (e.g. a Flatten of spatial
    maps before the head) need layout="split"."""

    def __init__(
        self,
        model: nn.Module,
        members: int,
        *,
        layout: str = "stacked",
        channels_last: bool | None = None,
        chunk_size: int | None = 8,
    ):
        super().__init__()
        if layout not in ("stacked", "split"):
            raise ValueError(f'layout must be "stacked" or "split", got {layout!r}')
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.model, self.members, self.layout = model, members, layout
        self.channels_last, self.chunk_size = channels_last, chunk_size

    def _stacked(self, x: torch.Tensor) -> torch.Tensor:
        stacked = x.repeat(1, self.members, *([1] * (x.dim() - 2)))
        channels_last = x.device.type == "cpu" if self.channels_last is None else self.channels_last
        if channels_last and stacked.dim() == 4:
            stacked = stacked.contiguous(memory_format=torch.channels_last)
        return self.model(stacked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "split":
            stacked = x.unsqueeze(0).expand(self.members, *x.shape).reshape(-1, *x.shape[1:])
            with use_route(self.model, "split"):
                out = self.model(stacked)
            return out.reshape(self.members, x.shape[0], *out.shape[1:])
        with use_route(self.model, "stacked"):
            # K-times-wider activations of a whole batch leave the cache; in evaluation (batch
            # norm on running statistics, samples independent) chunks of the batch stay in it
            if self.model.training or self.chunk_size is None or x.shape[0] <= self.chunk_size:
                out = self._stacked(x)
            else:
                out = torch.cat([self._stacked(chunk) for chunk in x.split(self.chunk_size)])
        return out.reshape(x.shape[0], self.members, -1, *out.shape[2:]).transpose(0, 1)
