"""The method layer's basics: the digits data, SmallCNN, the demo / CLI, and that the library does not
import its CLI."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import robustkernels
from robustkernels.api import cli, data
from robustkernels.api.commands import demo
from robustkernels.api.models import Normalize, SmallCNN
from robustkernels.nn import NoisyConv2d, NoisyLinear

N_TRAIN, N_TEST = 1437, 360


# ---------------------------------------------------------------------------- data


def _row_keys(images: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in images]


@pytest.mark.parametrize(("split", "n"), [("train", N_TRAIN), ("test", N_TEST)])
def test_digits_shapes_dtypes_and_range(split, n):
    images, labels = data.load_digits(split)
    assert images.shape == (n, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() > 0.9  # scaled to [0, 1], not left at 0..16 or squashed
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert set(labels.tolist()) == set(range(data.NUM_CLASSES))


def test_digits_split_is_deterministic_and_returns_copies():
    x1, y1 = data.load_digits("train")
    x1[0].fill_(5.0)  # callers get copies: this must not leak into the next call
    x2, y2 = data.load_digits("train")
    x3, y3 = data.load_digits("train")
    assert torch.equal(x2, x3) and torch.equal(y1, y2) and torch.equal(y2, y3)
    assert x2.max() <= 1.0


def test_digits_train_and_test_are_disjoint_and_cover_the_data():
    train_keys = _row_keys(data.load_digits("train")[0])
    test_keys = _row_keys(data.load_digits("test")[0])
    # The 1,797 sklearn digits are pairwise distinct, so distinct rows mean distinct samples.
    assert len(set(train_keys)) == N_TRAIN and len(set(test_keys)) == N_TEST
    assert not set(train_keys) & set(test_keys)


def test_digits_split_is_stratified():
    train_counts = torch.bincount(data.load_digits("train")[1], minlength=10)
    test_counts = torch.bincount(data.load_digits("test")[1], minlength=10)
    total = train_counts + test_counts
    expected_test = total.double() * data.TEST_FRACTION
    assert ((test_counts.double() - expected_test).abs() <= 1).all(), test_counts
    assert test_counts.min() >= 34 and train_counts.min() >= 139  # every class well represented


def test_normalisation_constants_match_the_training_split():
    images, _ = data.load_digits("train")
    assert images.mean().item() == pytest.approx(data.DIGITS_MEAN, abs=1e-3)
    assert images.std().item() == pytest.approx(data.DIGITS_STD, abs=1e-3)


def test_load_digits_rejects_unknown_split():
    with pytest.raises(ValueError, match="split"):
        data.load_digits("val")


def test_iterate_batches_covers_every_sample_once():
    images = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    labels = torch.arange(10)
    batches = list(data.iterate_batches(images, labels, 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), labels)  # no shuffle: in order
    for x, y in batches:
        assert torch.equal(x.flatten().long(), y)  # images and labels stay paired
    assert [len(y) for _, y in data.iterate_batches(images, labels, 4, drop_last=True)] == [4, 4]


def test_iterate_batches_shuffle_follows_the_generator():
    images, labels = torch.zeros(50, 1), torch.arange(50)

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in data.iterate_batches(images, labels, 8, shuffle=True, generator=gen)])

    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))
    assert torch.equal(order(1).sort().values, labels)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_iterate_batches_rejects_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        next(data.iterate_batches(torch.zeros(4, 1), torch.zeros(4), batch_size))


# -------------------------------------------------------------------------- models


def test_small_cnn_output_shape():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 32, 32)
    assert SmallCNN()(x).shape == (5, 10)
    assert SmallCNN(num_classes=7, width=8)(x).shape == (5, 7)
    assert SmallCNN(in_channels=1)(x[:, :1]).shape == (5, 10)


def test_small_cnn_normalises_inside():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    assert isinstance(model.normalize, Normalize)
    buffers = dict(model.named_buffers())
    assert "normalize.mean" in buffers and "normalize.std" in buffers
    assert "normalize.mean" in model.state_dict()
    assert not any(name.startswith("normalize.") for name, _ in model.named_parameters())
    assert torch.allclose(model.normalize.mean, torch.full((1, 3, 1, 1), data.DIGITS_MEAN))

    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model.normalize = nn.Identity()
        prenormalised = model((x - data.DIGITS_MEAN) / data.DIGITS_STD)
    torch.testing.assert_close(expected, prenormalised)


def test_normalize_checks_its_arguments():
    norm = Normalize([0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    x = torch.ones(1, 3, 2, 2)
    torch.testing.assert_close(norm(x)[0, :, 0, 0], torch.tensor([1.8, 1.6, 1.4]))
    with pytest.raises(ValueError, match="std"):
        Normalize(0.5, 0.0)
    with pytest.raises(ValueError, match="values"):
        Normalize([0.1, 0.2], 0.5)


def test_convert_swaps_every_conv_but_the_skipped_first_one():
    torch.manual_seed(0)
    model = SmallCNN()
    conv_names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert conv_names[0] == SmallCNN.FIRST_CONV and len(conv_names) == 3
    keys_before = set(model.state_dict())

    robustkernels.nn.convert(model, skip=(SmallCNN.FIRST_CONV,))
    modules = dict(model.named_modules())
    assert type(modules[SmallCNN.FIRST_CONV]) is nn.Conv2d
    assert all(isinstance(modules[name], NoisyConv2d) for name in conv_names[1:])
    assert type(model.fc) is nn.Linear  # linear layers only with convert(..., linear=True)
    assert not any(isinstance(m, NoisyLinear) for m in model.modules())
    alpha_keys = {f"{name}.alpha" for name in conv_names[1:]}
    assert set(model.state_dict()) == keys_before | alpha_keys


def test_convert_keeps_outputs_at_lam_zero_and_adds_noise_at_lam_one():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        robustkernels.nn.convert(model, skip=(SmallCNN.FIRST_CONV,))
        robustkernels.nn.set_noise_scale(model, 0.0)
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
        robustkernels.nn.set_noise_scale(model, 1.0)
        assert not torch.allclose(model(x), before, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------- demo


def test_demo_runs_and_reports_accuracies():
    lines: list[str] = []
    result = demo.run_demo(steps=4, lam=1.0, seed=3, batch_size=32, log=lines.append)
    assert 0.0 <= result.accuracy_noise_off <= 1.0
    assert 0.0 <= result.accuracy_noise_on <= 1.0
    assert result.steps == 4 and result.seed == 3
    assert result.backend in robustkernels.ops.BACKENDS
    assert result.backend == robustkernels.ops.select("noisy_weight", torch.device("cpu"))
    assert set(result.alphas) == {"block2.0", "block3.0"}  # first conv stays noise-free
    assert torch.isfinite(torch.tensor(result.final_loss))
    text = "\n".join(lines)
    assert "step    4/4" in text and "noise off (lam=0)" in text and "noise on  (lam=1)" in text
    assert "learned alpha" in text and result.backend in text


def test_demo_is_repeatable_with_the_same_seed():
    first = demo.run_demo(steps=3, seed=5, batch_size=16, log=None)
    second = demo.run_demo(steps=3, seed=5, batch_size=16, log=None)
    assert first.final_loss == second.final_loss
    assert first.alphas == second.alphas
    assert first.accuracy_noise_off == second.accuracy_noise_off
    assert first.accuracy_noise_on == second.accuracy_noise_on


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"lam": -1.0}, "lam")]
)
def test_demo_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        demo.run_demo(log=None, **kwargs)


def test_demo_trains_on_the_shared_trainer_and_resumes_in_out(tmp_path):
    first = demo.run_demo(steps=3, seed=2, batch_size=16, out=tmp_path, log=None)
    assert (tmp_path / "checkpoint.json").exists() and (tmp_path / "metrics.jsonl").exists()
    lines: list[str] = []
    again = demo.run_demo(steps=3, seed=2, batch_size=16, out=tmp_path, log=lines.append)
    assert any("resuming from" in line for line in lines)  # the finished run is reused, not retrained
    assert (again.final_loss, again.alphas) == (first.final_loss, first.alphas)
    assert again.accuracy_noise_off == first.accuracy_noise_off
    with pytest.raises(ValueError, match="other settings"):
        demo.run_demo(steps=3, lam=0.5, seed=2, batch_size=16, out=tmp_path, log=None)


API = Path(__file__).resolve().parents[1] / "python_api"


def _api_imports(path: Path, root: Path = API) -> set[str]:
    """The modules and names of the package at `root` that `path` imports, dotted from `root`."""
    package = path.parent.relative_to(root).parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = tuple(node.module.split(".")) if node.module else ()
        if node.level == 0:
            if module[:2] != ("robustkernels", "api"):
                continue
            base = module[2:]
        else:
            base = package[: len(package) - node.level + 1] + module
        found |= {".".join(base)} | {".".join((*base, alias.name)) for alias in node.names}
    return found


def _cli_imports(path: Path, root: Path = API) -> list[str]:
    return sorted(name for name in _api_imports(path, root) if name.split(".")[0] in ("commands", "cli"))


def test_the_library_does_not_import_the_cli():
    library = [
        path for path in API.rglob("*.py") if path.relative_to(API).parts[0] not in ("commands", "cli.py")
    ]
    assert len(library) > 50
    assert {str(path.relative_to(API)): _cli_imports(path) for path in library if _cli_imports(path)} == {}


def test_the_cli_import_check_finds_a_planted_import(tmp_path):
    planted = tmp_path / "reproduce" / "planted.py"
    planted.parent.mkdir()
    planted.write_text(
        "from ..commands.runs import model_info\nfrom robustkernels.api.cli import main\nfrom .. import data\n"
    )
    assert _cli_imports(planted, tmp_path) == ["cli", "cli.main", "commands.runs", "commands.runs.model_info"]
    assert _cli_imports(API / "cli.py") != []  # the CLI itself does import its commands


def test_cli_demo_subcommand(capsys):
    assert cli.main(["demo", "--steps", "2", "--batch-size", "16", "--lam", "0.5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "at lam=0.5, seed 1" in out and "test accuracy, noise off" in out


def test_cli_parser_defaults_and_validation(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["demo"])
    assert (args.steps, args.lam, args.seed, args.batch_size) == (
        demo.DEFAULT_STEPS,
        demo.DEFAULT_LAM,
        demo.DEFAULT_SEED,
        demo.DEFAULT_BATCH_SIZE,
    )
    for bad in (["demo", "--steps", "0"], ["demo", "--lam", "-1"], ["demo", "--batch-size", "x"], []):
        with pytest.raises(SystemExit) as excinfo:
            parser.parse_args(bad)
        assert excinfo.value.code == 2
    capsys.readouterr()
