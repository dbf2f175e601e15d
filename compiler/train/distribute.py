"""tf.distribute for `tlc train`: MirroredStrategy over local devices, MultiWorkerMirroredStrategy
over a cluster described by TF_CONFIG, and the custom loop the latter needs.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so
multi-worker epochs run `strategy.run` over `experimental_distribute_dataset`; the epoch-level
work (seeds, progress, history, checkpoints) is the same `EpochHooks` the `fit` path uses.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import numpy as np

from tlc.data.tfdata import without_autotune
from tlc.errors import RunError

from .epochs import per_example_loss, validate


def local_cluster(workers: int) -> list[str]:
    """`TF_CONFIG` values for `workers` processes on this machine (free 127.0.0.1 ports), one per
    worker index: for trying multi_worker locally, in tests and in bench/distributed.py."""
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(workers)]


def split_cpu(devices: int) -> None:
    """Expose the CPU as `devices` logical devices (for trying MirroredStrategy on one machine)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError as exc:
        raise RunError(f"--devices {devices}: TensorFlow is already initialised ({exc})") from None


class Strategy:
    """The spec's `train.distribute`, as a re-enterable scope plus who writes the run folder."""

    def __init__(self, kind: str, devices: int | None = None):
        self.kind, self.tf = kind, None
        if devices:
            split_cpu(devices)
        if kind == "none":
            return
        import tensorflow as tf

        if kind == "mirrored":
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
            self.tf = tf.distribute.MirroredStrategy(gpus or cpus)
        else:
            if "TF_CONFIG" not in os.environ:
                raise RunError("train.distribute: multi_worker needs the TF_CONFIG environment variable "
                               "describing the cluster (see docs/distributed.md)")
            self.tf = tf.distribute.MultiWorkerMirroredStrategy()

    @property
    def replicas(self) -> int:
        return self.tf.num_replicas_in_sync if self.tf else 1

    @property
    def is_chief(self) -> bool:
        """Only the chief writes the run folder: the `chief` task, or worker 0 without one."""
        if self.kind != "multi_worker":
            return True
        config = json.loads(os.environ["TF_CONFIG"])
        task = config.get("task", {})
        if task.get("type") == "chief":
            return True
        return task.get("type") == "worker" and task.get("index") == 0 and "chief" not in config.get("cluster", {})

    def scope(self):
        return self.tf.scope() if self.tf else contextlib.nullcontext()


def worker_slices(feed: Any, seed: int, epochs: range, batch_size: int, replicas: int, first: int, local: int):
    """One worker's share of every global batch, as index slices (nothing loaded yet): all workers
    build the same seeded index batches, and replicas first..first+local-1 of the N take their
    near-equal slices (never an empty one: a last global batch smaller than N is dropped).
    Yields (epoch, batch, ids, global batch size)."""
    import tensorflow as tf

    def slices(epoch, batch, ids):
        n = tf.shape(ids)[0]

        def part(j):
            r = tf.cast(first + j, tf.int32)
            lo, hi = n * r // replicas, n * (r + 1) // replicas
            return epoch, batch, ids[lo:hi], n

        return tf.data.Dataset.range(local).map(part)

    return (feed.index_batches(seed, epochs, batch_size)
            .filter(lambda epoch, batch, ids: tf.shape(ids)[0] >= replicas)
            .flat_map(slices))


def fit_multi_worker(strategy: Strategy, model: Any, train: Any, val: Any, loss: Any, batch_size: int,
                     seed: int, epochs: range, hooks: Any, class_weight: dict | None = None) -> None:
    """The custom loop: one `strategy.run` per global batch; metrics are reduced across workers.

    `train` and `val` are data Feeds. Every worker builds the same seeded index batches and
    loads only its replicas' slices of them, so each worker reads (decodes) only its own files.
    """
    import tensorflow as tf

    steps = len(train) // batch_size + (len(train) % batch_size >= strategy.replicas)
    per_example = per_example_loss(loss)
    optimizer = model.optimizer
    replicas = strategy.replicas
    load = train.loader(training=True)
    classes = int(model.output.shape[-1])
    weight_of = tf.constant([(class_weight or {}).get(c, 1.0) for c in range(classes)], tf.float32)

    def shard(context):
        local = replicas // context.num_input_pipelines
        return without_autotune(
            worker_slices(train, seed, epochs, batch_size, replicas, context.input_pipeline_id * local, local)
            .map(lambda epoch, batch, ids, n: (*load(epoch, batch, ids), n), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))

    dataset = strategy.tf.distribute_datasets_from_function(shard)

    def replica_step(inputs):
        images, labels, global_size = inputs
        with tf.GradientTape() as tape:
            scores = model(images, training=True)
            losses = per_example(labels, scores) * tf.gather(weight_of, labels)
            mean = tf.reduce_sum(losses) / tf.cast(global_size, losses.dtype)
        grads = tape.gradient(mean, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        hits = tf.cast(tf.equal(tf.argmax(scores, axis=-1, output_type=labels.dtype), labels), tf.float32)
        return tf.reduce_sum(losses), tf.reduce_sum(hits), tf.cast(tf.size(labels), tf.float32)

    @tf.function
    def train_step(iterator):
        results = strategy.tf.run(replica_step, args=(next(iterator),))
        return [strategy.tf.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

    iterator = iter(dataset)
    for epoch in epochs:
        hooks.begin(epoch)
        totals = np.zeros(3)
        for _ in range(steps):
            totals += [float(v) for v in train_step(iterator)]
            hooks.batch()
        logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}
        logs.update(validate(model, val, batch_size, loss, hooks.spec.task, {}))  # every worker holds the whole model: locally
        hooks.end(epoch, logs)
        if hooks.stopped:
            break
