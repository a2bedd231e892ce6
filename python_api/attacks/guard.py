"""What an attack does to the model it attacks: nothing that outlives the attack."""

import contextlib

import torch


@contextlib.contextmanager
def untouched(model):
    """Parameters stop requiring gradients while the block runs, so attack gradients
    reach the input only (no parameter .grad is written, no graph kept through the
    weights); afterwards every parameter's requires_grad and every module's train/eval
    flag are what they were, even if the block raised. The mode is never switched by
    the attacks themselves: a model attacked in train mode stays in train mode (so
    e.g. BatchNorm statistics behave as the caller chose). `model` may be any callable;
    only nn.Modules have state to guard."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        for module, training in modes:
            module.training = training
