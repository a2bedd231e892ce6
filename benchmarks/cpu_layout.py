"""What the library models' channels-last layout on a CPU (models.Normalize) buys: each step
with the models as they are against the same models held in NCHW (their Normalize returning the
plain NCHW result), in interleaved rounds, as the per-round paired ratio channels-last / NCHW.

    OMP_NUM_THREADS=1 python benchmarks/cpu_layout.py [rounds]

Steps: ResNet-20 standard training (batch 128), FLOAT's noisy forward + backward at lam 1 (batch
128), the random-gate EIO network's forward + backward (batch 128, a gate per sample through the
routed op), and one EIO (p = 3) and one DVERGE-3 diversification step (batch 32, layer 10).
"""

import sys
import types

import test_eio
import torch
import torch.nn.functional as F
from timing import interleaved_times, median, paired_ratio

from robustkernels.api.models import resnet20
from robustkernels.api.models.normalize import Normalize
from robustkernels.api.train.eio_model import random_gates, to_eio_model
from robustkernels.api.train.float_at import float_inference, to_float_model


def _nchw_forward(self, x):
    return (x - self.mean) / self.std


def nchw(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every Normalize returning NCHW (as before the layout change)."""
    for module in model.modules():
        if isinstance(module, Normalize):
            module.forward = types.MethodType(_nchw_forward, module)
    return model


def _step(model, context=None):
    x = torch.rand(128, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(128) % 10

    def step():
        x_in = x.clone().requires_grad_(True)
        if context is None:
            loss = F.cross_entropy(model(x_in), y)
        else:
            with context(model):
                loss = F.cross_entropy(model(x_in), y)
        loss.backward()

    return step


def steps(layout) -> dict:
    """{name: step()} with the models in `layout` (a function of a model)."""
    torch.manual_seed(0)
    out = {
        "resnet20 standard": _step(layout(resnet20().train())),
        "FLOAT lam 1": _step(layout(to_float_model(resnet20()).train()), lambda m: float_inference(m, 1.0)),
        "EIO random gates": _step(layout(to_eio_model(resnet20())).eval(), random_gates),
    }
    original = test_eio.resnet20
    test_eio.resnet20 = lambda *args, **kwargs: layout(original(*args, **kwargs))
    try:
        diversify, _ = test_eio.diversify_steps()
    finally:
        test_eio.resnet20 = original
    return {**out, "EIO p=3 step": diversify["eio_p3"], "DVERGE-3 step": diversify["dverge3"]}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"torch {torch.__version__}; threads {torch.get_num_threads()}; {rounds} rounds")
    last, first = steps(lambda m: m), steps(nchw)
    variants = {f"{name} | channels-last": step for name, step in last.items()}
    variants |= {f"{name} | NCHW": step for name, step in first.items()}
    times = interleaved_times(variants, rounds)
    for name in last:
        cl, plain = times[f"{name} | channels-last"], times[f"{name} | NCHW"]
        print(f"{name}: NCHW {median(plain) * 1e3:.0f} ms, channels-last {median(cl) * 1e3:.0f} ms; "
              f"channels-last / NCHW {paired_ratio(cl, plain)}")  # fmt: skip


if __name__ == "__main__":
    main()
