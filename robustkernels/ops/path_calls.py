"""How robustkernels.functional's routed functions (path_conv2d, path_linear, path_weights) call
the ops: their arguments parsed to the ops' (paths, banks, per-path noise, routes), the stacked
ensemble layout, and the per-sample reference in a pure-Python install (no robustkernels._C).
"""

import torch

from robustkernels import _extension, reference
from robustkernels.ops import direct_calls, validation
from robustkernels.ops import path_conv as _path_conv_ops
from robustkernels.ops import path_weights as _path_weights_ops
from robustkernels.ops.arguments import LOADED
from robustkernels.ops.seed_tensor import check_seed_tensor, seed_offset


def path_count(num_paths, weight_bank, bank_rank, mask_bank, bias_bank, noise, route) -> int:
    """P from the first argument that states it: num_paths, a weight bank, masks, per-path biases,
    per-path noise, or segment sizes; a lone shared weight with a route tensor is one path."""
    if num_paths is not None:
        if isinstance(num_paths, bool) or not isinstance(num_paths, int) or num_paths < 1:
            raise ValueError(f"num_paths must be a positive int, got {num_paths!r}")
        return num_paths
    if isinstance(weight_bank, torch.Tensor) and weight_bank.dim() == bank_rank:
        return weight_bank.shape[0]
    if isinstance(mask_bank, torch.Tensor):
        return mask_bank.shape[0]
    if isinstance(bias_bank, torch.Tensor) and bias_bank.dim() == 2:
        return bias_bank.shape[0]
    if noise is not None and isinstance(noise[0], torch.Tensor) and noise[0].dim() >= 1:
        return noise[0].shape[0]
    if isinstance(route, (list, tuple)):
        return len(route)
    return 1


def path_noise(noise, num_paths: int, op: str):
    """(alpha [P, A] or None, lams, seeds, seed tensor or None) from noise = (alpha, lam, seed) or None.

    alpha: [P] (one per path), [P, C_out] or [P, *weight shape]; lam: one float for every path
    or one per path (0 = a clean path); seed: one int (path p draws with seed + p), one per path,
    or a 0-dim int64 tensor t on the CPU or the bank's device (path p draws with t + p).
    """
    if noise is None:
        return None, [0.0] * num_paths, [0] * num_paths, None
    if not isinstance(noise, (tuple, list)) or len(noise) != 3:
        raise TypeError(
            f"robustkernels.{op}: noise must be a tuple (alpha, lam, seed), got {type(noise).__name__}"
        )
    alpha, lam, seed = noise
    validation.check_tensor("alpha", alpha, op)
    if alpha.dim() < 1 or alpha.shape[0] != num_paths:
        raise ValueError(
            f"robustkernels.{op}: alpha must have one row per path ({num_paths}), got {tuple(alpha.shape)}"
        )
    lams = list(lam) if isinstance(lam, (list, tuple)) else [lam] * num_paths
    seed_tensor = None
    if isinstance(seed, torch.Tensor):
        check_seed_tensor(seed, op, alpha.device)  # on the CPU or the bank's device
        seed, seed_tensor = 0, seed
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * num_paths
    for value in lams:
        validation.check_lam(value, op)
    for value in seeds:
        validation.check_seed(value, op)
    if not isinstance(seed, (list, tuple)):
        seeds = [seed + p for p in range(num_paths)]
    if len(lams) != num_paths or len(seeds) != num_paths:
        raise ValueError(
            f"robustkernels.{op}: lam and seed must hold one value or one per path ({num_paths})"
        )
    return alpha.reshape(num_paths, -1), [float(v) for v in lams], seeds, seed_tensor


