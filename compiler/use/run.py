"""A finished run folder, read in one place for predict, evaluate, export, explain, serve and
compare: its resolved spec, split record and metrics, its model, and its examples rebuilt (the
held-out split, the training files, the decoded-image store). Opening one needs no TensorFlow,
so a wrong folder fails at once."""
from __future__ import annotations

import csv
import functools
import json
import os
import re
from pathlib import Path

from tlc.errors import RunError, SpecError, UsageError, and_more
from tlc.layout import RunLayout


class Run:
    """A finished run folder: its resolved spec, its split record (held-out examples), metrics
    and model. `Run(folder)` reads the folder at once (no TensorFlow), so a wrong one fails fast."""

    def __init__(self, folder: str | os.PathLike):
        from tlc.spec.validation import load_spec

        files = RunLayout(folder)
        if not files.folder.is_dir():
            raise UsageError(f"{folder}: no such run folder")
        missing = files.missing()
        if missing:
            raise UsageError(f"{folder} is not a finished tlc run (missing {', '.join(missing)}); "
                             "train one with `tlc train SPEC` (runs/<name>/)")
        self.folder = files.folder
        self.spec = load_spec(files.spec_lock)
        self.split = json.loads(files.split.read_text())
        self.metrics = json.loads(files.metrics.read_text())

    def __repr__(self) -> str:
        return f"tlc.Run({str(self.folder)!r})"

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Run:
        return cls(folder)

    @classmethod
    def of(cls, run: Run | str | os.PathLike) -> Run:
        """`run` itself when the caller opened it already (the CLI does, before TensorFlow loads)."""
        return run if isinstance(run, Run) else cls.open(run)

    @staticmethod
    def is_run(folder: str | os.PathLike) -> bool:
        return RunLayout(folder).finished

    @property
    def files(self) -> RunLayout:
        return RunLayout(self.folder)

    @property
    def model_path(self) -> Path:
        return self.files.model

    @property
    def classes(self) -> list[str]:
        """The class (tag, target) names, in the model's output order."""
        return list(self.split["classes"])

    @property
    def task_record(self) -> dict:
        """What the run's task recorded besides the weights (metrics.json `task`: thresholds, the
        targets' mean and deviation); a run from before tasks has none."""
        return {k: v for k, v in self.metrics.get("task", {}).items() if k != "type"}

    @functools.cached_property
    def model(self):
        """The run's self-contained model (`keras.models.load_model` of model.keras): [0, 1] images
        in at the spec's input size, the backbone's preprocessing inside, probabilities out."""
        from tlc.build.loading import load_model

        return load_model(self.model_path)

    def trained_model(self, *, safe_mode: bool = True):
        """The model as trained, without the preprocessing around it (what the predictor wraps)."""
        from tlc.build.loading import load_model
        from tlc.build.serving import inner_model

        return inner_model(load_model(self.model_path, safe_mode=safe_mode), self.spec.name)

    @functools.cached_property
    def predictor(self):
        """The one predictor over this run's model (loaded once per `Run`)."""
        from .predictor import Predictor

        return Predictor.of_run(self)

    def predict(self, images, *, top: int = 3, tta: str | None = None) -> list[dict]:
        """What `tlc predict --json` answers: image files (paths, or one path), or [0, 1] images
        as an array (n, height, width, channels) at the spec's input size."""
        from .predict import answers

        return answers(self.predictor, images, top, tta=tta)

    def evaluate(self, split: str | None = None, *, tta: str | None = None) -> dict:
        """What `tlc evaluate --json` gives (and writes into the run folder)."""
        from .evaluate import evaluate

        return evaluate(self, split, tta=tta)

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
        folder or csv source, or the source read again and checked against its indices (an
        in-memory source; masks)."""
        import numpy as np

        from tlc.data import load
        from tlc.data.sources import Examples

        files = self.split.get(f"{part}_files")
        if files is None:
            with self.reading():
                return getattr(self._checked(load(self.spec, check_files=False), part), part)
        missing = [f for f, _ in files if not Path(f).is_file()]
        if missing:
            raise RunError(f"{missing[0]}: held-out image not found (moved since training?){and_more(missing)}")
        if any(y is None for _, y in files):  # masks: not in split.json, read again from the source
            return self._from_source([f for f, _ in files])
        return Examples(self.spec.task.from_json([y for _, y in files]), files=np.array([f for f, _ in files]))

    def _from_source(self, files: list[str]):
        """The source's examples of `files` (a file source whose answers split.json does not keep),
        in that order, picked by file: the source may list files since skipped as unreadable,
        or new ones, which leave the recorded split as it was."""
        import numpy as np

        from tlc.data.sources import read

        with self.reading():
            examples = read(self.spec)[0]
        row = {os.path.abspath(f): i for i, f in enumerate(examples.files)}
        lost = [f for f in files if os.path.abspath(f) not in row]
        if lost:
            raise RunError(f"{lost[0]}: held-out image no longer in the source {self.spec.train.data.path} "
                           f"(its mask moved since training?){and_more(lost)}")
        return examples.take(np.array([row[os.path.abspath(f)] for f in files]))

    def other_source(self, path: str | os.PathLike):
        """Every example of another source of the run's kind (`tlc evaluate --data`): the spec's
        `train.data` with `path` in place of its path, the other options kept; refused when the
        run's source has no path, or when the new one's classes are not the run's."""
        from tlc.data.sources import read, source_of

        data = self.spec.train.data
        if not source_of(data).needs_path:
            raise UsageError(f"--data: {self.folder} was trained on {data.type}, which has no path to replace "
                             "(--data takes a folder, csv or npz of the kind the run was trained on)")
        where = Path(path).resolve()
        if not where.exists():
            raise UsageError(f"--data: {path}: not found")
        other = self.spec.with_train(data=data.model_copy(update={"path": str(where)})).unlocated()
        try:
            with self.reading():
                examples, names, _ = read(other)
        except SpecError as exc:  # about the folder given (named as typed), not spec.lock.yaml's line
            said = re.sub(r"^train[.]data([.]path)?: ", "", str(exc)).replace(str(where), str(path))
            raise UsageError(f"--data: {said}") from None
        targets = self.spec.task.aligned(examples.labels, names, self.classes)
        if targets is None:
            what = "tags" if self.spec.task.type == "multi_label" else "classes"
            raise UsageError(f"--data: {path} has the {what} {', '.join(names)}; {self.folder} knows "
                             f"{', '.join(self.classes)}" + ("" if what == "tags" else
                                                             " (the same names, in the same order)"))
        examples.labels = targets
        return examples

    def held_out_images(self, limit: int | None = None):
        """(split, examples, [0, 1] images) of the held-out rule's split (test, else val), the
        first `limit` of them: what the export and quantize checks run the artifact on."""
        import numpy as np

        part = self.choose_split()
        examples = self.held_out(part)
        if limit is not None and len(examples) > limit:
            examples = examples.take(np.arange(limit))
        return part, examples, self.images(examples)

    def images(self, examples, batch: int = 32):
        """`examples` as one array of [0, 1] images, read from the decoded-image store when it has them."""
        from tlc.data import fit_of
        from tlc.data.pipeline import Feed

        return Feed(examples, self.spec.input.hwc, store=self.image_store, fit=fit_of(self.spec)).array(batch)

    @functools.cached_property
    def image_store(self):
        """The decoded-image store training filled (`metrics.json`'s `image_store`, else
        `<runs>/.cache/images` beside the run), or None for an in-memory source, or with
        `decode_cache: false`; evaluating reads the held-out images from it and adds the rest.
        Opened once per `Run` (opening lists the source's files)."""
        from tlc.data import image_store
        from tlc.data.sources import read, source_of

        if not source_of(self.spec.train.data).files or self.store_folder is None:
            return None
        try:
            with self.reading():
                files = read(self.spec)[0].files
        except (SpecError, RunError, OSError):  # the source moved or changed: decode the held-out files
            return None
        return image_store(self.spec, files, self.store_folder)[0]

    @property
    def store_folder(self) -> Path | None:
        """Where training kept decoded files (`metrics.json`'s `image_store`, else `<runs>/.cache/images`
        beside the run); None with `decode_cache: false`."""
        if not self.spec.train.data.decode_cache:
            return None
        return Path(self.metrics.get("image_store", {}).get("folder") or self.folder.parent / ".cache" / "images")

    def reading(self):
        """A block in which reading the run's source keeps its masks in the run's store."""
        from tlc.data.store import keeping_in

        return keeping_in(self.store_folder)

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

        from tlc.data import load

        with self.reading():
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
    folder, files = Path(path), RunLayout(path)
    try:
        metrics = json.loads(files.metrics.read_text())
        with open(files.history, newline="") as handle:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except FileNotFoundError as exc:
        raise RunError(f"{folder} is not a finished tlc run (missing {Path(exc.filename).name})") from None
    return metrics, rows
