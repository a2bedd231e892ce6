"""A worker beside the eee small run: scores the pieces named on the command line (their
ScoredRows keys) with the snapshot's own, unchanged code, storing them where the main run will
find them. Every other piece gets a stand-in result (never stored); nothing else is written, and
what reproduce_eee returns here is thrown away. Pieces are seeded on their own, so a piece scored
here is the one the main run would have scored (same stamp: settings, model digest, code hash)."""

import sys

from robustkernels.api.reproduce import eee
from robustkernels.api.reproduce.eee import eee_budget, reproduce_eee
from robustkernels.api.reproduce.scored_rows import ScoredRows, _read

out, wanted = sys.argv[1], set(sys.argv[2:])
score_piece = ScoredRows.get_or_score


def get_or_score(self, key, model, score):
    if key in wanted:
        print(f"scoring {key}", flush=True)
        return score_piece(self, key, model, score)
    stand_in = next(r for r in (_read(p) for p in sorted(self.directory.glob("*.json"))) if r)
    return stand_in["result"]


eee.ScoredRows.get_or_score = get_or_score
reproduce_eee(
    eee_budget("small", "cifar10"),
    out,
    dataset="cifar10",
    data_dir="/work/shared/data/cifar-10-subset",
    log=print,
)
print("helper done", flush=True)
