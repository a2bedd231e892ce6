"""Bad arguments raise clear errors naming the argument, from Python and from C++, and never crash.

TABLE holds, for every op registered in the torch.ops.robustkernels namespace (the C++
kernel ops and the custom ops), valid arguments and bad variants of them, each with the
exception it must raise and a pattern its message must contain (the argument's name);
a variant whose error is None must be accepted (an empty batch, a non-contiguous
input). The cases run in a child process so that a crash (segfault, abort) fails its
case instead of killing pytest: one child runs the whole table and, after a crash, a
new one resumes after the crashing case. The custom ops run the table once per backend
(the default choice, Triton, the reference), since each backend reads memory its own way.
The same table runs on CUDA tensors when a GPU is present; there the wrong-device cases
put one argument on the CPU.
"""

import faulthandler
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
from helpers import require_backend

import robustkernels  # registers the ops
from robustkernels import functional as F

# (device, backend): "" is the default choice (ROBUSTKERNELS_BACKEND unset)
SETTINGS = [(device, backend) for device in ("cpu", "cuda") for backend in ("", "triton", "reference")]
CHILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Case:
    op: str
    label: str
    args: dict
    error: type[Exception] | None
    match: str | None


class Builder:
    """Collects one op's cases: `good` are valid keyword arguments, each case overrides some."""

    def __init__(self, op: str, device: str, cases: list[Case], good: dict):
        self.op, self.device, self.cases, self.good = op, device, cases, good
        self.kernel = op.endswith("_kernel")

    def bad(self, label: str, error: type[Exception] | None, match: str | None = None, **changes) -> None:
        if error is not None and match is None:
            (match,) = changes  # the message names the one changed argument
        self.cases.append(Case(self.op, label, {**self.good, **changes}, error, match))

    def accepts(self, label: str, **changes) -> None:
        self.bad(label, None, None, **changes)

    def elsewhere(self, name: str, value: torch.Tensor) -> None:
        """`name` on another device: a meta tensor beside CPU ones (the dispatcher sends the call to
        the Meta key, where a kernel op has no kernel and a custom op runs its checking fake), or a
        CPU tensor beside CUDA ones (the CUDA launcher's device check)."""
        if self.device == "cpu":
            other = value.to("meta")
            error, match = (NotImplementedError, "Meta") if self.kernel else (ValueError, name)
        else:
            other, error, match = value.cpu(), ValueError, name
        self.bad(f"{name} on another device", error, match, **{name: other})


def _randn(device, *shape, dtype=torch.float32):
    generator = torch.Generator().manual_seed(sum(shape) + len(shape))
    return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)


