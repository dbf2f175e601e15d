"""`train.distill`'s teacher: checked before TensorFlow loads, then asked once per image.

The teacher is a finished run folder (its own input size and preprocessing, and its class
names, from its spec) or a `.keras` model (taking [0, 1] images at its input size; its classes
can only be counted). It runs in inference mode through the one predictor (`predictor.py`).

Its probabilities for every training image (the training split, then the unlabeled images) and,
with `augment.views: K`, for each of the K augmented views (the same seeded transformations as
the student's, which are fractions of the image, so at the teacher's own size too), and for the
validation images, are computed once and kept in the feature cache, keyed by the teacher's
files, the images and the augmentation: a resumed run, a repeated run and the trials of a
`tlc tune` study read them back. What the student trains on is `targets`.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc.layout import RunLayout
from tlc.spec.preflight import TEACHER


@dataclass
class Teacher:
    where: Path
    predictor: Any
    classes: list[str] | None  # None: a bare .keras model (its classes can only be counted)
    files: tuple[Path, ...]  # what identifies it (the cache key)

    @classmethod
    def open(cls, spec, *, safe_mode: bool = True) -> Teacher:
        from tlc.build.loading import load_model
        from tlc.errors import RunError
        from tlc.use.predictor import Predictor
        from tlc.use.run import Run

        where = Path(spec.train.distill.teacher)
        folder = where if where.is_dir() else where.parent if where.name == RunLayout(where).model.name else None
        try:
            if folder is not None and Run.is_run(folder):
                run = Run.open(folder)
                predictor = Predictor.of_run(run, safe_mode=safe_mode)
                teacher = cls(where, predictor, run.classes, (run.model_path, RunLayout(folder).spec_lock))
            else:
                teacher = cls(where, Predictor(load_model(where, safe_mode=safe_mode), name=where.stem), None, (where,))
        except RunError as exc:
            raise spec.error(TEACHER, str(exc)) from None
        if not teacher.predictor.is_classifier:
            raise spec.error(TEACHER, f"{where} outputs {tuple(teacher.predictor.model.output.shape[1:])} features "
                                      "per image, not class probabilities")
        return teacher

    def check_classes(self, spec, names: list[str]) -> None:
        """A teacher of other classes, tags or targets (or of the same in another order) cannot
        teach: a located error."""
        width, noun = self.width, spec.task.noun[1]
        if self.classes is not None and list(self.classes) != list(names):
            raise spec.error(TEACHER, f"the teacher's {noun} ({', '.join(self.classes)}) are not the data's "
                                      f"({', '.join(names)}); train it on the same {noun}, in the same order")
        if width != len(names):
            raise spec.error(TEACHER, f"the teacher has {width} {noun} but the data has {len(names)} "
                                      f"({', '.join(names)})")

    @property
    def width(self) -> int:
        """How many classes the teacher's probabilities have."""
        return int(self.predictor.serving.output.shape[-1])


@dataclass
class Taught:
    """The targets of the training feed and what the run records about its teacher."""

    targets: np.ndarray  # (views * n, 2 * width, or 1 + classes): the targets (-1, NaN: unlabeled), then the teacher's
    key: str
    note: str
    record: dict
    seconds: float


def teach(spec, dataset, cache_dir: Path, images_dir: Path, *, safe_mode: bool = True) -> Taught:
    """The teacher's probabilities for the training feed's images (per augmented view) and the
    validation images, from the cache or computed once, as the student's targets."""
    from .cache import computing

    started = time.perf_counter()
    teacher = Teacher.open(spec, safe_mode=safe_mode)
    teacher.check_classes(spec, dataset.class_names)
    train, val = dataset.training_examples, dataset.val
    views = spec.train.augment.views if _augments(spec) else 1
    key = _key(teacher, spec, train, val, views)
    path = Path(cache_dir) / f"{key}-teacher.npy"
    classes = dataset.num_classes
    row = tuple(spec.task.output_shape(dataset.class_names, spec))  # (classes,), or (h, w, classes) for masks
    with computing(Path(cache_dir) / f"{key}.lock"):
        moved = _moved_masks_path(path) if len(row) == 3 and _augments(spec) else None
        reused = path.is_file() and (moved is None or moved.is_file())
        if not reused:
            _compute(teacher, spec, train, val, views, path, images_dir, row, moved)
        every = np.load(path)
    probabilities, val_probabilities = every[:views * len(train)], every[views * len(train):]
    if moved is not None:  # each view's masks, moved as its photos were
        labels = np.load(moved).astype("float32")[..., None]
    else:
        labels = train.labels.astype("float32").reshape(len(train), *row[:-1], -1)  # a mask: a channel per pixel
        labels = np.tile(labels, (views,) + (1,) * (labels.ndim - 1))
    targets = np.concatenate([labels, probabilities], axis=-1).astype("float32")
    d, task = spec.train.distill, spec.task
    metric = f"teacher_val_{task.metric}"
    record = {"teacher": str(teacher.where), "temperature": d.temperature, "alpha": d.alpha,
              "unlabeled": len(dataset.unlabeled) if dataset.unlabeled is not None else 0,
              "images": len(train), "views": views, "probabilities": "reused" if reused else "computed",
              metric: float(task.evaluate(val.labels, val_probabilities, dataset.class_names, [""] * len(val),
                                          teacher.predictor.record)[task.metric]) if len(val) else None}
    how = "reused from the cache" if reused else "computed once"
    on = f"{len(train):,} training images" + (f" x {views} augmented views" if views > 1 else "")
    agree = f"; the teacher's val_{task.metric} {record[metric]:.4f}" if len(val) else ""
    what, loss = task.noun[1], task.distillation_note
    note = (f"distillation: teacher {teacher.where} ({classes} {what} at "
            f"{'x'.join(map(str, teacher.predictor.input_shape))}), its {'values' if what == 'targets' else 'probabilities'} "
            f"for {on} {how}{agree}; loss " + loss.format(a=d.alpha, b=1 - d.alpha, t=d.temperature))
    return Taught(targets, key, note, record, time.perf_counter() - started)


