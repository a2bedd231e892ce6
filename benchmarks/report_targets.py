"""The speed and bandwidth targets benchmarks/report.py checks, and their evaluation.

TARGETS are ratios of two variants' medians of one op's benchmark; BANDWIDTH_TARGETS are memory
traffic per second as a fraction of the STREAM-style copy's, where a benchmark states its bytes.
Each evaluation prints one line per target and case and returns the rows of the results CSV.
"""

Medians = dict[tuple[str, str, str], dict[str, float]]  # (op, case, passes) -> {variant: seconds}
Traffic = dict[tuple[str, str, str, str], float]  # (op, case, passes, variant) -> bytes per second

# (op, passes, numerator variant, denominator variant, target, meaning)
TARGETS = [
    # issue 17: everything but the backbone at most 15 % of the step (1 / 0.85), fused >= 2x eager
    (
        "self_ensemble",
        "forward_backward",
        "robustkernels",
        "backbone_only",
        ("<=", 1 / 0.85),
        "step vs backbone alone",
    ),
    (
        "self_ensemble",
        "forward_backward",
        "eager_notebook",
        "robustkernels",
        (">=", 2.0),
        "speed-up vs eager notebook pipeline",
    ),
    (
        "self_ensemble_parts",
        "forward_backward",
        "eager_notebook",
        "robustkernels",
        (">=", 2.0),
        "everything but the backbone: speed-up vs eager notebook",
    ),
    (
        "noisy_conv2d",
        "forward_backward",
        "robustkernels",
        "plain_conv2d",
        ("<=", 1.10),
        "cost vs plain F.conv2d",
    ),
    (
        "noisy_conv2d",
        "forward_backward",
        "robustkernels",
        "reference_eager",
        ("<=", 1.0),
        "cost vs PNI-style eager",
    ),
    (
        "noisy_weight",
        "forward_backward",
        "reference_eager",
        "robustkernels",
        (">=", 2.0),
        "speed-up vs eager reference",
    ),
    (
        "crossmax",
        "forward_backward",
        "reference_eager",
        "robustkernels",
        (">=", 5.0),
        "speed-up vs eager reference",
    ),
    (
        "crossmax",
        "forward_backward",
        "reference_compiled",
        "robustkernels",
        (">=", 2.0),
        "speed-up vs compiled reference",
    ),
    (
        "multires_stack",
        "forward_backward",
        "reference_eager",
        "robustkernels",
        (">=", 3.0),
        "speed-up vs eager reference",
    ),
    (
        "pgd_step",
        "forward",
        "reference_eager",
        "robustkernels",
        (">=", 2.0),
        "speed-up vs eager attack step",
    ),
    (
        "path_conv2d",
        "forward_backward",
        "robustkernels",
        "plain_conv2d",
        ("<=", 1.25),
        "cost vs one plain conv, P=4 random route",
    ),
    (
        "path_conv2d",
        "forward_backward",
        "every_path",
        "robustkernels",
        (">=", 2.0),
        "speed-up vs every path + select",
    ),
    (
        "path_conv2d",
        "forward_backward",
        "robustkernels",
        "reference_eager",
        ("<=", 1.0),
        "cost vs eager index_select loop",
    ),
    (
        "path_conv2d_float",
        "forward_backward",
        "robustkernels",
        "plain_conv2d",
        ("<=", 1.15),
        "cost vs one plain conv, FLOAT dual path",
    ),
    (
        "path_ensemble",
        "forward",
        "sequential",
        "robustkernels",
        (">=", 1.5),
        "speed-up vs 8 models in sequence",
    ),
    (
        "float_training",
        "train_step",
        "reference_eager",
        "robustkernels",
        (">=", 1.0),
        "FLOAT epoch time speed-up vs eager PNI convs + two BNs",
    ),
]
# (op, passes, variant, target fraction): memory traffic per second as a fraction of
# the STREAM-style copy's (benchmarks/test_multires_stack.py::test_stream_copy).
BANDWIDTH_TARGETS = [("multires_stack", "forward_backward", "robustkernels", 0.30)]


def target_rows(medians: Medians) -> list[dict]:
    print("\ntargets:")
    rows = []
    for op, passes, num, den, (relation, bound), meaning in TARGETS:
        for (o, case, p), by_variant in sorted(medians.items()):
            if o != op or p != passes or num not in by_variant or den not in by_variant:
                continue
            value = by_variant[num] / by_variant[den]
            met = value <= bound if relation == "<=" else value >= bound
            print(
                f"  {op} {case} {passes}: {meaning} = {value:.3f} (target {relation} {bound}) {'met' if met else 'NOT MET'}"
            )
            rows.append(
                {
                    "op": op,
                    "case": case,
                    "passes": passes,
                    "metric": meaning,
                    "value": f"{value:.3f}",
                    "target": f"{relation} {bound}",
                    "met": met,
                }
            )
    return rows


def bandwidth_rows(traffic: Traffic) -> list[dict]:
    stream = [rate for (op, *_), rate in traffic.items() if op == "stream_copy"]
    if not stream:
        return []
    copy_rate = max(stream)
    print(f"\nSTREAM-style copy: {copy_rate / 1e9:.2f} GB/s (read + write)")
    rows = []
    for op, passes, variant, bound in BANDWIDTH_TARGETS:
        for (o, case, p, v), rate in sorted(traffic.items()):
            if (o, p, v) != (op, passes, variant):
                continue
            fraction = rate / copy_rate
            met = fraction >= bound
            print(
                f"  {op} {case} {passes}: {rate / 1e9:.2f} GB/s = {fraction:.3f} of the copy "
                f"(target >= {bound}) {'met' if met else 'NOT MET'}"
            )
            rows.append(
                {
                    "op": op,
                    "case": case,
                    "passes": passes,
                    "metric": "fraction of STREAM copy bandwidth",
                    "value": f"{fraction:.3f}",
                    "target": f">= {bound}",
                    "met": met,
                }
            )
    return rows
