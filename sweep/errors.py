"""User errors: raised anywhere below the entry points, turned into one line and an exit code
only at the edges (`run.py`, `report.py`, the sweeper's Hydra-facing class)."""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Input the tool cannot use; its message is the one line the user sees (key, value, what is allowed)."""


class DataNotFound(UserError):
    """A data set's files are missing and could not be downloaded."""


def one_line(error: UserError | str) -> str:
    """The line a user sees for an error: `error: ` and its message with every run of white space one space."""
    from sweep.text import redacted

    return f"error: {redacted(' '.join(str(error).split()))}"


def exit_with(error: UserError | str) -> NoReturn:
    """End the process with the error's one line on stderr: no traceback, a non-zero exit. Entry points only."""
    print(one_line(error), file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)
