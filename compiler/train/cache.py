"""Frozen-prefix feature caching: compute what never changes once, train the rest on it.

The prefix is every layer before the first one that trains (has trainable weights) or is random
at training time (Dropout and friends), so results match an uncached run up to floating-point
noise. Features are stored under the run folder, keyed by a hash of the data and of the prefix's
configuration and weights, so a resumed or repeated run reuses them and any change invalidates them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STOCHASTIC = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
              "GaussianDropout", "AlphaDropout")
IN_MEMORY_LIMIT = 512 * 2**20  # larger feature arrays are memory-mapped from the cache file
EVAL_BATCH_BYTES = 64 * 2**20  # validating the tail on features: batches up to this size


@dataclass
class Split:
    """What to train in a phase: the whole model on images, or its tail on cached features."""

    model: Any
    x_train: np.ndarray
    x_val: np.ndarray
    note: str
    eval_batch_size: int | None = None  # None: the training batch size
    key: str | None = None  # the cache key of the features, when cached


def boundary(model) -> tuple[int, str]:
    """Index of the first layer that must run during training, and why it is that one."""
    for index, layer in enumerate(model.layers[1:], start=1):
        if type(layer).__name__ in STOCHASTIC:
            return index, f"{layer.name} is random during training"
        if layer.trainable and layer.trainable_weights:
            return index, f"{layer.name} trains"
    return len(model.layers), "every layer is frozen"


def _is_chain(model, start: int) -> bool:
    layers = model.layers
    return all(layers[i].input is layers[i - 1].output for i in range(max(start, 1), len(layers)))


def split(model, x_train: np.ndarray, x_val: np.ndarray, cache_dir: Path, *, enabled: bool,
          batch_size: int = 32, off_because: str = "--no-cache") -> Split:
    if not enabled:
        return Split(model, x_train, x_val, f"feature cache: off ({off_because})")
    k, why = boundary(model)
    if k <= 1:
        return Split(model, x_train, x_val, f"feature cache: not used ({why}; nothing before it is frozen)")
    if k >= len(model.layers):
        return Split(model, x_train, x_val, f"feature cache: not used ({why}; nothing to train)")
    if not _is_chain(model, k):
        return Split(model, x_train, x_val, "feature cache: not used (the model is not a plain chain of layers)")
    import keras
    import tensorflow as tf

    last = model.layers[k - 1]
    prefix = keras.Model(model.input, last.output)
    key = _key(model.layers[1:k], x_train, x_val)
    # One graph, traced once for one batch shape, for train and validation alike (`predict`
    # costs ~5% more here, mostly per-batch overhead).
    forward = tf.function(lambda batch: prefix(batch, training=False))
    out_shape = tuple(last.output.shape[1:])
    files = {part: cache_dir / f"{key}-{part}.npy" for part in ("train", "val")}
    how = "reused from the cache" if all(f.is_file() for f in files.values()) else "computed once"
    features = [_features(forward, out_shape, x, files[part], batch_size)
                for part, x in (("train", x_train), ("val", x_val))]
    tail_input = keras.Input(shape=features[0].shape[1:], name=f"{last.name}_features")
    x = tail_input
    for layer in model.layers[k:]:
        x = layer(x)  # the same layer objects: training the tail trains the model
    tail = keras.Model(tail_input, x, name=f"{model.name}_tail")
    # The tail's forward pass is cheap, so validation runs in few large batches (per-batch overhead
    # would dominate); the mean over the same examples is the same up to float rounding.
    per_example = max(1, int(np.prod(out_shape)) * features[0].itemsize)
    eval_batch_size = max(batch_size, EVAL_BATCH_BYTES // per_example)
    return Split(tail, features[0], features[1],
                 f"feature cache: on, layers 1..{k - 1} {how} (up to {last.name}; {why})",
                 eval_batch_size, key)


def _features(forward, out_shape: tuple, x: np.ndarray, path: Path, batch_size: int) -> np.ndarray:
    """The prefix's output for `x`, from the cache file or computed (at the training batch size:
    large batches of big feature maps are slower on CPU caches) and appended batch by batch to
    that file, so memory holds one batch however large the dataset. (Plain writes, not a
    writable memory map: a full disk must be an error, not a SIGBUS.)"""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npy")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("float32")), "fortran_order": False,
                  "shape": (len(x), *out_shape)}
        with open(tmp, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size]
                n = len(batch)
                if n < batch_size:  # padded, so that every call has the one traced shape
                    batch = np.concatenate([batch, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
                handle.write(np.ascontiguousarray(forward(batch).numpy()[:n], dtype="float32").tobytes())
        tmp.replace(path)
    return np.load(path, mmap_mode="r" if path.stat().st_size > IN_MEMORY_LIMIT else None)


def _key(layers, x_train: np.ndarray, x_val: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (x_train, x_val):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    for layer in layers:
        digest.update(json.dumps(layer.get_config(), sort_keys=True, default=str).encode())
        for weight in layer.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:20]


def drop_unused(cache_dir: Path, keys: list[str]) -> None:
    """At the end of a run: keep the features its phases used, drop the rest. (Not earlier: a
    run's later phases may still need features carried over from the previous run.)"""
    for old in cache_dir.glob("*.npy"):
        if old.name.split("-")[0] not in keys:
            old.unlink(missing_ok=True)
