"""SMART (Kundu et al., "Sparse Mixture Once-for-All Adversarial Training"): two sparse expert
paths over one set of weights, a clean one and an adversarial (noisy) one, chosen at test time.

- `to_smart_model(model)`: the convolutions of the later stages become MaskedExpertConv2d with
  two frozen random binary masks (the clean path M_C * W, the adversarial path
  M_A * (W + lam * alpha * std(W) * eta)); earlier convolutions stay dense and shared; every
  nn.BatchNorm2d becomes a dual PathBatchNorm2d (BN_C, BN_A). The masks are state_dict buffers.
- `SMARTTraining`: FLOAT's batch split, attack and loss (the adversarial half is attacked and
  trained on the adversarial path).
- `smart_inference(model, path)`: the clean (0) or the adversarial (1) expert path.
- `path_parameters(model)` (from .parameter_counts): the non-zero parameters of each path and
  of their union, and the noise additions per inference, the figures the paper reports.
"""

from torch import nn

from robustkernels.nn import PathBatchNorm2d, convert_masked_experts, use_route

from .float_at import CLEAN, NOISY, FLOATTraining
from .parameter_counts import path_parameters

__all__ = [
    "CLEAN",
    "NOISY",
    "SMARTTraining",
    "expert_stages",
    "path_parameters",
    "smart_inference",
    "to_smart_model",
]


def expert_stages(model: nn.Module) -> tuple[str, ...]:
    """The default later stages: the second half (rounded down, at least one) of the model's
    top-level children that hold convolutions. ResNet-18/34's stem and four stages give layer3 and
    layer4 (the paper's choice); ResNet-20 gives layer2 and layer3; SmallCNN gives block3."""
    stages = [
        name
        for name, child in model.named_children()
        if isinstance(child, nn.Conv2d) or any(isinstance(m, nn.Conv2d) for m in child.modules())
    ]
    if not stages:
        raise ValueError("the model has no nn.Conv2d to give expert paths")
    return tuple(stages[len(stages) - max(len(stages) // 2, 1) :])


def to_smart_model(
    model: nn.Module,
    *,
    stages: tuple[str, ...] | None = None,
    density: float = 0.5,
    shared: float = 0.25,
    generator=None,
) -> nn.Module:
    """Converts `model` in place (weights kept): the nn.Conv2d layers inside `stages` (top-level
    child names; default `expert_stages(model)`) get a clean and an adversarial mask, each keeping
    `density` of the weights, of which a fraction `shared` is kept by both (0: disjoint masks,
    complementary at density 0.5); the masks are drawn from `generator`. Every other nn.Conv2d
    stays a dense, shared, noise-free layer; every nn.BatchNorm2d becomes a dual batch norm routed
    with the expert path."""
    stages = expert_stages(model) if stages is None else tuple(stages)
    children = dict(model.named_children())
    unknown = [name for name in stages if name not in children]
    if unknown:
        raise ValueError(f"stages names no top-level child {unknown}; the children are {list(children)}")
    dense = tuple(
        name
        for name, module in model.named_modules()
        if type(module) is nn.Conv2d and name.split(".")[0] not in stages
    )
    convert_masked_experts(model, density=density, overlap=shared, lam=1.0, skip=dense, generator=generator)
    for module in model.modules():
        if isinstance(module, PathBatchNorm2d):
            module.follow(None)  # routed with the path, set on every module by the route helpers
    return model


class SMARTTraining(FLOATTraining):
    """FLOAT's Algorithm 1 on a SMART model: the clean half on the clean expert path and BN_C,
    the second half attacked by PGD on the adversarial path (noise at lam=1, BN_A) and trained
    there; loss 0.5 * L_C + 0.5 * L_A."""

    name = "smart"


def smart_inference(model: nn.Module, path: int):
    """`with smart_inference(model, path):` runs the block on expert path `path` (CLEAN = 0: the
    clean mask and BN_C; NOISY = 1: the adversarial mask with its noise and BN_A)."""
    if path not in (CLEAN, NOISY):
        raise ValueError(f"path must be {CLEAN} (clean) or {NOISY} (adversarial), got {path!r}")
    return use_route(model, path)
