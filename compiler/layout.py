"""Where each file of a run folder lives: one table for the writer (`tlc train`, `tlc tune`) and
every reader (evaluate, export, explain, predict, serve, compare, a distillation teacher), so a
file name is written in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder (`runs/<name>/`)."""

    folder: Path

    #: What a finished run holds; a folder without one of these is not a run.
    REQUIRED = ("model.keras", "spec.lock.yaml", "split.json", "metrics.json")

    def __init__(self, folder: str | os.PathLike):
        object.__setattr__(self, "folder", Path(folder))

    # written by `tlc train`
    model = property(lambda self: self.folder / "model.keras")
    spec_lock = property(lambda self: self.folder / "spec.lock.yaml")
    split = property(lambda self: self.folder / "split.json")
    metrics = property(lambda self: self.folder / "metrics.json")
    history = property(lambda self: self.folder / "history.csv")
    accuracy_plot = property(lambda self: self.folder / "accuracy.png")
    state = property(lambda self: self.folder / "state.json")  # resume state while a run is unfinished
    logs = property(lambda self: self.folder / "logs")  # TensorBoard
    # written by the commands that use a run
    evaluation = property(lambda self: self.folder / "evaluation.json")
    confusion_plot = property(lambda self: self.folder / "confusion.png")
    mistakes_plot = property(lambda self: self.folder / "misclassified.png")
    explain = property(lambda self: self.folder / "explain")
    predict = property(lambda self: self.folder / "predict")
    export = property(lambda self: self.folder / "export")
    tune = property(lambda self: self.folder / "tune")

    def missing(self) -> list[str]:
        """The required files this folder lacks (all of them when it is no folder)."""
        return [name for name in self.REQUIRED if not (self.folder / name).is_file()]

    @property
    def finished(self) -> bool:
        return not self.missing()
