"""Precise batch-norm statistics after training (fvcore's and mmpretrain's "precise BN").

A Keras batch norm keeps moving statistics with momentum 0.99, so after a short run they lag far
behind its weights: a model with high training accuracy can predict one class in inference mode
(keras-team/keras#6014). After the last phase, the moving mean and variance of every batch norm
that trained in it become the average of its batch statistics over N training images, without
augmentation. Batch norms frozen in the last phase keep theirs: the layers after them learned
with those statistics.

How: each batch goes through the model in training mode with the layers' momentum at 0, so a
layer's moving statistics are that batch's; they are read back and averaged, weighted by batch
size. One traced forward pass, whatever the model (nested ones included).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tlc.spec.models import PRECISE_BN_IMAGES


def images_wanted(setting) -> int | None:
    """`train.recalibrate_bn` -> how many training images to average over (None: off)."""
    if setting is False:
        return None
    return getattr(setting, "images", PRECISE_BN_IMAGES)


def sample(feed, n: int, seed: int):
    """`n` training examples of a feed, a seeded choice kept in the feed's order (all when fewer)."""
    if n >= len(feed):
        return feed
    chosen = np.sort(np.random.default_rng([seed, 6014]).permutation(len(feed))[:n])
    return dataclasses.replace(feed, examples=feed.examples.take(chosen), targets=None)


def trained_batch_norms(model) -> list:
    """The BatchNormalization layers that train now (after the last phase's freeze), nested
    models' included, in order."""
    import keras

    found: list = []

    def walk(layer) -> None:
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        for inner in getattr(layer, "layers", None) or []:
            walk(inner)

    for layer in model.layers:
        walk(layer)
    return found


def recalibrate(model, batches, layers: list) -> int:
    """Set each of `layers`' moving mean and variance to the batch-size-weighted average of its
    batch statistics over `batches` (inputs of `model`); returns how many images were seen. On
    an error the layers are left as they were."""
    import tensorflow as tf

    saved = [(layer.momentum, layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    sums = [[np.zeros_like(mean, np.float64), np.zeros_like(variance, np.float64)] for _, mean, variance in saved]
    forward = tf.function(lambda x: model(x, training=True), reduce_retracing=True)
    seen = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # the moving statistics become the batch's (read when traced)
        for x in batches:
            forward(x)
            n = int((x[0] if isinstance(x, (tuple, list)) else x).shape[0])  # (a decoder's tail takes taps)
            for layer, (mean, variance) in zip(layers, sums):
                mean += n * layer.moving_mean.numpy()
                variance += n * layer.moving_variance.numpy()
            seen += n
    except BaseException:
        for layer, (_, mean, variance) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, (momentum, _, _) in zip(layers, saved):
            layer.momentum = momentum
    if seen:
        for layer, (mean, variance) in zip(layers, sums):
            layer.moving_mean.assign((mean / seen).astype(np.float32))
            layer.moving_variance.assign((variance / seen).astype(np.float32))
    return seen
