"""robustkernels.api: the method layer (data, models, training, attacks, evaluation, CLI)."""
