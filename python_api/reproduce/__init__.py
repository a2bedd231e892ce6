"""`robustkernels reproduce`: train and evaluate the once-for-all methods and their PGD-AT
baseline end to end, at a named budget, into a results table (markdown, JSON) and a CA-RA plot."""

from .budgets import BUDGETS, Budget, budget_for
from .results import format_table, plot_tradeoff, write_results
from .runner import LAM_N, LAM_TH, METHODS, reproduce

__all__ = [
    "BUDGETS",
    "LAM_N",
    "LAM_TH",
    "METHODS",
    "Budget",
    "budget_for",
    "format_table",
    "plot_tradeoff",
    "reproduce",
    "write_results",
]
