"""One seed chain for robustkernels' random layers; none of them reads torch's global generator.

Every module that draws randomness per call (NoisyConv2d, NoisyLinear, MaskedExpertConv2d and
its slimmable subclass, a routed module on route="random", MultiResStack) holds a noise
stream: `noise_stream`, a 0-dim int64 CPU tensor (for the noisy layers on a GPU, see the last
point) holding the seed of its next draw. A call takes a copy of it as its seed (so a seed handed
to an op's backward never changes) and advances the stream in place: the stream stays the tensor
it was, never an inference tensor, even when a compiled model runs under torch.inference_mode()
(a new tensor made there would be one, and the next training call could not save it for backward).
The ops read the seed inside
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
  subclass) and MultiResStack keep their stream on the device, so a model captured in a CUDA
  graph advances it at every replay and draws fresh noise; set_noise_seed and noise_seed then
  write that tensor in place. A routed module on route="random" reads its
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
        """This call's seed (a 0-dim int64 tensor, a copy of the stream); the stream moves past its
        `draws` seeds in place (a call that draws for P paths uses seed + p). Given a GPU `device`
        (the noisy layers, whose ops take a seed there) the stream lives on it: a captured CUDA
        graph replays the copy and the advance, so every replay draws a fresh seed. Otherwise the
        stream is a CPU tensor."""
        stream = self.noise_stream
        on_gpu = device is not None and device.type == "cuda"
        if on_gpu and stream.device != device:
            if torch.cuda.is_current_stream_capturing():
                raise RuntimeError(
                    f"{type(self).__name__}: its noise stream moves to {device} on the first call there; "
                    "run the model once before capturing a CUDA graph"
                )
            # a fill takes the value as a kernel argument: no copy from host memory, no sync
            stream = self._replace_stream(
                lambda: torch.empty((), dtype=torch.int64, device=device).fill_(int(stream))
            )
        elif not on_gpu and not stream.is_cpu:  # the module moved off the GPU: one read
            stream = self._replace_stream(stream.cpu)
        seed = stream.clone()
        stream.add_(draws)
        return seed

    def _replace_stream(self, make) -> torch.Tensor:
        """The stream `make()` returns, set past nn.Module.__setattr__'s checks (a tensor, never a
        parameter); made outside inference mode, since the stream outlives the call (Dynamo cannot
        trace that switch: a compiled first call on a new device is the one exception)."""
        if torch.compiler.is_compiling():
            stream = make()
        else:
            with torch.inference_mode(False):
                stream = make()
        object.__setattr__(self, "noise_stream", stream)
        return stream

    def _restart_stream(self, start) -> None:
        """The stream from `start` (an int or a 0-dim tensor); a GPU stream in place, since a
        captured graph keeps reading that tensor."""
        with torch.inference_mode(False):
            if not self.noise_stream.is_cuda:
                # a copy: the stream advances in place, and must not advance the caller's tensor
                self.noise_stream = (
                    start.detach().cpu().clone() if isinstance(start, torch.Tensor) else _stream(start)
                )
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
    saved = [module.noise_stream.clone() for module in modules]  # streams advance in place
    try:
        set_noise_seed(model, seed)
        yield model
    finally:
        for module, stream in zip(modules, saved, strict=True):
            module._restart_stream(stream)
