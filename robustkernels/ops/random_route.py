"""robustkernels::random_route(batch, num_paths, seed_tensor, device) -> route [batch]: a uniform
per-sample route drawn from a generator seeded inside the op by the value of `seed_tensor` (a
0-dim int64 CPU tensor, see seed_tensor.py), so a routed module on route="random" draws a fresh
route per call under torch.compile without reading its seed into Python."""

import torch

from robustkernels.ops.seed_tensor import resolved_seed
from robustkernels.paths import random_route as _uniform_route


@torch.library.custom_op("robustkernels::random_route", mutates_args=())
def random_route(batch: int, num_paths: int, seed_tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(resolved_seed(0, seed_tensor, "random_route"))
    return _uniform_route(batch, num_paths, generator=generator, device=device)


@random_route.register_fake
def _random_route_fake(batch, num_paths, seed_tensor, device):
    return torch.empty((batch,), dtype=torch.int64, device=device)