def route_arguments(route, x: torch.Tensor, num_paths: int, op: str):
    """(route tensor or None, segment sizes) from a tensor [B], an int p (the whole batch on path p),
    "split" (P equal contiguous segments, path p the p-th) or a list of per-path segment sizes."""
    if isinstance(route, torch.Tensor):
        return route, []
    batch = x.shape[0] if x.dim() else 0
    if isinstance(route, int) and not isinstance(route, bool):
        if not 0 <= route < num_paths:
            raise ValueError(f"robustkernels.{op}: route={route} must name a path in [0, {num_paths})")
        return None, [batch if p == route else 0 for p in range(num_paths)]
    if route == "split":
        if batch % num_paths:
            raise ValueError(
                f'robustkernels.{op}: route="split" needs a batch divisible by the {num_paths} paths, got {batch}'
            )
        return None, [batch // num_paths] * num_paths
    if isinstance(route, (list, tuple)) and all(
        isinstance(s, int) and not isinstance(s, bool) for s in route
    ):
        return None, list(route)
    raise TypeError(
        f'robustkernels.{op}: route must be an int tensor [B], a path index, "split" or a list of segment '
        f"sizes, got {route!r}"
    )


def bank_arguments(op, bank_rank, weight_bank, route, bias_bank, mask_bank, noise, num_paths):
    """(P, weight [S, ...], bias [S, C_out] or None, (alpha, lams, seeds, seed tensor)) of a routed
    layer's call; a tensor argument of another type fails here or in the op (see check_types)."""
    if num_paths is None and weight_bank.dim() == bank_rank:  # a bank states P (path_count's first rule)
        paths, weight = weight_bank.shape[0], weight_bank
    else:
        paths = path_count(num_paths, weight_bank, bank_rank, mask_bank, bias_bank, noise, route)
        weight = weight_bank if weight_bank.dim() == bank_rank else weight_bank.unsqueeze(0)
    noise_arguments = path_noise(noise, paths, op)
    shared_bias = bias_bank is not None and bias_bank.dim() == 1
    return paths, weight, bias_bank.unsqueeze(0) if shared_bias else bias_bank, noise_arguments


def plain_call(bank_rank, x, weight_bank, route, bias_bank, noise, num_paths, op):
    """(lams, seeds, route tensor, segments, bias [S, C_out] or None) of the common routed call, a
    bank without noise (EIO's gated layers, ensembles) on a route tensor or a path index, with the
    extension loaded; None for every other call (bank_arguments parses those)."""
    if not LOADED or noise is not None or weight_bank.dim() != bank_rank or route.__class__ is str:
        return None
    paths = weight_bank.shape[0]
    if num_paths is not None and (num_paths.__class__ is not int or num_paths != paths):
        return None
    if route.__class__ is torch.Tensor:
        route_tensor, segments = route, []
    elif route.__class__ is int and 0 <= route < paths and x.dim():  # the whole batch on one path (EIO)
        route_tensor, segments = None, [0] * paths
        segments[route] = x.shape[0]
    else:
        route_tensor, segments = route_arguments(route, x, paths, op)
    bias = bias_bank.unsqueeze(0) if bias_bank is not None and bias_bank.dim() == 1 else bias_bank
    return [0.0] * paths, [0] * paths, route_tensor, segments, bias


def check_types(op: str, **tensors) -> None:
    """The type checks that name the argument, run where a routed call failed (as the noisy
    functions run theirs: see robustkernels/ops/arguments.py), so a valid call pays for none."""
    for name, value in tensors.items():
        if value is not None or name in ("x", "weight_bank"):
            validation.check_tensor(name, value, op)


def every_path_weight(weight, mask, alpha, lams, seeds, seed_tensor) -> torch.Tensor:
    """W' [P, ...] of every path through the op (the reference in a pure-Python install)."""
    if _extension.is_loaded():  # the op's C++ checks name the argument
        return _path_weights_ops.path_weights(weight, mask, alpha, lams, seeds, None, seed_tensor)[0]
    validation.path_layout(weight, mask, alpha, lams, seeds, "path_weights")
    offset = seed_offset(seed_tensor)
    return reference.path_weights(weight, lams, [s + offset for s in seeds], alpha, mask)


def routed_layer(op, x, weight, bias, mask, noise_arguments, route, segments, conv=()) -> torch.Tensor:
    """y of the routed layer op (path_conv2d with conv = (stride, padding, dilation, groups), or
    path_linear) through its C++ op; the per-sample reference in a pure-Python install."""
    alpha, lams, seeds, seed_tensor = noise_arguments
    if LOADED:  # the op's C++ checks name the argument
        layer = direct_calls.path_conv2d if conv else direct_calls.path_linear
        return layer(x, weight, bias, mask, alpha, lams, seeds, route, segments, *conv, seed_tensor)
    _path_conv_ops.check_layer_args(x, weight, bias, mask, alpha, lams, seeds, route, segments, op, *conv[3:])
    offset = seed_offset(seed_tensor)
    seeds = [s + offset for s in seeds]
    routing = route if route is not None else segments
    if conv:
        return reference.path_conv2d(x, weight, bias, routing, lams, seeds, alpha, mask, *conv)
    return reference.path_linear(x, weight, bias, routing, lams, seeds, alpha, mask)


def stacked_weights(x, weight, bias, mask, noise_arguments, paths, op, per_path_features):
    """route="stacked": x carries path p's features in block p of its channels (features);
    returns every path's W' concatenated over output channels [P * C_out, ...] and the biases
    [P * C_out], for one grouped convolution (one batched matmul)."""
    features = x.shape[1] if x.dim() == 4 else x.shape[-1]
    if features != paths * per_path_features:
        raise ValueError(
            f'robustkernels.{op}: route="stacked" needs x with {paths} x {per_path_features} channels, got {features}'
        )
    effective = every_path_weight(weight, mask, *noise_arguments)
    if bias is not None:
        bias = bias.expand(paths, weight.shape[1]).reshape(-1)
    return effective.reshape(paths * weight.shape[1], *weight.shape[2:]), bias
