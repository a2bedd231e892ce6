"""robustkernels.nn.MultiResStack and IntermediateHeads, and the self-ensemble they build with CrossMax."""

import pytest
import torch
from torch import nn

from robustkernels import functional as F
from robustkernels.nn import CrossMax, IntermediateHeads, MultiResStack


def test_multires_stack_module_is_the_function():
    module = MultiResStack(
        (16, 8), jitter=1, noise=0.1, noise_kind="gaussian", contrast=(0.7, 1.0), interpolation="area"
    )
    x = torch.rand(2, 3, 16, 16)
    expected = F.multires_stack(
        x,
        (16, 8),
        jitter=1,
        noise=0.1,
        noise_kind="gaussian",
        contrast=(0.7, 1.0),
        interpolation="area",
        seed=4,
    )
    assert torch.equal(module(x, seed=4), expected)
    assert module.num_views == 2
    assert not torch.equal(module(x), module(x))  # fresh randomness per call
    assert "resolutions=(16, 8)" in repr(module)


def test_multires_stack_module_compiles_once_with_fresh_views():
    """The module hands its per-call seed to the op as a tensor: a fullgraph-compiled module draws
    fresh views every call from one graph."""
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    module = MultiResStack((8, 4), jitter=1, noise=0.1)
    compiled = torch.compile(module, fullgraph=True, backend=counter)
    x = torch.rand(2, 3, 8, 8)
    first, second = compiled(x), compiled(x)
    assert not torch.equal(first, second)
    assert counter.frame_count == 1


def _separate_heads(heads: IntermediateHeads) -> list[nn.Sequential]:
    """The same heads as independent BatchNorm1d + Linear modules."""
    separate = []
    for norm, linear in zip(heads.norms, heads.linears, strict=True):
        copy_norm = nn.BatchNorm1d(norm.num_features)
        copy_norm.load_state_dict(norm.state_dict())
        copy_linear = nn.Linear(linear.in_features, linear.out_features)
        copy_linear.load_state_dict(linear.state_dict())
        separate.append(nn.Sequential(copy_norm, copy_linear))
    return separate


def test_intermediate_heads_equal_separate_heads_in_train_and_eval():
    torch.manual_seed(0)
    heads = IntermediateHeads([4, 8, 6], num_classes=5)
    separate = _separate_heads(heads)
    features = [torch.randn(7, 4, 5, 5), torch.randn(7, 8, 3, 3), torch.randn(7, 6)]
    pooled = [f.mean(dim=(2, 3)) if f.dim() == 4 else f for f in features]
    for mode in (True, False):
        heads.train(mode)
        for head in separate:
            head.train(mode)
        out = heads(features)
        assert out.shape == (3, 7, 5)
        for i, head in enumerate(separate):
            torch.testing.assert_close(out[i], head(pooled[i]))
    for norm, head in zip(heads.norms, separate, strict=True):
        torch.testing.assert_close(norm.running_mean, head[0].running_mean)
        torch.testing.assert_close(norm.running_var, head[0].running_var)
        assert int(norm.num_batches_tracked) == int(head[0].num_batches_tracked) == 1


def test_intermediate_heads_gradients_reach_every_head():
    heads = IntermediateHeads([3, 5], num_classes=4)
    features = [torch.randn(6, 3, 4, 4, requires_grad=True), torch.randn(6, 5, requires_grad=True)]
    heads(features).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())
    assert all(f.grad is not None for f in features)


def test_intermediate_heads_bad_features():
    heads = IntermediateHeads([3, 5], num_classes=4)
    with pytest.raises(ValueError, match="expected 2 feature tensors"):
        heads([torch.randn(2, 3)])
    with pytest.raises(ValueError, match=r"feature 1 must be \[B, 5\]"):
        heads([torch.randn(2, 3), torch.randn(2, 4)])
    with pytest.raises(ValueError, match="in_features"):
        IntermediateHeads([], num_classes=4)


def test_self_ensemble_pipeline_trains():
    """Stack -> backbone with tapped layers -> heads -> CrossMax, end to end with gradients to the input."""
    torch.manual_seed(0)
    stack = MultiResStack((8, 4), jitter=1, noise=0.05)
    conv1 = nn.Conv2d(3 * stack.num_views, 6, 3, padding=1)
    conv2 = nn.Conv2d(6, 10, 3, padding=1, stride=2)
    heads = IntermediateHeads([6, 10], num_classes=3)
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    first = torch.relu(conv1(stack(x, seed=1)))
    second = torch.relu(conv2(first))
    logits = CrossMax(k=2)(heads([first, second]))
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
