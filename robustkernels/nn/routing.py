"""Routed multi-path modules: Ensemble-in-One gated blocks, SMART masked experts, EED ensembles.

Every module here holds P paths and sends each sample through the path its `route` names:

- an int tensor [B]: one path per sample;
- an int p: the whole batch through path p;
- "split": the batch in P equal contiguous segments, segment p through path p (FLOAT's
  clean / adversarial halves, the K stacked copies of an ensemble's input);
- a list of P segment sizes;
- "random": a fresh uniform path per sample on every forward (random-gated inference), drawn
  from the module's noise stream (robustkernels.nn.seeds), never from torch's generator.

`set_route(model, route)` / `use_route(model, route)` set it on every routed module of a
model; `use_path(model, path)` gives each GatedConv2d block its own gate (an EIO path).
A PathBatchNorm2d made by a convert helper follows the routed conv before it, so conv and
batch norm always see the same route.
"""

import contextlib

import torch
from torch import nn

from robustkernels.ops.random_route import random_route

from .restore import restoring
from .seeds import NoiseStream


class _Routed(NoiseStream, nn.Module):
    """The route of a routed module: set by the user, resolved per forward ("random" draws from
    the module's noise stream, robustkernels.nn.seeds)."""

    num_paths: int

    def _init_route(self, route) -> None:
        self.route = route
        self.last_route = None
        self._follows: list[nn.Module] = []  # a list, so the followed module is not a child
        self._init_noise_stream()

    def follow(self, module: "_Routed | None") -> None:
        """Use `module`'s route of its latest forward instead of this module's own."""
        self._follows = [] if module is None else [module]

    def _resolve_route(self, batch: int, device: torch.device):
        if self._follows:
            route = self._follows[0].last_route
            if route is None:
                raise RuntimeError(f"{type(self).__name__} follows a module that has not run a forward yet")
        elif isinstance(self.route, str) and self.route == "random":
            # a stream a noisy path keeps on the GPU stays there (the route op reads its seed on the host)
            seed = self._next_seed(device=device if self.noise_stream.is_cuda else None)
            route = random_route(batch, self.num_paths, seed.cpu(), device)
        else:
            route = self.route
        self.last_route = route
        return route

    def _route_repr(self) -> str:
        shown = "follows" if self._follows else self.route
        if isinstance(shown, torch.Tensor):
            shown = f"tensor[{shown.numel()}]"
        return f", paths={self.num_paths}, route={shown}"


def _routed_modules(model: nn.Module) -> list[_Routed]:
    return [m for m in model.modules() if isinstance(m, _Routed) and not m._follows]


def set_route(model: nn.Module, route) -> None:
    """Sets `route` on every routed module of the model (those following another keep following)."""
    for module in _routed_modules(model):
        module.route = route


@contextlib.contextmanager
def use_route(model: nn.Module, route):
    """`with use_route(model, route):` runs the block with `route` on every routed module, then
    restores each module's previous route."""
    with restoring(_routed_modules(model), "route"):
        set_route(model, route)
        yield model
