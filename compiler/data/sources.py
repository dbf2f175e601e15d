"""Where examples come from: each source gives image files (streamed later) or an in-memory array,
with targets and their names: the task reads them (`Task.from_columns`, `from_array`,
`from_classes`), so one class, tags or numbers per image come from the same sources. Sources are rows of the registry (`tlc_data_sources`), so a
plugin adds one the same way the built-ins below are added.

`directory` and `csv` give file lists, so nothing is decoded here and memory does not depend on
the number of images; `digits`, `npz` and `cifar10` are arrays already (small, or shipped so),
scaled to [0, 1] and fitted to the spec's input once.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlc.errors import RunError, and_more
from tlc.plugin.components import DataSource
from tlc.plugin.hookspecs import hookimpl

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")  # what tf.io.decode_image reads
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PATH = ("train", "data", "path")


@dataclass
class Examples:
    """Labelled examples: image files (`files`) or images in [0, 1] at the spec's input (`images`).
    `labels` are the task's targets: class indices (n,), 0/1 tags (n, k) or values (n, t)."""

    labels: np.ndarray
    files: np.ndarray | None = None  # str paths
    images: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)  # located, from reading the targets
    #: further input arrays, row for row with `images` (a frozen encoder's cached taps: a decoder's
    #: tail takes several tensors)
    more: tuple = ()
    #: what the source itself left out with `on_error: skip` ({image file: why}: a mask file that
    #: does not decode), reported with the unreadable images
    skipped: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        return self.files is not None

    def take(self, indices: np.ndarray) -> Examples:
        return Examples(self.labels[indices],
                        None if self.files is None else self.files[indices],
                        None if self.images is None else self.images[indices],
                        more=tuple(array[indices] for array in self.more))

    def plus(self, other: Examples | None) -> Examples:
        """These examples followed by `other`'s (of the same kind: files, or images)."""
        if other is None:
            return self
        return Examples(np.concatenate([self.labels, other.labels]),
                        None if self.files is None else np.concatenate([self.files, other.files]),
                        None if self.images is None else np.concatenate([self.images, other.images]))

    def fingerprint(self, digest) -> None:
        """Feed what identifies these examples into a hash (for the feature cache key)."""
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        if self.files is not None:
            fingerprint_files(self.files, digest)
        else:
            digest.update(self._images_digest())

    def _images_digest(self) -> bytes:
        """The images' hash, kept while `images` is the same array: a tune worker's trials share
        one dataset, and hashing it again took ~15 ms a trial."""
        held = self.__dict__.get("_images_hash")
        if held is None or held[0] is not self.images:
            digest = hashlib.sha256(str(self.images.shape).encode())
            digest.update(np.ascontiguousarray(self.images).tobytes())
            held = self.__dict__["_images_hash"] = (self.images, digest.digest())
        return held[1]


def fingerprint_files(files, digest) -> None:
    """Each file's name, size and modification time into a hash: a changed file changes the key."""
    for name in files:
        stat = os.stat(name)
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())


def read(spec) -> tuple[Examples, list[str], dict[str, int]]:
    """The spec's `train.data` source, with `classes` picked and relabelled, and a count per suffix
    of the files it found but does not read (only a directory source has any). A source of one
    class per image (a folder per class, digits, a plugin's) gives the task its classes."""
    data = spec.train.data
    source = source_of(data)
    examples, names, *rest = source.read(data, spec)
    if not source.targets:
        examples.labels, names = spec.task.from_classes(examples.labels, names, spec)
    if spec.task.type == "classification":
        examples, names = select_classes(examples, names, data.classes, spec)
        if len(names) < 2:
            raise spec.error(("train", "data"), f"needs at least 2 classes; found {len(names)} ({', '.join(names)})")
    if examples.images is not None:
        examples.images = fit_to_input(examples.images, spec)
    return examples, names, (rest[0] if rest else {})


UNLABELED = ("train", "distill", "unlabeled")