def _noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values in a transposed layout (not contiguous for rank >= 2)."""
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def _noisy_weight_cases(b: Builder, weight_name: str) -> None:
    w, a = b.good[weight_name], b.good["alpha"]
    b.bad("integer weight", TypeError, **{weight_name: w.long()})
    b.bad("float8 weight", TypeError, **{weight_name: w.to(torch.float8_e4m3fn)})
    b.bad("empty weight", ValueError, **{weight_name: w[:0]})
    b.bad("0-d weight", ValueError, **{weight_name: w.sum()})
    b.bad("alpha dtype", TypeError, alpha=a.double())
    b.bad("alpha with 3 values for 4 channels", ValueError, alpha=torch.ones(3, device=b.device))
    b.bad("alpha of shape [4, 3]", ValueError, alpha=torch.ones(4, 3, device=b.device))
    b.bad("empty alpha", ValueError, alpha=a[:0])
    b.elsewhere("alpha", a)
    b.bad("float mask", TypeError, mask=torch.ones_like(w))
    b.bad("mask shape", ValueError, mask=torch.ones(4, 3, 3, dtype=torch.bool, device=b.device))
    b.elsewhere("mask", torch.ones_like(w, dtype=torch.bool))
    b.bad("negative seed", ValueError, seed=-1)
    b.accepts(
        "non-contiguous weight and channel alpha", **{weight_name: _noncontiguous(w)}, alpha=a.expand(4, 1)
    )
    b.accepts("non-contiguous mask", mask=_noncontiguous(torch.rand_like(w) > 0.5))


def _noisy_weight(op, device, cases):
    good = {"weight": _randn(device, 4, 3, 3, 3), "alpha": torch.full((1,), 0.25, device=device)}
    b = Builder(op, device, cases, {**good, "lam": 1.0, "seed": 0, "mask": None})
    _noisy_weight_cases(b, "weight")


def _noisy_weight_backward(op, device, cases):
    grad_name = "grad_out" if op.endswith("_kernel") else "grad"
    good = {grad_name: _randn(device, 4, 3, 3, 3), "alpha": torch.full((1,), 0.25, device=device)}
    sigma = torch.tensor(0.5, device=device)
    good |= {"sigma": sigma, "lam": 1.0, "seed": 0, "mask": None, "need_alpha_grad": True}
    b = Builder(op, device, cases, good)
    _noisy_weight_cases(b, grad_name)
    b.bad("sigma with 2 values", ValueError, sigma=torch.ones(2, device=device))
    b.bad("integer sigma", TypeError, sigma=sigma.long())
    b.elsewhere("sigma", sigma)


def _philox_normal_kernel(op, device, cases):
    b = Builder(op, device, cases, {"like": torch.empty(3, device=device), "seed": 0, "offset": 0})
    b.bad("negative offset", ValueError, offset=-1)
    b.bad("offset + numel past int64", ValueError, offset=2**63 - 2)
    b.bad("negative seed", ValueError, seed=-1)
    b.accepts("empty like", like=torch.empty(0, device=device))
    b.accepts("non-contiguous like", like=torch.empty(4, 3, device=device).t())


def _set_cpu_isa(op, device, cases):
    # device-independent: the process-wide CPU instruction-set path (csrc/cpu/cpu_isa.h)
    b = Builder(op, device, cases, {"isa": "best"})
    b.bad("unknown path", ValueError, isa="sse9")
    b.accepts("the best path")


def _random_route(op, device, cases):
    seed = torch.tensor(5)
    b = Builder(op, device, cases, {"batch": 4, "num_paths": 3, "seed_tensor": seed, "device": device})
    b.bad("negative batch", ValueError, batch=-1)
    b.bad("no paths", ValueError, "n must be a positive int", num_paths=0)
    b.bad("int32 seed tensor", ValueError, "seed", seed_tensor=seed.int())
    b.bad("seed tensor of one element", ValueError, "seed", seed_tensor=seed.reshape(1))
    b.bad("negative seed", ValueError, "seed", seed_tensor=-seed)
    b.accepts("empty batch", batch=0)


def _no_arguments(op, device, cases):
    Builder(op, device, cases, {}).accepts("no arguments")


def _crossmax(op, device, cases):
    logits = _randn(device, 3, 2, 4)
    b = Builder(op, device, cases, {"logits": logits, "k": 2, "reduction": "kth"})
    b.bad("integer logits", TypeError, logits=logits.long())
    b.bad("2-D logits", ValueError, logits=logits[0])
    b.bad("empty logits", ValueError, logits=logits[:, :0])
    b.bad("k = 0", ValueError, k=0)
    b.bad("k > N", ValueError, "k", k=4, reduction="topk_mean")
    b.bad("unknown reduction", ValueError, reduction="mean")
    b.accepts("non-contiguous logits", logits=logits.transpose(1, 2).contiguous().transpose(1, 2))


def _crossmax_backward(op, device, cases):
    logits = _randn(device, 3, 2, 4)
    _, class_idx, pred_idx, sel_idx = torch.ops.robustkernels.crossmax(logits, 2, "topk_mean")
    grad_name = "grad_out" if op.endswith("_kernel") else "grad"
    grad = _randn(device, 2, 4)
    good = {grad_name: grad, "class_idx": class_idx, "pred_idx": pred_idx, "sel_idx": sel_idx}
    b = Builder(op, device, cases, good)
    b.bad("integer grad", TypeError, **{grad_name: grad.long()})
    b.bad("1-D grad", ValueError, **{grad_name: grad[0]})
    for name, index, bound in (
        ("class_idx", class_idx, 4),
        ("pred_idx", pred_idx, 3),
        ("sel_idx", sel_idx, 3),
    ):
        b.bad(f"int64 {name}", TypeError, **{name: index.long()})
        b.bad(f"{name} shape", ValueError, **{name: index[..., :1]})
        b.bad(f"{name} past its bound", ValueError, **{name: index + bound})
        b.bad(f"negative {name}", ValueError, **{name: index - bound})
        b.elsewhere(name, index)
    empty = {
        grad_name: grad[:0],
        "class_idx": class_idx[:, :0],
        "pred_idx": pred_idx[:0],
        "sel_idx": sel_idx[:, :0],
    }
    b.accepts("empty batch", **empty)


def _multires_backward_cases(b: Builder, grad_name: str) -> None:
    grad, clip_mask = b.good[grad_name], b.good["clip_mask"]
    b.bad("integer grad", TypeError, **{grad_name: grad.long()})
    b.bad("channels not a multiple of the views", ValueError, **{grad_name: grad[:, :5]})
    b.bad("float clip_mask", ValueError, clip_mask=clip_mask.float())
    b.bad("clip_mask shape", ValueError, clip_mask=clip_mask[:, :3])
    b.elsewhere("clip_mask", clip_mask)
    b.bad("x not the forward's input", ValueError, "x", x=b.good["x"][:, :2])
    b.accepts("empty batch", **{grad_name: grad[:0]}, clip_mask=clip_mask[:0], x=b.good["x"][:0])


def _multires_stack(op, device, cases):
    x = _randn(device, 2, 3, 8, 8).clamp(0, 1)
    good = {"x": x, "heights": [8, 4], "widths": [8, 4], "jitter": 1, "noise": 0.1, "noise_kind": "uniform"}
    good |= {"contrast_low": 0.5, "contrast_high": 1.0, "interpolation": "bicubic", "antialias": False}
    good |= {"adjust_contrast": True, "seed": 0}
    b = Builder(op, device, cases, good)
    b.bad("integer x", TypeError, x=x.long())
    b.bad("3-D x", ValueError, x=x[0])
    b.bad("heights and widths lengths", ValueError, widths=[8])
    b.bad("resolution past the image", ValueError, "resolution", heights=[8, 9])
    b.bad("negative jitter", ValueError, jitter=-1)
    b.bad("unknown noise kind", ValueError, noise_kind="salt")
    b.bad("contrast low > high", ValueError, "contrast", contrast_low=1.5)
    b.bad("unknown interpolation", ValueError, interpolation="nearest")
    b.bad("negative seed", ValueError, seed=-1)
    b.accepts("empty batch", x=x[:0])
    b.accepts("non-contiguous x", x=_noncontiguous(x))


def _multires_stack_backward(op, device, cases):
    grad = _randn(device, 2, 6, 8, 8)
    clip_mask = torch.zeros(2, 6, 8, 1, dtype=torch.uint8, device=device)
    x = _randn(device, 2, 3, 8, 8).clamp(0, 1)
    grad_name = "grad_out" if op.endswith("_kernel") else "grad"
    good = {grad_name: grad, "clip_mask": clip_mask, "x": x, "heights": [8, 4], "widths": [8, 4], "jitter": 1}
    good |= {"contrast_low": 0.5, "contrast_high": 1.0, "interpolation": "bicubic", "antialias": False}
    good |= {"adjust_contrast": True, "seed": 0}
    b = Builder(op, device, cases, good)
    _multires_backward_cases(b, grad_name)
    b.bad("resolution past the image", ValueError, "resolution", heights=[8, 9])
    b.bad("negative seed", ValueError, seed=-1)


def _pgd_step(op, device, cases):
    x = _randn(device, 2, 3, 4, 4)
    step = torch.full((2,), 0.1, device=device)
    good = {"x_adv": x, "grad": _randn(device, 2, 3, 4, 5)[..., :4], "x_orig": x.clone(), "step": step}
    b = Builder(
        op, device, cases, {**good, "eps": 0.3, "norm": "linf", "lo": 0.0, "hi": 1.0, "normalize": True}
    )
    b.bad("integer x_adv", TypeError, x_adv=x.long())
    b.bad("0-d x_adv", ValueError, x_adv=x.sum())
    b.bad("grad dtype", TypeError, grad=x.double())
    b.bad("x_orig shape", ValueError, x_orig=x[:, :2])
    b.elsewhere("x_orig", x)
    b.bad("step with 3 values", ValueError, step=torch.ones(3, device=device))
    b.bad("integer step", TypeError, step=step.long())
    b.elsewhere("step", step)
    b.bad("negative eps", ValueError, eps=-0.1)
    b.bad("unknown norm", ValueError, norm="l1")
    b.bad("lo > hi", ValueError, "lo", lo=1.0, hi=0.0)
    b.accepts("empty batch", x_adv=x[:0], grad=x[:0], x_orig=x[:0], step=step[:0])
    b.accepts("non-contiguous grad", grad=_noncontiguous(x))


def _pgd_step_backward(op, device, cases):
    x = _randn(device, 2, 3, 4, 4)
    step = torch.full((2,), 0.1, device=device)
    good = {"grad_out": _randn(device, 2, 3, 4, 4), "x_adv": x, "grad": _randn(device, 2, 3, 4, 4)}
    good |= {"x_orig": x.clone(), "step": step, "eps": 0.3, "norm": "l2", "lo": 0.0, "hi": 1.0}
    b = Builder(op, device, cases, {**good, "normalize": True, "output_mask": [True, True, True, True]})
    b.bad("grad_out shape", ValueError, grad_out=x[:, :2])
    b.bad("grad dtype", TypeError, grad=x.double())
    b.elsewhere("x_orig", x)
    b.bad("step with 3 values", ValueError, step=torch.ones(3, device=device))
    b.bad("unknown norm", ValueError, norm="l1")
    b.accepts("only d step", output_mask=[False, False, False, True])
    b.accepts("empty batch", grad_out=x[:0], x_adv=x[:0], grad=x[:0], x_orig=x[:0], step=step[:0])


def _bank(device, paths=3):
    generator = torch.Generator().manual_seed(paths)
    weight = torch.randn(paths, 4, 3, 3, 3, generator=generator).to(device)
    mask = (torch.rand(paths, 4, 3, 3, 3, generator=generator) > 0.3).to(device)
    alpha = (0.1 + torch.rand(paths, 4, generator=generator)).to(device)
    return weight, mask, alpha


def _path_weight_cases(b: Builder, weight_name: str) -> None:
    weight, mask, alpha = b.good[weight_name], b.good["mask"], b.good["alpha"]
    b.bad("integer weight", TypeError, **{weight_name: weight.int()})
    b.bad("1-D weight", ValueError, **{weight_name: weight[0, 0, 0, 0]})
    b.bad("weight with 2 entries for 3 paths", ValueError, **{weight_name: weight[:2]})
    b.bad("no lams", ValueError, "lams", lams=[], seeds=[])
    b.bad("seeds length", ValueError, seeds=[0, 1])
    b.bad("negative seed", ValueError, "seed", seeds=[0, -1, 2])
    b.bad("float mask", TypeError, mask=mask.float())
    b.bad("mask shape", ValueError, mask=mask[:, :2])
    b.elsewhere("mask", mask)
    b.bad("no alpha with noise", ValueError, "alpha", alpha=None)
    b.bad("alpha dtype", TypeError, alpha=alpha.double())
    b.bad("alpha with 2 values per path", ValueError, alpha=alpha[:, :2])
    b.bad("alpha rows", ValueError, alpha=alpha[:2])
    b.elsewhere("alpha", alpha)
    counts = torch.ones(3, dtype=torch.int64, device=b.device)
    b.bad("counts length", ValueError, counts=counts[:2])
    b.bad("int32 counts", ValueError if not b.kernel else TypeError, "counts", counts=counts.int())
    b.elsewhere("counts", counts)
    b.accepts("non-contiguous weight", **{weight_name: _noncontiguous(weight)})


def _path_weights(op, device, cases):
    weight, mask, alpha = _bank(device)
    good = {"weight": weight, "mask": mask, "alpha": alpha, "lams": [1.0, 0.5, 0.0], "seeds": [0, 1, 2]}
    b = Builder(op, device, cases, {**good, "counts": None})
    _path_weight_cases(b, "weight")
    b.accepts("one shared weight", weight=weight[:1])


def _path_weights_backward(op, device, cases):
    grad, mask, alpha = _bank(device)
    grad_name = "grad_out" if op.endswith("_kernel") else "grad"
    sigma = torch.ones(3, device=device)
    good = {grad_name: grad, "entries": 3, "mask": mask, "alpha": alpha, "sigma": sigma}
    good |= {"lams": [1.0, 0.5, 0.0], "seeds": [0, 1, 2], "counts": None, "need_alpha_grad": True}
    b = Builder(op, device, cases, good)
    _path_weight_cases(b, grad_name)
    b.bad("grad with one entry for 3 paths", ValueError, **{grad_name: grad[:1]})
    b.bad("entries", ValueError, entries=2)
    b.bad("sigma length", ValueError, sigma=sigma[:2])
    b.bad("integer sigma", TypeError, sigma=sigma.long())
    b.elsewhere("sigma", sigma)
    b.accepts("shared entry", entries=1, sigma=sigma[:1])


def _route_sort(op, device, cases):
    route = torch.tensor([0, 2, 1, 2], device=device)
    b = Builder(op, device, cases, {"route": route, "num_paths": 3})
    b.bad("float route", TypeError, route=route.float())
    b.bad("2-D route", ValueError, route=route.reshape(2, 2))
    b.bad("no paths", ValueError, num_paths=0)
    if b.kernel:  # the custom op leaves out-of-range samples unsorted; its callers check the counts
        b.bad("route past num_paths", ValueError, route=route + 3)
        b.bad("negative route", ValueError, route=route - 3)
    b.accepts("empty route", route=route[:0])
    b.accepts("non-contiguous route", route=torch.stack([route, route], dim=1)[:, 0])


def _noisy_layer_cases(b: Builder, x: torch.Tensor) -> None:
    w, a = b.good["weight"], b.good["alpha"]
    b.bad("x dtype", TypeError, x=x.double())
    b.bad("x rank", ValueError, x=x.reshape(-1))
    b.elsewhere("x", x)
    b.bad("integer weight", TypeError, weight=w.long())
    b.bad("alpha with 3 values for 4 channels", ValueError, alpha=torch.ones(3, device=b.device))
    b.elsewhere("alpha", a)
    b.bad("bias shape", ValueError, bias=torch.ones(3, device=b.device))
    b.bad("bias dtype", TypeError, bias=torch.ones(4, dtype=torch.float64, device=b.device))
    b.elsewhere("bias", torch.ones(4, device=b.device))
    b.bad("mask shape", ValueError, mask=torch.ones(4, dtype=torch.bool, device=b.device))
    b.accepts("empty batch", x=x[:0])


def _noisy_conv2d(op, device, cases):
    x = _randn(device, 2, 3, 8, 8)
    good = {
        "x": x,
        "weight": _randn(device, 4, 3, 3, 3),
        "bias": None,
        "alpha": torch.full((1,), 0.25, device=device),
    }
    good |= {"lam": 1.0, "seed": 0, "mask": None, "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}
    b = Builder(op, device, cases, {**good, "groups": 1})
    _noisy_layer_cases(b, x)
    b.bad("x channels", ValueError, "channels", x=x[:, :2])
    b.bad("groups", ValueError, groups=2)
    b.bad("3-D weight", ValueError, weight=good["weight"][0])


def _noisy_layer_backward_cases(b: Builder, x: torch.Tensor) -> None:
    w, a, g = b.good["weight"], b.good["alpha"], b.good["grad_y"]
    b.bad("integer weight", TypeError, weight=w.long())
    b.bad("alpha with 3 values for 4 channels", ValueError, alpha=torch.ones(3, device=b.device))
    b.elsewhere("alpha", a)
    b.bad("mask shape", ValueError, mask=torch.ones(4, dtype=torch.bool, device=b.device))
    b.bad("negative seed", ValueError, seed=-1)
    b.bad("no weight for dx", ValueError, weight=None)
    b.bad("no x for dW", ValueError, x=None)
    b.bad("int32 seed tensor", TypeError, seed_tensor=torch.tensor(5, dtype=torch.int32))
    b.accepts("only dW, without the weight", weight=None, output_mask=[False, True, False, False])
    b.accepts("only dx, without x", x=None, output_mask=[True, False, False, False])
    b.accepts("a seed tensor", seed_tensor=torch.tensor(5))
    b.accepts("empty batch", x=x[:0], grad_y=g[:0])


def _noisy_conv2d_backward(op, device, cases):
    x = _randn(device, 2, 3, 8, 8)
    good = {"grad_y": _randn(device, 2, 4, 8, 8), "x": x, "weight": _randn(device, 4, 3, 3, 3)}
    good |= {"alpha": torch.full((1,), 0.25, device=device), "lam": 1.0, "seed": 0, "mask": None}
    good |= {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "seed_tensor": None}
    good |= {"x_size": [2, 3, 8, 8], "weight_size": [4, 3, 3, 3], "has_bias": True}
    b = Builder(op, device, cases, {**good, "output_mask": [True, True, True, True]})
    _noisy_layer_backward_cases(b, x)


def _noisy_linear_backward(op, device, cases):
    x = _randn(device, 2, 5)
    good = {"grad_y": _randn(device, 2, 4), "x": x, "weight": _randn(device, 4, 5)}
    good |= {"alpha": torch.full((1,), 0.25, device=device), "lam": 1.0, "seed": 0, "mask": None}
    good |= {"seed_tensor": None, "weight_size": [4, 5], "has_bias": True}
    b = Builder(op, device, cases, {**good, "output_mask": [True, True, True, True]})
    _noisy_layer_backward_cases(b, x)


def _set_python_kernels(op, device, cases):
    # device-independent: the process-wide switch of csrc/kernel_choice.h, left as the backend has it
    Builder(op, device, cases, {"on": robustkernels.ops.backend.explicit_choice() is not None}).accepts("on")


def _noisy_linear(op, device, cases):
    x = _randn(device, 2, 5)
    good = {
        "x": x,
        "weight": _randn(device, 4, 5),
        "bias": None,
        "alpha": torch.full((1,), 0.25, device=device),
    }
    b = Builder(op, device, cases, {**good, "lam": 1.0, "seed": 0, "mask": None})
    _noisy_layer_cases(b, x)
    b.bad("x features", ValueError, "features", x=x[:, :4])
    b.bad("3-D weight", ValueError, weight=good["weight"][None])


def _path_layer_cases(b: Builder) -> None:
    x, route = b.good["x"], b.good["route"]
    b.bad("x dtype", TypeError, x=x.double())
    b.elsewhere("x", x)
    b.bad("float route", TypeError, route=route.float())
    b.bad("route length", ValueError, route=route[:2])
    b.bad("route past num_paths", ValueError, route=route + 3)
    b.elsewhere("route", route)
    b.bad("route and segments", ValueError, "segments", segments=[2, 1, 1])
    b.bad("segments not summing to the batch", ValueError, "segments", route=None, segments=[1, 1, 1])
    b.bad("bias rows", ValueError, bias=torch.ones(2, 4, device=b.device))
    b.bad("mask shape", ValueError, mask=b.good["mask"][:, :2])
    b.bad("no alpha with noise", ValueError, "alpha", alpha=None)
    b.accepts("segments", route=None, segments=[2, 1, 1])
    b.accepts("empty batch", x=x[:0], route=route[:0])


def _path_conv2d(op, device, cases):
    weight, mask, alpha = _bank(device)
    x = _randn(device, 4, 3, 6, 6)
    route = torch.tensor([0, 2, 1, 2], device=device)
    good = {"x": x, "weight": weight, "bias": None, "mask": mask, "alpha": alpha, "lams": [1.0, 0.5, 0.0]}
    good |= {"seeds": [0, 1, 2], "route": route, "segments": [], "stride": [1, 1], "padding": [1, 1]}
    b = Builder(op, device, cases, {**good, "dilation": [1, 1], "groups": 1})
    _path_layer_cases(b)
    b.bad("x channels", ValueError, "channels", x=x[:, :2])
    b.bad("groups", ValueError, "groups", groups=2)


def _path_linear(op, device, cases):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 4, 5, generator=generator).to(device)
    mask = (torch.rand(3, 4, 5, generator=generator) > 0.3).to(device)
    alpha = torch.full((3, 1), 0.5, device=device)
    x = _randn(device, 4, 5)
    route = torch.tensor([0, 2, 1, 2], device=device)
    good = {"x": x, "weight": weight, "bias": None, "mask": mask, "alpha": alpha, "lams": [1.0, 0.5, 0.0]}
    b = Builder(op, device, cases, {**good, "seeds": [0, 1, 2], "route": route, "segments": []})
    _path_layer_cases(b)
    b.bad("x features", ValueError, "weight", x=x[:, :4])


def _path_backward_cases(b: Builder) -> None:
    grad_y, x, perm, counts = b.good["grad_y"], b.good["x"], b.good["perm"], b.good["counts"]
    b.bad("grad_y dtype", TypeError, grad_y=grad_y.double())
    b.bad("grad_y batch", ValueError, grad_y=grad_y[:2])
    b.elsewhere("grad_y", grad_y)
    b.bad("x dtype", TypeError, x=x.double())
    b.bad("float perm", TypeError, perm=perm.float())
    b.bad("perm length", ValueError, perm=perm[:2])
    b.bad("perm past the batch", ValueError, perm=perm + 4)
    b.elsewhere("perm", perm)
    b.bad("int32 counts", TypeError, counts=counts.int())
    b.bad("counts length", ValueError, counts=counts[:2])
    b.bad("counts not summing to the batch", ValueError, counts=counts + 1)
    b.elsewhere("counts", counts)
    b.bad("segments length", ValueError, "segments", perm=perm[:0], segments=[4])
    b.bad("needs length", ValueError, needs=[True])


def _path_conv2d_backward(op, device, cases):
    weight, mask, alpha = _bank(device)
    x = _randn(device, 4, 3, 6, 6)
    perm = torch.tensor([0, 2, 1, 3], device=device)
    counts = torch.tensor([1, 1, 2], device=device)
    good = {"grad_y": _randn(device, 4, 4, 6, 6), "x": x, "weight": weight, "mask": mask, "alpha": alpha}
    good |= {"perm": perm, "counts": counts, "lams": [1.0, 0.5, 0.0], "seeds": [0, 1, 2], "segments": []}
    good |= {"bias_entries": 0, "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    b = Builder(op, device, cases, {**good, "needs": [True, True, False, True]})
    _path_backward_cases(b)


def _path_linear_backward(op, device, cases):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 4, 5, generator=generator).to(device)
    mask = (torch.rand(3, 4, 5, generator=generator) > 0.3).to(device)
    alpha = torch.full((3, 1), 0.5, device=device)
    perm = torch.tensor([0, 2, 1, 3], device=device)
    counts = torch.tensor([1, 1, 2], device=device)
    good = {"grad_y": _randn(device, 4, 4), "x": _randn(device, 4, 5), "weight": weight, "mask": mask}
    good |= {"alpha": alpha, "perm": perm, "counts": counts, "lams": [1.0, 0.5, 0.0], "seeds": [0, 1, 2]}
    b = Builder(
        op, device, cases, {**good, "segments": [], "bias_entries": 0, "needs": [True, True, False, True]}
    )
    _path_backward_cases(b)


# Every op in the namespace, with the function that appends its cases.
TABLE = {
    "noisy_weight_fwd_kernel": _noisy_weight,
    "noisy_weight": _noisy_weight,
    "noisy_weight_bwd_kernel": _noisy_weight_backward,
    "noisy_weight_backward": _noisy_weight_backward,
    "noisy_weight_fwd_python": _noisy_weight,
    "noisy_weight_bwd_python": _noisy_weight_backward,
    "set_python_kernels": _set_python_kernels,
    "philox_normal_kernel": _philox_normal_kernel,
    "set_cpu_isa": _set_cpu_isa,
    "cpu_isa": _no_arguments,
    "supported_cpu_isas": _no_arguments,
    "crossmax_fwd_kernel": _crossmax,
    "crossmax": _crossmax,
    "crossmax_fwd_python": _crossmax,
    "crossmax_bwd_kernel": _crossmax_backward,
    "crossmax_backward": _crossmax_backward,
    "crossmax_bwd_python": _crossmax_backward,
    "multires_stack_fwd_kernel": _multires_stack,
    "multires_stack_fwd_python": _multires_stack,
    "multires_stack_bwd_kernel": _multires_stack_backward,
    "multires_stack_bwd_python": _multires_stack_backward,
    "multires_stack": _multires_stack,
    "multires_stack_backward": _multires_stack_backward,
    "pgd_step_fwd_kernel": _pgd_step,
    "pgd_step": _pgd_step,
    "pgd_step_fwd_python": _pgd_step,
    "pgd_step_backward": _pgd_step_backward,
    "path_weights_fwd_kernel": _path_weights,
    "path_weights": _path_weights,
    "path_weights_bwd_kernel": _path_weights_backward,
    "path_weights_backward": _path_weights_backward,
    "route_sort_kernel": _route_sort,
    "route_sort": _route_sort,
    "random_route": _random_route,
    "noisy_conv2d": _noisy_conv2d,
    "noisy_linear": _noisy_linear,
    "noisy_conv2d_backward": _noisy_conv2d_backward,
    "noisy_linear_backward": _noisy_linear_backward,
    "path_conv2d": _path_conv2d,
    "path_linear": _path_linear,
    "path_conv2d_backward": _path_conv2d_backward,
    "path_linear_backward": _path_linear_backward,
}


def registered_ops() -> list[str]:
    prefix = "robustkernels::"
    names = torch._C._dispatch_get_all_op_names()
    return sorted(name.removeprefix(prefix) for name in names if name.startswith(prefix))


@cache
def table(device: str) -> list[Case]:
    cases: list[Case] = []
    for op in sorted(TABLE):
        TABLE[op](op, device, cases)
    return cases


def _run_case(case: Case) -> dict:
    try:
        getattr(torch.ops.robustkernels, case.op)(**case.args)
    except Exception as error:
        return {"raised": [cls.__name__ for cls in type(error).__mro__], "message": str(error)}
    return {"raised": None}


def run_cases(device: str, start: int) -> None:
    """Child process: runs the cases from `start` on, one JSON line before and after each."""
    faulthandler.enable()
    for index, case in enumerate(table(device)[start:], start):
        print(json.dumps({"started": index}), flush=True)
        print(json.dumps({"index": index, **_run_case(case)}), flush=True)


_CHILD = "import sys; sys.path.insert(0, sys.argv[1]); import test_bad_inputs; test_bad_inputs.run_cases(sys.argv[2], int(sys.argv[3]))"


@cache
def outcomes(device: str, backend: str) -> dict[int, dict]:
    """Every case's outcome, from child processes; a crashed or hung case gets {"crashed": why}."""
    total, results, start = len(table(device)), {}, 0
    while start < total:
        command = [sys.executable, "-c", _CHILD, str(Path(__file__).parent), device, str(start)]
        try:
            child = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                env={**os.environ, "ROBUSTKERNELS_BACKEND": backend},
            )
            code = child.returncode
            why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            stdout = child.stdout
        except subprocess.TimeoutExpired as expired:
            stdout, child = expired.stdout or "", None
            stdout, why = (
                stdout.decode() if isinstance(stdout, bytes) else stdout,
                f"no result in {CHILD_TIMEOUT_S} s",
            )
        last_started = start
        for line in stdout.splitlines():
            record = json.loads(line)
            if "started" in record:
                last_started = record["started"]
            else:
                results[record["index"]] = record
        if child is not None and child.returncode == 0 and len(results) == total:
            break
        stderr = child.stderr[-4000:] if child is not None else ""
        results[last_started] = {"index": last_started, "crashed": f"{why}\n{stderr}"}
        start = last_started + 1
    return results


