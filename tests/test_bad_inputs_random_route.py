"""Bad arguments of the random route op (robustkernels/ops/random_route.py).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend).
"""

import pytest
import torch
from bad_inputs import Builder, check_op, settings


def _random_route(op, device, cases):
    seed = torch.tensor(5)
    b = Builder(op, device, cases, {"batch": 4, "num_paths": 3, "seed_tensor": seed, "device": device})
    b.bad("negative batch", ValueError, batch=-1)
    b.bad("no paths", ValueError, "n must be a positive int", num_paths=0)
    b.bad("int32 seed tensor", ValueError, "seed", seed_tensor=seed.int())
    b.bad("seed tensor of one element", ValueError, "seed", seed_tensor=seed.reshape(1))
    b.bad("negative seed", ValueError, "seed", seed_tensor=-seed)
    b.accepts("empty batch", batch=0)


CASES = {
    "random_route": _random_route,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)
