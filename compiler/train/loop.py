"""`tlc train`: phases of epochs, one `fit` call per phase, checkpointed after every epoch.

This module orchestrates: `PhaseRunner` runs one phase at a time over one model. What a spec
must satisfy is the preflight's (`tlc.spec.preflight`), what each epoch does is `epochs`', the
loss is `losses`', the optimizer and learning rate `optimizing`'s, what is cached is `cache`'s and
what the run folder holds is `runs`' and `state`'s.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tlc import data as datasets
from tlc.build.emit import set_frozen
from tlc.data.sources import given_colours
from tlc.data.split import split_record
from tlc.data.store import keeping_in
from tlc.errors import RunError, hides_interrupt
from tlc.show.figures import accuracy_plot, import_in_background
from tlc.show.progress import Reporter
from tlc.spec.preflight import Ready, prepare

from . import cache, losses, optimizing, precise_bn, rewrite
from .allocator import return_large_blocks
from .distribute import Strategy, fit_multi_worker
from .epochs import EpochHooks, fit, outputs_of, reseed_random_layers, validate
from .runs import RunFolder
from .state import State, metrics_record
from .tensorboard import TensorBoardLog


@dataclass
class Result:
    folder: Path
    metrics: dict
    model: Any = None
    wrote: bool = True  # False on a non-chief distributed worker


@dataclass(frozen=True)
class Options:
    resume: bool = False
    use_cache: bool = True
    safe_mode: bool = True
    devices: int | None = None
    features_dir: Path | None = None  # a feature store shared with other runs (tune's trials)
    checkpoints: bool = True  # after every epoch, for --resume (a tune trial is never resumed)
    images_dir: Path | None = None  # the decoded-image store (default <runs>/.cache/images)
    pool: Any = None  # a `pool.Pool` shared with the process's other runs (a tune worker's trials)
    # Whether the finished run is worth a run folder, from its metrics (a tune trial that is not
    # the best so far leaves none); its TensorBoard log is then written at the end, from the history.
    keep: Callable[[dict], bool] | None = None


def train(source, runs_dir: str | Path = "runs", *, epochs: int | None = None, resume: bool = False,
          use_cache: bool = True, reporter: Reporter | None = None, safe_mode: bool = True,
          devices: int | None = None, features_dir: Path | None = None, checkpoints: bool = True,
          images_dir: Path | None = None, pool=None, keep: Callable[[dict], bool] | None = None) -> Result:
    """Train a spec (a path, a `Spec`, or its `Ready` preflight, which then already carries
    `epochs`) into `runs_dir/<name>/`. Per-epoch shuffling and Dropout seeds come from (seed,
    epoch), so `resume` after a kill gives the rows an uninterrupted run would have.

    `devices` splits the CPU into that many logical devices first (to try `mirrored` locally).
    `features_dir` keeps frozen-prefix features in a store shared by runs (keyed by content,
    written atomically) instead of the run folder; `checkpoints=False` saves no per-epoch
    checkpoint (the run cannot be resumed). `images_dir` is where the decoded-image store of a
    file source lives (default `<runs_dir>/.cache/images`, shared by every run in `runs_dir`).
    `pool` and `keep` are for a process that trains many runs (`Options`).
    """
    ready = source if isinstance(source, Ready) else prepare(source, training=True, epochs=epochs)
    return_large_blocks()
    options = Options(resume, use_cache, safe_mode, devices, Path(features_dir) if features_dir else None,
                      checkpoints, Path(images_dir) if images_dir else Path(runs_dir) / ".cache" / "images",
                      pool, keep)
    try:
        return _train(ready, runs_dir, options, reporter or Reporter())
    except OSError as exc:  # disk full, unwritable folder: the previous run folder is untouched
        if hides_interrupt(exc):
            raise KeyboardInterrupt from exc
        where = exc.filename or runs_dir
        raise RunError(f"cannot write {where}: {exc.strerror or exc}; "
                       f"{Path(runs_dir) / ready.spec.name} (if any) is untouched") from None


def _train(ready: Ready, runs_dir, options: Options, reporter) -> Result:
    spec = ready.spec
    if options.devices and spec.train.distribute != "mirrored":
        raise RunError("--devices only applies to train.distribute: mirrored")
    strategy = Strategy(spec.train.distribute, options.devices)  # before any other TensorFlow work
    folder = RunFolder(runs_dir, spec.name, writer=strategy.is_chief)
    state = folder.start(spec, resume=options.resume, carry_cache=options.features_dir is None)
    try:
        load = functools.partial(datasets.load, spec, unlabeled=True)
        with keeping_in(options.images_dir if spec.train.data.decode_cache else None):  # (masks beside images)
            dataset = options.pool.dataset(spec, load) if options.pool is not None else load()
        reporter.note(data_note(dataset, spec.task.noun))
        for warning in dataset.warnings:
            reporter.note(f"warning: {warning}")
        for line in dataset.skipped_why[:SKIPPED_SHOWN]:
            reporter.note(f"skipped: {line}")
        if len(dataset.skipped_why) > SKIPPED_SHOWN:
            reporter.note(f"skipped: ... and {len(dataset.skipped_why) - SKIPPED_SHOWN} more (metrics.json lists them all)")
        store, off = datasets.image_store(spec, dataset.source_files, options.images_dir)
        note = store.opening() if store is not None else off
        if note:
            reporter.note(note)
        with datasets.naming_unreadable([dataset.training_examples, dataset.val]):
            return _run(ready, dataset, folder, state, options, reporter, strategy, store)
    except BaseException:
        if state.checkpoint is None and folder.writer:  # nothing worth resuming: leave nothing behind
            shutil.rmtree(folder.work, ignore_errors=True)
        raise
    finally:
        folder.close()


def _run(ready: Ready, dataset, folder: RunFolder, state: State, options: Options, reporter,
         strategy: Strategy, store=None) -> Result:
    runner = PhaseRunner.start(ready, dataset, folder, state, options, reporter, strategy, store)
    for index, phase in enumerate(ready.phases):
        if index >= state.phases_done:  # (a resumed run skips the phases it finished)
            runner.run(index, phase)
    return runner.finish()


@dataclass
class PhaseRunner:
    """One run's model, loss, feeds and logs, and the phases run over them: `run` trains one phase
    (freeze, compile, split off the cached prefix, fit, restore the best epoch), `finish` records
    and saves the run. What comes between phases or after the last belongs here, not in `fit`."""

    ready: Ready
    dataset: Any
    folder: RunFolder
    state: State
    options: Options
    reporter: Any
    strategy: Strategy
    store: Any
    model: Any
    loss: Any
    metrics: Any  # () -> the task's Keras metrics, made afresh for each compile
    record: dict  # what the task learnt from the training targets (metrics.json `task`)
    feeds: tuple
    class_weight: Any
    log: Any
    distilled: dict | None = None  # train.distill's record (metrics.json `distill`)
    last: Any = None  # the last phase's trainable part (`_split`), when it ran in this process
    lent: Any = None  # (the phase's own head, the pool's compiled copy that trains in its place)

    @classmethod
    def start(cls, ready: Ready, dataset, folder: RunFolder, state: State, options: Options, reporter,
              strategy: Strategy, store) -> PhaseRunner:
        """The model (from the checkpoint when resuming, else built and its weights loaded), its loss,
        the feeds over the decoded-image store, class weights and the TensorBoard log."""
        import keras

        from tlc.build.emit import compile as emit

        spec = ready.spec
        import_in_background()
        if options.pool is not None:
            options.pool.seed(spec.train.seed)
        else:
            keras.utils.set_random_seed(spec.train.seed)
        if state.checkpoint:
            losses.register()
        with strategy.scope():
            if state.checkpoint:
                model = keras.saving.load_model(folder.checkpoint_path(state), compile=True,
                                                safe_mode=options.safe_mode)
                reporter.note(f"resuming {spec.name} after epoch {state.epochs_done} of {cls.total(ready)}")
            else:
                weights_notes: list[str] = []
                model = emit(ready, safe_mode=options.safe_mode, notes=weights_notes,
                             backbones=options.pool.backbones if options.pool is not None else None)
                for note in weights_notes:
                    reporter.note(note)
                state.weights_notes = weights_notes
            record = {**spec.task.record(dataset.train.labels), **given_colours(spec, dataset.class_names)}
            loss = losses.loss_for(spec, model, dataset, record)
        metrics = losses.metrics_for(spec, record, spec.task.outputs(dataset.class_names))
        feeds, distilled = datasets.feeds(spec, dataset, store), None
        if spec.train.distill is not None:
            feeds, distilled = cls.taught(ready, dataset, feeds, folder, state, options, reporter)
        return cls(ready, dataset, folder, state, options, reporter, strategy, store, model, loss, metrics, record,
                   feeds,
                   losses.class_weights(spec, dataset.train.labels, dataset.num_classes),
                   TensorBoardLog(folder.work, enabled=folder.writer and options.keep is None), distilled)

    @staticmethod
    def taught(ready: Ready, dataset, feeds: tuple, folder: RunFolder, state: State, options: Options,
               reporter) -> tuple[tuple, dict]:
        """The training feed with the teacher's probabilities as its targets (`teacher`), which
        are computed once, like features, and count as training time."""
        import dataclasses

        from .teacher import teach

        taught = teach(ready.spec, dataset, options.features_dir or folder.cache_dir, options.images_dir,
                       safe_mode=options.safe_mode)
        state.train_seconds += taught.seconds
        if taught.key not in state.cache_keys:
            state.cache_keys.append(taught.key)
        reporter.note(taught.note)
        return (dataclasses.replace(feeds[0], targets=taught.targets), feeds[1]), taught.record

    @staticmethod
    def total(ready: Ready) -> int:
        return ready.phases[-1].first_epoch + ready.phases[-1].epochs

    def run(self, index: int, phase) -> None:
        spec, state, model, scope = self.ready.spec, self.state, self.model, self.strategy.scope
        if len(state.phase_starts) <= index:  # a new phase (early stopping may have moved its start)
            state.phase_starts.append(state.epochs_done)
            state.early = {}
        first = state.phase_starts[index]
        resuming_inside = state.checkpoint is not None and state.epochs_done > first
        if not resuming_inside:
            set_frozen(model.layers[:len(self.ready.plan.backbone)], phase.frozen_through, phase.batch_norm)
            with scope():
                optimizing.compile_model(model, self.loss, self.metrics, optimizing.optimizer(spec, phase.learning_rate))
        part, steps = self._split()
        epochs = range(state.epochs_done, first + phase.epochs)
        hooks = EpochHooks(part.model, spec, phase, first, self.total(self.ready), steps, self.reporter, state, self.log,
                           checkpoint=lambda: self.folder.save_epoch(model, state, checkpoint=self.options.checkpoints),
                           save_best=lambda: self.folder.save_best(model))
        if not hooks.stopped:
            if self.strategy.kind == "multi_worker":
                fit_multi_worker(self.strategy, part.model, part.train, part.val, self.loss, spec.train.batch_size,
                                 spec.train.seed, epochs, hooks, self.class_weight)
            else:
                batches = self.options.pool.epochs(part.train, spec.train.seed, epochs, spec.train.batch_size) \
                    if self.lent is not None else None
                fit(part, spec, epochs, hooks, self.class_weight, batches)
        if self.lent is not None:  # the run's own head takes the trained weights, and is the phase's part again
            tail, head = self.lent
            self.options.pool.give_back(head, tail)
            part, self.lent = dataclasses.replace(part, model=tail), None
        self.last = part
        stopping = spec.train.early_stopping
        if stopping and stopping.restore_best and self.folder.best_exists():
            model.load_weights(self.folder.best_path)
            self.reporter.note(f"restored the weights of epoch {state.early['best_epoch'] + 1} "
                               f"(best {stopping.monitor} {state.early['best']:.4f})")
        state.phases_done = index + 1

    def _split(self):
        """The phase's trainable part: the model, or the layers after the frozen prefix on cached
        features (which share the model's layers and optimizer, so the same scope); and its steps
        per epoch. Computing features counts as training time."""
        spec, state, options = self.ready.spec, self.state, self.options
        started = time.perf_counter()
        multi_worker = self.strategy.kind == "multi_worker"
        with self.strategy.scope():
            part = cache.split(self.model, *self.feeds, options.features_dir or self.folder.cache_dir,
                               enabled=options.use_cache and not multi_worker, batch_size=spec.train.batch_size,
                               off_because="multi_worker: each worker trains the whole model" if multi_worker
                               else "--no-cache", memory=options.pool.features if options.pool is not None else None)
            steps = -(-len(part.train) // spec.train.batch_size)
            on_features = part.model is not self.model  # a head on cached features: a whole epoch per call
            per_call = min(steps, 64) if on_features else 1  # (up to 64 steps)
            head = self._borrow(part.model, per_call) if on_features else None
            if head is not None:  # the pool's compiled copy trains, the run's own head gets its weights back
                part, self.lent = dataclasses.replace(part, model=head.model), (part.model, head)
            else:  # the part's own function in faster kernels (`rewrite`), over the same variables
                twin = rewrite.faster(part.model)
                if twin is not self.model:  # (the whole model was compiled by `run`)
                    optimizing.compile_model(twin, self.loss, self.metrics, self.model.optimizer,
                                             steps_per_execution=per_call)
                    part = dataclasses.replace(part, model=twin)
                if not self.model.optimizer.built:  # its state in the model's order, as checkpoints save it
                    self.model.optimizer.build(self.model.trainable_variables)
        state.train_seconds += time.perf_counter() - started
        self.reporter.note(part.note)
        if part.note not in state.notes:
            state.notes.append(part.note)
        if part.key and part.key not in state.cache_keys:
            state.cache_keys.append(part.key)
        state.features.append(("reused" if part.reused else "computed") if part.key else "off")
        return part, steps

    def _borrow(self, tail, steps_per_execution: int):
        """The pool's compiled copy of `tail` (`pool._Head`), when the run may train it in place of its
        own head: nothing saves the run's model while it trains (no checkpoint, no best epoch
        kept), on one device."""
        pool, stopping = self.options.pool, self.ready.spec.train.early_stopping
        if pool is None or self.options.checkpoints or self.strategy.kind != "none" or \
                (stopping is not None and stopping.restore_best):
            return None
        return pool.borrow(tail, self.loss, self.metrics, self.model.optimizer, steps_per_execution)

    def finish(self) -> Result:
        spec, state, folder, store = self.ready.spec, self.state, self.folder, self.store
        self.log.close()
        if folder.writer and self.options.features_dir is None:
            kept = cache.kept_note(cache.drop_unused(folder.cache_dir, state.cache_keys),
                                   folder.final / folder.cache_dir.name)
            if kept:
                self.reporter.note(kept)
        recalibrated = self.recalibrate_bn()
        metrics = metrics_record(spec, self.model, state, self.ready.phases, self.dataset, self.options.resume,
                                 self.strategy, self.class_weight)
        metrics["recalibrated_bn"] = recalibrated
        metrics["task"] = {"type": spec.task.type, **self.calibrated()}
        if self.distilled is not None:
            metrics["distill"] = self.distilled
        if recalibrated and recalibrated["after"]:
            metrics["final"] = {**metrics["final"], **recalibrated["after"]}
        if self.options.keep is not None:
            if not self.options.keep(metrics):
                folder.discard()
                return Result(folder.final, metrics, self.model, wrote=False)
            TensorBoardLog.replay(folder.work, state.rows, enabled=folder.writer)
        if store is not None:
            for line in (store.summary(), store.failure):
                if line:
                    self.reporter.note(line)
            metrics["image_store"] = store.record()
        plot = accuracy_plot(state.rows, f"{spec.name}: {spec.task.metric} per epoch", state.phase_starts,
                             spec.task.metric, spec.task.higher.get(spec.task.metric, True))
        written = folder.finish(self.model, state, metrics, spec, plot, split_record(self.dataset, spec.task))
        return Result(written, metrics, self.model, folder.writer)

    def recalibrate_bn(self) -> dict | None:
        """Precise batch-norm statistics (`precise_bn`) for the batch norms that trained in the last
        phase, over its trainable part: the tail on cached features when those are the plain
        images' (not augmented views), else the whole model on the images. Validation metrics
        before and after; None when off or no batch norm trained."""
        spec, reporter = self.ready.spec, self.reporter
        wanted = precise_bn.images_wanted(spec.train.recalibrate_bn)
        if not wanted:
            return None
        layers = precise_bn.trained_batch_norms(self.model)
        if not layers:
            if spec.train.recalibrate_bn != "auto":
                reporter.note("precise batch norm: nothing to recalibrate (no batch norm trained in the last phase)")
            return None
        part = self.last
        if part is None or part.model is self.model or part.train.views != 1:
            part = cache.Workload(self.model, *self.feeds, "")
        batch_size = spec.train.batch_size
        started = time.perf_counter()
        before = self._validation(part)
        chosen = precise_bn.sample(part.train, wanted, spec.train.seed)
        reseed_random_layers(self.model, spec.train.seed, self.total(self.ready))  # Dropout runs too, seeded
        with self.strategy.scope():
            seen = precise_bn.recalibrate(part.model, (x for x, _ in chosen.in_order(batch_size)), layers)
        after = self._validation(part)
        self.state.train_seconds += time.perf_counter() - started
        change = "".join(f"; {k} {before[k]:.4f} -> {after[k]:.4f}" for k in sorted(after))
        reporter.note(f"precise batch norm: {len(layers)} layer{'s' if len(layers) != 1 else ''} recalibrated over "
                      f"{seen:,} training images{change}")
        return {"layers": [layer.name for layer in layers], "images": seen, "before": before, "after": after}

    def calibrated(self) -> dict:
        """The task's record after training: calibrated on the validation split's finished outputs
        (multi_label's thresholds) when the task calibrates, computed over the last phase's part
        (the head on cached features when it trained so)."""
        from tlc.build.serving import finishing
        from tlc.plugin.components import Task

        task = self.ready.spec.task
        if type(task).calibrate is Task.calibrate:
            return self.record
        part = self.last if self.last is not None else cache.Workload(self.model, *self.feeds, "")
        targets, outputs = outputs_of(part.model, part.val, part.eval_batch_size or self.ready.spec.train.batch_size)
        finish = finishing(self.model, task, self.record)
        answers = np.asarray(finish(outputs)) if finish is not None and len(outputs) else outputs
        return task.calibrate(targets, answers, self.record)

    def _validation(self, part) -> dict:
        return validate(part.model, part.val, part.eval_batch_size or self.ready.spec.train.batch_size, self.loss,
                        self.ready.spec.task, self.record)


SKIPPED_SHOWN = 10  # skipped files named on the console; metrics.json lists every one


def data_note(dataset, noun: tuple[str, str] = ("class", "classes")) -> str:
    """The data line: examples per part, classes, where they come from, and what was left out."""
    from tlc.data.sources import describe_ignored

    counts = ", ".join(f"{len(getattr(dataset, p)):,} {p}" for p in ("train", "val", "test") if len(getattr(dataset, p)))
    source = "streamed from files" if dataset.train.streamed else "in memory"
    skipped = f"; skipped {len(dataset.skipped)} unreadable file(s)" if dataset.skipped else ""
    ignored = f"; {describe_ignored(dataset.ignored)}" if dataset.ignored else ""
    unlabeled = f" and {len(dataset.unlabeled):,} unlabeled images (taught by the teacher alone)" \
        if dataset.unlabeled is not None else ""
    what = noun[0] if dataset.num_classes == 1 else noun[1]
    return f"data: {counts} examples of {dataset.num_classes} {what}{unlabeled} ({source}){skipped}{ignored}"
