"""tlc: transfer-learning models as short YAML specs, checked, built, explained and trained.

Importing tlc does not import TensorFlow; only building and training do.
"""
from __future__ import annotations

from typing import Any

from ._version import __version__
from tlc.plugin.components import Backbone, DataSource, Head
from .errors import FieldError, InfeasibleError, RunError, SpecError, TlcError
from tlc.plugin.hookspecs import hookimpl
from tlc.spec.validation import load_spec

__all__ = [
    "Backbone", "DataSource", "FieldError", "Head", "InfeasibleError", "RunError", "SpecError", "TlcError",
    "check", "compile", "hookimpl", "load_spec", "__version__",
]


def _as_spec(spec: Any):
    from tlc.spec.models import SpecBase

    return spec if isinstance(spec, SpecBase) else load_spec(spec)


def check(spec: Any):
    """Plan a spec (object or path) without TensorFlow: a `Plan` with `.ok`, `.failure`,
    `.min_input`, `.layers` and `.params()`."""
    from tlc.plan.planner import plan

    return plan(_as_spec(spec))


def compile(spec: Any):  # noqa: A001 - the public name from the contract
    """Build the `keras.Model` a spec (object or path) describes."""
    from tlc.build.emit import compile as emit

    return emit(_as_spec(spec))
