"""Decoding image files with TensorFlow (in parallel inside tf.data), and finding unreadable ones.

Images come out as float32 in [0, 1], resized (bilinear, like Keras's
`image_dataset_from_directory`) to the model's input and converted to its channel count:
colour to one channel by luminance (`tf.image.rgb_to_grayscale`), one channel to several by
repetition, an alpha channel dropped. Every format `tf.io.decode_image` reads works at every
channel count (it refuses GIFs as one channel, so files are decoded as RGB first).
"""
from __future__ import annotations

import numpy as np

from .tfdata import without_autotune

SCAN_BATCH = 1024


def decode(path, size: tuple[int, int], channels: int):
    """One image file -> (h, w, channels) float32 in [0, 1] (a tf.data map function)."""
    import tensorflow as tf

    return decode_bytes(tf.io.read_file(path), size, channels)


def decode_bytes(contents, size: tuple[int, int], channels: int):
    """An encoded image (PNG, JPEG, GIF, BMP, WebP bytes) -> (h, w, channels) float32 in [0, 1],
    exactly as files are decoded for training and `tlc predict` (so `tlc serve` answers the same)."""
    import tensorflow as tf

    image = tf.cast(tf.io.decode_image(contents, channels=3, expand_animations=False), tf.float32)
    if channels != 3:
        image = tf.image.rgb_to_grayscale(image)
    image = tf.image.resize(image, size)
    if channels not in (1, 3):
        image = tf.repeat(image, channels, axis=-1)
    image.set_shape((*size, channels))
    return image / 255.0


def decode_many(paths, size: tuple[int, int], channels: int):
    """A batch of paths -> (n, h, w, channels)."""
    import tensorflow as tf

    return tf.map_fn(lambda p: decode(p, size, channels), paths,
                     fn_output_signature=tf.TensorSpec((*size, channels), tf.float32))


def unreadable(files: np.ndarray) -> np.ndarray:
    """Indices of the files TensorFlow cannot decode (missing, truncated, not an image).

    One parallel pass; JPEGs are decoded at 1/8 scale (DCT scaling reads all the entropy-coded
    data, so truncation is still caught, at a fraction of the cost).
    """
    import tensorflow as tf

    from ..quiet import fd2_silenced

    if len(files) == 0:
        return np.zeros(0, dtype="int64")

    def check(index, path):
        raw = tf.io.read_file(path)
        size = tf.cond(tf.io.is_jpeg(raw),
                       lambda: tf.size(tf.io.decode_jpeg(raw, channels=3, ratio=8)),
                       lambda: tf.size(tf.io.decode_image(raw, channels=3, expand_animations=False)))
        return index, size

    readable = without_autotune(tf.data.Dataset.from_tensor_slices((np.arange(len(files)), files))
                                .map(check, num_parallel_calls=tf.data.AUTOTUNE)
                                .ignore_errors()
                                .batch(SCAN_BATCH))
    good = np.zeros(len(files), dtype=bool)
    with fd2_silenced():  # libjpeg reports broken files on fd 2 itself; we name them instead
        for index, _ in readable.as_numpy_iterator():
            good[index] = True
    return np.flatnonzero(~good)
