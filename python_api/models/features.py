"""Features of any named sub-module, tapped with forward hooks (for any architecture).

Layer names are those of `model.named_modules()` ("layer2.1.conv1", "features.10", ...);
`layer_names(model)` lists them. The hooks are removed when the call or the `with`
block ends, also on errors.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["feature_extractor", "layer_names", "tap_features"]


def layer_names(model: nn.Module) -> list[str]:
    """The names of all sub-modules of `model`, in definition order (the model itself excluded)."""
    return [name for name, _ in model.named_modules() if name]


def _modules(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    unknown = [name for name in names if not name or name not in modules]
    if unknown:
        raise ValueError(
            f"{type(model).__name__} has no layer {', '.join(map(repr, unknown))}; valid layer names: "
            + ", ".join(layer_names(model))
        )
    return {name: modules[name] for name in names}


class _StopForward(Exception):
    """Raised by the hook once the tapped layer has run, so the rest of the model is skipped."""


def feature_extractor(model: nn.Module, layer_name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function x -> the output of `model`'s sub-module `layer_name` when `model(x)` runs.

    The forward stops right after that layer (the later layers are not computed) and the
    features keep their autograd graph, so losses on them can be differentiated with
    respect to x or the weights. Raises ValueError listing the valid names for an
    unknown `layer_name`. The model's train / eval mode is left as it is.
    """
    module = _modules(model, [layer_name])[layer_name]

    def extract(x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output)
            raise _StopForward

        handle = module.register_forward_hook(hook)
        try:
            model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"layer {layer_name!r} did not run in {type(model).__name__}'s forward")
        return captured[0]

    return extract


@contextmanager
def tap_features(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, every `model(...)` call fills the yielded dict with name -> output of
    each layer in `names` (the latest call's; a layer run twice keeps its last output).

        with tap_features(model, ["layer1", "layer3"]) as features:
            logits = model(x)
        features["layer1"]

    Outputs are cloned, so later in-place operations in a user's model cannot change them.
    """
    if isinstance(names, str):
        raise TypeError("names must be a sequence of names, not a single string")
    features: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name, module in _modules(model, list(names)).items():

            def hook(_module, _inputs, output, name=name):
                features[name] = output.clone()

            handles.append(module.register_forward_hook(hook))
        yield features
    finally:
        for handle in handles:
            handle.remove()
