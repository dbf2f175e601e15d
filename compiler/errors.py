"""Errors a user can act on. Each carries the CLI exit code from the contract.

Anything else that escapes is a bug and the CLI reports it as one.
"""
from __future__ import annotations

import re

EXIT_OK = 0
EXIT_INFEASIBLE = 1  # also: a run that failed for a reason outside the spec (data, disk)
EXIT_INVALID = 2


class TlcError(Exception):
    """Base class: a message meant for the user, printed without a traceback."""

    exit_code = EXIT_INFEASIBLE


class SpecError(TlcError):
    """The spec is invalid: bad YAML, unknown key, wrong type, missing file, bad reference."""

    exit_code = EXIT_INVALID


class InfeasibleError(TlcError):
    """The spec is valid but its shapes do not fit (exit 1)."""

    exit_code = EXIT_INFEASIBLE


class RunError(TlcError):
    """Training, data or I/O failed for a reason that is not the spec's shape."""

    exit_code = EXIT_INFEASIBLE


class FieldError(Exception):
    """A component's complaint about a field that pydantic alone cannot see.

    `loc` is relative to the spec root, e.g. ("input", "shape"); tlc turns it into a
    located `file:line:col: field: message` error.
    """

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc, self.message = tuple(loc), message


class UsageError(TlcError):
    """A command-line argument is wrong (exit 2, like other invalid input)."""

    exit_code = EXIT_INVALID


def hides_interrupt(exc: BaseException) -> bool:
    """Whether `exc` was raised while a Ctrl-C was being handled: a `finally` or `except` that
    failed in its turn (Optuna's journal lock, released after the interrupt, finds its file gone)
    would otherwise turn the interrupt into an ordinary error, and the work would go on."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def one_line(exc: BaseException) -> str:
    """An exception as one readable line for a message: its first informative line, without
    Keras's `Exception encountered when calling ...` wrapper or terminal colour codes."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    useful = [line for line in lines if line and not line.startswith("Exception encountered when calling")]
    return useful[0] if useful else type(exc).__name__


def did_you_mean(word: str, options) -> str:
    """' (did you mean 'x'?)' for the closest of `options`, or '' when nothing is close."""
    import difflib  # only error paths need it; keeps it out of every start-up

    hint = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def and_more(items, what: str = "") -> str:
    """' (and 3 more <what>)' after a message naming the first of `items`, or '' for one: a
    message names one bad file and counts the rest rather than listing thousands."""
    extra = len(items) - 1
    return f" (and {extra} more{' ' + what if what else ''})" if extra > 0 else ""