def test_every_registered_op_has_cases():
    """A new op (C++ kernel or custom op) fails here until TABLE holds its bad arguments; an entry
    for an op that no longer exists fails too (kernel ops exist only when the extension is built)."""
    registered = set(registered_ops())
    assert registered - set(TABLE) == set(), "ops without bad-argument cases"
    assert {op for op in TABLE if not op.endswith("_kernel")} - registered == set(), "cases for unknown ops"


def _failure(case: Case, outcome: dict) -> str | None:
    where = f"{case.op} [{case.label}]"
    if "crashed" in outcome:
        return f"{where} crashed: {outcome['crashed']}"
    raised = outcome["raised"]
    if case.error is None:
        return (
            None
            if raised is None
            else f"{where} should be accepted, raised {raised[0]}: {outcome['message']}"
        )
    if raised is None:
        return f"{where} returned instead of raising {case.error.__name__}"
    if case.error.__name__ not in raised or case.match not in outcome["message"]:
        return f"{where} should raise {case.error.__name__} naming {case.match!r}, raised {raised[0]}: {outcome['message']}"
    return None


def _settings_of_every_op():
    """(op, device, backend) for every registered op; a kernel op has no backend to choose."""
    for op in registered_ops():
        for device, backend in SETTINGS:
            if not (op.endswith("_kernel") and backend):
                yield pytest.param(op, device, backend, id=f"{device}-{backend or 'default'}-{op}")


