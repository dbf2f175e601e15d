"""Errors a user can act on. Each carries the CLI exit code from the contract.

Anything else that escapes is a bug and the CLI reports it as one.
"""
from __future__ import annotations

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


class UsageError(TlcError):
    """A command-line argument is wrong (exit 2, like other invalid input)."""

    exit_code = EXIT_INVALID
