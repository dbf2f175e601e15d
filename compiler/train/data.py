"""Training data: load a source, pick and relabel classes, split, and fit it to the spec's input.

Every source yields float32 images scaled to [0, 1] with shape (n, h, w, c) and integer labels;
the backbone's `preprocess` then turns them into what the network expects.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RunError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load(spec) -> Dataset:
    """The spec's `train.data`, ready for the spec's input shape."""
    data = spec.train.data
    x, y, names = SOURCES[data.type](data, spec)
    x, y, names = select_classes(x, y, names, data.classes, spec)
    x = fit_to_input(x, spec)
    x = np.asarray(spec.backbone.preprocess(x), dtype="float32")
    order = np.random.default_rng(spec.train.seed).permutation(len(x))
    n_val = int(round(len(x) * data.validation_split))
    val, train = order[:n_val], order[n_val:]
    if len(train) == 0:
        raise spec.error(("train", "data", "validation_split"), "leaves no training examples")
    return Dataset(x[train], y[train], x[val], y[val], names)


def _digits(data, spec):
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images[..., None] / 16.0).astype("float32"), digits.target.astype("int64"), \
        [str(i) for i in range(10)]


def _npz(data, spec):
    path = _required_path(data, spec)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise spec.error(("train", "data", "path"), f"{path} must contain arrays 'x' and 'y'; "
                                                            f"found {', '.join(arrays.files)}")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError) as exc:
        raise spec.error(("train", "data", "path"), f"cannot read {path}: {exc}") from None
    x = as_images(x)
    if x.ndim != 4 or len(x) != len(y):
        raise spec.error(("train", "data", "path"),
                         f"x must be (n, h, w[, c]) and y (n,); got {x.shape} and {y.shape}")
    y = y.astype("int64").reshape(-1)
    return x, y, [str(c) for c in range(int(y.max()) + 1)]


def _directory(data, spec):
    root = _required_path(data, spec)
    if not root.is_dir():
        raise spec.error(("train", "data", "path"), f"not a folder: {root}")
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(names) < 2:
        raise spec.error(("train", "data", "path"), f"{root} needs one sub-folder per class (found {len(names)})")
    h, w, c = spec.input.hwc
    size = tuple(data.resize or (h, w))
    files, labels = [], []
    for label, name in enumerate(names):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(file)
                labels.append(label)
    if not files:
        raise spec.error(("train", "data", "path"), f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return read_images(files, size, c), np.array(labels, dtype="int64"), names


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
    return x, y, list(CIFAR10_NAMES)


def as_images(x: np.ndarray) -> np.ndarray:
    """An array of images (n, h, w[, c]) as float32 with a channel axis; integers are scaled by 1/255."""
    if x.ndim == 3:
        x = x[..., None]
    return x.astype("float32") / (255.0 if np.issubdtype(x.dtype, np.integer) else 1.0)


def read_images(files: list[Path], size: tuple[int, int], channels: int) -> np.ndarray:
    """Image files resized to `size`, as float32 in [0, 1]; an unreadable file is an error naming it."""
    import keras

    images = []
    for file in files:
        try:
            img = keras.utils.load_img(file, color_mode="grayscale" if channels == 1 else "rgb", target_size=size)
        except Exception as exc:
            raise RunError(f"{file}: not a readable image ({type(exc).__name__})") from None
        images.append(keras.utils.img_to_array(img) / 255.0)
    return np.stack(images).astype("float32")


SOURCES = {"digits": _digits, "npz": _npz, "directory": _directory, "cifar10": _cifar10}


def _required_path(data, spec) -> Path:
    if not data.path:
        raise spec.error(("train", "data"), f"type {data.type} needs a path")
    path = Path(data.path)
    if not path.exists():
        raise spec.error(("train", "data", "path"), f"not found: {path}")
    return path


def select_classes(x, y, names, classes, spec):
    """Keep `classes` (in that order) and relabel them 0..k-1."""
    if classes is None:
        return x, y, names
    unknown = [c for c in classes if c >= len(names)]
    if unknown or len(set(classes)) != len(classes):
        raise spec.error(("train", "data", "classes"),
                         f"must be distinct labels in 0..{len(names) - 1}; got {classes}")
    mapping = np.full(len(names), -1)
    mapping[list(classes)] = np.arange(len(classes))
    keep = mapping[y] >= 0
    return x[keep], mapping[y[keep]], [names[c] for c in classes]


def fit_to_input(x: np.ndarray, spec) -> np.ndarray:
    """Resize (only when `resize` says so) and match the channel count to the spec's input."""
    h, w, c = spec.input.hwc
    if x.shape[1:3] != (h, w):
        resize = spec.train.data.resize
        if resize is None or tuple(resize) != (h, w):
            raise spec.error(("train", "data", "resize"),
                             f"the images are {x.shape[1]}x{x.shape[2]} but input.shape is {h}x{w}; "
                             f"set train.data.resize: [{h}, {w}]")
        import tensorflow as tf

        x = tf.image.resize(x, (h, w)).numpy()
    if x.shape[3] != c:
        if x.shape[3] == 1:
            x = np.repeat(x, c, axis=3)
        elif c == 1:
            x = x.mean(axis=3, keepdims=True)
        else:
            raise spec.error(("input", "shape"), f"the images have {x.shape[3]} channels, the spec {c}")
    return x.astype("float32")
