"""SMART (Kundu et al., "Sparse Mixture Once-for-All Adversarial Training"): two sparse expert
paths over one set of weights, a clean one and an adversarial (noisy) one, tuned by lam_n at test
time.

- `to_smart_model(model)`: every nn.Conv2d becomes a MaskedExpertConv2d carrying the scaled weight
  noise of the paper's Eq. 4 on its adversarial path (all layers, the dense ones included); those
  of the later stages also get two frozen random binary masks (the clean path M_C * W, the
  adversarial path M_A * (W + lam * alpha * std(W) * eta)), each of density 0.5, with
  d(M_C * M_A) = 0.25 of the whole tensor; the earlier stages stay dense (both paths use every
  weight). Every nn.BatchNorm2d becomes a dual PathBatchNorm2d (BN_C, BN_A). The masks are
  state_dict buffers. The ablations of the paper's Table 1: stages=SPARSE_EVERYWHERE
  ([S S S S]) and shared=0 (disjoint masks).
- `SMARTTraining`: FLOAT's batch split, attack and loss (the adversarial half is attacked and
  trained on the adversarial path, lam = 1).
- `smart_inference(model, lam_n)`: the paper's test-time setting: lam_n = 0 the clean path (M_C,
  no noise, BN_C); lam_n > 0 the adversarial path (M_A, BN_A) with the noise scaled by lam_n.
- `path_parameters(model)` (from .parameter_counts): the non-zero parameters of each path and
  of their union, and the noise additions per inference, the figures the paper reports.
"""

from torch import nn

from robustkernels.nn import PathBatchNorm2d, convert_masked_experts

from .float_at import CLEAN, NOISY, FLOATTraining, _routes
from .parameter_counts import path_parameters

__all__ = [
    "CLEAN",
    "NOISY",
    "SPARSE_EVERYWHERE",
    "SMARTTraining",
    "expert_stages",
    "path_parameters",
    "smart_inference",
    "smart_variant",
    "to_smart_model",
]

SPARSE_EVERYWHERE = "all"  # Table 1's [S S S S]: every stage masked (the stem conv stays dense)


def _conv_stages(model: nn.Module) -> list[str]:
    return [
        name
        for name, child in model.named_children()
        if isinstance(child, nn.Conv2d) or any(isinstance(m, nn.Conv2d) for m in child.modules())
    ]


def expert_stages(model: nn.Module) -> tuple[str, ...]:
    """The default later stages: the second half (rounded down, at least one) of the model's
    top-level children that hold convolutions. ResNet-18/34's stem and four stages give layer3 and
    layer4 (the paper's choice); ResNet-20 gives layer2 and layer3; SmallCNN gives block3."""
    stages = _conv_stages(model)
    if not stages:
        raise ValueError("the model has no nn.Conv2d to give expert paths")
    return tuple(stages[len(stages) - max(len(stages) // 2, 1) :])


def _sparse_everywhere(model: nn.Module) -> tuple[str, ...]:
    """Every conv-holding top-level child but a bare stem convolution (ResNets' conv1)."""
    stages = _conv_stages(model)
    children = dict(model.named_children())
    return tuple(name for i, name in enumerate(stages) if i > 0 or not isinstance(children[name], nn.Conv2d))


def to_smart_model(
    model: nn.Module,
    *,
    stages: tuple[str, ...] | str | None = None,
    density: float = 0.5,
    shared: float = 0.25,
    generator=None,
) -> nn.Module:
    """Converts `model` in place (weights kept): the nn.Conv2d layers inside `stages` (top-level
    child names; default `expert_stages(model)`; SPARSE_EVERYWHERE: every stage) get a clean and
    an adversarial mask, each keeping `density` of the weights, `shared` of the whole tensor kept
    by both (0: disjoint masks, complementary at density 0.5), drawn from `generator`. Every other
    nn.Conv2d is dense and shared by both paths, with the noise on its adversarial path; every
    nn.BatchNorm2d becomes a dual batch norm routed with the expert path."""
    if stages == SPARSE_EVERYWHERE:
        stages = _sparse_everywhere(model)
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
    # the dense stages: Eq. 4's noise on every layer, no masks (d(M_C) = d(M_A) = 1)
    convert_masked_experts(model, density=None, lam=1.0)
    for module in model.modules():
        if isinstance(module, PathBatchNorm2d):
            module.follow(None)  # routed with the path, set on every module by the route helpers
    return model


def smart_variant(stages: str | None, shared: float) -> str:
    """The label of a SMART configuration in results: its Table 1 basic-block types and overlap."""
    blocks = "[S S S S]" if stages == SPARSE_EVERYWHERE else "[D D S S]"
    return f"{blocks}, d(M_C*M_A)={shared:g}"


class SMARTTraining(FLOATTraining):
    """FLOAT's Algorithm 1 on a SMART model: the clean half on the clean expert path and BN_C,
    the second half attacked by PGD on the adversarial path (noise at lam=1, BN_A) and trained
    there; loss 0.5 * L_C + 0.5 * L_A."""

    name = "smart"


def smart_inference(model: nn.Module, lam_n: float):
    """`with smart_inference(model, lam_n):` runs the block as the paper evaluates a test-time
    lam_n in [0, 1]: 0 is the clean path (M_C, no noise, BN_C); any lam_n > 0 the adversarial path
    (M_A, BN_A, as OAT and FLOAT pick BN_A for every lam > 0) with the noise scaled by lam_n
    (FLOAT's noise re-scaling; lam_n = 1 the trained adversarial path)."""
    if isinstance(lam_n, bool) or not 0.0 <= lam_n <= 1.0:
        raise ValueError(f"lam_n must lie in [0, 1], got {lam_n!r}")
    if lam_n == 0.0:
        return _routes(model, CLEAN, CLEAN, 0.0)
    return _routes(model, NOISY, NOISY, float(lam_n))
