"""Loading a saved `.keras` model, in one place for runs, predict and the weights loader: a file
that will not load is one clear error naming it (what the model then computes is `predictor.py`'s)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tlc.errors import RunError, one_line


class ModelLoadError(RunError):
    """A `.keras` file that will not load; `reason` says why (for callers that word it their way)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: cannot load the model: {reason}")
        self.path, self.reason = path, reason


def load_model(path: str | Path, *, safe_mode: bool = True) -> Any:
    """A saved `.keras` model, uncompiled; a file that will not load is a `ModelLoadError`."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:
        hint = " (it contains code; pass --unsafe only if you trust it)" if "safe_mode" in str(exc) else ""
        raise ModelLoadError(path, f"{one_line(exc)}{hint}") from None
