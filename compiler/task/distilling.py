"""What the tasks' distillation losses share: a training target row is the task's targets (width
each; the task's `no_label` for an unlabeled image), then the teacher's answers; validation targets
are the task's own, so `val_loss` and the metrics compare with a run without a teacher."""
from __future__ import annotations

import functools
import math

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1] before their log, as Keras's cross-entropy does


def labelled_parts(y_true, width: int, no_label: float = -1.0):
    """(the targets with the unlabeled rows as 0, 1.0 where labelled, the teacher's answers), or
    None for plain targets (validation). `no_label` marks an unlabeled row (NaN: numbers)."""
    import keras

    if y_true.shape[-1] != 2 * width:
        return None
    targets, teacher = y_true[:, :width], y_true[:, width:]
    known = keras.ops.isfinite(targets) if math.isnan(no_label) else keras.ops.not_equal(targets, no_label)
    labelled = keras.ops.all(known, axis=-1)
    cleaned = keras.ops.where(keras.ops.expand_dims(labelled, -1), targets, keras.ops.zeros_like(targets))
    return cleaned, keras.ops.cast(labelled, y_true.dtype), teacher


def labelled_metrics(task, outputs: int, from_logits: bool, record: dict) -> list:
    """The task's Keras metrics over the labelled images of distillation targets."""
    labelled = labelled_class()
    return [labelled(m, outputs, task.no_label) for m in task.keras_metrics(outputs, from_logits, record)]


@functools.cache
def labelled_class():
    """Labelled: a task's metric given the labelled part of the targets, defined and registered
    with Keras on first use (for `--resume`)."""
    import keras

    @keras.saving.register_keras_serializable(package="tlc")
    class Labelled(keras.metrics.Metric):
        """A task's metric over the labelled images of distillation targets (or of plain targets),
        under the metric's own name (the history's columns stay the task's)."""

        def __init__(self, metric=None, width=1, no_label=-1.0, name=None, dtype=None):
            inner = keras.metrics.deserialize(metric) if isinstance(metric, dict) else metric
            super().__init__(name=name or inner.name, dtype=dtype or inner.dtype)
            self.inner, self.width, self.no_label = inner, int(width), float(no_label)

        def update_state(self, y_true, y_pred, sample_weight=None):
            split = labelled_parts(y_true, self.width, self.no_label)
            if split is not None:
                targets, labelled, _ = split
                y_true, sample_weight = targets, labelled
            return self.inner.update_state(y_true, y_pred, sample_weight)

        def result(self):
            return self.inner.result()

        def reset_state(self):
            self.inner.reset_state()

        def get_config(self):
            return {"metric": keras.metrics.serialize(self.inner), "width": self.width, "no_label": self.no_label,
                    "name": self.name}

    return Labelled
