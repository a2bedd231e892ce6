"""FLOAT-Slim: slimmable FLOAT layers (robustkernels.nn.slimmable) and Algorithm 2's training."""

import copy
import json

import pytest
import torch
from torch import nn
from torchrun import run_two_processes

from robustkernels.api.models import SmallCNN
from robustkernels.api.models.resnet import resnet20
from robustkernels.api.train import TrainConfig, build_sgd, train
from robustkernels.api.train.float_at import CLEAN, NOISY, FLOATTraining, float_inference, to_float_model
from robustkernels.api.train.float_slim import FLOATSlimTraining, floats_inference, to_floats_model
from robustkernels.nn import (
    MaskedExpertConv2d,
    PathBatchNorm2d,
    SlimmableBatchNorm2d,
    SlimmableLinear,
    SlimmableMaskedExpertConv2d,
    convert_slimmable,
    model_widths,
    set_width,
    slim_channels,
    use_width,
)


def _batch(n: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.randint(10, (n,), generator=generator)


def _fix_seeds(model: nn.Module) -> nn.Module:
    """Fixed noise seeds per layer, so two models (or two runs) draw the same noise."""
    for index, conv in enumerate(m for m in model.modules() if isinstance(m, MaskedExpertConv2d)):
        conv.seed = 100 + index
    return model


def _floats_cnn(seed: int = 0, widths=(0.5, 1.0)) -> nn.Module:
    torch.manual_seed(seed)
    return to_floats_model(SmallCNN(width=4), widths)


def _conv_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for m in model.modules()
        if isinstance(m, SlimmableMaskedExpertConv2d)
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return shapes


def test_channel_rule():
    assert [slim_channels(16, w) for w in (0.25, 0.5, 0.75, 1.0)] == [4, 8, 12, 16]
    assert slim_channels(5, 0.5) == 3  # round half up, never banker's rounding
    assert slim_channels(3, 0.1) == 1  # never zero channels


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_small_cnn_slices_every_layer_at_each_width(width):
    model = _floats_cnn().eval()
    x, _ = _batch(2)
    with use_width(model, width):
        shapes = _conv_outputs(model, x)
        assert model(x).shape == (2, 10)  # the classifier keeps its outputs
    assert [s[1] for s in shapes] == [slim_channels(c, width) for c in (4, 8, 16)]


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_resnet20_residual_adds_line_up_at_each_width(width):
    torch.manual_seed(0)
    model = to_floats_model(resnet20(), (0.25, 0.5, 1.0)).eval()
    x, _ = _batch(2)
    with use_width(model, width), float_inference(model, 0.7):
        shapes = _conv_outputs(model, x)
        assert model(x).shape == (2, 10)
    assert shapes[0][1] == slim_channels(16, width) and shapes[-1][1] == slim_channels(64, width)
    assert model_widths(model) == (0.25, 0.5, 1.0)


def test_full_width_equals_the_float_model_with_the_same_weights():
    torch.manual_seed(0)
    plain = SmallCNN(width=4)
    floats = _fix_seeds(to_floats_model(copy.deepcopy(plain)))
    float_model = _fix_seeds(to_float_model(copy.deepcopy(plain)))
    x, _ = _batch(6)
    for mode in ("eval", "train"):
        getattr(floats, mode)(), getattr(float_model, mode)()
        for lam_n in (0.0, 0.3, 0.8):
            with floats_inference(floats, 1.0, lam_n), float_inference(float_model, lam_n):
                torch.testing.assert_close(floats(x), float_model(x), rtol=0, atol=0)


def test_half_width_equals_a_float_model_built_from_the_sliced_weights():
    """The noisy path at width 0.5 is FLOAT's on the slice: the noise std is the slice's."""
    floats = _fix_seeds(_floats_cnn()).eval()
    torch.manual_seed(1)
    small = _fix_seeds(to_float_model(SmallCNN(width=2))).eval()
    with torch.no_grad():
        slim_convs = [m for m in floats.modules() if isinstance(m, SlimmableMaskedExpertConv2d)]
        for big, ref in zip(
            slim_convs, [m for m in small.modules() if isinstance(m, MaskedExpertConv2d)], strict=True
        ):
            big.weight.normal_()  # weights whose slice's std differs from the whole weight's
            ref.weight.copy_(big.weight[: ref.out_channels, : ref.in_channels])
            assert not torch.isclose(ref.weight.std(), big.weight.std())
        slim_norms = [m.norms[0] for m in floats.modules() if isinstance(m, SlimmableBatchNorm2d)]
        for big, ref in zip(
            slim_norms, [m for m in small.modules() if isinstance(m, PathBatchNorm2d)], strict=True
        ):
            ref.load_state_dict(big.state_dict())
        small.fc.weight.copy_(floats.fc.weight[:, :8])
        small.fc.bias.copy_(floats.fc.bias)
    x, _ = _batch(4)
    with floats_inference(floats, 0.5, 1.0, 0.0), float_inference(small, 1.0, 0.0):
        torch.testing.assert_close(floats(x), small(x))


def test_one_batch_norm_pair_per_width_keeps_its_own_statistics():
    model = _floats_cnn().train()
    x, _ = _batch(4)
    with use_width(model, 0.5), float_inference(model, 0.0):
        model(x)
    norms = [m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d)]
    assert [n.widths for n in norms] == [(0.5, 1.0)] * 3
    for norm in norms:
        half, full = norm.norms
        assert half.num_features == slim_channels(norm.num_features, 0.5)
        assert half.num_batches_tracked.tolist() == [1, 0] and full.num_batches_tracked.tolist() == [0, 0]
        assert not torch.equal(half.running_mean[CLEAN], half.running_mean[NOISY])
        assert torch.equal(full.running_mean, torch.zeros_like(full.running_mean))


