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

from ..atomic import swap_folder, write_text, write_with
from ..errors import RunError, SpecError, UsageError

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
    weights_notes: list[str] = field(default_factory=list)  # pretrained weights adapted to the input
    features: list[str] = field(default_factory=list)  # per phase: computed, reused or off (the feature cache)


def metrics_record(spec, model, state: State, phases, dataset, resumed: bool, strategy, class_weight) -> dict:
    """metrics.json: the contract's train_seconds, epochs, final and params, and what a person
    asks next (classes, examples, files left out, phases, cache, early stopping, weights)."""
    from ..introspect import count_weights

    trainable = count_weights(model.trainable_weights)
    total = model.count_params()
    return {
        "name": spec.name,
        "train_seconds": round(state.train_seconds, 3),
        "epochs": state.epochs_done,
        "final": state.rows[-1] if state.rows else {},
        "params": {"total": total, "trainable": trainable, "non_trainable": total - trainable},
        "classes": dataset.class_names,
        "examples": {"train": len(dataset.train), "validation": len(dataset.val), "test": len(dataset.test)},
        "skipped_files": dataset.skipped,
        "ignored_files": dataset.ignored,
        "phases": [{"freeze": p.freeze if isinstance(p.freeze, str) else p.freeze.model_dump(exclude_defaults=True),
                    "epochs": p.epochs, "learning_rate": p.learning_rate} for p in phases],
        "feature_cache": state.notes,
        "features": state.features,
        "weights": state.weights_notes,
        "early_stopping": state.stops,
        "class_weight": class_weight,
        "resumed": resumed,
        "distribute": {"strategy": strategy.kind, "replicas": strategy.replicas},
    }


def lock_text(spec) -> str:
    """The fully resolved spec (defaults filled in, extends merged, paths absolute)."""
    data = spec.model_dump(mode="json")
    return "# resolved by tlc; reproduces this run\n" + yaml.safe_dump(data, sort_keys=False)


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
        state_file = self.work / STATE
        if resume:
            if not state_file.is_file():
                where = f"; {self.final} is complete" if (self.final / "metrics.json").is_file() else ""
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
            write_text(self.work / "history.csv", history_csv(state.rows))
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
        swap_folder(self.work, self.final)
        return self.final