@pytest.mark.parametrize(("op", "device", "backend"), list(_settings_of_every_op()))
def test_op_rejects_bad_arguments(op, device, backend):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device: the table runs on CPU tensors only")
    if op.endswith("_kernel"):
        dispatch_key = "CPU" if device == "cpu" else "CUDA"
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"robustkernels::{op}", dispatch_key):
            pytest.skip(
                f"robustkernels::{op} has no {dispatch_key} kernel (robustkernels._C built without it)"
            )
    elif backend:
        require_backend(backend, device)
    cases = table(device)
    indices = [i for i, case in enumerate(cases) if case.op == op]
    assert indices, f"no cases for {op}"
    results = outcomes(device, backend)
    failures = [f for f in (_failure(cases[i], results[i]) for i in indices) if f]
    assert not failures, "\n".join(failures)


W = torch.randn(4, 3, 3, 3)
A = torch.full((1,), 0.25)
X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"weight": W.long()}, TypeError, "weight"),
        ({"weight": torch.empty(0, 3, 3, 3)}, ValueError, "weight"),
        ({"weight": torch.tensor(1.0)}, ValueError, "weight"),
        ({"weight": [1.0, 2.0]}, TypeError, "weight"),
        ({"alpha": A.double()}, TypeError, "alpha"),
        ({"alpha": torch.ones(3)}, ValueError, "alpha"),
        ({"alpha": torch.ones(4, 3)}, ValueError, "alpha"),
        ({"mask": torch.ones(4, 3, 3, 3)}, TypeError, "mask"),
        ({"mask": torch.ones(4, 3, 3, dtype=torch.bool)}, ValueError, "mask"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**63}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"lam": "1"}, TypeError, "lam"),
    ],
)
def test_noisy_weight_bad_arguments(kwargs, error, name):
    args = {"weight": W, "alpha": A, "lam": 1.0, "seed": 0, "mask": None, **kwargs}
    with pytest.raises(error, match=name):
        F.noisy_weight(args.pop("weight"), args.pop("alpha"), **args)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"x": X.double()}, TypeError, "x"),
        ({"x": torch.randn(8, 8)}, ValueError, "x"),
        ({"x": torch.randn(2, 5, 8, 8)}, ValueError, "channels"),
        ({"x": torch.randn(0, 3, 8, 8)}, None, None),  # an empty batch is valid, as for F.conv2d
        ({"bias": torch.ones(3)}, ValueError, "bias"),
        ({"bias": torch.ones(4, dtype=torch.float64)}, TypeError, "bias"),
        ({"weight": torch.randn(4, 3, 3)}, ValueError, "weight"),
        ({"padding": "full"}, ValueError, "padding"),
        ({"groups": 2}, ValueError, "groups"),
    ],
)
def test_noisy_conv2d_bad_arguments(kwargs, error, name):
    args = {"x": X, "weight": W, "bias": None, "alpha": A, "lam": 1.0, "seed": 0, **kwargs}
    tensors = [args.pop(key) for key in ("x", "weight", "bias", "alpha")]
    if error is None:
        assert F.noisy_conv2d(*tensors, **args).shape[0] == 0
        return
    with pytest.raises(error, match=name):
        F.noisy_conv2d(*tensors, **args)


