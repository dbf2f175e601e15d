"""Progress of training: the hooks the loop calls (`Reporter`, quiet: the library's default) and
a rich display for `tlc train` (an epoch bar, a batch bar, and one line per epoch)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


class Reporter:
    """Progress hooks; the CLI shows a rich progress bar, the library stays quiet."""

    def note(self, text: str) -> None: ...
    def epoch_started(self, epoch: int, total: int, steps: int) -> None: ...
    def batch_done(self, steps: int = 1) -> None: ...
    def epoch_done(self, epoch: int, row: dict) -> None: ...


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from ..console import console as make_console

        self.console = console or make_console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
        self.epochs = None
        self.batches = None

    def __enter__(self) -> RichReporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def epoch_started(self, epoch: int, total: int, steps: int) -> None:
        if self.epochs is None:
            self.epochs = self.progress.add_task("epochs", total=total, completed=epoch)
        if self.batches is not None:
            self.progress.remove_task(self.batches)
        self.batches = self.progress.add_task(f"epoch {epoch + 1}", total=steps)

    def batch_done(self, steps: int = 1) -> None:
        self.progress.advance(self.batches, steps)

    def epoch_done(self, epoch: int, row: dict) -> None:
        self.progress.advance(self.epochs)
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch")
        self.console.print(f"epoch {epoch + 1}: {metrics}", highlight=False)
