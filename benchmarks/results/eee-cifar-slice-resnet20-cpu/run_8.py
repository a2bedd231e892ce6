"""The 8/255 rows of run.py's reduced budget, on the three backbones run.py trained (resumed from
their step-800 checkpoints in OUT, so nothing is retrained):
`OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python run_8.py OUT`."""

import sys
from dataclasses import replace

from run import BUDGET, run

run(replace(BUDGET, eps=BUDGET.eps[-1:]), sys.argv[1])
