"""The work of every epoch, whichever way epochs run (Keras `fit`, or the multi-worker loop):
reseed random layers, set the scheduled learning rate, report progress, record the history row,
log to TensorBoard, checkpoint, and decide on early stopping.

Dropout seeds come from (seed, epoch), so a run resumed after a kill replays exactly what the
uninterrupted run would have done.
"""
from __future__ import annotations

import time
import weakref

import numpy as np

from .early_stopping import EarlyStopping
from .optimizing import learning_rate


class EpochHooks:
    def __init__(self, model, spec, phase, first: int, total: int, steps: int, reporter, state, log,
                 checkpoint, save_best):
        self.model, self.spec, self.phase, self.first = model, spec, phase, first
        self.total, self.steps, self.reporter, self.state, self.log = total, steps, reporter, state, log
        self.checkpoint, self.save_best = checkpoint, save_best
        es = spec.train.early_stopping
        self.early = EarlyStopping(es, state.early, spec.task.higher.get(es.monitor.removeprefix("val_"), False)) \
            if es else None

    @property
    def stopped(self) -> bool:
        """The phase has stopped early (also true when resuming right after it did)."""
        return self.early is not None and self.early.should_stop

    def begin(self, epoch: int) -> None:
        reseed_random_layers(self.model, self.spec.train.seed, epoch)
        self.lr = learning_rate(self.spec, self.phase.learning_rate, epoch - self.first, self.phase.epochs)
        if self.lr is not None:
            self.model.optimizer.learning_rate.assign(self.lr)
        self.reporter.epoch_started(epoch, self.total, self.steps)
        self.started = time.perf_counter()

    def batch(self, steps: int = 1) -> None:
        self.reporter.batch_done(steps)

    def end(self, epoch: int, logs: dict) -> None:
        self.state.train_seconds += time.perf_counter() - self.started
        row = {"epoch": epoch, **{k: float(v) for k, v in sorted(logs.items()) if k != "learning_rate"}}
        if self.lr is not None:
            row["learning_rate"] = float(self.lr)
        self.state.rows.append(row)
        self.state.epochs_done = epoch + 1
        if self.early is not None and self.early.update(epoch, row) and self.spec.train.early_stopping.restore_best:
            self.save_best()
        if self.stopped:
            self.state.stops.append(self.early.reason(epoch))
        self.checkpoint()
        self.log.write(epoch, row)
        self.reporter.epoch_done(epoch, row)
        if self.stopped:
            self.reporter.note(f"early stopping: {self.state.stops[-1]['reason']}")


def fit(part, spec, epochs: range, hooks: EpochHooks, class_weight: dict | None, batches=None) -> None:
    """One Keras `fit` call for a run of epochs (re-creating Keras's data pipeline per epoch is slow),
    over `batches` when given (the same training batches, built once for a tune worker's trials)."""
    import keras

    t = spec.train

    in_memory = in_memory_validation(part.model, part.val, part.eval_batch_size or t.batch_size, part.model.loss)

    class Hooks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            hooks.begin(epoch)

        def on_train_batch_end(self, batch, logs=None):  # `batch`: the first step of this execution
            hooks.batch(min(self.model.steps_per_execution, hooks.steps - batch))

        def on_epoch_end(self, epoch, logs=None):
            hooks.end(epoch, {**(logs or {}), **(in_memory() if in_memory else {})})
            if hooks.stopped:
                self.model.stop_training = True

    validation = part.val.in_order(part.eval_batch_size or t.batch_size) if len(part.val) and not in_memory else None
    part.model.fit(batches if batches is not None else part.train.epochs(t.seed, epochs, t.batch_size),
                   epochs=epochs.stop, initial_epoch=epochs.start, steps_per_epoch=hooks.steps, verbose=0,
                   shuffle=False, validation_data=validation, callbacks=[Hooks()], class_weight=class_weight)


