import atexit
import os
import shutil
import tempfile

# A compile cache of this run's own: torch's default one (/tmp/torchinductor_<user>) is shared by
# every checkout on the machine and keys compiled graphs without the ops' implementations, so a
# graph compiled by another build of robustkernels (another op schema) could be replayed here.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="robustkernels-tests-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import pytest
import torch

# Without a GPU the Triton kernels run under the interpreter; this must be set
# before robustkernels (and with it triton.jit) is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seeded_global_generator():
    """Every test starts from torch's generator at seed 0: a draw a test leaves unseeded (a model's
    initial weights, an attack's random start) is the same on every run, as is its outcome."""
    torch.manual_seed(0)