def test_width_loop_sums_the_gradients_of_every_width():
    model = _fix_seeds(_floats_cnn()).train()
    reference = copy.deepcopy(model)
    x, y = _batch(8)
    method = FLOATSlimTraining((0.5, 1.0), steps=2)
    loss, logits = method.loss(model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0))
    build_sgd(model, lr=0.1).zero_grad(set_to_none=True)  # the trainer zeroes .grad after loss()
    loss.backward()

    generator = torch.Generator().manual_seed(0)
    single = FLOATTraining(steps=2)
    total, widest = 0.0, None
    for width in (1.0, 0.5):
        with use_width(reference, width):
            width_loss, width_logits = single.loss(
                reference, x, y, attack_model=reference, generator=generator
            )
        total, widest = total + width_loss, widest if widest is not None else width_logits
    total.backward()

    torch.testing.assert_close(loss, total.detach())
    torch.testing.assert_close(logits, widest.detach())
    grads = {name: p.grad for name, p in reference.named_parameters()}
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        torch.testing.assert_close(param.grad, grads[name], msg=name)
    half_bn = model.block2[1].norms[0]
    assert half_bn.weight.grad.abs().sum() > 0  # the last width's own batch norm is trained too
    assert model.block2[1].norms[1].weight.grad.abs().sum() > 0  # and the widest's, from the earlier pass


@pytest.mark.parametrize(("lam_n", "lam_th"), [(0.2, 0.5), (0.7, 0.5), (0.7, 0.0)])
def test_lam_th_rule_per_width(lam_n, lam_th):
    model = _floats_cnn().eval()
    convs = [m for m in model.modules() if isinstance(m, SlimmableMaskedExpertConv2d)]
    norms = [m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d)]
    expected_path = NOISY if lam_n > lam_th else CLEAN
    expected_lam = {(0.2, 0.5): 0.4, (0.7, 0.5): 0.4, (0.7, 0.0): 0.7}[(lam_n, lam_th)]
    for width in (0.5, 1.0):
        with floats_inference(model, width, lam_n, lam_th):
            assert all(c.width == width and c.lam == pytest.approx(expected_lam) for c in convs)
            assert all(pair.route == expected_path for n in norms for pair in n.norms)
            assert all(n.current() is n.norms[(0.5, 1.0).index(width)] for n in norms)
    assert all(c.width == 1.0 and c.lam == 1.0 and c.route == 0 for c in convs)


