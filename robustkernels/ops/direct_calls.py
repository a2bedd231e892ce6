"""The layer ops called through their direct Python entry points (csrc/python_module.cpp).

torch.ops boxes every argument into IValues and calls the op boxed, which on a small layer costs
more than its kernels; the direct entries parse as torch's own bindings do and call the same op
through the dispatcher. Under torch.compile's tracing, and for arguments with a
__torch_function__ override (the entry then returns NotImplemented), the call goes through
torch.ops. Each returns the layer's output y (the routed ops' other outputs serve their autograd).
Only for an installed extension (robustkernels._C).
"""

import torch

from robustkernels import _extension

__all__ = ["noisy_conv2d", "noisy_linear", "path_conv2d", "path_linear"]


def _direct(name: str, first_output: bool):
    direct = getattr(_extension._C, name)
    overload = getattr(torch.ops.robustkernels, name).default

    def call(*args):
        if not torch.compiler.is_compiling():
            y = direct(*args)
            if y is not NotImplemented:
                return y
        y = overload(*args)
        return y[0] if first_output else y

    call.__name__ = call.__qualname__ = name
    return call


if _extension.is_loaded():
    noisy_conv2d = _direct("noisy_conv2d", first_output=False)
    noisy_linear = _direct("noisy_linear", first_output=False)
    path_conv2d = _direct("path_conv2d", first_output=True)
    path_linear = _direct("path_linear", first_output=True)
