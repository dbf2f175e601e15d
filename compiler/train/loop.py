"""`tlc train`: phases of epochs, one `fit` call per phase, checkpointed after every epoch.

Per-epoch shuffling and Dropout seeds are derived from (seed, epoch), so a run resumed after a
kill replays exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..components import FieldError
from ..emit import set_frozen
from ..errors import RunError
from ..introspect import count_weights
from ..plan import frozen_through, plan as make_plan
from . import cache, data as datasets
from .distribute import Strategy, fit_multi_worker
from .plots import accuracy_plot
from .runs import RunFolder, State


@dataclass(frozen=True)
class Phase:
    freeze: Any
    frozen_through: int
    epochs: int
    learning_rate: float
    first_epoch: int


class Reporter:
    """Progress hooks; the CLI shows a rich progress bar, the library stays quiet."""

    def note(self, text: str) -> None: ...
    def epoch_started(self, epoch: int, total: int, steps: int) -> None: ...
    def batch_done(self) -> None: ...
    def epoch_done(self, epoch: int, row: dict) -> None: ...


@dataclass
class Result:
    folder: Path
    metrics: dict
    model: Any = None
    wrote: bool = True  # False on a non-chief distributed worker


def schedule(spec, planned, epochs: int | None) -> list[Phase]:
    """The phases to run: `train.phases`, or one phase with the spec's own freeze policy."""
    t = spec.train
    steps = [(p.freeze, p.epochs, p.learning_rate, ("train", "phases", i, "freeze")) for i, p in enumerate(t.phases)]
    if not steps:
        steps = [(spec.freeze, t.epochs, None, ("freeze",))]
    out, first = [], 0
    for policy, n, lr, loc in steps:
        try:
            through = frozen_through(policy, planned.backbone, loc)
        except FieldError as exc:
            raise spec.error(exc.loc, exc.message) from None
        n = epochs or n
        out.append(Phase(policy, through, n, lr or t.optimizer.learning_rate, first))
        first += n
    return out


def train(spec, runs_dir: str | Path = "runs", *, epochs: int | None = None, resume: bool = False,
          use_cache: bool = True, reporter: Reporter | None = None, safe_mode: bool = True,
          devices: int | None = None) -> Result:
    """Train `spec` into `runs_dir/<name>/`; see the module docstring for the guarantees.

    `devices` splits the CPU into that many logical devices first (to try `mirrored` locally).
    """
    try:
        return _train(spec, runs_dir, epochs, resume, use_cache, reporter or Reporter(), safe_mode, devices)
    except OSError as exc:  # disk full, unwritable folder: the previous run folder is untouched
        where = exc.filename or runs_dir
        raise RunError(f"cannot write {where}: {exc.strerror or exc}; "
                       f"{Path(runs_dir) / spec.name} (if any) is untouched") from None


def _train(spec, runs_dir, epochs, resume, use_cache, reporter, safe_mode, devices) -> Result:
    if spec.train is None:
        raise spec.error((), "tlc train needs a `train:` section (data, epochs, ...)")
    if devices and spec.train.distribute != "mirrored":
        raise RunError("--devices only applies to train.distribute: mirrored")
    strategy = Strategy(spec.train.distribute, devices)  # before any other TensorFlow work
    planned = make_plan(spec)
    phases = schedule(spec, planned, epochs)
    dataset = datasets.load(spec)
    folder = RunFolder(runs_dir, spec.name, writer=strategy.is_chief)
    state = folder.start(spec, resume=resume)
    try:
        return _run(spec, planned, phases, dataset, folder, state, use_cache, reporter, safe_mode, resume, strategy)
    except BaseException:
        if state.checkpoint is None and folder.writer:  # nothing worth resuming: leave nothing behind
            shutil.rmtree(folder.work, ignore_errors=True)
        raise


