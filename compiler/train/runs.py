"""The run folder: `runs/<name>/` with model.keras, history.csv, metrics.json, accuracy.png and
spec.lock.yaml.

Work happens in `runs/<name>.partial/`. After every epoch a checkpoint and `state.json` are
written atomically, in that order, and history.csv is rewritten from the state, so a kill at any
moment leaves a consistent point to `--resume` from, with no duplicate rows. Only a finished run
replaces `runs/<name>/`, so an earlier complete run is untouched until then.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..atomic import write_text, write_with
from ..errors import RunError

STATE = "state.json"
COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")


@dataclass
class State:
    """What a resumed run needs: epochs done, their history rows, seconds spent, the checkpoint."""

    spec_hash: str
    epochs_done: int = 0
    rows: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    checkpoint: str | None = None
    notes: list[str] = field(default_factory=list)
    cache_keys: list[str] = field(default_factory=list)  # feature cache entries this run used
    phases_done: int = 0
    phase_starts: list[int] = field(default_factory=list)  # the epoch each phase started at
    early: dict = field(default_factory=dict)  # early stopping's memory in the current phase
    stops: list[dict] = field(default_factory=list)  # why phases stopped early


def lock_text(spec) -> str:
    """The fully resolved spec (defaults filled in, extends merged, paths absolute)."""
    data = spec.model_dump(mode="json")
    return "# resolved by tlc; reproduces this run\n" + yaml.safe_dump(data, sort_keys=False)


class RunFolder:
    """`writer=False` (a non-chief distributed worker) reads state to resume but writes nothing."""

    def __init__(self, runs_dir: str | os.PathLike, name: str, *, writer: bool = True):
        self.final = Path(runs_dir) / name
        self.work = Path(runs_dir) / f"{name}.partial"
        self.writer = writer

    def start(self, spec, *, resume: bool) -> State:
        spec_hash = hashlib.sha256(lock_text(spec).encode()).hexdigest()
        state_file = self.work / STATE
        if resume:
            if not state_file.is_file():
                where = f"; {self.final} is complete" if (self.final / "metrics.json").is_file() else ""
                raise RunError(f"nothing to resume: no interrupted run in {self.work}{where}")
            state = State(**json.loads(state_file.read_text()))
            if state.spec_hash != spec_hash:
                raise RunError(f"the spec changed since {self.work} was started; "
                               "run without --resume to start over")
            return state
        if self.writer:
            if self.work.exists():
                shutil.rmtree(self.work)
            self.work.mkdir(parents=True)
            self._carry_over_cache()
        return State(spec_hash=spec_hash)

    def _carry_over_cache(self) -> None:
        """Start from the finished run's feature cache: re-running a spec after changing its head
        reuses the frozen features (the cache keys decide what still matches; the rest is dropped).
        Hard links cost nothing and leave the finished run untouched."""
        old = self.final / "cache"
        if not old.is_dir():
            return
        self.cache_dir.mkdir()
        for file in old.glob("*.npy"):
            try:
                os.link(file, self.cache_dir / file.name)
            except OSError:  # a file system without hard links
                shutil.copy2(file, self.cache_dir / file.name)

    @property
    def cache_dir(self) -> Path:
        return self.work / "cache"

    @property
    def best_path(self) -> Path:
        return self.work / "best.weights.h5"

    def save_best(self, model) -> None:
        """The best epoch's weights so far (early stopping's `restore_best`)."""
        if self.writer:
            write_with(self.best_path, model.save_weights)

    def best_exists(self) -> bool:
        return self.best_path.is_file()

    def checkpoint_path(self, state: State) -> Path | None:
        return self.work / state.checkpoint if state.checkpoint else None

    def save_epoch(self, model, state: State) -> None:
        """Checkpoint, then state (the commit point), then history; then drop old checkpoints."""
        if not self.writer:
            return
        name = f"ckpt-{state.epochs_done}.keras"
        previous = state.checkpoint
        write_with(self.work / name, model.save)
        state.checkpoint = name
        write_text(self.work / STATE, json.dumps(state.__dict__, indent=1))
        write_text(self.work / "history.csv", history_csv(state.rows))
        if previous and previous != name:
            (self.work / previous).unlink(missing_ok=True)

    def finish(self, model, state: State, metrics: dict, spec, plot, extra: dict[str, str] | None = None) -> Path:
        """Write the run's files into the work folder, then swap it in for the final one."""
        if not self.writer:
            return self.final
        for name, text in (extra or {}).items():
            write_text(self.work / name, text)
        write_with(self.work / "model.keras", model.save)
        write_text(self.work / "history.csv", history_csv(state.rows))
        write_text(self.work / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text(self.work / "spec.lock.yaml", lock_text(spec))
        write_with(self.work / "accuracy.png", plot)
        for leftover in [STATE, state.checkpoint, self.best_path.name]:
            if leftover:
                (self.work / leftover).unlink(missing_ok=True)
        old = self.final.with_name(f"{self.final.name}.old-{os.getpid()}")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.work, self.final)
        shutil.rmtree(old, ignore_errors=True)
        return self.final


def history_csv(rows: list[dict]) -> str:
    """Rows as Keras's CSVLogger writes them: `epoch` first, then the metric names sorted."""
    columns = ["epoch", *sorted({k for row in rows for k in row} - {"epoch"})] if rows else list(COLUMNS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_run(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(metrics, history rows) of a finished run folder."""
    folder = Path(path)
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        with open(folder / "history.csv", newline="") as handle:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except FileNotFoundError as exc:
        raise RunError(f"{folder} is not a finished tlc run (missing {Path(exc.filename).name})") from None
    return metrics, rows
