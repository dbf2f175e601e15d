"""`tlc train`: phases of epochs, one `fit` call per phase, checkpointed after every epoch.

Per-epoch shuffling and Dropout seeds are derived from (seed, epoch), so a run resumed after a
kill replays exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

import json
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
from .. import data as datasets
from . import cache, controls
from .distribute import Strategy, fit_multi_worker
from .plots import accuracy_plot, import_in_background
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


def preflight(path, epochs: int | None = None, seed: int | None = None):
    """Everything about a spec file `tlc train` can check without TensorFlow (validation, shapes,
    freeze policies of every phase, the weights file, the data path): a bad spec fails fast.
    `seed` overrides `train.seed` (recorded in spec.lock.yaml)."""
    from ..emit import require_buildable

    spec, planned = require_buildable(path)
    _validate(spec, planned, epochs)
    if seed is not None:
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})})
    return spec


def _validate(spec, planned, epochs: int | None) -> list[Phase]:
    if spec.train is None:
        raise spec.error((), "tlc train needs a `train:` section (data, epochs, ...)")
    phases = schedule(spec, planned, epochs)
    datasets.check_source(spec)
    es = spec.train.early_stopping
    if es and es.monitor.startswith("val_") and spec.train.data.validation_split == 0:
        raise spec.error(("train", "early_stopping", "monitor"),
                         f"{es.monitor} needs validation data; set train.data.validation_split above 0")
    return phases


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
    planned = make_plan(spec)
    phases = _validate(spec, planned, epochs)
    if devices and spec.train.distribute != "mirrored":
        raise RunError("--devices only applies to train.distribute: mirrored")
    strategy = Strategy(spec.train.distribute, devices)  # before any other TensorFlow work
    dataset = datasets.load(spec)
    reporter.note(_data_note(dataset))
    folder = RunFolder(runs_dir, spec.name, writer=strategy.is_chief)
    state = folder.start(spec, resume=resume)
    try:
        with datasets.naming_unreadable([dataset.train, dataset.val], spec.input.hwc[2]):
            return _run(spec, planned, phases, dataset, folder, state, use_cache, reporter, safe_mode, resume,
                        strategy)
    except BaseException:
        if state.checkpoint is None and folder.writer:  # nothing worth resuming: leave nothing behind
            shutil.rmtree(folder.work, ignore_errors=True)
        raise


def _run(spec, planned, phases, dataset, folder, state, use_cache, reporter, safe_mode, resume,
         strategy: Strategy) -> Result:
    import keras

    from ..emit import compile as emit

    total = phases[-1].first_epoch + phases[-1].epochs
    import_in_background()
    keras.utils.set_random_seed(spec.train.seed)
    scope = strategy.scope
    with scope():
        if state.checkpoint:
            model = keras.saving.load_model(folder.checkpoint_path(state), compile=True, safe_mode=safe_mode)
            reporter.note(f"resuming {spec.name} after epoch {state.epochs_done} of {total}")
        else:
            model = emit(spec, planned=planned, safe_mode=safe_mode)
        loss = _loss(spec, model, dataset)
    train_feed, val_feed = datasets.feeds(spec, dataset)
    weights = controls.class_weights(spec, dataset.train.labels, dataset.num_classes)
    log = controls.TensorBoardLog(folder.work, enabled=folder.writer)
    n_backbone = len(planned.backbone)
    for index, phase in enumerate(phases):
        if index < state.phases_done:
            continue
        if len(state.phase_starts) <= index:  # a new phase (early stopping may have moved its start)
            state.phase_starts.append(state.epochs_done)
            state.early = {}
        first = state.phase_starts[index]
        resuming_inside = state.checkpoint is not None and state.epochs_done > first
        if not resuming_inside:
            set_frozen(model.layers[:n_backbone], phase.frozen_through)
            with scope():
                model.compile(optimizer=_optimizer(spec, phase.learning_rate), loss=loss, metrics=["accuracy"])
        started = time.perf_counter()
        multi_worker = strategy.kind == "multi_worker"
        with scope():  # the cached tail shares the model's layers and optimizer, so the same scope
            part = cache.split(model, train_feed, val_feed, folder.cache_dir,
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
        epochs = range(state.epochs_done, first + phase.epochs)
        steps = -(-len(part.train) // spec.train.batch_size)
        hooks = EpochHooks(part.model, spec, phase, first, total, steps, reporter, state, log,
                           checkpoint=lambda: folder.save_epoch(model, state),
                           save_best=lambda: folder.save_best(model))
        if not hooks.stopped:
            if multi_worker:
                fit_multi_worker(strategy, part.model, part.train, part.val, loss, spec.train.batch_size,
                                 spec.train.seed, epochs, hooks, weights)
            else:
                _fit(part, spec, epochs, hooks, weights)
        if spec.train.early_stopping and spec.train.early_stopping.restore_best and folder.best_exists():
            model.load_weights(folder.best_path)
            reporter.note(f"restored the weights of epoch {state.early['best_epoch'] + 1} "
                          f"(best {spec.train.early_stopping.monitor} {state.early['best']:.4f})")
        state.phases_done = index + 1
    log.close()
    if folder.writer:
        cache.drop_unused(folder.cache_dir, state.cache_keys)
    metrics = _metrics(spec, model, state, phases, dataset, resume, strategy)
    plot = accuracy_plot(state.rows, f"{spec.name}: accuracy per epoch", state.phase_starts)
    extra = {"split.json": json.dumps(split_record(dataset), indent=1) + "\n"}
    return Result(folder.finish(model, state, metrics, spec, plot, extra), metrics, model, folder.writer)


class EpochHooks:
    """The per-epoch work every way of running epochs shares (Keras `fit`, the multi-worker loop):
    reseed Dropout, set the scheduled learning rate, report progress, record the history row,
    log to TensorBoard, checkpoint, and decide on early stopping."""

    def __init__(self, model, spec, phase: Phase, first: int, total: int, steps: int, reporter: Reporter,
                 state: State, log, checkpoint, save_best):
        self.model, self.spec, self.phase, self.first = model, spec, phase, first
        self.total, self.steps, self.reporter, self.state, self.log = total, steps, reporter, state, log
        self.checkpoint, self.save_best = checkpoint, save_best
        es = spec.train.early_stopping
        self.early = controls.EarlyStopping(es, state.early) if es else None

    @property
    def stopped(self) -> bool:
        """The phase has stopped early (also true when resuming right after it did)."""
        return self.early is not None and self.early.should_stop

    def begin(self, epoch: int) -> None:
        _reseed_random_layers(self.model, self.spec.train.seed, epoch)
        self.lr = controls.learning_rate(self.spec, self.phase.learning_rate, epoch - self.first, self.phase.epochs)
        if self.lr is not None:
            self.model.optimizer.learning_rate.assign(self.lr)
        self.reporter.epoch_started(epoch, self.total, self.steps)
        self.started = time.perf_counter()

    def batch(self) -> None:
        self.reporter.batch_done()

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


def _fit(part: cache.Split, spec, epochs: range, hooks: EpochHooks, class_weight: dict | None) -> None:
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
            if hooks.stopped:
                self.model.stop_training = True

    validation = part.val.in_order(part.eval_batch_size or t.batch_size) if len(part.val) else None
    part.model.fit(part.train.epochs(t.seed, epochs, t.batch_size),
                   epochs=epochs.stop, initial_epoch=epochs.start, steps_per_epoch=hooks.steps, verbose=0,
                   shuffle=False, validation_data=validation, callbacks=[Hooks()], class_weight=class_weight)


def split_record(dataset) -> dict:
    """What `tlc evaluate` needs to find the held-out examples again (split.json)."""
    record = {"classes": dataset.class_names,
              "counts": {part: int(len(getattr(dataset, part))) for part in ("train", "val", "test")},
              "indices": {part: dataset.indices[part].tolist() for part in ("val", "test")},
              "skipped": dataset.skipped}
    for part in ("val", "test"):
        examples = getattr(dataset, part)
        if examples.files is not None:
            record[f"{part}_files"] = [[str(f), int(y)] for f, y in zip(examples.files, examples.labels)]
    return record


def _data_note(dataset) -> str:
    counts = ", ".join(f"{len(getattr(dataset, p)):,} {p}" for p in ("train", "val", "test") if len(getattr(dataset, p)))
    source = "streamed from files" if dataset.train.streamed else "in memory"
    skipped = f"; skipped {len(dataset.skipped)} unreadable file(s)" if dataset.skipped else ""
    return f"data: {counts} examples of {dataset.num_classes} classes ({source}){skipped}"


def _reseed_random_layers(model, seed: int, epoch: int) -> None:
    """Dropout masks depend only on (seed, epoch, layer), not on what ran before."""
    rng = np.random.default_rng([seed, epoch, 7])
    for layer in model.layers:
        for generator in getattr(layer, "_seed_generators", None) or []:
            generator.state.assign(np.array([rng.integers(2**31), 0], dtype=generator.state.dtype))


def _loss(spec, model, dataset):
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
    return controls.loss(spec, from_logits=activation == "linear")


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
        "examples": {"train": len(dataset.train), "validation": len(dataset.val), "test": len(dataset.test)},
        "skipped_files": dataset.skipped,
        "phases": [{"freeze": p.freeze if isinstance(p.freeze, str) else {"up_to": p.freeze.up_to},
                    "epochs": p.epochs, "learning_rate": p.learning_rate} for p in phases],
        "feature_cache": state.notes,
        "early_stopping": state.stops,
        "class_weight": controls.class_weights(spec, dataset.train.labels, dataset.num_classes),
        "resumed": resumed,
        "distribute": {"strategy": strategy.kind, "replicas": strategy.replicas},
    }
