"""Ensemble-in-One's random gated network (Cai et al., "Ensemble-in-One: Learning Ensemble within
Random Gated Networks"): the model, its paths, its layer-l features and the derived plain model.

- `to_eio_model(model, n)`: every main-branch convolution and the batch norm after it become one
  random gated block (a GatedConv2d of n independently initialised gates and a PathBatchNorm2d
  following it); shortcut (1x1) convolutions, their batch norms and the classifier stay shared
  (`gate_classifier=True` gates the classifier too: VGG-16's "14 RGBs", spec A.5 #3).
- `eio_blocks(model)`, `use_eio_path(model, path)`: the gated blocks in order and a whole-batch
  route through them (one gate per block), as training uses it (one route per batch).
- `diversification_paths(num_blocks, n, p, generator)`: the layer l and p paths that differ
  pairwise within their first l gates (l drawn only where n ** l >= p, spec A.5 #1).
- `layer_features(model, l)`: x -> the l-th main-branch conv's output after its batch norm, before
  the ReLU (for a residual block's second conv: after the residual addition), DVERGE's taps.
- `derive_eio(model, path)`: a plain copy of the base architecture on one path.
"""

import contextlib
import math

import torch
from torch import nn

from robustkernels.nn import GatedConv2d, PathBatchNorm2d, PathLinear, convert_gated, derive, use_route
from robustkernels.nn.restore import restoring
from robustkernels.paths import sample_paths

from ..models.resnet import BasicBlock
from .seeds import derived_generator

__all__ = [
    "derive_eio",
    "diversification_paths",
    "eio_blocks",
    "feature_taps",
    "layer_features",
    "min_distinct_layer",
    "random_gates",
    "to_eio_model",
    "use_eio_path",
]

_SHORTCUT_NAMES = ("shortcut", "downsample")


def _is_shortcut(name: str) -> bool:
    return any(part in _SHORTCUT_NAMES for part in name.split("."))


