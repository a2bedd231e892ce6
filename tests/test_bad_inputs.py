"""The bad-argument table covers every op: bad arguments raise clear errors naming the argument.

The table's machinery is tests/bad_inputs.py; each op family's cases live in
tests/test_bad_inputs_<stem>.py beside its checks.
"""

from bad_inputs import registered_ops, table_builders


def test_every_registered_op_has_cases():
    """A new op (C++ kernel or custom op) fails here until a family's CASES holds its bad arguments;
    an entry for an op that no longer exists fails too (kernel ops exist only when the extension is
    built)."""
    registered, builders = set(registered_ops()), table_builders()
    assert registered - set(builders) == set(), "ops without bad-argument cases"
    assert {op for op in builders if not op.endswith("_kernel")} - registered == set(), (
        "cases for unknown ops"
    )
