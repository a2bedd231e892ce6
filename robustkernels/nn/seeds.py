"""One seed chain for robustkernels' random layers; none of them reads torch's global generator.

Every module that draws randomness per call (NoisyConv2d, NoisyLinear, MaskedExpertConv2d and
its slimmable subclass, a routed module on route="random", MultiResStack) holds a noise
stream: `noise_stream`, a 0-dim int64 CPU tensor (for the noisy layers on a GPU, see the last
point) holding the seed of its next draw. A call
takes that tensor as its seed and replaces the stream by seed + draws (one small CPU op, out
of place, so a seed handed to an op's backward never changes). The ops read the seed inside
(robustkernels/ops/seed_tensor.py), so a model compiled with fullgraph=True draws fresh noise
every call without recompiling. The stream is a plain attribute, not a buffer: it is not in
the state_dict and DistributedDataParallel does not broadcast it (each rank keeps its own
noise); .to(device) moves it only for the modules whose ops take a seed on the GPU (last point).

- `set_noise_seed(model, seed)`: the i-th random module of the model (in module order) restarts
  at a stream derived from (seed, i), so two modules never share a seed and neither do two
  calls of one module. A trainer calls it at every step with a seed derived from (run seed,
  step, rank, purpose): the noise of a step then depends on nothing else, and a resumed run
  draws what an uninterrupted one draws.
- `noise_seed(model, seed)`: the same for the length of a block, restoring every stream after
  it (an evaluation's draws, e.g. one seed per draw, leave the model's own streams alone).
- On a GPU the noisy layers (NoisyConv2d, NoisyLinear, MaskedExpertConv2d and its slimmable
  subclass) and MultiResStack keep their stream on the device and advance it in place, so a
  model captured in a CUDA graph draws fresh noise at every replay; set_noise_seed and
  noise_seed then write that tensor in place too. A routed module on route="random" reads its
  seed on the host (its route sort reads the group sizes there anyway: it cannot be captured).
  A GPU seed is not range-checked (the CPU path raises on a seed past 2**63; streams start
  below 2**62). nn.DataParallel is not supported: its replicas share one stream (use
  DistributedDataParallel, where each rank keeps its own).
- Default: a module never given a seed starts at a stream drawn once, when it is built, from
  torch's generator (as its initial weights are), so torch.manual_seed before building a model
  makes its noise repeatable; its calls never touch torch's generator.
"""

import contextlib
import hashlib

import torch
from torch import nn

__all__ = ["NoiseStream", "noise_seed", "random_modules", "set_noise_seed", "stream_start"]

# Stream starts lie below 2**62, leaving 2**62 draws before a seed leaves the ops' [0, 2**63).
_START_HIGH = 2**62


def stream_start(seed: int, index: int) -> int:
    """The first seed of the index-th random module's stream under `seed` (62 bits)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    digest = hashlib.blake2b(repr(("robustkernels.noise", seed, index)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % _START_HIGH


def _stream(start: int) -> torch.Tensor:
    return torch.tensor(start, dtype=torch.int64)


class NoiseStream:
    """The per-call seeds of a random module (a mixin of nn.Module subclasses)."""

    # the stream moves with the module (.to, .cuda, .cpu): modules whose ops take a seed on the GPU
    _stream_follows_device = False

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        if self._stream_follows_device:
            stream = self.noise_stream
            # where the module's tensors went, from a probe: fn itself may copy, share or drop values
            device = fn(torch.empty(0, dtype=torch.int64, device=stream.device)).device
            if device != stream.device and device.type != "meta":  # a meta module keeps a real stream
                with torch.inference_mode(False):
                    object.__setattr__(self, "noise_stream", stream.to(device))
        return module

    def _init_noise_stream(self) -> None:
        self.noise_stream = _stream(int(torch.randint(_START_HIGH, (1,)).item()))

    def _next_seed(self, draws: int = 1, device: torch.device | None = None) -> torch.Tensor:
        """This call's seed (a 0-dim int64 tensor); the stream moves past its `draws` seeds (a call
        that draws for P paths uses seed + p). Given a GPU `device` (the noisy layers, whose ops
        take a seed there) the stream lives on it and advances in place, the call getting a copy:
        a captured CUDA graph replays both, so every replay draws a fresh seed. Otherwise it is a
        CPU tensor, replaced out of place (a seed handed to an op's backward never changes)."""
        # the stream outlives an inference-mode block: never an inference tensor (Dynamo cannot trace the test)
        if not torch.compiler.is_compiling() and torch.is_inference_mode_enabled():
            with torch.inference_mode(False):
                return self._draw(draws, device)
        return self._draw(draws, device)

    def _draw(self, draws: int, device: torch.device | None) -> torch.Tensor:
        stream = self.noise_stream
        if device is not None and device.type == "cuda":
            if stream.device != device:
                if torch.cuda.is_current_stream_capturing():
                    raise RuntimeError(
                        f"{type(self).__name__}: its noise stream moves to {device} on the first call there; "
                        "run the model once before capturing a CUDA graph"
                    )
                # a fill takes the value as a kernel argument: no copy from host memory, no sync
                stream = torch.empty((), dtype=torch.int64, device=device).fill_(int(stream))
                object.__setattr__(self, "noise_stream", stream)
            seed = stream.clone()
            stream.add_(draws)
            return seed
        if not stream.is_cpu:  # the module moved off the GPU: one read
            stream = stream.cpu()
        # past nn.Module.__setattr__'s checks (most of a draw's cost): a tensor, never a parameter
        object.__setattr__(self, "noise_stream", stream + draws)
        return stream

    def _restart_stream(self, start) -> None:
        """The stream from `start` (an int or a 0-dim tensor); a GPU stream in place, since a
        captured graph keeps reading that tensor."""
        with torch.inference_mode(False):
            if not self.noise_stream.is_cuda:
                self.noise_stream = start.cpu() if isinstance(start, torch.Tensor) else _stream(start)
            elif isinstance(start, torch.Tensor):
                self.noise_stream.copy_(start)
            else:
                self.noise_stream.fill_(start)


def random_modules(model: nn.Module) -> list[NoiseStream]:
    """The modules of `model` that draw per-call randomness, in module order (each once)."""
    return [module for module in model.modules() if isinstance(module, NoiseStream)]


def set_noise_seed(model: nn.Module, seed: int) -> None:
    """Restarts the i-th random module of `model` at stream_start(seed, i)."""
    for index, module in enumerate(random_modules(model)):
        module._restart_stream(stream_start(seed, index))


@contextlib.contextmanager
def noise_seed(model: nn.Module, seed: int):
    """`with noise_seed(model, seed):` runs the block with the model's random modules on the
    streams of `seed`, then puts every module's own stream back (by value: a GPU stream changes
    in place)."""
    modules = random_modules(model)
    # a CPU stream is replaced, never changed in place: its object is what goes back
    saved = [
        module.noise_stream.clone() if module.noise_stream.is_cuda else module.noise_stream
        for module in modules
    ]
    try:
        set_noise_seed(model, seed)
        yield model
    finally:
        for module, stream in zip(modules, saved, strict=True):
            module._restart_stream(stream)
