"""Turning expected failures (bad arguments, missing files) into one readable line and exit status 2."""

import functools
import sys
from collections.abc import Callable

from ..data import MissingDataError

__all__ = ["CommandError", "reports_errors"]


class CommandError(Exception):
    """A problem with the user's arguments or files, reported without a traceback."""


# Failures that mean "the input is wrong", not "robustkernels is broken".
_USER_ERRORS = (CommandError, MissingDataError, FileNotFoundError, ValueError, ImportError)


def reports_errors(command: str) -> Callable:
    """Decorates a command's run_from_args: user errors print `robustkernels <command>: error: ...`
    on stderr and return 2; anything else propagates with its traceback."""

    def decorate(run: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(run)
        def wrapped(*args, **kwargs) -> int:
            try:
                return run(*args, **kwargs)
            except _USER_ERRORS as error:
                print(f"robustkernels {command}: error: {error}", file=sys.stderr)
                return 2

        return wrapped

    return decorate
