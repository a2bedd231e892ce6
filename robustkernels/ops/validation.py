"""Argument checks run before any backend, so every backend raises the same clear errors."""

import torch

ALPHA_LAYER, ALPHA_CHANNEL, ALPHA_ELEMENT = 0, 1, 2
_MAX_SEED = 2**63
# the dtypes every kernel (C++, CUDA, Triton) computes in
KERNEL_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_tensor(name: str, value, op: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"robustkernels.{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def check_seed(seed, op: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"robustkernels.{op}: seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < _MAX_SEED:
        raise ValueError(f"robustkernels.{op}: seed must be in [0, 2**63), got {seed}")


def check_like(name: str, value, reference, reference_name: str, op: str) -> None:
    """`value` has the dtype and device of `reference` (TypeError, ValueError naming `name`)."""
    if value.dtype != reference.dtype:
        raise TypeError(
            f"robustkernels.{op}: {name} must have the {reference_name}'s dtype {reference.dtype}, got {value.dtype}"
        )
    if value.device != reference.device:
        raise ValueError(
            f"robustkernels.{op}: {name} must be on the {reference_name}'s device {reference.device}, "
            f"got {value.device}"
        )


def check_lam(lam, op: str) -> None:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"robustkernels.{op}: lam must be a float, got {type(lam).__name__}")


