"""Data-parallel training: two gloo processes on the CPU started by torchrun."""

import json
import textwrap

import torch
from torch import nn
from torchrun import run_two_processes

from robustkernels.api import data, models
from robustkernels.api import train as T

_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from robustkernels.api import models
    from robustkernels.api import train as T
    from robustkernels.api.train.pgd_at import PGDAdversarialTraining
    from test_distributed import CONFIG, tiny_model, train_data

    out = sys.argv[1]
    context = T.init_distributed("cpu")
    model = tiny_model()
    T.train(model, T.StandardTraining(), train_data(), CONFIG, out, context=context, log=None)
    torch.save(model.state_dict(), f"{out}/rank{context.rank}.pt")

    # PGD-AT with BatchNorm and augmentation: the attack runs on the unwrapped replica.
    torch.manual_seed(0)
    model = models.SmallCNN(width=4)
    config = T.TrainConfig(max_steps=2, epochs=None, batch_size=32, log_every=1)
    T.train(model, PGDAdversarialTraining(steps=2), train_data(), config, f"{out}/at", context=context, log=None)
    torch.save(dict(model.named_parameters()), f"{out}/at_rank{context.rank}.pt")
    T.shutdown_distributed()
    """
)

# No augmentation: each process draws its own, which a single process cannot reproduce.
CONFIG = T.TrainConfig(epochs=1, max_steps=6, batch_size=32, lr=0.05, augment=False, log_every=2)


def tiny_model() -> nn.Module:
    """Without BatchNorm, whose per-process batch statistics would differ from one process's."""
    torch.manual_seed(0)
    return nn.Sequential(
        models.Normalize(0.3, 0.3),
        nn.Conv2d(3, 4, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )


def train_data():
    images, labels = data.load_digits("train")
    return images[:192], labels[:192]


def test_two_gloo_processes_stay_identical_and_match_one_process(tmp_path):
    run_two_processes(_WORKER, tmp_path, tmp_path / "ddp")
    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt")
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt")
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name  # DDP keeps the replicas bit-identical

    single = tiny_model()
    T.train(single, T.StandardTraining(), train_data(), CONFIG, tmp_path / "single", log=None)
    # Averaging two half-batch gradients equals the full-batch gradient up to summation order.
    for name, value in single.state_dict().items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-5, atol=1e-6)
    ddp_lines = [json.loads(line) for line in (tmp_path / "ddp" / T.METRICS_NAME).read_text().splitlines()]
    single_lines = [
        json.loads(line) for line in (tmp_path / "single" / T.METRICS_NAME).read_text().splitlines()
    ]
    assert [e["step"] for e in ddp_lines] == [e["step"] for e in single_lines] == [2, 4, 6]
    for ddp_entry, single_entry in zip(ddp_lines, single_lines, strict=True):
        assert ddp_entry["accuracy"] == single_entry["accuracy"]
        assert abs(ddp_entry["loss"] - single_entry["loss"]) < 1e-5
    assert T.load_checkpoint(tmp_path / "ddp").record["step"] == 6

    # BatchNorm running statistics are per process; the parameters must agree exactly.
    at0, at1 = (torch.load(tmp_path / "ddp" / f"at_rank{r}.pt") for r in (0, 1))
    assert at0.keys() == at1.keys() and all(torch.equal(at0[k], at1[k]) for k in at0)
    assert T.load_checkpoint(tmp_path / "ddp" / "at").record["method"]["name"] == "pgd-at"