def history_csv(rows: list[dict]) -> str:
    """Rows as Keras's CSVLogger writes them: `epoch` first, then the metric names sorted."""
    columns = ["epoch", *sorted({k for row in rows for k in row} - {"epoch"})] if rows else list(COLUMNS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


RUN_FILES = ("model.keras", "spec.lock.yaml", "split.json", "metrics.json")


@dataclass
class Run:
    """A finished run folder, read in one place for evaluate, export and predict: its resolved
    spec, its split record (held-out examples) and metrics, and its model. Opening it needs no
    TensorFlow, so a wrong folder fails at once."""

    folder: Path
    spec: object
    split: dict
    metrics: dict

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Run:
        from ..validation import load_spec

        folder = Path(folder)
        if not folder.is_dir():
            raise UsageError(f"{folder}: no such run folder")
        missing = [name for name in RUN_FILES if not (folder / name).is_file()]
        if missing:
            raise UsageError(f"{folder} is not a finished tlc run (missing {', '.join(missing)}); "
                             "train one with `tlc train SPEC` (runs/<name>/)")
        return cls(folder, load_spec(folder / "spec.lock.yaml"), json.loads((folder / "split.json").read_text()),
                   json.loads((folder / "metrics.json").read_text()))

    @classmethod
    def of(cls, run: Run | str | os.PathLike) -> Run:
        """`run` itself when the caller opened it already (the CLI does, before TensorFlow loads)."""
        return run if isinstance(run, Run) else cls.open(run)

    @staticmethod
    def is_run(folder: str | os.PathLike) -> bool:
        return all((Path(folder) / name).is_file() for name in RUN_FILES)

    @property
    def model_path(self) -> Path:
        return self.folder / "model.keras"

    @property
    def classes(self) -> list[str]:
        return list(self.split["classes"])

    def model(self, *, safe_mode: bool = True):
        from ..models import load_model

        return load_model(self.model_path, safe_mode=safe_mode)

    def choose_split(self, asked: str | None = None) -> str:
        """`asked` ('test' or 'val'), or the held-out rule of evaluate, export and quantize: test
        when the run has one, else val."""
        counts = self.split["counts"]
        if asked == "test" and not counts.get("test"):
            raise UsageError(f"{self.folder} has no test split (train.data.test_split was 0); "
                             "use --split val, or train with a test_split")
        if asked is None:
            asked = "test" if counts.get("test") else "val"
        if not counts.get(asked):
            raise UsageError(f"{self.folder} has no {asked} examples")
        return asked

    def held_out(self, part: str):
        """The run's `part` ('val' or 'test') examples, as recorded at training time: the files of a
        folder or csv source, or the in-memory source read again and checked against its indices."""
        import numpy as np

        from ..data import load
        from ..data.sources import Examples

        files = self.split.get(f"{part}_files")
        if files is not None:
            missing = [f for f, _ in files if not Path(f).is_file()]
            if missing:
                raise RunError(f"{missing[0]}: held-out image not found (moved since training?)"
                               + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
            return Examples(np.array([int(y) for _, y in files], dtype="int64"),
                            files=np.array([f for f, _ in files]))
        return getattr(self._checked(load(self.spec, check_files=False), part), part)

    def held_out_images(self, limit: int | None = None):
        """(split, examples, [0, 1] images) of the held-out rule's split (test, else val), the
        first `limit` of them: what the export and quantize checks run the artifact on."""
        import numpy as np

        from ..data.pipeline import Feed

        part = self.choose_split()
        examples = self.held_out(part)
        if limit is not None and len(examples) > limit:
            examples = examples.take(np.arange(limit))
        return part, examples, Feed(examples, self.spec.input.hwc, store=self.image_store()).array(32)

    def image_store(self):
        """The decoded-image store training filled (`metrics.json`'s `image_store`, else
        `<runs>/.cache/images` beside the run), or None for an in-memory source, or with
        `decode_cache: false`; evaluating reads the held-out images from it and adds the rest."""
        from ..data import image_store
        from ..data.sources import read

        if self.spec.train.data.type not in ("directory", "csv") or not self.spec.train.data.decode_cache:
            return None
        folder = Path(self.metrics.get("image_store", {}).get("folder") or self.folder.parent / ".cache" / "images")
        try:
            files = read(self.spec)[0].files
        except (SpecError, RunError, OSError):  # the source moved or changed: decode the held-out files
            return None
        return image_store(self.spec, files, folder)[0]

    def _checked(self, dataset, part: str):
        """An in-memory source read again, refused when its `part` is not what was recorded."""
        if dataset.indices[part].tolist() != self.split["indices"][part]:
            raise RunError(f"the {part} examples differ from those recorded at training time "
                           "(the data source or its split changed); use a new run")
        return dataset

    def training(self):
        """The run's training examples (int8 calibration): for a file source, every file it lists
        now except the recorded held-out and skipped ones; an in-memory source is read again and
        checked against the recorded split."""
        import numpy as np

        from ..data import load

        dataset = load(self.spec, check_files=False)
        if dataset.train.files is None:
            return self._checked(dataset, "val" if self.split["counts"].get("val") else "test").train
        held = {f for part in ("val", "test") for f, _ in self.split.get(f"{part}_files", [])}
        held |= set(self.split.get("skipped", []))
        every = [getattr(dataset, part) for part in ("train", "val", "test")]
        files = np.concatenate([e.files for e in every])
        keep = np.array([str(f) not in held for f in files])
        return type(every[0])(np.concatenate([e.labels for e in every])[keep], files=files[keep])


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
