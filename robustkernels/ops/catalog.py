"""The public ops, one list: the source of robustkernels.functional's exports, of
`python -m robustkernels.info` and of the tests that must cover every op."""

PUBLIC_OPS = (
    "noisy_weight",
    "noisy_conv2d",
    "noisy_linear",
    "philox_normal",
    "crossmax",
    "multires_stack",
    "pgd_step",
    "path_weights",
    "path_conv2d",
    "path_linear",
    "route_sort",
)

# Dispatched in C++ (csrc/ops/): on CUDA the CUDA C++ kernels are the default where built.
DISPATCHED_IN_CPP = frozenset({"noisy_weight", "noisy_weight_backward", "noisy_conv2d", "noisy_linear"})