def test_state_dict_round_trip():
    model = _floats_cnn()
    x, y = _batch(8)
    train_step = FLOATSlimTraining(steps=1)
    train_step.loss(model, x, y, attack_model=model, generator=torch.Generator().manual_seed(0))[0].backward()
    restored = _floats_cnn(seed=5)
    restored.load_state_dict(model.state_dict())
    assert any(key.endswith("norms.0.running_mean") for key in model.state_dict())
    model.eval(), restored.eval()
    for width in (0.5, 1.0):
        with floats_inference(model, width, 0.0), floats_inference(restored, width, 0.0):
            torch.testing.assert_close(model(x), restored(x), rtol=0, atol=0)


def test_alpha_is_trained_without_weight_decay():
    model = _floats_cnn()
    decayed, free = build_sgd(model, lr=0.1, weight_decay=5e-4).param_groups
    alphas = {id(m.alpha) for m in model.modules() if isinstance(m, SlimmableMaskedExpertConv2d)}
    assert len(alphas) == 3 and {id(p) for p in free["params"]} == alphas
    assert free["weight_decay"] == 0.0 and alphas.isdisjoint(id(p) for p in decayed["params"])
    assert all(m.alpha.item() == 0.25 for m in model.modules() if isinstance(m, SlimmableMaskedExpertConv2d))


def test_short_training_run_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    model = to_floats_model(SmallCNN(width=4))
    images = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(32) % 2  # two classes of distinct brightness: learnable in a few steps
    images[labels == 1] *= 0.3
    method = FLOATSlimTraining(eps=2 / 255, step=1 / 255, steps=1)
    config = TrainConfig(epochs=None, max_steps=12, batch_size=16, lr=0.05, augment=False, log_every=2)
    train(model, method, (images, labels), config, tmp_path, log=None)
    losses = [
        line["loss"]
        for line in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
        if line["event"] == "train"
    ]
    assert losses[-1] < losses[0]


def test_bad_inputs_name_the_argument():
    model = _floats_cnn()
    with pytest.raises(ValueError, match=r"width 0\.25 is not one of the model's widths"):
        set_width(model, 0.25)
    for bad in (0.0, 1.5, -0.5, True):
        with pytest.raises(ValueError, match="width must lie in"):
            set_width(model, bad)
    with pytest.raises(ValueError, match="widths must"):
        convert_slimmable(SmallCNN(width=4), (0.5, 2.0))
    with pytest.raises(ValueError, match="widths must"):
        FLOATSlimTraining(widths=())
    with pytest.raises(ValueError, match="widths must be distinct"):
        to_floats_model(SmallCNN(width=4), (0.5, 0.5))
    with pytest.raises(ValueError, match="groups must be 1"):
        convert_slimmable(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)))
    with pytest.raises(ValueError, match="no slimmable layers"):
        set_width(SmallCNN(width=4), 0.5)
    with pytest.raises(ValueError, match="at most 4 channels"):
        model.block2[0](torch.rand(1, 5, 8, 8))
    with pytest.raises(ValueError, match=r"SlimmableBatchNorm2d at width 1\.0 expects"):
        model.block1[1](torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="SlimmableLinear"):
        SlimmableLinear(4, 2)(torch.rand(1, 5))


_DDP_WORKER = """
import sys
import torch
from robustkernels.api import train as T
from robustkernels.api.models import SmallCNN
from robustkernels.api.train.float_slim import FLOATSlimTraining, to_floats_model

out = sys.argv[1]
context = T.init_distributed("cpu")
torch.manual_seed(0)
model = to_floats_model(SmallCNN(width=4))
images = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(2))
config = T.TrainConfig(epochs=None, max_steps=2, batch_size=16, augment=False, log_every=1)
method = FLOATSlimTraining(steps=1)
T.train(model, method, (images, torch.arange(32) % 10), config, out, context=context, log=None)
torch.save(dict(model.named_parameters()), f"{out}/rank{context.rank}.pt")
T.shutdown_distributed()
"""


def test_data_parallel_replicas_stay_identical(tmp_path):
    """Under DistributedDataParallel the carried gradients of the earlier widths are reduced with
    the last width's: both replicas take the same steps (widest batch norms and alphas included)."""
    run_two_processes(_DDP_WORKER, tmp_path, tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    initial = dict(_floats_cnn().named_parameters())
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name
        assert not torch.equal(value, initial[name]), name  # every parameter, of every width, was trained