def read_unlabeled(spec, streamed: bool) -> Examples:
    """`train.distill.unlabeled`: images without labels (label -1), of the training source's kind:
    a folder's files for a file source (streamed and stored like its own), images in [0, 1] at
    the input for an in-memory one (a folder decoded once, or an npz's `x` fitted like `train.data`'s)."""
    path = Path(spec.train.distill.unlabeled)
    if path.is_dir():
        files, others = list_images(path)
        if not files:
            raise spec.error(UNLABELED, f"{path} has no images ({', '.join(IMAGE_SUFFIXES)})"
                                        + (f"; it has {describe_ignored(others)}" if others else ""))
        if streamed:
            return Examples(np.full(len(files), -1, "int64"), files=np.array(files))
        from .images import ImageError, decode_many

        h, w, c = spec.input.hwc
        try:
            images = decode_many(files, (h, w), c, spec.train.data.fit).astype("float32") / 255.0
        except ImageError as exc:
            raise spec.error(UNLABELED, str(exc)) from None
        return Examples(np.full(len(files), -1, "int64"), images=images)
    if streamed:
        raise spec.error(UNLABELED, f"{path}: with a {spec.train.data.type} source (image files), the unlabeled "
                                    "images are a folder of image files too")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays:
                raise spec.error(UNLABELED, f"{path} must contain an array 'x'; found {', '.join(arrays.files)}")
            x = arrays["x"]
    except (OSError, ValueError) as exc:
        raise spec.error(UNLABELED, f"cannot read {path}: {exc}") from None
    x = as_images(x)
    if x.ndim != 4:
        raise spec.error(UNLABELED, f"x must be (n, h, w[, c]); got {x.shape}")
    return Examples(np.full(len(x), -1, "int64"), images=fit_to_input(x, spec))


def _digits(data, spec):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[..., None] / 16.0).astype("float32")
    return Examples(digits.target.astype("int64"), images=images), [str(i) for i in range(10)]


def _npz(data, spec):
    path = _required_path(data, spec)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise spec.error(PATH, f"{path} must contain arrays 'x' and 'y'; found {', '.join(arrays.files)}")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError) as exc:
        raise spec.error(PATH, f"cannot read {path}: {exc}") from None
    x = as_images(x)
    if x.ndim != 4 or len(x) != len(y):
        raise spec.error(PATH, f"x must be (n, h, w[, c]) and y one row per image; got {x.shape} and {y.shape}")
    targets, names = spec.task.from_array(y, spec, str(path))
    return Examples(targets, images=x), names


def _directory(data, spec):
    root = _required_path(data, spec)
    if not root.is_dir():
        raise spec.error(PATH, f"not a folder: {root}")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise spec.error(PATH, f"{root} needs one sub-folder per class, at least 2 (found {len(names)})")
    files, labels, ignored = [], [], collections.Counter()
    for label, name in enumerate(names):
        found, others = list_images(root / name)
        if not found:
            raise spec.error(PATH, f"class folder {root / name} has no images ({', '.join(IMAGE_SUFFIXES)})"
                                   + (f"; it has {describe_ignored(others)}" if others else ""))
        files += found
        labels += [label] * len(found)
        ignored.update(others)
    return Examples(np.array(labels, dtype="int64"), files=np.array(files)), names, dict(sorted(ignored.items()))


def list_images(folder: Path) -> tuple[list[str], collections.Counter]:
    """(image files under `folder`, sorted; a count per suffix of the other files). Nested folders
    and symlinks are followed (each real folder once); hidden files and folders are not files of
    the data set (`.DS_Store`, `.git`)."""
    images, others, seen = [], collections.Counter(), set()
    for top, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a symlink loop, or a folder linked twice
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1].lower()
            if suffix in IMAGE_SUFFIXES:
                images.append(os.path.join(top, name))
            else:
                others[suffix or "(no suffix)"] += 1
    return sorted(images), others


