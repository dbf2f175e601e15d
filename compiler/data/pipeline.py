"""One tf.data pipeline for every use of data: training epochs, evaluation in order, feature
extraction. A `Feed` turns index batches into model inputs: it decodes files in parallel, or
reads them from the decoded-image store (`store.py`), or gathers rows of an in-memory or
memory-mapped array; then it augments training batches and applies the backbone's
preprocessing. Augmentation comes after the store, so it stays random per epoch.

Training batches are built from per-epoch orders `default_rng([seed, epoch]).permutation(n)`, so
a resumed run sees exactly the batches an uninterrupted run would; a distributed worker slices
index batches before loading, so it reads only its own files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .images import decode_many
from .sources import Examples
from .tfdata import without_autotune

IN_MEMORY_LIMIT = 512 * 2**20  # larger arrays are read from their memory map batch by batch
HELD_LIMIT = 64 * 2**20  # smaller arrays in memory are held as a tensor too (`rows_of`)
HEAVY_BATCH = 64 * 2**20  # a batch of inputs above this is loaded one at a time (`Feed._heavy`)


@dataclass
class Feed:
    examples: Examples
    hwc: tuple[int, int, int]
    preprocess: Callable | None = None
    augment: Any = None  # an Augmenter, for training batches
    views: int = 1  # an array of `views` stacked copies (cached augmented views): epoch e reads view e mod views
    store: Any = None  # an ImageStore holding the files decoded (None: decode every time)
    fit: str = "stretch"  # train.data.fit: how a file of another aspect meets the input (the store has its own)
    # Distillation's targets in place of the labels: (views * n, width) float32 rows of
    # (the targets, the task's no-label marker for an unlabeled image; the teacher's answers), epoch
    # e reading view e mod views.
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.examples)

    @classmethod
    def of(cls, images: np.ndarray | tuple, labels: np.ndarray | None = None, views: int = 1,
           targets: np.ndarray | None = None) -> Feed:
        """A feed over a ready array (cached features, or images already preprocessed), or over
        several arrays row for row (a decoder's cached taps: the batches' inputs are tuples)."""
        first, *more = images if isinstance(images, (tuple, list)) else (images,)
        n = len(first) // views
        labels = np.zeros(n, "int64") if labels is None else labels
        return cls(Examples(labels, images=first, more=tuple(more)), tuple(first.shape[1:]), views=views,
                   targets=targets)

    # --- index batches -------------------------------------------------------------------------
    def index_batches(self, seed: int, epochs: range, batch_size: int):
        """(epoch, batch number, example indices) for every training batch of `epochs`."""
        import tensorflow as tf

        n = len(self)
        orders = np.stack([np.random.default_rng([seed, e]).permutation(n) for e in epochs]) if len(epochs) \
            else np.zeros((0, n), "int64")
        numbers = np.asarray(list(epochs), dtype="int64")

        def one_epoch(epoch, order):
            batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
            return batches.enumerate().map(lambda b, ids: (epoch, b, ids))

        return tf.data.Dataset.from_tensor_slices((numbers, orders)).flat_map(one_epoch)

    def ordered_batches(self, batch_size: int):
        import tensorflow as tf

        ids = tf.data.Dataset.range(len(self)).batch(batch_size)
        return ids.enumerate().map(lambda b, i: (tf.constant(-1, tf.int64), b, i))

    # --- loading -------------------------------------------------------------------------------
    def loader(self, training: bool) -> Callable:
        """(epoch, batch, ids) -> (inputs, labels), as a tf.data map function."""
        import tensorflow as tf

        ex = self.examples
        n = len(self)
        if ex.files is not None:
            read, (h, w, c) = self.file_reader(), self.hwc

            def rows(epoch, ids):
                out = tf.numpy_function(read, [ids], tf.uint8, stateful=False)
                out.set_shape((None, h, w, c))
                return tf.cast(out, tf.float32) / 255.0
        else:
            readers = [self._array_rows(array, n) for array in (ex.images, *ex.more)]

            def rows(epoch, ids):
                out = tuple(read(epoch, ids) for read in readers)
                return out if len(out) > 1 else out[0]

        augment = self.augment if training else None
        preprocess = self.preprocess
        if self.targets is not None and training:
            targets, target_views = self._answer_rows(self.targets), len(self.targets) // max(n, 1)

            def answers(epoch, ids):
                return targets(ids + self._offset(epoch, n, target_views))
        else:
            labels = self._answer_rows(ex.labels)

            def answers(epoch, ids):
                return labels(ids)

        # Segmentation: geometric augmentation moves the masks too (a teacher's targets came moved)
        moves_masks = ex.labels.ndim == 3 and not (self.targets is not None and training)

        def load(epoch, batch, ids):
            x, y = rows(epoch, ids), answers(epoch, ids)
            if augment is not None and moves_masks:
                x, y = augment(x, ids, epoch, masks=y)
            elif augment is not None:
                x = augment(x, ids, epoch)
            if preprocess is not None:
                x = preprocess(x)
            return x, y

        return load

    def _array_rows(self, array: np.ndarray, n: int) -> Callable:
        """(epoch, ids) -> those rows of `array` (of the epoch's view): gathered from a constant
        when it is small, else copied out batch by batch (read from its file when it is
        memory-mapped)."""
        read = rows_of(array, held=not isinstance(array, np.memmap) and array.nbytes <= HELD_LIMIT)
        return lambda epoch, ids: read(ids + self._offset(epoch, n))

    @staticmethod
    def _answer_rows(array: np.ndarray) -> Callable:
        """ids -> those rows of the labels or targets: gathered from a constant, or, for masks
        (an image's worth of answers each), read from the array when the batch asks: a constant is
        a second copy of them all, and a memory map's pages count as the process's."""
        return rows_of(array, held=array.ndim < 3)

    def file_reader(self) -> Callable:
        """ids -> (n, h, w, c) uint8 images of those files: from the store, or decoded."""
        files, (h, w, c) = self.examples.files, self.hwc
        if self.store is not None:
            return self.store.reader(files)
        return lambda ids: decode_many(files[np.asarray(ids)], (h, w), c, self.fit)

    def _offset(self, epoch, n: int, views: int | None = None):
        """Where epoch `epoch`'s view starts in an array of `views` (default: the feed's) stacked views."""
        import tensorflow as tf

        views = self.views if views is None else views
        if views == 1:
            return tf.constant(0, tf.int64)
        return (tf.math.floormod(tf.maximum(epoch, 0), views)) * n

    def epochs(self, seed: int, epochs: range, batch_size: int):
        """Training batches for `epochs` (shuffled, augmented), decoded in parallel and prefetched."""
        return _parallel(self.index_batches(seed, epochs, batch_size), self.loader(training=True),
                         self._heavy(batch_size))

    def in_order(self, batch_size: int):
        """Every example once, in order, without augmentation (validation, test, features)."""
        return _parallel(self.ordered_batches(batch_size), self.loader(training=False), self._heavy(batch_size))

    def _heavy(self, batch_size: int) -> bool:
        """Whether a batch of inputs is large (a decoder's cached taps: ~10 MB an image at 256x256),
        so that one batch is loaded at a time, when the step asks for it: two in flight and two
        prefetched held ~0.9 GB more than the model needs, and reading one (pread, from the page
        cache) takes a few percent of the step it feeds."""
        if self.examples.images is None:
            return False
        row = float32_bytes(a.shape[1:] for a in (self.examples.images, *self.examples.more))
        return row * batch_size > HEAVY_BATCH

    def array(self, batch_size: int = 32) -> np.ndarray:
        """Every example once, in order, as one array of network inputs (for checks and plots)."""
        return np.concatenate([x.numpy() for x, _ in self.in_order(batch_size)])

    def augmented_view(self, view: int, batch_size: int):
        """Every training example once, in order, augmented as view `view` (for cached views)."""
        import tensorflow as tf

        ids = tf.data.Dataset.range(len(self)).batch(batch_size)
        batches = ids.enumerate().map(lambda b, i: (tf.constant(view, tf.int64), b, i))
        return _parallel(batches, self.loader(training=True))


def float32_bytes(shapes) -> int:
    """Bytes of one example of float32 tensors of these shapes (a batch's row of inputs)."""
    return 4 * sum(int(np.prod(shape)) for shape in shapes)


def rows_of(array: np.ndarray, held: bool) -> Callable:
    """ids (a tensor) -> those rows of `array` as a tensor: gathered from a constant copy (`held`:
    small arrays), else read when asked, with `pread` from a memory-mapped file or gathered from
    the array in memory. A constant is a second copy of the array; a NumPy gather runs in Python
    and waits for the training loop's GIL (~2 ms a batch: a small head's 8 epochs on cached
    features took 3.4 s instead of 2.6), so only arrays over `HELD_LIMIT` are gathered so."""
    import tensorflow as tf

    if held:
        constant = tf.constant(np.asarray(array))
        return lambda ids: tf.gather(constant, ids)
    shape, dtype = tuple(array.shape[1:]), tf.as_dtype(array.dtype)
    read = row_reader(array) if isinstance(array, np.memmap) else row_gatherer(array)

    def rows(ids):
        out = tf.numpy_function(read, [ids], dtype, stateful=False)
        out.set_shape((None, *shape))
        return out

    return rows


def row_reader(mapped: np.memmap) -> Callable:
    """ids -> those rows of a memory-mapped .npy (cached features, moved masks), read with `pread`
    straight into the batch: pages read through a memory map count in the process's resident
    memory (a 5 GB cache of a decoder's taps would look like 5 GB more), pages read into a buffer
    stay in the page cache, which the kernel owns."""
    import os
    import weakref

    fd = os.open(mapped.filename, os.O_RDONLY)
    shape, dtype = tuple(mapped.shape[1:]), mapped.dtype
    row_bytes, start = int(np.prod(shape)) * dtype.itemsize, int(mapped.offset)

    def read(ids) -> np.ndarray:
        ids = np.asarray(ids)
        out = aligned_empty((len(ids), *shape), dtype)
        for j, i in enumerate(ids):
            os.preadv(fd, [memoryview(out[j]).cast("B")], start + int(i) * row_bytes)
        return out

    weakref.finalize(read, os.close, fd)
    return read


def row_gatherer(array: np.ndarray) -> Callable:
    """ids -> those rows of an array in memory, gathered into an aligned batch (which TensorFlow
    takes without copying it again)."""
    def gather(ids) -> np.ndarray:
        ids = np.asarray(ids)
        return np.take(array, ids, axis=0, out=aligned_empty((len(ids), *array.shape[1:]), array.dtype))

    return gather


def aligned_empty(shape: tuple, dtype=np.float32) -> np.ndarray:
    """An uninitialised array whose data start on a 64-byte boundary: TensorFlow wraps such an
    array as a tensor without copying it (Eigen's alignment), where a plain one (16-byte aligned
    by malloc) is copied, a second batch of cached taps held at once."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size].view(dtype).reshape(shape)


def _parallel(batches, load, heavy: bool = False):
    """Index batches loaded in parallel (one call per core) and prefetched; `heavy` batches one
    at a time."""
    import tensorflow as tf

    if heavy:
        return without_autotune(batches.map(load))
    return without_autotune(batches.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