def _run(spec, planned, phases, dataset, folder, state, use_cache, reporter, safe_mode, resume,
         strategy: Strategy) -> Result:
    import keras

    from ..emit import compile as emit

    total = phases[-1].first_epoch + phases[-1].epochs
    keras.utils.set_random_seed(spec.train.seed)
    scope = strategy.scope
    with scope():
        if state.checkpoint:
            model = keras.saving.load_model(folder.checkpoint_path(state), compile=True, safe_mode=safe_mode)
            reporter.note(f"resuming {spec.name} after epoch {state.epochs_done} of {total}")
        else:
            model = emit(spec, planned=planned, safe_mode=safe_mode)
        loss = _loss(spec, model, dataset)
    n_backbone = len(planned.backbone)
    for phase in phases:
        end = phase.first_epoch + phase.epochs
        if state.epochs_done >= end:
            continue
        resuming_inside = state.checkpoint is not None and state.epochs_done > phase.first_epoch
        if not resuming_inside:
            set_frozen(model.layers[:n_backbone], phase.frozen_through)
            with scope():
                model.compile(optimizer=_optimizer(spec, phase.learning_rate), loss=loss, metrics=["accuracy"])
        started = time.perf_counter()
        multi_worker = strategy.kind == "multi_worker"
        with scope():  # the cached tail shares the model's layers and optimizer, so the same scope
            part = cache.split(model, dataset.x_train, dataset.x_val, folder.cache_dir,
                               enabled=use_cache and not multi_worker, batch_size=spec.train.batch_size,
                               off_because="multi_worker: each worker trains the whole model" if multi_worker
                               else "--no-cache")
            if part.model is not model:
                part.model.compile(optimizer=model.optimizer, loss=loss, metrics=["accuracy"])
        state.train_seconds += time.perf_counter() - started
        reporter.note(part.note)
        if part.note not in state.notes:
            state.notes.append(part.note)
        if part.key and part.key not in state.cache_keys:
            state.cache_keys.append(part.key)
        epochs = range(max(state.epochs_done, phase.first_epoch), end)
        steps = -(-len(part.x_train) // spec.train.batch_size)
        hooks = EpochHooks(part.model, spec.train.seed, total, steps, reporter, state,
                           lambda: folder.save_epoch(model, state))
        if multi_worker:
            fit_multi_worker(strategy, part.model, part.x_train, dataset.y_train, part.x_val, dataset.y_val,
                             loss, spec.train.batch_size, spec.train.seed, epochs, hooks, _batches)
        else:
            _fit(part, dataset, spec, epochs, hooks)
    if folder.writer:
        cache.drop_unused(folder.cache_dir, state.cache_keys)
    metrics = _metrics(spec, model, state, phases, dataset, resume, strategy)
    plot = accuracy_plot(state.rows, f"{spec.name}: accuracy per epoch", [p.first_epoch for p in phases])
    return Result(folder.finish(model, state, metrics, spec, plot), metrics, model, folder.writer)


class EpochHooks:
    """The per-epoch work every way of running epochs shares (Keras `fit`, the multi-worker loop):
    reseed Dropout, report progress, record the history row, checkpoint."""

    def __init__(self, model, seed: int, total: int, steps: int, reporter: Reporter, state: State, checkpoint):
        self.model, self.seed, self.total, self.steps = model, seed, total, steps
        self.reporter, self.state, self.checkpoint = reporter, state, checkpoint

    def begin(self, epoch: int) -> None:
        _reseed_random_layers(self.model, self.seed, epoch)
        self.reporter.epoch_started(epoch, self.total, self.steps)
        self.started = time.perf_counter()

    def batch(self) -> None:
        self.reporter.batch_done()

    def end(self, epoch: int, logs: dict) -> None:
        self.state.train_seconds += time.perf_counter() - self.started
        row = {"epoch": epoch, **{k: float(v) for k, v in sorted(logs.items())}}
        self.state.rows.append(row)
        self.state.epochs_done = epoch + 1
        self.checkpoint()
        self.reporter.epoch_done(epoch, row)


def _fit(part: cache.Split, dataset, spec, epochs: range, hooks: EpochHooks) -> None:
    """One `fit` call for a run of epochs (re-creating Keras's data pipeline per epoch is slow)."""
    import keras

    t = spec.train

    class Hooks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            hooks.begin(epoch)

        def on_train_batch_end(self, batch, logs=None):
            hooks.batch()

        def on_epoch_end(self, epoch, logs=None):
            hooks.end(epoch, logs or {})

    validation = None
    if len(dataset.y_val):
        validation = _in_order(part.x_val, dataset.y_val, part.eval_batch_size or t.batch_size)
    part.model.fit(_batches(part.x_train, dataset.y_train, t.seed, epochs, t.batch_size),
                   epochs=epochs.stop, initial_epoch=epochs.start, steps_per_epoch=hooks.steps, verbose=0,
                   shuffle=False, validation_data=validation, callbacks=[Hooks()])


def _batches(x, y, seed: int, epochs: range, batch_size: int):
    """Batches for `epochs`, each epoch in the order `default_rng([seed, epoch])` gives, so that a
    resumed run sees exactly the batches an uninterrupted one would."""
    import tensorflow as tf

    orders = np.stack([np.random.default_rng([seed, e]).permutation(len(x)) for e in epochs])
    xs, ys = tf.constant(np.asarray(x)), tf.constant(y)
    return (tf.data.Dataset.from_tensor_slices(orders)
            .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
            .map(lambda ids: (tf.gather(xs, ids), tf.gather(ys, ids)))
            .prefetch(2))


def _in_order(x, y, batch_size: int):
    """Validation batches as one pipeline built once: given NumPy arrays, Keras would convert
    them again for every epoch's evaluation."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((tf.constant(np.asarray(x)), tf.constant(y))).batch(batch_size)


def _reseed_random_layers(model, seed: int, epoch: int) -> None:
    """Dropout masks depend only on (seed, epoch, layer), not on what ran before."""
    rng = np.random.default_rng([seed, epoch, 7])
    for layer in model.layers:
        for generator in getattr(layer, "_seed_generators", None) or []:
            generator.state.assign(np.array([rng.integers(2**31), 0], dtype=generator.state.dtype))


def _loss(spec, model, dataset):
    import keras

    out = tuple(model.output.shape[1:])
    if out != (dataset.num_classes,):
        if len(out) != 1:
            raise RunError(f"tlc train needs a classifier head; the model outputs {out} "
                           "(use head: {type: dense, classes: N})")
        raise RunError(f"the head has {out[0]} classes but the data has {dataset.num_classes} "
                       f"({', '.join(dataset.class_names)}); set head.classes: {dataset.num_classes}")
    activation = getattr(spec.head, "output_activation", "softmax")
    if activation == "sigmoid":
        raise RunError("tlc train trains single-label classifiers: use output_activation: softmax (or linear)")
    return keras.losses.SparseCategoricalCrossentropy(from_logits=activation == "linear")


def _optimizer(spec, learning_rate: float):
    import keras

    kind = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return kind[spec.train.optimizer.type](learning_rate=learning_rate)


def _metrics(spec, model, state: State, phases, dataset, resumed: bool, strategy: Strategy) -> dict:
    trainable = count_weights(model.trainable_weights)
    total = model.count_params()
    return {
        "name": spec.name,
        "train_seconds": round(state.train_seconds, 3),
        "epochs": state.epochs_done,
        "final": state.rows[-1] if state.rows else {},
        "params": {"total": total, "trainable": trainable, "non_trainable": total - trainable},
        "classes": dataset.class_names,
        "examples": {"train": int(len(dataset.y_train)), "validation": int(len(dataset.y_val))},
        "phases": [{"freeze": p.freeze if isinstance(p.freeze, str) else {"up_to": p.freeze.up_to},
                    "epochs": p.epochs, "learning_rate": p.learning_rate} for p in phases],
        "feature_cache": state.notes,
        "resumed": resumed,
        "distribute": {"strategy": strategy.kind, "replicas": strategy.replicas},
    }
