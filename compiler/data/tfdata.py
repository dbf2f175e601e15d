"""tf.data settings every tlc pipeline shares (below `images` and `pipeline`, which both use them)."""
from __future__ import annotations


def without_autotune(dataset):
    """`dataset` with tf.data's autotuning off. Its model thread sleeps for periods that double up
    to a minute, and destroying an iterator waits for it to wake: a finished `fit` hung for
    16-18 s in 2 of 5 augmented runs (py-spy: in `~IteratorResource`); without it, 0 of 10, and
    epochs as fast. AUTOTUNE parallelism then means one call per core."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
