"""One trial: the trial's values set at their paths, the resulting spec through the same preflight
as `tlc train` (an invalid or infeasible combination ends at once, before TensorFlow does any
work), then the library's training entry point in this process, on the study's shared feature
store, reporting every epoch to Optuna so a pruner can stop it."""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlc.errors import InfeasibleError, SpecError, TlcError, hides_interrupt, one_line
from tlc.show.progress import Reporter
from tlc.spec import space as spaces
from tlc.spec.loader import Document

SCALARS = (type(None), bool, int, float, str)


def optuna_choices(values: list) -> list:
    """A choice's values as Optuna takes them: plain scalars as they are, anything else (lists
    such as `head.units` values) as its JSON text, which `suggest` decodes again."""
    return list(values) if all(isinstance(v, SCALARS) for v in values) else [json.dumps(v) for v in values]


@dataclass
class TrialOutcome:
    """What a trial ended as, for trials.csv, the progress display and `--json`."""

    number: int
    state: str  # complete | pruned | infeasible | failed
    value: float | None = None
    params: dict = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0
    features: str = ""  # computed | reused | off | "" (did not train)
    message: str = ""
    epoch_seconds: float = 0.0  # in its epochs (from each epoch's start to its end, validation included)


def suggest(trial, tune) -> dict[str, Any]:
    """The trial's value for every path (choices through `optuna_choices`)."""
    values = {}
    for path, s in tune.space.items():
        if s.type == "choice":
            offered = optuna_choices(s.values)
            picked = trial.suggest_categorical(path, offered)
            values[path] = picked if offered == list(s.values) else json.loads(picked)
        elif s.type == "int":
            values[path] = trial.suggest_int(path, s.low, s.high, step=s.step, log=s.log)
        else:
            values[path] = trial.suggest_float(path, s.low, s.high, log=s.type == "loguniform")
    return values


class TrialReporter(Reporter):
    """Reports each epoch's metric to the trial (a pruner may then stop it) and keeps the owner's
    heartbeat fresh; progress lines go to `inner`."""

    def __init__(self, trial, metric: str, heartbeat, inner: Reporter):
        self.trial, self.metric, self.heartbeat, self.inner = trial, metric, heartbeat, inner
        self.epochs, self.epoch_seconds, self.started = 0, 0.0, 0.0

    def note(self, text: str) -> None:
        self.inner.note(text)

    def epoch_started(self, epoch: int, total: int, steps: int) -> None:
        self.started = time.perf_counter()

    def epoch_done(self, epoch: int, row: dict) -> None:
        import optuna

        self.epochs = epoch + 1
        self.epoch_seconds += time.perf_counter() - self.started
        self.heartbeat()
        value = row.get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} ({self.metric} {value:.4f})")


def run_trial(study, trial, base: Document, tune, trial_dir: Path, features_dir: Path, *, heartbeat,
              reporter: Reporter, images_dir: Path | None = None, pool=None, keep_all: bool = False) -> TrialOutcome:
    """Run `trial` and tell the study how it ended; returns the outcome (a KeyboardInterrupt is
    told as failed and raised again). `pool` is the worker's (`train.pool`); the trial's run
    folder is written only when it is the best so far, or with `keep_all`. The caller releases
    the trial's memory afterwards (`release_memory`)."""
    import optuna
    from optuna.trial import TrialState

    from tlc.spec.preflight import prepare
    from tlc.spec.validation import validate
    from tlc.train.loop import train

    started = time.perf_counter()
    params = suggest(trial, tune)
    outcome = TrialOutcome(trial.number, "failed", params={k: trial.params[k] for k in tune.space})
    try:
        doc = Document(base.path, spaces.with_values(base.data, params), base.values, base.keys)
        ready = prepare(validate(doc), training=True)
    except (SpecError, InfeasibleError) as exc:
        outcome.state, outcome.message = "infeasible", str(exc)
        return _tell(study, trial, outcome, TrialState.FAIL, started)
    progress = TrialReporter(trial, tune.metric, heartbeat, reporter)

    def interrupted() -> None:
        outcome.message, outcome.epochs = "interrupted (Ctrl-C)", progress.epochs
        _tell(study, trial, outcome, TrialState.FAIL, started)

    try:
        result = train(ready, trial_dir, reporter=progress, features_dir=features_dir, checkpoints=False,
                       images_dir=images_dir, pool=pool,
                       keep=lambda metrics: keep_all or _best_so_far(study, tune, metrics))
        outcome.value = float(result.metrics["final"][tune.metric])
        outcome.state, outcome.epochs = "complete", result.metrics["epochs"]
        outcome.features = _features(result.metrics.get("features", []))
        return _tell(study, trial, outcome, TrialState.COMPLETE, started, progress)
    except optuna.TrialPruned as exc:
        outcome.state, outcome.message, outcome.epochs = "pruned", str(exc), progress.epochs
        return _tell(study, trial, outcome, TrialState.PRUNED, started, progress)
    except KeyboardInterrupt:
        interrupted()
        raise
    except Exception as exc:  # the trial's data or disk, a bug or a Keras error in it; the study goes on
        if hides_interrupt(exc):
            interrupted()
            raise KeyboardInterrupt from exc
        message = str(exc) if isinstance(exc, TlcError) else f"{type(exc).__name__}: {one_line(exc)}"
        outcome.message, outcome.epochs = message, progress.epochs
        return _tell(study, trial, outcome, TrialState.FAIL, started)