def reseed_random_layers(model, seed: int, epoch: int) -> None:
    """Dropout masks depend only on (seed, epoch, layer), not on what ran before."""
    rng = np.random.default_rng([seed, epoch, 7])
    for layer in model.layers:
        for generator in getattr(layer, "_seed_generators", None) or []:
            generator.state.assign(np.array([rng.integers(2**31), 0], dtype=generator.state.dtype))


def validate(model, feed, batch_size: int, loss, task, record: dict) -> dict:
    """{val_loss, val_<the task's metrics>} of `model` over every example of `feed`, in this
    process, in inference mode ({} for an empty feed): outside `fit`, where Keras's `evaluate`
    would spread the batches over a multi-worker strategy's replicas."""
    if not len(feed):
        return {}
    targets, outputs = outputs_of(model, feed, batch_size)
    losses = np.asarray(per_example_loss(loss)(targets, outputs))
    measured = task.measured(targets, outputs, record)
    return {"val_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in measured.items()}}


def outputs_of(model, feed, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(targets, the model's raw outputs in inference mode) for every example of `feed`, in order."""
    targets, outputs = [], []
    for images, labels in feed.in_order(batch_size):
        outputs.append(np.asarray(model(images, training=False)))
        targets.append(labels.numpy())
    if not outputs:
        width = tuple(int(d) for d in model.output.shape[1:])
        return np.zeros((0, *width[:-1]), "float32"), np.zeros((0, *width), "float32")
    return np.concatenate(targets), np.concatenate(outputs)


_VALIDATIONS = weakref.WeakKeyDictionary()  # model -> its traced validation sums


def in_memory_validation(model, feed, batch_size: int, loss):
    """`validate` for a head on cached features, as one traced call per batch of tensors (made
    once when the features are in memory, read from their memory map each time when not):
    Keras's `evaluate` built an iterator and ran its callbacks every epoch (~25 ms an epoch, more
    than the head's validation itself). The traced call is kept with the model, so a tune
    worker's compiled head reuses it. None when the feed is not one such array, or the task is not
    classification (Keras's `evaluate` then computes the task's metrics)."""
    images = feed.examples.images
    if not len(feed) or images is None or feed.examples.more or feed.preprocess is not None or \
            feed.augment is not None or feed.examples.labels.ndim != 1:
        return None
    import tensorflow as tf

    sums, config = _VALIDATIONS.get(model), loss.get_config()
    if sums is None or sums[0] != config:
        per_example, owner = per_example_loss(loss), weakref.ref(model)  # (weak: the entry dies with the model)

        @tf.function(input_signature=[tf.TensorSpec((None, *images.shape[1:]), tf.float32),
                                      tf.TensorSpec((None,), tf.int64)], reduce_retracing=True)
        def traced(x, y):
            scores = owner()(x, training=False)
            hits = tf.cast(tf.argmax(scores, axis=-1) == y, tf.float32)
            return tf.reduce_sum(per_example(y, scores)), tf.reduce_sum(hits)

        sums = _VALIDATIONS[model] = (config, traced)
    n = len(feed)

    def batches():
        for i in range(0, n, batch_size):
            yield tf.constant(images[i:i + batch_size], tf.float32), tf.constant(feed.examples.labels[i:i + batch_size])

    held = None if isinstance(images, np.memmap) else list(batches())

    def run() -> dict:
        total = hits = 0.0
        for x, y in held or batches():
            loss_sum, hit_sum = sums[1](x, y)
            total, hits = total + float(loss_sum), hits + float(hit_sum)
        regularization = sum(float(v) for v in model.losses)
        return {"val_loss": total / n + regularization, "val_accuracy": hits / n}

    return run


def per_example_loss(loss):
    """The same loss without its reduction: one value per example (the multi-worker step weighs
    them by class and divides by the global batch; validation averages them)."""
    return loss.__class__.from_config({**loss.get_config(), "reduction": "none"})
