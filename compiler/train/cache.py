"""Frozen-prefix feature caching: compute what never changes once, train the rest on it.

The prefix is every layer before the first one that trains (has trainable weights) or is random
at training time (Dropout and friends), so results match an uncached run up to floating-point
noise. Features are stored in the run's `cache/` folder (`runs/<name>/cache/`; under `tlc tune`,
in one folder the study's trials share), keyed by a hash of the data and of the prefix's
configuration and weights, so a resumed or repeated run reuses them and any change invalidates them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlc.atomic import write_npy_columns
from tlc.data.pipeline import HEAVY_BATCH, IN_MEMORY_LIMIT, Feed, float32_bytes

from .rewrite import faster

STOCHASTIC = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
              "GaussianDropout", "AlphaDropout")
READ_ROWS_FROM = 2**20  # features of this size an example are never loaded whole
EVAL_BATCH_BYTES = 64 * 2**20  # validating the tail on features: batches up to this size


@dataclass
class Workload:
    """What to train in a phase: the whole model on images, or its tail on cached features."""

    model: Any
    train: Feed
    val: Feed
    note: str
    eval_batch_size: int | None = None  # None: the training batch size
    key: str | None = None  # the cache key of the features, when cached
    reused: bool = False  # the features were already in the cache (a repeated run, another trial)


def boundary(model) -> tuple[int, str]:
    """Index of the first layer that must run during training, and why it is that one."""
    for index, layer in enumerate(model.layers[1:], start=1):
        if type(layer).__name__ in STOCHASTIC:
            return index, f"{layer.name} is random during training"
        if layer.trainable and layer.trainable_weights:
            return index, f"{layer.name} trains"
    return len(model.layers), "every layer is frozen"


def _cut_tensors(model, k: int) -> list:
    """The tensors that layers k.. read from the layers before k, in the order of the layers that
    make them: one in a chain (layer k-1's output) or between two residual blocks; a decoder's
    taps and its encoder's output when k is the decoder's first layer. Empty when a model's graph
    cannot be read."""
    position = _positions(model)
    needed = {}
    try:  # Keras private API (the model's own graph nodes), guarded
        for nodes in model._nodes_by_depth.values():
            for node in nodes:
                if position.get(id(node.operation), -1) < k:
                    continue
                for tensor in node.input_tensors:
                    if position.get(id(tensor._keras_history[0]), k) < k:
                        needed[id(tensor)] = tensor
    except AttributeError:  # pragma: no cover
        return []
    return _in_model_order(needed.values(), position)


def _positions(model) -> dict[int, int]:
    return {id(layer): i for i, layer in enumerate(model.layers)}


def _in_model_order(tensors, position: dict[int, int]) -> list:
    """Tensors in the order of the layers that make them (the cache's files and the tail's inputs)."""
    return sorted(tensors, key=lambda t: (position[id(t._keras_history[0])], t._keras_history[2]))


def _smallest_cut(model, k: int) -> tuple[int, list]:
    """(where to cut, its tensors): at `k`, or before the weightless layers just before it (a
    decoder's upsampling and joins, a last ReLU) when the tensors there are smaller: they cost
    the tail next to nothing to run, and the cache holds the encoder's 8x8 output instead of its
    16x16 upsampled join."""
    best = (k, _cut_tensors(model, k))
    size = _bytes(best[1])
    j = k
    while j > 2 and not model.layers[j - 1].weights and type(model.layers[j - 1]).__name__ != "InputLayer":
        j -= 1
        cuts = _cut_tensors(model, j)
        if cuts and _bytes(cuts) < size:
            best, size = (j, cuts), _bytes(cuts)
    return best


#: frozen layers cheap enough to run again at every step, walked back through when what they read is
#: smaller than what they give: an inverted-residual block's 1x1 expansion (MobileNetV2,
#: EfficientNet) turns 16 channels into 96, so a decoder's tap at its ReLU is 6x its block's input
RERUN = ("BatchNormalization", "ReLU", "Activation", "Conv2D")
RERUN_DEPTH = 4  # layers walked back from a tap, at most


def _narrowed(cuts: list, model) -> list:
    """The cut with each tensor replaced by the smallest one a few cheap frozen layers before it
    (a 1x1 convolution, its batch norm and activation): the cache holds that, and the tail runs
    those layers again, forward only (nothing before a trainable layer needs a gradient), at ~7%
    of a decoder's step. MobileNetV2's taps at 256x256: 9.9 MB a photo, 1.7 MB narrowed."""
    chosen = {}
    for tensor in cuts:
        best = walk = tensor
        for _ in range(RERUN_DEPTH):
            layer, node, _ = walk._keras_history
            kind = type(layer).__name__
            if kind not in RERUN or (kind == "Conv2D" and tuple(layer.kernel_size) != (1, 1)):
                break
            inputs = layer._inbound_nodes[node].input_tensors  # Keras private API, as above
            if len(inputs) != 1 or type(inputs[0]._keras_history[0]).__name__ == "InputLayer":
                break
            walk = inputs[0]
            if _bytes([walk]) < _bytes([best]):
                best = walk
        chosen[id(best)] = best
    return _in_model_order(chosen.values(), _positions(model))


def _largest_output(model) -> int:
    """Bytes per example of a model's largest layer output: what a forward pass holds at its
    widest (a decoder's full-resolution stages), beside which its inputs can be small."""
    largest = 0
    for layer in model.layers:
        try:
            outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
        largest = max(largest, _bytes(list(outputs)))
    return largest


def _bytes(cuts: list) -> int:
    return float32_bytes(t.shape[1:] for t in cuts)


def split(model, train: Feed, val: Feed, cache_dir: Path, *, enabled: bool,
          batch_size: int = 32, off_because: str = "--no-cache", memory: dict | None = None) -> Workload:
    """`memory` (path -> array) keeps features read once in this process (a tune worker's trials)."""
    if not enabled:
        return Workload(model, train, val, f"feature cache: off ({off_because})")
    k, why = boundary(model)
    if k <= 1:
        return Workload(model, train, val, f"feature cache: not used ({why}; nothing before it is frozen)")
    if k >= len(model.layers):
        return Workload(model, train, val, f"feature cache: not used ({why}; nothing to train)")
    k, cuts = _smallest_cut(model, k)
    cuts = _narrowed(cuts, model)
    if not cuts:
        return Workload(model, train, val, "feature cache: not used (the model's graph could not be cut)")
    augment = train.augment
    views = augment.spec.views if augment is not None else None
    if augment is not None and not views:
        return Workload(model, train, val, "feature cache: off (augmentation changes the training images every "
                                        "epoch; set train.augment.views: K to cache K augmented views)")
    shapes = [tuple(t.shape[1:]) for t in cuts]
    size = _bytes(cuts) * (len(train) * (views or 1) + len(val))
    free = _free_bytes(cache_dir)
    if size > DISK_SHARE * free:
        return Workload(model, train, val, f"feature cache: not used (the frozen part's {_tensors(cuts)} would take "
                                        f"{_amount(size)}; {_amount(free)} free in {cache_dir})")
    import keras
    import tensorflow as tf

    prefix = faster(keras.Model(model.input, cuts))  # (in the kernels the tail and an uncached run use)
    key = _key(model.layers[1:k], cuts, train, val)
    # One graph, traced once for one batch shape, for train and validation alike (`predict`
    # costs ~5% more here, mostly per-batch overhead).
    forward = tf.function(lambda batch: prefix(batch, training=False))
    # Moved masks: with views of a segmentation's images, each view's masks are kept beside it.
    moved = views is not None and train.examples.labels.ndim == 3 and train.targets is None  # (a teacher's: moved)
    files = {part: [cache_dir / f"{key}-{part}{f'-{i}' if i else ''}.npy" for i in range(len(cuts))]
             for part in ("train", "val")}
    if moved:
        files["train"].append(cache_dir / f"{key}-train-masks.npy")

    # Large outputs (a decoder's taps) are computed in smaller batches: the encoder's activations
    # for 16 photos at 256x256 would outweigh everything the tail's training then holds.
    step = max(1, min(batch_size, HEAVY_BATCH // _bytes(cuts)))

    def train_batches():  # (tf.data pipelines cost ~60 ms each to build: only when computing)
        if not views:
            return [train.in_order(step)]
        return [train.augmented_view(v, step) for v in range(views)]

    with computing(cache_dir / f"{key}.lock"):  # another worker computing these: wait, then reuse them
        reused = all(str(f) in (memory or {}) or f.is_file() for f in files["train"] + files["val"])
        trained = _features(forward, shapes, train_batches, len(train) * (views or 1), files["train"], step,
                            memory, train.examples.labels.shape[1:] if moved else None)
        held_out = _features(forward, shapes, lambda: [val.in_order(step)], len(val), files["val"], step, memory)
    how = "reused from the cache" if reused else "computed once"
    # Keras builds the sub-model that starts at the cut from the same layer objects, so training
    # the tail trains the model.
    tail = keras.Model(cuts if len(cuts) > 1 else cuts[0], model.output, name=f"{model.name}_tail")
    # The tail's forward pass is cheap, so validation runs in few large batches (per-batch overhead
    # would dominate); the mean over the same examples is the same up to float rounding.
    per_example = max(1, _bytes(cuts), _largest_output(tail))
    eval_batch_size = max(batch_size, EVAL_BATCH_BYTES // per_example)
    upto = ", ".join(t._keras_history[0].name for t in cuts)
    position = _positions(model)
    rerun = sum(position[id(layer)] < k for layer in tail.layers if type(layer).__name__ != "InputLayer")
    upto += f"; {rerun} cheap frozen layers after {'it' if len(cuts) == 1 else 'them'} run at each step" if rerun else ""
    note = f"feature cache: on, layers 1..{k - 1} {how} (up to {upto}; {why})"
    if views:
        stored = sum(array.nbytes for array in trained[:len(cuts)]) / 2**20
        note += (f"; {views} augmented views of {len(train):,} training images "
                 f"({stored:,.1f} MB on disk, {stored / views:,.1f} MB per view)")
    elif len(cuts) > 1:
        note += f"; {len(cuts)} tensors, {size / 2**20:,.1f} MB on disk"
    masks = trained[len(cuts)] if moved else train.targets
    return Workload(tail, Feed.of(trained[:len(cuts)], train.examples.labels, views=views or 1, targets=masks),
                 Feed.of(held_out, val.examples.labels), note, eval_batch_size, key, reused)


DISK_SHARE = 0.8  # cached features may take up to this share of the cache folder's free space


def _free_bytes(folder: Path) -> int:
    import shutil

    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _amount(size: int) -> str:
    return f"{size / 2**30:,.1f} GB" if size >= 2**30 else f"{size / 2**20:,.1f} MB"


def _tensors(cuts: list) -> str:
    return "output" if len(cuts) == 1 else f"{len(cuts)} outputs (the decoder's taps)"


@contextlib.contextmanager
def computing(lock: Path):
    """Hold `lock` (an flock) while features are looked up or computed, so two workers of a
    study sharing a feature store compute each set once; the files themselves are written
    atomically, so a reader never sees a partial one either way."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # a waiter then holds an unlinked lock, and finds the files
            fcntl.flock(handle, fcntl.LOCK_UN)


def _features(forward, shapes: list[tuple], batches, rows: int, paths: list[Path], batch_size: int,
              memory: dict | None = None, mask_shape: tuple | None = None) -> list[np.ndarray]:
    """The prefix's outputs for every batch of `batches()` (tf.data of (images, labels)), one
    array per output (and with `mask_shape`, the batches' masks after them), from `memory`, the
    cache files, or computed and appended batch by batch to them, so memory holds one batch
    however large the dataset. Every call gets one batch shape: a short last batch is padded."""
    if memory is not None and all(str(path) in memory for path in paths):
        return [memory[str(path)] for path in paths]
    if not all(path.is_file() for path in paths):
        def chunks():
            for dataset in batches():
                for images, labels in dataset:
                    n = int(images.shape[0])
                    if n < batch_size:
                        images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), "float32")])
                    out = forward(images)
                    rows_out = [np.asarray(t)[:n] for t in (out if isinstance(out, (list, tuple)) else [out])]
                    yield (*rows_out, np.asarray(labels)) if mask_shape is not None else tuple(rows_out)

        all_shapes = [(rows, *shape) for shape in shapes] + ([(rows, *mask_shape)] if mask_shape is not None else [])
        dtypes = ["float32"] * len(shapes) + (["uint8"] if mask_shape is not None else [])
        write_npy_columns(paths, all_shapes, dtypes, chunks())
    arrays = []
    # Large sets, and rows of a megabyte or more (a decoder's taps), are read from the files batch
    # by batch (the kernel's page cache, not the process, holds them); small rows are held.
    mapped = (sum(path.stat().st_size for path in paths) > IN_MEMORY_LIMIT  # (all of them: one budget)
              or float32_bytes(shapes) >= READ_ROWS_FROM)
    for path in paths:
        array = np.load(path, mmap_mode="r" if mapped else None)
        if memory is not None:
            memory[str(path)] = array
        arrays.append(array)
    return arrays


def _key(layers, cuts: list, train: Feed, val: Feed) -> str:
    """The features' identity: the data, the frozen layers' configuration and weights, and which
    of their tensors are stored (the same layers can be cut in more than one place)."""
    digest = hashlib.sha256()
    digest.update("|".join(f"{t._keras_history[0].name}:{t._keras_history[2]}:{tuple(t.shape[1:])}"
                           for t in cuts).encode())
    for feed in (train, val):
        fit = f"|{feed.fit}" if feed.fit != "stretch" else ""  # (keys made before `fit` stretched)
        digest.update(f"{feed.hwc}|{_name(feed.preprocess)}{fit}|".encode())
        feed.examples.fingerprint(digest)
    if train.augment is not None:
        digest.update(f"{train.augment.spec.model_dump_json()}|{train.augment.seed}".encode())
    for layer in layers:
        digest.update(json.dumps(layer.get_config(), sort_keys=True, default=str).encode())
        for weight in layer.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:20]


def _name(function) -> str:
    if function is None:
        return "none"
    owner = getattr(function, "__self__", None)  # a bound backbone method: its config decides it
    return f"{getattr(function, '__qualname__', function)}:{owner.model_dump_json() if owner is not None else ''}"


def drop_unused(cache_dir: Path, keys: list[str]) -> int:
    """At the end of a run: keep the features its phases used, drop the rest, and say how many
    bytes are kept. (Not earlier: a run's later phases may still need features carried over from
    the previous run.)"""
    kept = 0
    for old in cache_dir.glob("*.npy"):
        if old.name.split("-")[0] not in keys:
            old.unlink(missing_ok=True)
        else:
            kept += old.stat().st_size
    return kept


def kept_note(size: int, final_cache_dir: Path) -> str | None:
    """A line for a cache worth knowing about (>= 1 GB: a segmentation's taps): where it stays
    and how to get the space back; smaller ones go unsaid."""
    if size < 2**30:
        return None
    return (f"feature cache: {_amount(size)} kept in {final_cache_dir} so the next run of this spec skips the "
            "frozen part; delete that folder to reclaim the space")
