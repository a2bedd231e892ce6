"""Drop-in modules built on robustkernels' ops."""

from robustkernels.nn.crossmax import CrossMax
from robustkernels.nn.ensemble import EnsembleModel
from robustkernels.nn.multires import IntermediateHeads, MultiResStack
from robustkernels.nn.noisy import NoisyConv2d, NoisyLinear, convert, set_noise_scale
from robustkernels.nn.path_conv import (
    EnsembleConv2d,
    GatedConv2d,
    MaskedExpertConv2d,
    PathLinear,
    expert_masks,
)
from robustkernels.nn.path_convert import (
    convert_ensemble,
    convert_gated,
    convert_masked_experts,
    derive,
    gated_blocks,
    use_path,
)
from robustkernels.nn.path_norm import PathBatchNorm2d
from robustkernels.nn.routing import set_route, use_route
from robustkernels.nn.seeds import noise_seed, set_noise_seed

__all__ = [
    "CrossMax",
    "IntermediateHeads",
    "MultiResStack",
    "NoisyConv2d",
    "NoisyLinear",
    "convert",
    "noise_seed",
    "set_noise_scale",
    "set_noise_seed",
]
__all__ += [
    "EnsembleConv2d",
    "EnsembleModel",
    "GatedConv2d",
    "MaskedExpertConv2d",
    "PathBatchNorm2d",
    "PathLinear",
    "convert_ensemble",
    "convert_gated",
    "convert_masked_experts",
    "derive",
    "expert_masks",
    "gated_blocks",
    "set_route",
    "use_path",
    "use_route",
]
from robustkernels.nn.slimmable import (  # noqa: E402
    SlimmableBatchNorm2d,
    SlimmableLinear,
    SlimmableMaskedExpertConv2d,
    convert_slimmable,
    model_widths,
    set_width,
    slim_channels,
    use_width,
)

__all__ += [
    "SlimmableBatchNorm2d",
    "SlimmableLinear",
    "SlimmableMaskedExpertConv2d",
    "convert_slimmable",
    "model_widths",
    "set_width",
    "slim_channels",
    "use_width",
]
