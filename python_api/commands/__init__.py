"""The `robustkernels` subcommands (demo, info, train, eval, bench, reproduce), one module each."""
