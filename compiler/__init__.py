"""tlc: transfer-learning models as short YAML specs, checked, built, explained and trained.

Importing tlc does not import TensorFlow; only building and training do.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # the one place the version is written (pyproject reads it)

from .components import Backbone, FieldError, Head  # noqa: E402
from .errors import InfeasibleError, RunError, SpecError, TlcError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .spec import load_spec  # noqa: E402 - __version__ first: the registry reads it

__all__ = [
    "Backbone", "FieldError", "Head", "InfeasibleError", "RunError", "SpecError", "TlcError",
    "check", "compile", "hookimpl", "load_spec", "__version__",
]


def _as_spec(spec: Any):
    from .spec import SpecBase

    return spec if isinstance(spec, SpecBase) else load_spec(spec)


def check(spec: Any):
    """Plan a spec (object or path) without TensorFlow: a `Plan` with `.ok`, `.failure`,
    `.min_input`, `.layers` and `.params()`."""
    from .plan import plan

    return plan(_as_spec(spec))


def compile(spec: Any):  # noqa: A001 - the public name from the contract
    """Build the `keras.Model` a spec (object or path) describes."""
    from .emit import compile as emit

    return emit(_as_spec(spec))
