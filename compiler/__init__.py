"""tlc: transfer-learning models as short YAML specs, checked, built, explained and trained.

The Python API (for notebooks; the CLI is the same code):

    spec = tlc.load_spec("spec.yaml")    # validated, errors located in the file
    plan = tlc.check(spec)               # shapes and params without TensorFlow
    model = tlc.compile(spec)            # the keras.Model
    run = tlc.train("spec.yaml")         # trains into runs/<name>/, returns a tlc.Run
    run = tlc.Run("runs/name")           # a finished run
    run.predict(["cat.jpg"])             # the answers of `tlc predict --json`
    run.evaluate()                       # the answers of `tlc evaluate --json`
    run.model                            # the self-contained keras.Model ([0, 1] images in)

Importing tlc does not import TensorFlow; only building, training and predicting do.
"""
from __future__ import annotations

from typing import Any

from . import train  # the package, called as the API's `train(spec)` (see tlc/train/__init__.py)
from ._version import __version__
from .errors import FieldError, InfeasibleError, RunError, SpecError, TlcError
from .plugin.components import Backbone, DataSource, Head, Task
from .plugin.hookspecs import hookimpl
from .spec.validation import load_spec
from .use.run import Run

__all__ = [
    "Backbone", "DataSource", "FieldError", "Head", "InfeasibleError", "Run", "RunError", "SpecError", "Task", "TlcError",
    "check", "compile", "hookimpl", "load_spec", "train", "__version__",
]


def _as_spec(spec: Any):
    from .spec.models import SpecBase

    return spec if isinstance(spec, SpecBase) else load_spec(spec)


def check(spec: Any):
    """Plan a spec (object or path) without TensorFlow: a `Plan` with `.ok`, `.failure`,
    `.min_input`, `.layers` and `.params()`."""
    from .plan.planner import plan

    return plan(_as_spec(spec))


def compile(spec: Any):  # noqa: A001 - the public name from the contract
    """Build the `keras.Model` a spec (object or path) describes."""
    from .build.emit import compile as emit

    return emit(_as_spec(spec))