def describe_ignored(counts: dict) -> str:
    """{'.heic': 3, '.txt': 1} -> '4 other files not read (3 .heic, 1 .txt)'."""
    total = sum(counts.values())
    each = ", ".join(f"{n:,} {suffix}" for suffix, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{total:,} other file{'s' if total != 1 else ''} not read ({each})"


def _csv(data, spec):
    """A csv file with a `path` column (relative to the csv file) and the task's columns (`label`
    for one class per image: names or integers; tags; a column per target)."""
    path = _required_path(data, spec)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "path" not in columns:
                raise spec.error(PATH, f"{path} needs the columns {','.join(['path', *spec.task.columns(spec)])}; "
                                       f"found {','.join(columns) or 'none'}")
            rows = [({k.strip(): (v or "").strip() for k, v in row.items() if k}, reader.line_num) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise spec.error(PATH, f"cannot read {path}: {exc}") from None
    if not rows:
        raise spec.error(PATH, f"{path} has no rows")
    files = []
    for row, line in rows:
        file = path.parent / row["path"]
        if not row["path"] or not file.is_file():
            raise spec.error(PATH, f"{path}:{line}: image not found: {row['path'] or '(empty path)'}")
        files.append(str(file))
    targets, names, warnings = spec.task.from_columns(rows, [c for c in columns if c != "path"], spec, str(path))
    return Examples(targets, files=np.array(files), warnings=warnings), names


def _masks(data, spec):
    """`images/` and `masks/` under `path`, paired by file stem: each image's mask of class
    indices, decoded at the input size as the image will be (`fit`, nearest neighbour)."""
    from .images import ImageError, naming

    root = _required_path(data, spec)
    folders = {part: root / part for part in ("images", "masks")}
    for part, folder in folders.items():
        if not folder.is_dir():
            raise spec.error(PATH, f"{root} needs the folders images/ and masks/ (paired by file stem); "
                                   f"{folder.name}/ is not there")
    images, _ = list_images(folders["images"])
    masks = {Path(m).stem: m for m in list_images(folders["masks"])[0]}
    stems = [Path(f).stem for f in images]
    missing = [f for f, stem in zip(images, stems) if stem not in masks]
    if missing:
        raise spec.error(PATH, f"{missing[0]} has no mask (masks/{Path(missing[0]).stem}.png)"
                               + (f", nor have {len(missing) - 1} more images" if len(missing) > 1 else ""))
    extra = sorted(set(masks) - set(stems))
    if extra:
        raise spec.error(PATH, f"{masks[extra[0]]} is a mask of no image{and_more(extra)}")
    if not images:
        raise spec.error(PATH, f"{folders['images']} has no images ({', '.join(IMAGE_SUFFIXES)})")
    h, w, _ = spec.input.hwc
    names = spec.task.names(spec)
    colors = None if data.colors is None else {
        tuple(rgb): spec.task.ignore_index if name == "ignore" else names.index(name) for name, rgb in data.colors.items()}
    files = np.array([masks[stem] for stem in stems])
    try:
        y, unreadable = _stored_masks(files, (h, w), data.fit, spec.task.ignore_index, colors)
    except ImageError as exc:
        raise spec.error(PATH, str(exc)) from None
    skipped = {}
    if unreadable:
        if data.on_error != "skip":
            raise spec.error(PATH, naming(unreadable, "remove it and its image, or set train.data.on_error: skip",
                                          "masks"))
        readable = np.array([str(f) not in unreadable for f in files])
        skipped = {image: unreadable[str(mask)] for image, mask in zip(images, files) if str(mask) in unreadable}
        images, files, y = list(np.array(images)[readable]), files[readable], y[readable]
    targets, names = spec.task.from_array(y, spec, str(root / "masks"), files=list(files))
    return Examples(targets, files=np.array(images), skipped=skipped), names


def given_colours(spec, names: list[str]) -> dict:
    """{"colors": each class's [r, g, b]} when the masks were drawn in colours (`train.data.colors`;
    tlc's colour for a class they leave out), for the run to draw its masks in; else {}."""
    given = getattr(spec.train.data, "colors", None) if spec.train is not None else None
    if not given:
        return {}
    from tlc.show.figures import mask_colours

    return {"colors": [list(given.get(name, default.tolist())) for name, default in zip(names, mask_colours(len(names)))]}


def _stored_masks(files: np.ndarray, size: tuple[int, int], fit: str, fill: int, colors):
    """((n, h, w) class indices of the mask `files`, {file: why} for those that do not decode),
    kept in the store when this process keeps one."""
    from .images import decode_mask
    from .store import kept_masks

    return kept_masks(files, size, fit, fill, lambda file: decode_mask(file, size, fit, fill, colors), colors=colors)


def _coco(data, spec):
    """A COCO JSON's polygons and RLE rasterized per category (`coco.py`), its images beside it or in images/."""
    from .coco import read_coco

    path = _required_path(data, spec)
    if path.is_dir():
        raise spec.error(PATH, f"{path} is a folder; a coco source is the annotation file (instances.json)")
    given = [str(c) for c in data.classes] if data.classes else None
    files, y, names = read_coco(path, given, spec.input.hwc[:2], data.fit, spec.task.ignore_index,
                                lambda message: spec.error(PATH, message))
    classes = getattr(spec.head, "classes", len(names))
    if len(names) != classes:
        raise spec.error(PATH, f"{path}: {len(names)} classes (background, {', '.join(names[1:])}); head.classes is "
                               f"{classes}")
    targets, _ = spec.task.from_array(y, spec, str(path), files=files)
    return Examples(targets, files=np.array(files)), names


def _cifar10(data, spec):
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        raise RunError(
            f"train.data: cifar10 could not be downloaded ({type(exc).__name__}). Without network access, "
            "copy cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) "
            f"to {os.path.expanduser('~/.keras/datasets/cifar-10-batches-py.tar.gz')} and run again."
        ) from None
    x = np.concatenate([x_train, x_test]).astype("float32") / 255.0
    y = np.concatenate([y_train, y_test]).reshape(-1).astype("int64")
    return Examples(y, images=x), list(CIFAR10_NAMES)


@hookimpl
def tlc_data_sources():
    """The built-in sources, registered as a plugin's are (their names are in `registry.BUILTIN_SOURCES`)."""
    return [
        DataSource("digits", _digits, "scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)"),
        DataSource("npz", _npz, "an .npz file with arrays x (images) and y (the task's targets)", needs_path=True,
                   targets=True),
        DataSource("directory", _directory, "a folder with one sub-folder of images per class", needs_path=True,
                   files=True),
        DataSource("csv", _csv, "a csv file with a path column (relative to it) and the task's columns",
                   needs_path=True, files=True, targets=True),
        DataSource("cifar10", _cifar10, "CIFAR-10 through keras.datasets (downloaded once into the Keras cache)"),
        DataSource("masks", _masks, "segmentation: images/ and masks/ (PNG class indices) under path, paired by stem",
                   needs_path=True, files=True, targets=True),
        DataSource("coco", _coco, "segmentation: a COCO JSON of polygons or RLE (pycocotools), images beside it "
                                  "or in images/", needs_path=True, files=True, targets=True),
    ]


def source_of(data):
    """The registry's row for `train.data.type` (a built-in or a plugin's)."""
    from tlc.plugin.registry import get_registry

    return get_registry().data_source(data.type)


def as_images(x: np.ndarray) -> np.ndarray:
    """An array of images (n, h, w[, c]) as float32 with a channel axis; integers are scaled by 1/255."""
    if x.ndim == 3:
        x = x[..., None]
    return x.astype("float32") / (255.0 if np.issubdtype(x.dtype, np.integer) else 1.0)


def _required_path(data, spec) -> Path:
    """`train.data.path`, which the source needs: missing or not there is the preflight's
    located error (`missing_data`)."""
    from tlc.spec.preflight import missing_data

    missing = missing_data(spec)
    if missing is not None:
        raise missing
    return Path(data.path)


def select_classes(examples: Examples, names: list[str], classes, spec) -> tuple[Examples, list[str]]:
    """Keep `classes` (in that order) and relabel them 0..k-1."""
    if classes is None:
        return examples, names
    unknown = [c for c in classes if c >= len(names)]
    if unknown or len(set(classes)) != len(classes):
        raise spec.error(("train", "data", "classes"),
                         f"must be distinct labels in 0..{len(names) - 1}; got {classes}")
    mapping = np.full(len(names), -1)
    mapping[list(classes)] = np.arange(len(classes))
    keep = np.flatnonzero(mapping[examples.labels] >= 0)
    kept = examples.take(keep)
    kept.labels = mapping[kept.labels]
    return kept, [names[c] for c in classes]


def fit_to_input(x: np.ndarray, spec) -> np.ndarray:
    """Resize in-memory images (only when `resize` says so) and match the spec's channel count."""
    h, w, c = spec.input.hwc
    if x.shape[1:3] != (h, w):
        resize = spec.train.data.resize
        if resize is None or tuple(resize) != (h, w):
            raise spec.error(("train", "data", "resize"),
                             f"the images are {x.shape[1]}x{x.shape[2]} but input.shape is {h}x{w}; "
                             f"set train.data.resize: [{h}, {w}]")
        import tensorflow as tf

        x = tf.image.resize(x, (h, w)).numpy()
    return match_channels(x, c, spec)


def match_channels(x: np.ndarray, c: int, spec=None) -> np.ndarray:
    if x.shape[3] != c:
        if x.shape[3] == 1:
            x = np.repeat(x, c, axis=3)
        elif c == 1:
            x = x.mean(axis=3, keepdims=True)
        else:
            message = f"the images have {x.shape[3]} channels, the model {c}"
            raise spec.error(("input", "shape"), message) if spec else RunError(message)
    return x.astype("float32")
