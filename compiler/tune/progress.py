"""What `tlc tune` shows while it searches: a bar over the study's trials, the running trial's
epochs, one line per finished trial, and at the end a table of the best trials."""
from __future__ import annotations

from ..train.progress import Reporter


def describe(outcome, metric: str) -> str:
    """'trial 3: complete, val_accuracy 0.9312 in 2.1 s (features reused); head.units=[64] ...'"""
    params = " ".join(f"{path}={_short(v)}" for path, v in outcome.params.items())
    if outcome.state == "complete":
        what = f"complete, {metric} {outcome.value:.4f}"
    else:
        what = outcome.state + (f": {outcome.message.splitlines()[0]}" if outcome.message else "")
    features = f" (features {outcome.features})" if outcome.features in ("computed", "reused") else ""
    return f"trial {outcome.number}: {what} in {outcome.seconds:.1f} s{features}; {params}"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


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

        from ..console import console

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


def best_table(summary: dict, metric: str, maximise: bool, limit: int = 5):
    from rich.table import Table

    done = [t for t in summary["trials"] if t["state"] == "complete"]
    done.sort(key=lambda t: -t["value"] if maximise else t["value"])
    table = Table(title=f"best trials of {summary['study']} ({metric})", title_justify="left")
    for column in ("trial", metric, "seconds", *(done[0]["params"] if done else [])):
        table.add_column(column, justify="right" if column in ("trial", metric, "seconds") else "left")
    for t in done[:limit]:
        table.add_row(str(t["number"]), f"{t['value']:.4f}", f"{t['seconds']:.1f}",
                      *[_short(v) for v in t["params"].values()])
    return table