def _best_so_far(study, tune, metrics: dict) -> bool:
    """At least as good as every trial completed so far (so the study's best always has its run
    folder, whichever worker ran it, while other trials write none)."""
    value = metrics["final"].get(tune.metric)
    try:
        best = study.best_value
    except ValueError:  # no trial has completed
        return True
    return value is not None and (value >= best if tune.maximise else value <= best)


def _features(per_phase: list[str]) -> str:
    if not per_phase:
        return "off"
    return "computed" if "computed" in per_phase else ("reused" if "reused" in per_phase else "off")


def _tell(study, trial, outcome: TrialOutcome, state, started: float, progress: TrialReporter | None = None) -> TrialOutcome:
    outcome.seconds = round(time.perf_counter() - started, 3)
    outcome.epoch_seconds = round(progress.epoch_seconds, 3) if progress is not None else 0.0
    for key, value in (("state", outcome.state), ("message", outcome.message), ("epochs", outcome.epochs),
                       ("seconds", outcome.seconds), ("features", outcome.features),
                       ("epoch_seconds", outcome.epoch_seconds)):
        trial.set_user_attr(f"tlc_{key}", value)
    try:
        study.tell(trial, outcome.value if outcome.state == "complete" else None, state=state, skip_if_finished=True)
    except RuntimeError as exc:  # the grid sampler's `study.stop()` after the last point is for optimize()
        if "Study.stop" not in str(exc):
            raise
    return outcome


def custom_gradients() -> set[str] | None:
    """The names in TensorFlow's global gradient registry (None before TensorFlow is imported)."""
    import sys

    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.framework import ops

        return set(ops._gradient_registry._registry)
    except AttributeError:  # pragma: no cover - a TensorFlow that moved its private registry
        return None


def release_memory(before: set[str] | None) -> None:
    """Keep memory flat however many trials a worker runs. Called once a trial has returned and
    nothing holds it: what is alive here is frozen, and what then died in a cycle would never be
    collected. Keras keeps every model in its global graph state: `_clear_keras_state` drops it
    (the collection follows). And every traced train step registers a `CustomGradient-N` in
    TensorFlow's global gradient registry (the optimizer's all-reduce uses `tf.custom_gradient`),
    whose closure holds that step's whole graph forever (tensorflow/tensorflow#97697; ~10 MB a
    trial here). The trial's graphs are dead once its models are, so its registrations go too
    (tf-keras#898 does the same in `clear_session`)."""
    import sys

    if "keras" in sys.modules:
        _clear_keras_state()
    after = custom_gradients()
    if after is not None and before is not None:
        from tensorflow.python.framework import ops

        for name in after - before:
            if name.startswith("CustomGradient-"):
                del ops._gradient_registry._registry[name]
    gc.collect()
    gc.freeze()  # what is still alive (the worker's pool, TensorFlow's own objects) is not looked at again:
    # a full collection over all of it cost ~0.3 s a trial; the next one looks at the next trial's objects only


def _clear_keras_state() -> None:
    """`keras.backend.clear_session()` without its clearing of TensorFlow's kernel caches, which
    drops every instantiated function: the pool's compiled heads then paid ~0.12 s a trial to
    instantiate their steps again. A dead model's functions leave those caches with it."""
    import threading

    from keras.src.backend.common import global_state

    if not hasattr(global_state, "GLOBAL_STATE_TRACKER"):  # pragma: no cover - a Keras that moved it
        import keras

        keras.backend.clear_session(free_memory=False)
        return
    import tensorflow as tf

    global_state.GLOBAL_STATE_TRACKER = threading.local()
    global_state.GLOBAL_SETTINGS_TRACKER = threading.local()
    tf.compat.v1.reset_default_graph()