def test_noisy_linear_bad_arguments():
    with pytest.raises(ValueError, match="features"):
        F.noisy_linear(torch.randn(2, 5), torch.randn(3, 4), None, A, lam=1.0, seed=0)
    with pytest.raises(ValueError, match="weight"):
        F.noisy_linear(torch.randn(2, 4), torch.randn(3, 4, 1), None, A, lam=1.0, seed=0)
    with pytest.raises(ValueError, match="x"):
        F.noisy_linear(torch.tensor(1.0), torch.randn(3, 4), None, A, lam=1.0, seed=0)


def test_device_mismatch_is_named():
    meta_alpha = torch.empty(1, device="meta")
    with pytest.raises(ValueError, match="alpha"):
        F.noisy_weight(W, meta_alpha, lam=1.0, seed=0)


BANK = torch.randn(3, 4, 3, 3, 3)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: F.philox_normal([1.0], seed=0), TypeError, "like"),
        (lambda: F.philox_normal(torch.empty(3), seed=0, offset=-1), ValueError, "offset"),
        (lambda: F.crossmax(torch.randn(3, 2, 4).long(), k=2), TypeError, "logits"),
        (lambda: F.crossmax(torch.randn(3, 2, 4), k=2, predictor_dim=3), ValueError, "predictor_dim"),
        (lambda: F.multires_stack(X, (8, 9), seed=0), ValueError, "resolution"),
        (lambda: F.multires_stack(X[0], (8, 4), seed=0), ValueError, "x"),
        (lambda: F.pgd_step(X, X, X, step=torch.ones(2, device="meta"), eps=0.1), ValueError, "step"),
        (lambda: F.pgd_step(X, X[:1], X, step=0.1, eps=0.1), ValueError, "grad"),
        (lambda: F.route_sort(torch.tensor([0, 5]), 3), ValueError, "route"),
        (lambda: F.route_sort(torch.tensor([0.0, 1.0]), 3), TypeError, "route"),
        (lambda: F.path_conv2d(X, BANK, torch.tensor([0, 5])), ValueError, "route"),
        (lambda: F.path_conv2d(X, BANK, torch.tensor([0, 1], device="meta")), ValueError, "route"),
        (lambda: F.path_conv2d(X, BANK, torch.tensor([0, 1, 2])), ValueError, "route"),
        (lambda: F.path_linear(torch.randn(2, 5), torch.randn(3, 4, 6), [1, 1, 0]), ValueError, "weight"),
        (lambda: F.path_weights(BANK, mask_bank=torch.ones(3, 4, 3, 3, 3)), TypeError, "mask"),
        (lambda: F.path_weights(BANK, noise=(torch.ones(2), 1.0, 0)), ValueError, "alpha"),
        (lambda: F.path_weights([1.0]), TypeError, "weight_bank"),
    ],
)
def test_functional_names_the_bad_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
