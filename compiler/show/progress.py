"""Progress, built one way for every command: the hooks training calls (`Reporter`, quiet: the
library's default), a rich display for `tlc train` (an epoch bar, a batch bar, a line per epoch),
the same for `tlc tune` (a bar over trials, the running trial's epochs, a line per trial), and
`bars()` for any other long loop (`tlc extract`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .text import short

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console


def bars(console: Console | None = None):
    """The one rich progress display: description, bar, done/total, time elapsed; transient, on
    stderr (stdout stays for results and JSON)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .console import console as make_console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console or make_console(stderr=True), transient=True)


class Reporter:
    """Progress hooks; the CLI shows a rich progress bar, the library stays quiet."""

    def note(self, text: str) -> None: ...
    def epoch_started(self, epoch: int, total: int, steps: int) -> None: ...
    def batch_done(self, steps: int = 1) -> None: ...
    def epoch_done(self, epoch: int, row: dict) -> None: ...


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .console import console as make_console

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


def describe(outcome, metric: str) -> str:
    """'trial 3: complete, val_accuracy 0.9312 in 2.1 s (features reused); head.units=[64] ...'"""
    params = " ".join(f"{path}={short(v)}" for path, v in outcome.params.items())
    if outcome.state == "complete":
        what = f"complete, {metric} {outcome.value:.4f}"
    else:
        what = outcome.state + (f": {outcome.message.splitlines()[0]}" if outcome.message else "")
    features = f" (features {outcome.features})" if outcome.features in ("computed", "reused") else ""
    return f"trial {outcome.number}: {what} in {outcome.seconds:.1f} s{features}; {params}"


class TuneReporter(Reporter):
    """Quiet by default (a worker process prints its finished trials only)."""

    def __init__(self, metric: str, prefix: str = ""):
        self.metric, self.prefix = metric, prefix

    def trial_started(self, number: int, total: int) -> None: ...

    def trial_done(self, outcome) -> None:
        import sys

        print(self.prefix + describe(outcome, self.metric), file=sys.stderr, flush=True)


class RichTuneReporter(TuneReporter):
    def __init__(self, metric: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .console import console

        super().__init__(metric)
        self.console = console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
        self.trials = self.progress.add_task("trials", total=total)
        self.epochs = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def trial_started(self, number: int, total: int) -> None:
        self.number = number

    def epoch_started(self, epoch: int, total: int, steps: int) -> None:
        if self.epochs is None:
            self.epochs = self.progress.add_task(f"trial {self.number}", total=total)
        self.progress.update(self.epochs, description=f"trial {self.number}", total=total, completed=epoch)

    def epoch_done(self, epoch: int, row: dict) -> None:
        self.progress.update(self.epochs, completed=epoch + 1)

    def trial_done(self, outcome) -> None:
        self.progress.advance(self.trials)
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
            self.epochs = None
        from rich.text import Text

        style = {"complete": "green", "pruned": "yellow"}.get(outcome.state, "red")
        self.console.print(Text(describe(outcome, self.metric), style=style))
