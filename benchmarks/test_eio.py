"""Ensemble-in-One's costs side by side (issue 15):

- route: a gated ResNet-20 (`to_eio_model`, n = 2) forward + backward with the whole batch on one
  route, against the plain ResNet-20 (target: at most 1.10x);
- diversify: one EIO vulnerability-diversification step (p = 3: three distillations of 10 steps,
  six cross-path CE terms, one SGD step) against one DVERGE-3 step (three distillations, each member
  on the other two members' distilled batches, one SGD step over the ensemble) on ResNet-20
  (target: EIO no slower; both distil at layer 10 of 19, since the drawn layer sets the cost), and the parameter + SGD-momentum memory of each (target: EIO at most 0.7x).

Both training variants run the library's methods exactly as the trainer calls them. Run through
pytest-benchmark (`python benchmarks/report.py`) or `python benchmarks/test_eio.py [rounds]`, which
times the variants in interleaved rounds (rotating order) and prints the medians, their ratios and
the per-round paired ratios. On a shared 2-core machine `OMP_NUM_THREADS=1` gives the steadier ratio.
"""

import sys

import pytest
import torch
import torch.nn.functional as F
from timing import DEVICE, interleaved_times, median, method_step, paired_ratio, pedantic, sync

from robustkernels.api.models import AveragedEnsemble, resnet20
from robustkernels.api.train import build_sgd
from robustkernels.api.train.dverge import DVERGETraining
from robustkernels.api.train.eio import EIODiversification
from robustkernels.api.train.eio_model import eio_blocks, to_eio_model, use_eio_path

ROUTE_BATCH = 128
DIVERSIFY_BATCH = 128 if DEVICE == "cuda" else 32
ROUTE_TARGET = 1.10
MEMORY_TARGET = 0.7
LAYER = 10


def _batch(size: int):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(size, 3, 32, 32, generator=generator).to(DEVICE)
    return x, torch.randint(10, (size,), generator=generator).to(DEVICE)


def route_steps() -> dict:
    """{variant: step()}: forward + backward of ResNet-20, plain or gated on one route."""
    x, y = _batch(ROUTE_BATCH)
    torch.manual_seed(0)
    plain = resnet20().to(DEVICE).train()
    gated = to_eio_model(resnet20(), 2, generator=torch.Generator().manual_seed(0)).to(DEVICE).train()
    path = [1, 0] * 9 + [1]

    def plain_step():
        F.cross_entropy(plain(x), y).backward()
        sync()

    def gated_step():
        with use_eio_path(gated, path):
            F.cross_entropy(gated(x), y).backward()
        sync()

    return {"plain": plain_step, "gated_one_route": gated_step}


def _trainer_step(model, method):
    """The trainer's step for `method` on `model`, and the SGD that steps it."""
    optimizer = build_sgd(model, 0.1, weight_decay=1e-4)
    return method_step(model, method, [_batch(DIVERSIFY_BATCH)], optimizer), optimizer


def diversify_steps() -> tuple[dict, dict]:
    """({variant: step()}, {variant: optimizer}) for one EIO (p = 3) and one DVERGE-3 step."""
    torch.manual_seed(0)
    rgn = to_eio_model(resnet20(), 2, generator=torch.Generator().manual_seed(0)).to(DEVICE).train()
    ensemble = AveragedEnsemble([resnet20() for _ in range(3)]).to(DEVICE).train()
    # the same distillation layer for both (the forward stops there): the middle one, 10 of 19
    eio_step, eio_sgd = _trainer_step(rgn, EIODiversification(p=3, eps=0.07, steps=10, layer=LAYER))
    dverge_step, dverge_sgd = _trainer_step(ensemble, DVERGETraining(eps=0.07, steps=10, layer=LAYER))
    return {"eio_p3": eio_step, "dverge3": dverge_step}, {"eio_p3": eio_sgd, "dverge3": dverge_sgd}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's parameters and of its state (SGD's momentum buffers)."""
    total = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            total += param.numel() * param.element_size()
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
    return total


@pytest.mark.parametrize("variant", ["plain", "gated_one_route"])
def test_eio_route(benchmark, variant):
    step = route_steps()[variant]
    step()
    benchmark.group = "eio resnet20 fwd+bwd one route"
    benchmark.extra_info.update(op="eio_route", variant=variant, batch=ROUTE_BATCH)
    pedantic(benchmark, step, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("variant", ["eio_p3", "dverge3"])
def test_eio_diversify(benchmark, variant):
    steps, optimizers = diversify_steps()
    steps[variant]()
    benchmark.group = "eio diversification step vs dverge-3"
    benchmark.extra_info.update(op="eio_diversify", variant=variant, batch=DIVERSIFY_BATCH,
                                state_bytes=state_bytes(optimizers[variant]))  # fmt: skip
    pedantic(benchmark, steps[variant], rounds=2, iterations=1, warmup_rounds=0)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"device {DEVICE}; torch {torch.__version__}; threads {torch.get_num_threads()}; {rounds} rounds")
    route_times = interleaved_times(route_steps(), 4 * rounds)
    route_medians = {name: median(t) for name, t in route_times.items()}
    ratio = route_medians["gated_one_route"] / route_medians["plain"]
    print(f"ResNet-20 fwd+bwd, batch {ROUTE_BATCH}: plain {route_medians['plain'] * 1e3:.1f} ms, "
          f"gated one route {route_medians['gated_one_route'] * 1e3:.1f} ms; ratio {ratio:.3f} "
          f"({'met' if ratio <= ROUTE_TARGET else 'NOT MET'}: target <= {ROUTE_TARGET}); paired per round "
          f"{paired_ratio(route_times['gated_one_route'], route_times['plain'])}")  # fmt: skip
    steps, optimizers = diversify_steps()
    times = interleaved_times(steps, rounds)  # its warm-up also fills SGD's momentum buffers
    medians = {name: median(t) for name, t in times.items()}
    time_ratio = medians["eio_p3"] / medians["dverge3"]
    memory = {name: state_bytes(opt) for name, opt in optimizers.items()}
    memory_ratio = memory["eio_p3"] / memory["dverge3"]
    print(f"diversification step, ResNet-20, batch {DIVERSIFY_BATCH}: EIO p=3 {medians['eio_p3']:.2f} s, "
          f"DVERGE-3 {medians['dverge3']:.2f} s; ratio {time_ratio:.3f} "
          f"({'met' if time_ratio <= 1.0 else 'NOT MET'}: target <= 1); paired per round "
          f"{paired_ratio(times['eio_p3'], times['dverge3'])}")  # fmt: skip
    print(f"parameters + SGD momentum: EIO {memory['eio_p3'] / 2**20:.2f} MiB, DVERGE-3 "
          f"{memory['dverge3'] / 2**20:.2f} MiB; ratio {memory_ratio:.3f} "
          f"({'met' if memory_ratio <= MEMORY_TARGET else 'NOT MET'}: target <= {MEMORY_TARGET})")  # fmt: skip
    print(f"gated blocks: {len(eio_blocks(to_eio_model(resnet20())))}")


if __name__ == "__main__":
    main()
