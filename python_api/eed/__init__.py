"""Efficient Ensemble Defense (EED, "Two is Better than One", spec part B)."""
