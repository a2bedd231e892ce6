import os

import torch

# Without a GPU the Triton kernels run under the interpreter; this must be set
# before robustkernels (and with it triton.jit) is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
