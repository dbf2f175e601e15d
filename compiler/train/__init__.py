"""Training: the phase runner (`loop`) and what it calls.

`tlc.train(spec)`, the Python API's function, is this package called: Python binds a package's
name on its parent when the package is imported, so `tlc.train` is this package whatever
`tlc/__init__.py` would define, and the package answers the call itself.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, spec: Any, runs: str | os.PathLike = "runs", *, epochs: int | None = None,
                 seed: int | None = None, resume: bool = False):
        """Train a spec (object or path) into `runs/<name>/`, as `tlc train` does (the same
        preflight, the same files, quietly), and return the finished `tlc.Run`."""
        from tlc.spec.models import SpecBase
        from tlc.spec.preflight import prepare
        from tlc.use.run import Run

        from .loop import train

        ready = prepare(spec if isinstance(spec, SpecBase) else os.fspath(spec), training=True, epochs=epochs,
                        seed=seed)
        return Run(train(ready, runs, resume=resume).folder)


sys.modules[__name__].__class__ = _CallablePackage
