"""The `robustkernels` subcommands other than `demo`: info, train, eval and bench."""