def to_eio_model(
    model: nn.Module, n: int = 2, *, gate_classifier: bool = False, generator: torch.Generator | None = None
) -> nn.Module:
    """Converts `model` in place into a random gated network of n gates per block. Gate 0 keeps the
    model's own weights; gates 1..n-1 are initialised afresh (as nn.Conv2d / nn.Linear initialise)
    from a stream derived from one draw of `generator` (torch's own when None), so the n copies are
    independent. Returns the model."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (gates per block), got {n!r}")
    shared = tuple(
        name for name, module in model.named_modules() if _is_shortcut(name) and module is not model
    )
    convert_gated(model, n, batchnorm=True, linear=gate_classifier, skip=shared)
    # Not `generator`'s stream itself: a model built after torch.manual_seed(s) and a generator
    # seeded with s would draw gate 1 equal to gate 0, conv for conv, until their streams part.
    gates = derived_generator(int(torch.randint(2**62, (), generator=generator)), "eio-gates")
    for block in eio_blocks(model):
        with torch.no_grad():
            for gate in range(1, n):
                nn.init.kaiming_uniform_(block.weight[gate], a=math.sqrt(5), generator=gates)
                if block.bias is not None:
                    bound = 1 / math.sqrt(block.weight[gate][0].numel())
                    block.bias[gate].uniform_(-bound, bound, generator=gates)
    if not eio_blocks(model):
        raise ValueError(f"{type(model).__name__} has no main-branch nn.Conv2d to gate")
    return model


def eio_blocks(model: nn.Module) -> list[nn.Module]:
    """The random gated blocks (GatedConv2d, and a gated classifier's PathLinear) in module order:
    path[i] is block i's gate."""
    return [m for m in model.modules() if isinstance(m, (GatedConv2d, PathLinear))]


@contextlib.contextmanager
def use_eio_path(model: nn.Module, path):
    """`with use_eio_path(model, path):` sends the whole batch through gate path[i] of block i (the
    batch norms follow their convolution); the blocks' routes are put back afterwards."""
    blocks = eio_blocks(model)
    gates = [int(g) for g in (path.tolist() if isinstance(path, torch.Tensor) else path)]
    if len(gates) != len(blocks):
        raise ValueError(f"path must name one gate per gated block ({len(blocks)}), got {len(gates)}")
    bad = [g for g, b in zip(gates, blocks, strict=True) if not 0 <= g < b.num_paths]
    if bad:
        raise ValueError(f"path names gates {bad} outside [0, {blocks[0].num_paths})")
    with restoring(blocks, "route"):
        for block, gate in zip(blocks, gates, strict=True):
            block.route = gate
        yield model


def random_gates(model: nn.Module):
    """`with random_gates(model):` the randomised RGN of deployment variant (b): every block draws
    a gate per input from its noise stream (robustkernels.nn.seeds)."""
    return use_route(model, "random")


def min_distinct_layer(n: int, p: int) -> int:
    """The smallest l with n ** l >= p: the first layer where p paths can differ in their prefixes."""
    layer = 1
    while n**layer < p:
        layer += 1
    return layer


def diversification_paths(
    num_blocks: int,
    n: int,
    p: int,
    generator: torch.Generator | None = None,
    *,
    layer: int | None = None,
    max_layer: int | None = None,
) -> tuple[int, torch.Tensor]:
    """(l, paths [p, num_blocks]): l uniform on {min_distinct_layer(n, p), ..., max_layer} (Alg. 1
    draws l on 1..L; the smaller l cannot hold p distinct prefixes, spec A.5 #1), or `layer` when
    given, then p paths whose first l gates differ pairwise, the rest uniform
    (robustkernels.paths.sample_paths). max_layer: the feature layers (default num_blocks); a gated
    classifier is a block but never a distillation target (spec A.5 #2)."""
    top = num_blocks if max_layer is None else min(max_layer, num_blocks)
    first = min_distinct_layer(n, p)
    if first > top:
        raise ValueError(f"{p} paths cannot differ within {top} layers of {n} gates")
    if layer is None:
        layer = int(torch.randint(first, top + 1, (), generator=generator))
    elif not first <= layer <= top:
        raise ValueError(f"layer must lie in [{first}, {top}] for {p} paths of {n} gates, got {layer}")
    return layer, sample_paths(num_blocks, n, p, distinct_prefix=layer, generator=generator)


def _is_conv(module: nn.Module) -> bool:
    return type(module) is nn.Conv2d or isinstance(module, GatedConv2d)


def _is_bn(module: nn.Module) -> bool:
    return type(module) is nn.BatchNorm2d or isinstance(module, PathBatchNorm2d)


def feature_taps(model: nn.Module) -> list[tuple[str, ...]]:
    """Per main-branch convolution, in order, the modules whose outputs sum to its pre-ReLU feature:
    the batch norm after it (its next sibling), plus the shortcut for a residual block's last batch
    norm (BasicBlock's bn2), whose ReLU comes after the addition. Works on the plain and the gated
    model alike, so both have the same L layers."""
    taps = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for index, (name, child) in enumerate(children):
            qualified = f"{parent_name}.{name}" if parent_name else name
            if not _is_conv(child) or _is_shortcut(qualified):
                continue
            after = [n for n, c in children[index + 1 :] if _is_bn(c)][:1]
            if not after:
                raise ValueError(f"{qualified} has no batch norm after it to tap")
            bn = f"{parent_name}.{after[0]}" if parent_name else after[0]
            if isinstance(parent, BasicBlock) and after[0] == "bn2":
                taps.append((bn, f"{parent_name}.shortcut"))
            else:
                taps.append((bn,))
    return taps


class _Tapped(Exception):
    """Stops the forward once every tapped module has run (the later layers are not needed)."""


def layer_features(model: nn.Module, layer: int):
    """x -> layer `layer`'s (1-based) pre-ReLU feature of `model` on its current route: the sum of
    feature_taps(model)[layer - 1]'s outputs, with their graph (the forward stops there)."""
    taps = feature_taps(model)
    if not 1 <= layer <= len(taps):
        raise ValueError(f"layer must lie in [1, {len(taps)}], got {layer}")
    modules = dict(model.named_modules())
    names = taps[layer - 1]

    def features(x: torch.Tensor) -> torch.Tensor:
        outputs: dict[str, torch.Tensor] = {}

        def hook(name):
            def record(_module, _inputs, output):
                outputs[name] = output
                if len(outputs) == len(names):
                    raise _Tapped

            return record

        handles = [modules[name].register_forward_hook(hook(name)) for name in names]
        try:
            model(x)
        except _Tapped:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(outputs) != len(names):
            raise RuntimeError(f"layer {layer} ({', '.join(names)}) did not run in the forward")
        return sum(outputs[name] for name in names)

    return features


def derive_eio(model: nn.Module, path) -> nn.Module:
    """A plain model of the base architecture on `path` (one gate per block): each gated conv, its
    batch norm and a gated classifier replaced by their path's plain nn.Conv2d, nn.BatchNorm2d and
    nn.Linear. Its state_dict loads into a freshly built base model; its outputs equal the gated
    model's on that path."""
    gates = [int(g) for g in (path.tolist() if isinstance(path, torch.Tensor) else path)]
    blocks = eio_blocks(model)
    if len(gates) != len(blocks):
        raise ValueError(f"path must name one gate per gated block ({len(blocks)}), got {len(gates)}")
    conv_gates = [g for g, b in zip(gates, blocks, strict=True) if isinstance(b, GatedConv2d)]
    plain = derive(model, conv_gates)
    # robustkernels.nn.derive gives a PathLinear the last conv's gate; a gated classifier has its own
    names = {id(m): name for name, m in model.named_modules()}
    for gate, block in zip(gates, blocks, strict=True):
        if isinstance(block, PathLinear):
            parent_name, _, child = names[id(block)].rpartition(".")
            parent = plain.get_submodule(parent_name) if parent_name else plain
            setattr(parent, child, block.derive(gate))
    return plain
