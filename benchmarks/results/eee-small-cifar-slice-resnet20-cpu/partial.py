"""results.md and results.json of the eee `small` run from the pieces it stored, without scoring
anything: `reproduce eee`'s own code builds the models and reads the pieces (a piece counts only
when its stamp matches: settings, model digest, evaluation code), and writes the tables. A row
with all its pieces is the row `reproduce eee` writes. The model-ensemble rows were not finished:
each is merged over the pieces stored for both its mean and its CrossMax form, so the two are
compared on the same images, which the method name states.

    PYTHONPATH=<snapshot site> OMP_NUM_THREADS=1 python partial.py RUN_DIR OUT_DIR
"""

import sys

from robustkernels.api.reproduce import eee
from robustkernels.api.reproduce.eee import eee_budget, reproduce_eee
from robustkernels.api.reproduce.eee_results import write_eee_results
from robustkernels.api.reproduce.scored_rows import ScoredRows

run_dir, out_dir = sys.argv[1], sys.argv[2]
read_piece, merge = ScoredRows.get_or_score, eee.merge_adaptive_results


class NotStored(Exception):
    pass


def _refuse():
    raise NotStored


def stored_only(self, key, model, score):
    try:
        return read_piece(self, key, model, _refuse)
    except NotStored:
        return None


def keep_parts(parts):
    # the loop logs each row's figures: placeholders, the rows are merged below
    return {
        "parts": parts,
        **dict.fromkeys(("clean_accuracy", "rand_accuracy", "adaptive_accuracy"), float("nan")),
    }


ScoredRows.get_or_score = stored_only
eee.merge_adaptive_results = keep_parts
budget = eee_budget("small", "cifar10")
results = reproduce_eee(budget, run_dir, dataset="cifar10", data_dir="/work/shared/data/cifar-10-subset")


def images(pieces) -> str:
    size = eee._CHUNK
    return " and ".join(f"{c * size}-{(c + 1) * size - 1}" for c in pieces)


rows, by_kind = [], {}
for row in results["rows"]:
    kind = (
        row["method"].rsplit(",", 1)[0]
        if row["method"].startswith(f"{budget.ensemble_models}-model")
        else None
    )
    by_kind.setdefault((kind, row["eps"]), []).append(row)
for (kind, eps), group in by_kind.items():
    if kind is None:
        complete = [r for r in group if all(p is not None for p in r["parts"])]
        rows += [{"method": r["method"], "eps": eps, **merge(r["parts"])} for r in complete]
        continue
    shared = [c for c in range(len(group[0]["parts"])) if all(r["parts"][c] is not None for r in group)]
    if not shared:
        continue
    for r in group:
        aggregation = r["method"].rsplit(",", 1)[1]
        name = f"{kind} (images {images(shared)} of {budget.eval_images}),{aggregation}"
        rows.append({"method": name, "eps": eps, **merge([r["parts"][c] for c in shared])})
results["rows"] = sorted(rows, key=lambda r: r["eps"])
paths = write_eee_results(results, out_dir)
print(f"{len(rows)} rows; wrote {paths['markdown']} and {paths['json']}")
