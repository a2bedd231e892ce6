import os

import torch

# Same rule as the tests: on a machine without a GPU, Triton kernels are interpreted.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
