"""What a run remembers and records: the resumable `State` (state.json), the history rows as
Keras's CSVLogger writes them, metrics.json's record, and the resolved spec (spec.lock.yaml)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import yaml

COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")


@dataclass
class State:
    """What a resumed run needs: epochs done, their history rows, seconds spent, the checkpoint."""

    spec_hash: str
    epochs_done: int = 0
    rows: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    checkpoint: str | None = None
    notes: list[str] = field(default_factory=list)
    cache_keys: list[str] = field(default_factory=list)  # feature cache entries this run used
    phases_done: int = 0
    phase_starts: list[int] = field(default_factory=list)  # the epoch each phase started at
    early: dict = field(default_factory=dict)  # early stopping's memory in the current phase
    stops: list[dict] = field(default_factory=list)  # why phases stopped early
    weights_notes: list[str] = field(default_factory=list)  # pretrained weights adapted to the input
    features: list[str] = field(default_factory=list)  # per phase: computed, reused or off (the feature cache)


def metrics_record(spec, model, state: State, phases, dataset, resumed: bool, strategy, class_weight) -> dict:
    """metrics.json: the contract's train_seconds, epochs, final and params, and what a person
    asks next (classes, examples, files left out, phases, cache, early stopping, weights)."""
    from tlc.plan.introspect import count_weights

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
        "ignored_files": dataset.ignored,
        "phases": [{"freeze": p.freeze if isinstance(p.freeze, str) else p.freeze.model_dump(exclude_defaults=True),
                    "epochs": p.epochs, "learning_rate": p.learning_rate} for p in phases],
        "feature_cache": state.notes,
        "features": state.features,
        "weights": state.weights_notes,
        "early_stopping": state.stops,
        "class_weight": class_weight,
        "resumed": resumed,
        "distribute": {"strategy": strategy.kind, "replicas": strategy.replicas},
    }


def lock_text(spec) -> str:
    """The fully resolved spec (defaults filled in, extends merged, paths absolute)."""
    data = spec.model_dump(mode="json")
    return "# resolved by tlc; reproduces this run\n" + yaml.safe_dump(data, sort_keys=False)


def history_csv(rows: list[dict]) -> str:
    """Rows as Keras's CSVLogger writes them: `epoch` first, then the metric names sorted."""
    columns = ["epoch", *sorted({k for row in rows for k in row} - {"epoch"})] if rows else list(COLUMNS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
