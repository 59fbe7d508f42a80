"""The failures qtradeoff expects, as one exception hierarchy; each kind carries the exit code the CLI returns.

Every domain error of the core (``ModelLoadError``, ``ConfigError``, ``SweepError``…) derives from one of the
classes below, so a caller can catch a whole kind at once and the CLI maps any of them to a documented code:

====  ===================  ==================================================================================
code  class                meaning
====  ===================  ==================================================================================
0     —                    success
1     —                    an unexpected exception, i.e. a bug: the traceback is printed
1     ``QtradeoffError``   an expected failure of no more specific kind (one line, no traceback)
2     ``UsageError``       a bad option or option value (argparse's own code for the same thing)
3     ``InputError``       a file the user named (model, data, configuration, results) is missing,
                           unreadable or unwritable, in the wrong format, or invalid
4     ``NeedsTrustError``  loading the model could run code from the file; rerun with ``--trust`` if you
                           trust it
130   ``CancelledError``   interrupted (Ctrl+C) or cancelled (128 + SIGINT, as shells report it)
====  ===================  ==================================================================================

Messages are one sentence a user can act on, naming the file or option at fault. This module imports nothing
from qtradeoff, so every layer of the core can use it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_NEEDS_TRUST = 4
EXIT_CANCELLED = 130


class QtradeoffError(Exception):
    """An expected failure: the message is shown to the user as is (the CLI prints it on one line)."""

    exit_code: int = EXIT_INTERNAL


class UsageError(QtradeoffError):
    """The command was asked for something it cannot do: a bad option, value or combination of options."""

    exit_code = EXIT_USAGE


class InputError(QtradeoffError):
    """A file the user gave is missing, unreadable, unwritable, in the wrong format or invalid."""

    exit_code = EXIT_INPUT


class NeedsTrustError(InputError):
    """Loading the file could run code from it; the user must say they trust it (``--trust``)."""

    exit_code = EXIT_NEEDS_TRUST


class CancelledError(QtradeoffError):
    """The work was stopped (a cancel request or Ctrl+C) before it finished."""

    exit_code = EXIT_CANCELLED


def exit_code_of(error: BaseException) -> int:
    """The exit code for ``error``: its kind's code, 130 for an interrupt, 1 for anything unexpected."""
    if isinstance(error, QtradeoffError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_CANCELLED
    return EXIT_INTERNAL
