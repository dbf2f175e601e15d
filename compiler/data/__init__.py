"""The data layer, below train, evaluate, predict, extract and export: sources that give file
lists or arrays, the task's seeded split, and one tf.data pipeline (`Feed`).

Memory does not depend on the number of images: files are decoded batch by batch.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlc.errors import RunError

from .sources import IMAGE_SUFFIXES, Examples, as_images, read

__all__ = ["Dataset", "Examples", "IMAGE_SUFFIXES", "as_images", "load", "naming_unreadable"]


@dataclass
class Dataset:
    train: Examples
    val: Examples
    test: Examples
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (on_error: skip)
    ignored: dict[str, int] = field(default_factory=dict)  # other files found, per suffix (not images)
    indices: dict = field(default_factory=dict)  # part -> indices into the source's examples
    source_files: np.ndarray | None = None  # every file the source lists (the image store's list)
    unlabeled: Examples | None = None  # train.distill.unlabeled: training images taught by the teacher alone
    warnings: list[str] = field(default_factory=list)  # located: targets that look like another task's, empty splits
    skipped_why: list[str] = field(default_factory=list)  # one line per skipped file, naming it and why

    @functools.cached_property
    def training_examples(self) -> Examples:
        """What the training feed reads: the training split, then the unlabeled images (if any);
        concatenated once (the feeds, the teacher and the error naming all read it)."""
        return self.train.plus(self.unlabeled)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load(spec, *, check_files: bool = True, unlabeled: bool = False) -> Dataset:
    """The spec's `train.data`: read, split, and with `on_error: skip` cleared of unreadable files;
    with `unlabeled`, also `train.distill.unlabeled`'s images (which the image store then lists too).

    With `on_error: error` nothing is scanned up front (a pass over every file, ~1.4 s per 6,000
    JPEGs here): decoding fails on a bad file anyway, and `naming_unreadable` then names it."""
    data = spec.train.data
    examples, names, ignored = read(spec)
    listed = examples.files
    skipping = check_files and data.on_error == "skip"
    left_out = examples.skipped  # (by the source: a mask that does not decode)
    examples, skipped = _readable(examples) if examples.streamed and skipping else (examples, {})
    skipped = {**left_out, **skipped}
    train, val, test = spec.task.split(examples.labels, data.validation_split, data.test_split, spec.train.seed)
    if len(train) == 0:
        raise spec.error(("train", "data", "validation_split"), "leaves no training examples")
    extra = None
    if unlabeled and spec.train.distill is not None and spec.train.distill.unlabeled:
        from .sources import read_unlabeled

        extra = read_unlabeled(spec, examples.streamed)
        like = examples.labels  # "no label": the task's marker, in the targets' shape
        extra.labels = np.full((len(extra), *like.shape[1:]), spec.task.no_label, like.dtype)
        if extra.files is not None:
            extra, unreadable = _readable(extra) if skipping else (extra, {})
            skipped |= unreadable
            listed = np.concatenate([listed, extra.files])
    warnings = examples.warnings + spec.task.split_warnings(spec, examples.labels,
                                                            {"validation_split": val, "test_split": test})
    return Dataset(examples.take(train), examples.take(val), examples.take(test), names, list(skipped), ignored,
                   {"train": train, "val": val, "test": test}, listed, extra, warnings, list(skipped.values()))


def _readable(examples: Examples) -> tuple[Examples, dict[str, str]]:
    """(the examples whose files decode, {file: why} for those that do not) for `on_error: skip`."""
    from .images import unreadable

    found = unreadable(examples.files)
    bad = np.array(sorted(found), dtype="int64")
    if not len(bad):
        return examples, {}
    return (examples.take(np.setdiff1d(np.arange(len(examples)), bad)),
            {str(examples.files[i]): found[i] for i in bad})


@contextlib.contextmanager
def naming_unreadable(parts: list[Examples], fix: str = "remove it, or set train.data.on_error: skip"):
    """A decoding error inside the block (tf.data stops at the first bad file without saying
    which) becomes one message naming the unreadable file and why: the files are scanned only
    then, so a good run decodes each file once. `fix` says what to do ("" for nothing)."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError:
        files = np.concatenate([p.files for p in parts if p.files is not None] or [np.zeros(0, str)])
        from .images import naming, unreadable

        bad = unreadable(files)
        if not bad:
            raise
        raise RunError(naming(bad, fix)) from None


def image_store(spec, files: np.ndarray | None, folder: Path):
    """(the decoded-image store for a file source's `files` in `folder`, or None; why it is off,
    '' when it is on or there are no files) per `train.data.decode_cache`."""
    if files is None:
        return None, ""
    if not spec.train.data.decode_cache:
        return None, "image store: off (train.data.decode_cache: false); every epoch decodes the images"
    from .store import ImageStore

    return ImageStore.open(folder, files, spec.input.hwc, fit_of(spec))


def feeds(spec, dataset: Dataset, store=None):
    """(train, validation) feeds for `tlc train`: training batches augmented, both preprocessed."""
    from .pipeline import Feed

    augment = None
    a = spec.train.augment
    if a is not None and a.active:
        from .augment import Augmenter

        augment = Augmenter(a, spec.train.seed)
    preprocess, fit = spec.backbone.preprocess, fit_of(spec)
    return (Feed(dataset.training_examples, spec.input.hwc, preprocess, augment, store=store, fit=fit),
            Feed(dataset.val, spec.input.hwc, preprocess, store=store, fit=fit))


def fit_of(spec) -> str:
    """How the spec's image files meet its input (`train.data.fit`; a spec without a `train:`
    section stretches, as Keras does)."""
    return spec.train.data.fit if spec.train is not None else "stretch"
