"""Bad arguments of the CrossMax ops (robustkernels/ops/crossmax.py).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend), then the functional layer's checks.
"""

import pytest
import torch
from bad_inputs import Builder, check_op, randn, settings

from robustkernels import functional as F


def _crossmax(op, device, cases):
    logits = randn(device, 3, 2, 4)
    b = Builder(op, device, cases, {"logits": logits, "k": 2, "reduction": "kth"})
    b.bad("integer logits", TypeError, logits=logits.long())
    b.bad("2-D logits", ValueError, logits=logits[0])
    b.bad("empty logits", ValueError, logits=logits[:, :0])
    b.bad("k = 0", ValueError, k=0)
    b.bad("k > N", ValueError, "k", k=4, reduction="topk_mean")
    b.bad("unknown reduction", ValueError, reduction="mean")
    b.accepts("non-contiguous logits", logits=logits.transpose(1, 2).contiguous().transpose(1, 2))


def _crossmax_backward(op, device, cases):
    logits = randn(device, 3, 2, 4)
    _, class_idx, pred_idx, sel_idx = torch.ops.robustkernels.crossmax(logits, 2, "topk_mean")
    grad_name = "grad_out" if op.endswith("_kernel") else "grad"
    grad = randn(device, 2, 4)
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


CASES = {
    "crossmax_fwd_kernel": _crossmax,
    "crossmax": _crossmax,
    "crossmax_fwd_python": _crossmax,
    "crossmax_bwd_kernel": _crossmax_backward,
    "crossmax_backward": _crossmax_backward,
    "crossmax_bwd_python": _crossmax_backward,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: F.crossmax(torch.randn(3, 2, 4).long(), k=2), TypeError, "logits"),
        (lambda: F.crossmax(torch.randn(3, 2, 4), k=2, predictor_dim=3), ValueError, "predictor_dim"),
    ],
)
def test_functional_names_the_bad_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
