"""The run folder: `runs/<name>/` with model.keras, history.csv, metrics.json, accuracy.png and
spec.lock.yaml.

Work happens in `runs/<name>.partial/`. After every epoch a checkpoint and `state.json` are
written atomically, in that order, and history.csv is rewritten from the state, so a kill at any
moment leaves a consistent point to `--resume` from, with no duplicate rows. Only a finished run
replaces `runs/<name>/`, so an earlier complete run is untouched until then.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from tlc.atomic import swap_folder, write_text, write_with
from tlc.build.serving import finishing, self_contained, uncompiled
from tlc.errors import RunError
from tlc.layout import RunLayout

from .state import State, history_csv, lock_text


class RunFolder:
    """`writer=False` (a non-chief distributed worker) reads state to resume but writes nothing.

    A writer holds `runs/<name>.lock` (an flock, which the system releases when the process dies,
    so a killed run never blocks the next) from `start` to `close`: a second `tlc train` of the
    same spec into the same folder stops at once instead of sharing `<name>.partial/`."""

    def __init__(self, runs_dir: str | os.PathLike, name: str, *, writer: bool = True):
        self.final = Path(runs_dir) / name
        self.work = Path(runs_dir) / f"{name}.partial"
        self.lock_path = Path(runs_dir) / f"{name}.lock"
        self.writer = writer
        self._lock: int | None = None

    def _acquire(self) -> None:
        import fcntl

        if not self.lock_path.parent.exists():  # (a file in its place fails below: "Not a directory")
            self.lock_path.parent.mkdir(parents=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RunError(f"{self.work} is in use: another tlc train of {self.final.name} (process {holder}) "
                               f"is running into {self.final.parent}; wait for it, or use another --runs") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:  # the previous holder removed it between our open and lock
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._lock = fd
                return
            os.close(fd)

    def close(self) -> None:
        """Let the next run of this spec in: remove the lock file, then release it."""
        if self._lock is not None:
            self.lock_path.unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    def start(self, spec, *, resume: bool, carry_cache: bool = True) -> State:
        if self.writer:
            self._acquire()
        try:
            return self._start(spec, resume, carry_cache)
        except BaseException:
            self.close()
            raise

    def _start(self, spec, resume: bool, carry_cache: bool) -> State:
        spec_hash = hashlib.sha256(lock_text(spec).encode()).hexdigest()
        state_file = RunLayout(self.work).state
        if resume:
            if not state_file.is_file():
                where = f"; {self.final} is complete" if RunLayout(self.final).metrics.is_file() else ""
                raise RunError(f"nothing to resume: no interrupted run in {self.work}{where}")
            state = State(**json.loads(state_file.read_text()))
            if state.spec_hash != spec_hash:
                raise RunError(f"the spec changed since {self.work} was started; "
                               "run without --resume to start over")
            if self.writer:
                self._drop_leftovers(state)
            return state
        if self.writer:
            if self.work.exists():
                shutil.rmtree(self.work)
            self.work.mkdir(parents=True)
            if carry_cache:
                self._carry_over_cache()
        return State(spec_hash=spec_hash)

    def _drop_leftovers(self, state: State) -> None:
        """What a kill left beside the commit point: half-written files (`.tmp-*`) and checkpoints
        that state.json no longer names (the kill came between the state and the clean-up)."""
        for path in self.work.iterdir():
            stale = path.name.startswith(".tmp-") or (path.name.startswith("ckpt-") and path.name != state.checkpoint)
            if stale:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

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

    def save_epoch(self, model, state: State, *, checkpoint: bool = True) -> None:
        """Checkpoint, then state (the commit point), then history; then drop old checkpoints.
        Without `checkpoint`, only the history (a run that will not be resumed)."""
        if not self.writer:
            return
        if not checkpoint:
            write_text(RunLayout(self.work).history, history_csv(state.rows))
            return
        name = f"ckpt-{state.epochs_done}.keras"
        previous = state.checkpoint
        write_with(self.work / name, model.save)
        state.checkpoint = name
        write_text(RunLayout(self.work).state, json.dumps(state.__dict__, indent=1))
        write_text(RunLayout(self.work).history, history_csv(state.rows))
        if previous and previous != name:
            (self.work / previous).unlink(missing_ok=True)

    def discard(self) -> None:
        """A finished run not worth keeping (`Options.keep`): its work folder goes, and the
        final folder is left as it was."""
        if self.writer:
            shutil.rmtree(self.work, ignore_errors=True)

    def finish(self, model, state: State, metrics: dict, spec, plot, split: dict) -> Path:
        """Write the run's files into the work folder, then swap it in for the final one; model.keras
        ends in the task's finishing, from what the run recorded of it (metrics.json `task`)."""
        if not self.writer:
            return self.final
        files = RunLayout(self.work)
        write_text(files.split, json.dumps(split, indent=1) + "\n")
        finish = finishing(model, spec.task, metrics.get("task"))
        with uncompiled(model):
            write_with(files.model, self_contained(model, spec.backbone.preprocess, finish)[0].save)
        write_text(files.history, history_csv(state.rows))
        write_text(files.metrics, json.dumps(metrics, indent=2) + "\n")
        write_text(files.spec_lock, lock_text(spec))
        write_with(files.accuracy_plot, plot)
        for leftover in [files.state.name, state.checkpoint, self.best_path.name]:
            if leftover:
                (self.work / leftover).unlink(missing_ok=True)
        swap_folder(self.work, self.final)
        return self.final
