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

from ..errors import RunError


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


def fit_multi_worker(strategy: Strategy, model: Any, x, y, x_val, y_val, loss: Any, batch_size: int,
                     seed: int, epochs: range, hooks: Any, batches) -> None:
    """The custom loop: one `strategy.run` per global batch; metrics are reduced across workers."""
    import tensorflow as tf

    steps = len(x) // batch_size + (len(x) % batch_size >= strategy.replicas)
    per_example = loss.__class__.from_config({**loss.get_config(), "reduction": "none"})
    optimizer = model.optimizer

    replicas = strategy.replicas

    def shard(context):
        """This worker's slices of every global batch: all workers build the same seeded batches
        and each of the N replicas takes a near-equal share (never an empty one: a last global
        batch smaller than N is dropped)."""
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def slices(images, labels):
            n = tf.shape(labels)[0]

            def part(j):
                r = tf.cast(first + j, tf.int32)
                lo, hi = n * r // replicas, n * (r + 1) // replicas
                return images[lo:hi], labels[lo:hi], n

            return tf.data.Dataset.range(local).map(part)

        return (batches(x, y, seed, epochs, batch_size)
                .filter(lambda images, labels: tf.shape(labels)[0] >= replicas)
                .flat_map(slices))

    dataset = strategy.tf.distribute_datasets_from_function(shard)

    def replica_step(inputs):
        images, labels, global_size = inputs
        with tf.GradientTape() as tape:
            scores = model(images, training=True)
            losses = per_example(labels, scores)
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
        if len(y_val):  # every worker holds the whole model: evaluate locally, outside `fit`
            scores = np.concatenate([np.asarray(model(x_val[i:i + batch_size], training=False))
                                     for i in range(0, len(x_val), batch_size)])
            logs["val_loss"] = float(np.mean(per_example(y_val, scores)))
            logs["val_accuracy"] = float(np.mean(np.argmax(scores, axis=-1) == y_val))
        hooks.end(epoch, logs)