def _moved_masks_path(path: Path) -> Path:
    return path.with_name(path.name.replace("-teacher.npy", "-teacher-masks.npy"))


def _compute(teacher: Teacher, spec, train, val, views: int, path: Path, images_dir: Path, row: tuple,
             moved: Path | None = None) -> None:
    """Every view of the training images, then the validation images, through the teacher, batch
    by batch into `path` (written atomically), as rows of `row` (a teacher's masks at another
    size resized to the student's, bilinearly: probabilities stay probabilities); with `moved`,
    each view's masks as its augmentation moved them (the student's targets) into that file."""
    from tlc.atomic import write_npy_rows, write_with

    hwc, batch = teacher.predictor.input_shape, spec.train.batch_size
    fit = teacher.predictor.fit
    train_feed = _feed(spec, train, hwc, fit, images_dir, augmented=_augments(spec), stored=views > 1)
    val_feed = _feed(spec, val, hwc, fit, images_dir, augmented=False, stored=False)

    def answers(images):
        out = teacher.predictor(images.numpy())
        if out.ndim == 4 and out.shape[1:3] != row[:2]:
            import tensorflow as tf

            out = tf.image.resize(out, row[:2]).numpy()
        return out

    def chunks():
        for view in range(views):
            batches = train_feed.augmented_view(view, batch) if train_feed.augment else train_feed.in_order(batch)
            for images, _ in batches:
                yield answers(images)
        for images, _ in val_feed.in_order(batch):
            yield answers(images)

    write_npy_rows(path, (views * len(train) + len(val), *row[:-1], teacher.width), chunks())
    if moved is not None:
        every = _moved_masks(spec, train.labels, views, batch)
        write_with(moved, lambda tmp: np.save(tmp, every))


def _moved_masks(spec, masks: np.ndarray, views: int, batch: int) -> np.ndarray:
    """(views * n, h, w): each view's masks as the student's augmentation moves them, at the
    student's size (a transformation depends on the image's size, not its pixels: the teacher's
    photos, at its own size, cannot move the student's masks)."""
    import tensorflow as tf

    from tlc.data.augment import Augmenter

    augment, c = Augmenter(spec.train.augment, spec.train.seed), spec.input.hwc[2]
    move = tf.function(lambda blank, ids, view, m: augment(blank, ids, view, masks=m)[1], reduce_retracing=True)
    out = []
    for view in range(views):
        for start in range(0, len(masks), batch):
            ids = np.arange(start, min(start + batch, len(masks)), dtype=np.int64)
            blank = tf.zeros((len(ids), *masks.shape[1:], c))
            out.append(move(blank, tf.constant(ids), tf.constant(view, tf.int64), tf.constant(masks[ids])).numpy())
    return np.concatenate(out) if out else np.zeros((0, *masks.shape[1:]), masks.dtype)


def _augments(spec) -> bool:
    a = spec.train.augment
    return a is not None and a.active


def _feed(spec, examples, hwc: tuple, fit: str, images_dir: Path, *, augmented: bool, stored: bool):
    """The teacher's view of `examples`: at its own size and `fit`, augmented as the student's views when
    `augmented`; with `stored` (several views), files are read through an image store at that
    size, so each is decoded once."""
    from tlc.data.pipeline import Feed
    from tlc.data.sources import Examples, match_channels

    augment = None
    if augmented:
        from tlc.data.augment import Augmenter

        augment = Augmenter(spec.train.augment, spec.train.seed)
    if examples.files is not None:
        store = None
        if stored and spec.train.data.decode_cache:
            from tlc.data.store import ImageStore

            store = ImageStore.open(images_dir, examples.files, hwc, fit)[0]
        return Feed(examples, hwc, None, augment, store=store, fit=fit)
    images = examples.images
    if images.shape[1:3] != tuple(hwc[:2]):
        import tensorflow as tf

        images = tf.image.resize(images, hwc[:2]).numpy()
    return Feed(Examples(examples.labels, images=match_channels(images, hwc[2])), hwc, None, augment)


def _key(teacher: Teacher, spec, train, val, views: int) -> str:
    from tlc.data.sources import fingerprint_files

    digest = hashlib.sha256()
    fingerprint_files([os.path.abspath(f) for f in teacher.files], digest)
    for examples in (train, val):
        examples.fingerprint(digest)
    if _augments(spec):
        digest.update(f"{spec.train.augment.model_dump_json()}|{spec.train.seed}|{views}".encode())
    return digest.hexdigest()[:20]