def alpha_mode(
    weight: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor | None, op: str, weight_name: str = "weight"
) -> int:
    """Checks weight (named `weight_name`: the backward's is grad), alpha and mask; returns how
    alpha broadcasts over weight."""
    check_tensor(weight_name, weight, op)
    check_tensor("alpha", alpha, op)
    if weight.dtype not in KERNEL_FLOAT_DTYPES:
        raise TypeError(
            f"robustkernels.{op}: {weight_name} must be a floating-point tensor (float32, float64, float16 "
            f"or bfloat16), got {weight.dtype}"
        )
    if weight.dim() < 1:
        raise ValueError(f"robustkernels.{op}: {weight_name} must have at least one dimension")
    if weight.numel() == 0:
        raise ValueError(
            f"robustkernels.{op}: {weight_name} must not be empty, got shape {tuple(weight.shape)}"
        )
    check_like("alpha", alpha, weight, weight_name, op)
    if mask is not None:
        check_tensor("mask", mask, op)
        if mask.dtype != torch.bool:
            raise TypeError(f"robustkernels.{op}: mask must be a bool tensor, got {mask.dtype}")
        if mask.shape != weight.shape:
            raise ValueError(
                f"robustkernels.{op}: mask must have the {weight_name}'s shape {tuple(weight.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        if mask.device != weight.device:
            raise ValueError(
                f"robustkernels.{op}: mask must be on the {weight_name}'s device {weight.device}, got {mask.device}"
            )
    if alpha.numel() == 1:
        return ALPHA_LAYER
    if alpha.shape == weight.shape:
        return ALPHA_ELEMENT
    out_channels = weight.shape[0]
    if alpha.numel() == out_channels and 1 <= alpha.dim() <= weight.dim() and alpha.shape[0] == out_channels:
        return ALPHA_CHANNEL
    raise ValueError(
        f"robustkernels.{op}: alpha must hold one value (layerwise), one per output channel (channelwise, "
        f"shape [{out_channels}] or [{out_channels}, 1, ...]) or one per weight element (elementwise, shape "
        f"{list(weight.shape)}), got shape {list(alpha.shape)}"
    )


def check_sigma(sigma, grad: torch.Tensor, op: str) -> None:
    """std(W) saved by a forward, handed to its backward: a floating tensor on grad's device."""
    check_tensor("sigma", sigma, op)
    if sigma.dtype not in KERNEL_FLOAT_DTYPES:
        raise TypeError(f"robustkernels.{op}: sigma must be a floating-point tensor, got {sigma.dtype}")
    if sigma.device != grad.device:
        raise ValueError(
            f"robustkernels.{op}: sigma must be on grad's device {grad.device}, got {sigma.device}"
        )


def check_input(x, weight: torch.Tensor, op: str, ranks: tuple[int, ...]) -> None:
    check_tensor("x", x, op)
    if x.dim() not in ranks:
        raise ValueError(
            f"robustkernels.{op}: x must have rank {' or '.join(map(str, ranks))}, got shape {tuple(x.shape)}"
        )
    if x.dtype != weight.dtype:
        raise TypeError(f"robustkernels.{op}: x must have the weight's dtype {weight.dtype}, got {x.dtype}")
    if x.device != weight.device:
        raise ValueError(
            f"robustkernels.{op}: x must be on the weight's device {weight.device}, got {x.device}"
        )


def check_bias(bias, weight: torch.Tensor, op: str) -> None:
    if bias is None:
        return
    check_tensor("bias", bias, op)
    if bias.shape != (weight.shape[0],):
        raise ValueError(
            f"robustkernels.{op}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    check_like("bias", bias, weight, "weight", op)


CROSSMAX_REDUCTIONS = ("kth", "topk_mean", "median")
_CROSSMAX_DTYPES = KERNEL_FLOAT_DTYPES


def crossmax_selection(num_predictors: int, k: int, reduction: str) -> tuple[int, int]:
    """(deepest 0-based rank in descending order, number of selected predictors stored per (b, c))."""
    if reduction == "topk_mean":
        return k - 1, k
    if reduction == "median":  # lower median: ascending position (N - 1) // 2
        return num_predictors - 1 - (num_predictors - 1) // 2, 1
    return k - 1, 1


def crossmax_args(logits, k, reduction, op: str) -> tuple[int, int]:
    """Checks CrossMax's arguments (logits [N, B, C]); returns crossmax_selection's pair."""
    check_tensor("logits", logits, op)
    if logits.dtype not in _CROSSMAX_DTYPES:
        raise TypeError(
            f"robustkernels.{op}: logits must be float32, float64, float16 or bfloat16, got {logits.dtype}"
        )
    if logits.dim() != 3:
        raise ValueError(f"robustkernels.{op}: logits must be 3-D [N, B, C], got shape {tuple(logits.shape)}")
    if logits.numel() == 0:
        raise ValueError(f"robustkernels.{op}: logits must not be empty, got shape {tuple(logits.shape)}")
    if not isinstance(reduction, str) or reduction not in CROSSMAX_REDUCTIONS:
        raise ValueError(
            f"robustkernels.{op}: reduction must be one of {CROSSMAX_REDUCTIONS}, got {reduction!r}"
        )
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"robustkernels.{op}: k must be an int, got {type(k).__name__}")
    num_predictors = logits.shape[0]
    if reduction != "median" and not 1 <= k <= num_predictors:
        raise ValueError(f"robustkernels.{op}: k must be in [1, N] = [1, {num_predictors}], got {k}")
    return crossmax_selection(num_predictors, k, reduction)


def check_predictor_dim(predictor_dim, logits: torch.Tensor, op: str) -> None:
    if isinstance(predictor_dim, bool) or not isinstance(predictor_dim, int):
        raise TypeError(
            f"robustkernels.{op}: predictor_dim must be an int, got {type(predictor_dim).__name__}"
        )
    if logits.dim() != 3:
        raise ValueError(f"robustkernels.{op}: logits must be 3-D [N, B, C], got shape {tuple(logits.shape)}")
    if not -3 <= predictor_dim < 3:
        raise ValueError(f"robustkernels.{op}: predictor_dim must be in [-3, 2], got {predictor_dim}")


MULTIRES_INTERPOLATIONS = ("bilinear", "bicubic", "area")
MULTIRES_NOISE_KINDS = ("uniform", "gaussian")


def _check_int(name: str, value, op: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"robustkernels.{op}: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"robustkernels.{op}: {name} must be >= {minimum}, got {value}")


def _check_float(name: str, value, op: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"robustkernels.{op}: {name} must be a float, got {type(value).__name__}")


def multires_sizes(x, resolutions, op: str) -> list[tuple[int, int]]:
    """Checks x [B, C, H, W] and the resolutions (ints r for r x r, or (rh, rw) pairs,
    each within the image); returns the (rh, rw) per view."""
    check_tensor("x", x, op)
    if x.dtype not in _CROSSMAX_DTYPES:
        raise TypeError(f"robustkernels.{op}: x must be float32, float64, float16 or bfloat16, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"robustkernels.{op}: x must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")
    if isinstance(resolutions, (int, str)) or not hasattr(resolutions, "__len__") or len(resolutions) == 0:
        raise ValueError(f"robustkernels.{op}: resolutions must be a non-empty sequence, got {resolutions!r}")
    height, width = x.shape[-2:]
    sizes = []
    for r in resolutions:
        pair = (
            (r, r)
            if isinstance(r, int) and not isinstance(r, bool)
            else tuple(r)
            if hasattr(r, "__len__")
            else ()
        )
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
            raise TypeError(
                f"robustkernels.{op}: each resolution must be an int or an (int, int) pair, got {r!r}"
            )
        if not (1 <= pair[0] <= height and 1 <= pair[1] <= width):
            raise ValueError(
                f"robustkernels.{op}: resolution {r!r} must lie within the {height}x{width} image (and be >= 1)"
            )
        sizes.append(pair)
    return sizes


def multires_options(jitter, noise, noise_kind, contrast, interpolation, op: str) -> None:
    _check_int("jitter", jitter, op, 0)
    _check_float("noise", noise, op)
    if noise < 0:
        raise ValueError(f"robustkernels.{op}: noise must be >= 0, got {noise}")
    if noise_kind not in MULTIRES_NOISE_KINDS:
        raise ValueError(
            f"robustkernels.{op}: noise_kind must be one of {MULTIRES_NOISE_KINDS}, got {noise_kind!r}"
        )
    if not isinstance(contrast, (tuple, list)) or len(contrast) != 2:
        raise TypeError(f"robustkernels.{op}: contrast must be a (low, high) pair, got {contrast!r}")
    for value in contrast:
        _check_float("contrast", value, op)
    if contrast[0] > contrast[1]:
        raise ValueError(f"robustkernels.{op}: contrast must satisfy low <= high, got {tuple(contrast)}")
    if interpolation not in MULTIRES_INTERPOLATIONS:
        raise ValueError(
            f"robustkernels.{op}: interpolation must be one of {MULTIRES_INTERPOLATIONS}, got {interpolation!r}"
        )


PGD_NORMS = ("linf", "l2")
_PGD_DTYPES = KERNEL_FLOAT_DTYPES


def _check_number(name: str, value, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"robustkernels.{op}: {name} must be a float, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"robustkernels.{op}: {name} must be finite, got {value}")
    return float(value)


def pgd_step_args(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize, op: str) -> None:
    """Checks one attack step's arguments; step is a number or a [B] tensor."""
    for name, value in (("x_adv", x_adv), ("grad", grad), ("x_orig", x_orig)):
        check_tensor(name, value, op)
    if x_adv.dtype not in _PGD_DTYPES:
        raise TypeError(
            f"robustkernels.{op}: x_adv must be float32, float64, float16 or bfloat16, got {x_adv.dtype}"
        )
    if x_adv.dim() < 1:
        raise ValueError(f"robustkernels.{op}: x_adv must have a batch dimension, got a 0-d tensor")
    for name, value in (("grad", grad), ("x_orig", x_orig)):
        if value.dtype != x_adv.dtype:
            raise TypeError(
                f"robustkernels.{op}: {name} must have x_adv's dtype {x_adv.dtype}, got {value.dtype}"
            )
        if value.shape != x_adv.shape:
            raise ValueError(
                f"robustkernels.{op}: {name} must have x_adv's shape {tuple(x_adv.shape)}, got {tuple(value.shape)}"
            )
        if value.device != x_adv.device:
            raise ValueError(
                f"robustkernels.{op}: {name} must be on x_adv's device {x_adv.device}, got {value.device}"
            )
    if isinstance(step, torch.Tensor):
        if not step.is_floating_point():
            raise TypeError(
                f"robustkernels.{op}: step must be a float or a floating-point tensor, got {step.dtype}"
            )
        if step.shape != (x_adv.shape[0],):
            raise ValueError(
                f"robustkernels.{op}: a step tensor must have shape [B] = [{x_adv.shape[0]}], got {tuple(step.shape)}"
            )
        if step.device != x_adv.device:
            raise ValueError(
                f"robustkernels.{op}: step must be on x_adv's device {x_adv.device}, got {step.device}"
            )
    else:
        _check_number("step", step, op)
    if _check_number("eps", eps, op) < 0:
        raise ValueError(f"robustkernels.{op}: eps must be >= 0, got {eps}")
    if not isinstance(norm, str) or norm not in PGD_NORMS:
        raise ValueError(f"robustkernels.{op}: norm must be one of {PGD_NORMS}, got {norm!r}")
    if _check_number("lo", lo, op) > _check_number("hi", hi, op):
        raise ValueError(f"robustkernels.{op}: lo must be <= hi, got lo={lo}, hi={hi}")
    if not isinstance(normalize, bool):
        raise TypeError(f"robustkernels.{op}: normalize must be a bool, got {type(normalize).__name__}")


# ---- the routed multi-path ops (path_weights, route_sort, path_conv2d, path_linear) ----


def path_layout(
    weight, mask, alpha, lams, seeds, op: str, weight_name: str = "weight"
) -> tuple[int, int, int, int, int]:
    """Checks the weight-side arguments (weight named `weight_name`: the backward's is grad); returns
    (paths, entries, rows, inner, alpha values per path)."""
    check_tensor(weight_name, weight, op)
    if weight.dtype not in KERNEL_FLOAT_DTYPES:
        raise TypeError(
            f"robustkernels.{op}: {weight_name} must be a floating-point tensor (float32, float64, float16 or "
            f"bfloat16), got {weight.dtype}"
        )
    if weight.dim() < 2 or weight.numel() == 0:
        raise ValueError(
            f"robustkernels.{op}: {weight_name} must be a non-empty [S, C_out, ...] bank, got {tuple(weight.shape)}"
        )
    paths = len(lams)
    if paths < 1:
        raise ValueError(f"robustkernels.{op}: lams must hold one value per path, got none")
    if len(seeds) != paths:
        raise ValueError(
            f"robustkernels.{op}: seeds must hold one value per path ({paths}), got {len(seeds)}"
        )
    for lam in lams:
        check_lam(lam, op)
    for seed in seeds:
        check_seed(seed, op)
    entries, rows = weight.shape[0], weight.shape[1]
    if entries not in (1, paths):
        raise ValueError(
            f"robustkernels.{op}: {weight_name} must hold 1 or {paths} (one per path) entries, got {entries}"
        )
    numel = weight[0].numel()
    if mask is not None:
        check_tensor("mask", mask, op)
        if mask.dtype != torch.bool:
            raise TypeError(f"robustkernels.{op}: mask must be a bool tensor, got {mask.dtype}")
        if mask.shape != (paths, *weight.shape[1:]):
            raise ValueError(
                f"robustkernels.{op}: mask must have shape {(paths, *weight.shape[1:])}, got {tuple(mask.shape)}"
            )
        if mask.device != weight.device:
            raise ValueError(
                f"robustkernels.{op}: mask must be on the {weight_name}'s device {weight.device}, got {mask.device}"
            )
    if alpha is None:
        if any(lam != 0 for lam in lams):
            raise ValueError(f"robustkernels.{op}: alpha is required when a path has lam != 0")
        return paths, entries, rows, numel // rows, 0
    check_tensor("alpha", alpha, op)
    check_like("alpha", alpha, weight, weight_name, op)
    if alpha.dim() != 2 or alpha.shape[0] != paths or alpha.shape[1] not in (1, rows, numel):
        raise ValueError(
            f"robustkernels.{op}: alpha must be [{paths}, A] with A = 1, {rows} or {numel} values per path, "
            f"got shape {tuple(alpha.shape)}"
        )
    return paths, entries, rows, numel // rows, alpha.shape[1]


def check_counts(counts, paths: int, weight: torch.Tensor, op: str) -> None:
    if counts is None:
        return
    check_tensor("counts", counts, op)
    if counts.dtype != torch.int64:
        raise TypeError(f"robustkernels.{op}: counts must be an int64 tensor, got {counts.dtype}")
    if counts.shape != (paths,):
        raise ValueError(f"robustkernels.{op}: counts must be [{paths}], got shape {tuple(counts.shape)}")
    if counts.device != weight.device:
        raise ValueError(
            f"robustkernels.{op}: counts must be on the weight's device {weight.device}, got {counts.device}"
        )


def check_route(route, num_paths, op: str) -> None:
    check_tensor("route", route, op)
    if route.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"robustkernels.{op}: route must be an int32 or int64 tensor, got {route.dtype}")
    if route.dim() != 1:
        raise ValueError(f"robustkernels.{op}: route must be 1-D [B], got shape {tuple(route.shape)}")
    if isinstance(num_paths, bool) or not isinstance(num_paths, int) or num_paths < 1:
        raise ValueError(f"robustkernels.{op}: num_paths must be a positive int, got {num_paths!r}")
