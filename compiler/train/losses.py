"""The loss and metrics `tlc train` compiles with: the task's, or distillation's loss and accuracy. Each class is defined and
registered with Keras on first use (Keras is imported late), so a checkpoint that carries it
loads again for `--resume` (`register`).

Distillation: a training target is one row (label, teacher's probabilities...): the label is -1 for an
unlabeled image, which the teacher alone teaches. The loss is the contract's

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(label)

with the KL term from `keras.distillation.LogitsDistillation` (temperature scaling and the T^2
factor as Hinton et al. define them; the teacher's logits are its log-probabilities, which
differ from its logits by a constant per image, so softmax(logits / T) is the same). Validation
targets are plain labels: there the loss is the cross-entropy alone, so `val_loss` compares with a
run without a teacher, and accuracy counts labelled images only.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from tlc.plugin.components import Task
from tlc.task.classification import cross_entropy

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1] before their log, as Keras's cross-entropy does


def loss_for(spec, model, dataset, record: dict) -> Any:
    """The task's loss for a model whose head fits the data (else a clear error): one output per
    class, tag or target."""
    out, expected = tuple(model.output.shape[1:]), spec.task.output_shape(dataset.class_names, spec)
    wanted = expected[-1]
    if out != expected:
        one, noun = spec.task.noun
        if len(out) != len(expected):
            shape = "x".join(map(str, expected))
            raise spec.error(("head", "type"), f"tlc train needs a head of one output per {one} ({shape}); the "
                                               f"model outputs {out} (use head: {{type: dense, classes: N}}"
                                               + (" or {type: unet, classes: N})" if len(expected) == 3 else ")"))
        shown = ", ".join(dataset.class_names[:12]) + (", ..." if wanted > 12 else "")
        raise spec.error(("head", "classes") if "classes" in type(spec.head).model_fields else ("head",),
                         f"the head has {out[-1]} {noun} but the data has {wanted} ({shown}); "
                         f"set head.classes: {wanted}")
    t, from_logits = spec.train, getattr(spec.head, "output_activation", "softmax") == "linear"
    if t.distill is None:
        return spec.task.loss_function(spec, from_logits, record)
    own = spec.task.distillation_loss(spec, from_logits, record)
    if own is not None:
        return own
    d = t.distill
    if spec.task.type == "multi_label":
        return task_distillation_classes()[0](d.temperature, d.alpha, wanted, t.label_smoothing, from_logits)
    if spec.task.type == "regression":
        return task_distillation_classes()[1](spec.task.loss, record["mean"], record["std"], d.alpha)
    return distillation_classes()[0](d.temperature, d.alpha, t.label_smoothing, from_logits)


def metrics_for(spec, loss, record: dict, outputs: int):
    """A maker of the task's Keras metrics (fresh instances for each compile); a distillation
    loss comes with its accuracy, which counts labelled images only."""
    from_logits = getattr(spec.head, "output_activation", "softmax") == "linear"
    if is_distillation(loss):
        return lambda: [distillation_classes()[1]()]
    if spec.train.distill is not None and type(spec.task).distillation_loss is Task.distillation_loss:
        # the task's metrics, on the labelled part of the targets (a task with its own distillation
        # loss has metrics that read its targets themselves)
        labelled = task_distillation_classes()[2]
        return lambda: [labelled(m, outputs, spec.task.no_label)
                        for m in spec.task.keras_metrics(outputs, from_logits, record)]
    return lambda: spec.task.keras_metrics(outputs, from_logits, record)


def class_weights(spec, labels: np.ndarray, classes: int) -> dict[int, float] | None:
    """`class_weight: balanced`: n / (k * count(c)), as scikit-learn computes it."""
    if spec.train.class_weight != "balanced" or spec.task.type != "classification":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {c: 1.0 for c in range(classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out


def register() -> None:
    """Make every class here and the tasks' known to Keras before a checkpoint that carries one loads."""
    from tlc.task.classification import smoothed_class
    from tlc.task.multi_label import f1_class
    from tlc.task.regression import in_units_classes, standardized_class
    from tlc.task.segmentation import pixel_accuracy_class, pixel_loss_class, pixel_mean_iou_class

    for make in (smoothed_class, f1_class, in_units_classes, standardized_class, pixel_loss_class,
                 pixel_accuracy_class, pixel_mean_iou_class, distillation_classes, task_distillation_classes):
        make()


@functools.cache
def distillation_classes():
    """(DistillationLoss, LabelledAccuracy), defined and registered with Keras on first use."""
    import keras

    def split(y_true):
        """(labels with -1 as 0, 1.0 where labelled) and the teacher's probabilities, or None for plain labels."""
        if len(y_true.shape) != 2 or y_true.shape[-1] == 1:
            return None
        labels = y_true[:, 0]
        labelled = keras.ops.cast(labels >= 0, y_true.dtype)
        return keras.ops.maximum(labels, 0), labelled, y_true[:, 1:]

    @keras.saving.register_keras_serializable(package="tlc")
    class DistillationLoss(keras.losses.Loss):
        def __init__(self, temperature=4.0, alpha=0.9, label_smoothing=0.0, from_logits=False,
                     reduction="sum_over_batch_size", name="distillation", dtype=None):
            super().__init__(name=name, reduction=reduction, dtype=dtype)
            self.temperature, self.alpha = float(temperature), float(alpha)
            self.label_smoothing, self.from_logits = label_smoothing, from_logits
            self.hard = cross_entropy(label_smoothing, from_logits, reduction="none")
            # The KL loss as an instance: the default, the string "kl_divergence", resolves to a
            # function that LogitsDistillation applies to the scaled logits themselves (Keras
            # 3.15), which are negative here and clip to a loss of 0.
            self.soft = keras.distillation.LogitsDistillation(temperature=self.temperature,
                                                              loss=keras.losses.KLDivergence())

        def call(self, y_true, y_pred):
            parts = split(y_true)
            if parts is None:
                return self.hard(y_true, y_pred)
            labels, labelled, teacher = parts
            student_logits = y_pred if self.from_logits else keras.ops.log(keras.ops.clip(y_pred, EPSILON, 1.0))
            teacher_logits = keras.ops.log(keras.ops.clip(teacher, EPSILON, 1.0))
            soft = self.soft.compute_loss(teacher_logits, student_logits)  # the batch's mean, times T^2
            return (1 - self.alpha) * self.hard(labels, y_pred) * labelled + self.alpha * soft

        def get_config(self):
            return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha,
                    "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}

    @keras.saving.register_keras_serializable(package="tlc")
    class LabelledAccuracy(keras.metrics.SparseCategoricalAccuracy):
        """`accuracy` over the labelled images of a batch of distillation targets (or plain labels)."""

        def __init__(self, name="accuracy", dtype=None):
            super().__init__(name=name, dtype=dtype)

        def update_state(self, y_true, y_pred, sample_weight=None):
            parts = split(y_true)
            if parts is not None:
                y_true, sample_weight, _ = parts
            return super().update_state(y_true, y_pred, sample_weight)

    return DistillationLoss, LabelledAccuracy


@functools.cache
def task_distillation_classes():
    """(TagDistillation, ValueDistillation, Labelled): distillation for tags and numbers, and the
    wrapper that gives a task's metric the labelled part of the targets. A training target row is
    the targets (width each; -1 or NaN for an unlabeled image), then the teacher's answers."""
    import keras

    from tlc.task.regression import standardized_class

    def parts(y_true, width: int, no_label: float = -1.0):
        """(the targets with the unlabeled rows as 0, 1.0 where labelled, the teacher's answers),
        or None for plain targets (validation). `no_label` marks an unlabeled row (NaN: numbers)."""
        if y_true.shape[-1] != 2 * width:
            return None
        targets, teacher = y_true[:, :width], y_true[:, width:]
        known = keras.ops.isfinite(targets) if math.isnan(no_label) else keras.ops.not_equal(targets, no_label)
        labelled = keras.ops.all(known, axis=-1)
        cleaned = keras.ops.where(keras.ops.expand_dims(labelled, -1), targets, keras.ops.zeros_like(targets))
        return cleaned, keras.ops.cast(labelled, y_true.dtype), teacher

    @keras.saving.register_keras_serializable(package="tlc")
    class TagDistillation(keras.losses.Loss):
        """alpha * T^2 * BCE(sigmoid(teacher logits / T), sigmoid(student logits / T)) + (1 - alpha) * BCE(tags),
        each the mean over tags; an unlabeled image has the first term only."""

        def __init__(self, temperature=4.0, alpha=0.9, width=1, label_smoothing=0.0, from_logits=False,
                     reduction="sum_over_batch_size", name="tag_distillation", dtype=None):
            super().__init__(name=name, reduction=reduction, dtype=dtype)
            self.temperature, self.alpha, self.width = float(temperature), float(alpha), int(width)
            self.label_smoothing, self.from_logits = label_smoothing, from_logits

        def call(self, y_true, y_pred):
            hard = keras.losses.binary_crossentropy
            split = parts(y_true, self.width)
            if split is None:
                return hard(y_true, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing)
            targets, labelled, teacher = split
            logit = lambda p: keras.ops.log(keras.ops.clip(p, EPSILON, 1 - EPSILON)) - \
                keras.ops.log(keras.ops.clip(1 - p, EPSILON, 1 - EPSILON))  # noqa: E731
            student = y_pred if self.from_logits else logit(y_pred)
            t = self.temperature
            soft = hard(keras.ops.sigmoid(logit(teacher) / t), student / t, from_logits=True) * t * t
            return self.alpha * soft + (1 - self.alpha) * labelled * hard(
                targets, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing)

        def get_config(self):
            return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha, "width": self.width,
                    "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}

    @keras.saving.register_keras_serializable(package="tlc")
    class ValueDistillation(keras.losses.Loss):
        """alpha * L(the teacher's values) + (1 - alpha) * L(the targets), L the task's loss on
        standardised values; an unlabeled image (NaN targets) has the first term only."""

        def __init__(self, kind="mse", mean=(0.0,), std=(1.0,), alpha=0.9, reduction="sum_over_batch_size",
                     name="value_distillation", dtype=None):
            super().__init__(name=name, reduction=reduction, dtype=dtype)
            self.kind, self.mean, self.std, self.alpha = kind, [float(m) for m in mean], [float(s) for s in std], \
                float(alpha)
            self.base = standardized_class()(kind, self.mean, self.std, reduction="none")

        def call(self, y_true, y_pred):
            width = len(self.mean)
            if y_true.shape[-1] != 2 * width:
                return self.base.call(y_true, y_pred)
            targets, labelled, teacher = parts(y_true, width, math.nan)
            return self.alpha * self.base.call(teacher, y_pred) + (1 - self.alpha) * labelled * \
                self.base.call(targets, y_pred)

        def get_config(self):
            return {**super().get_config(), "kind": self.kind, "mean": self.mean, "std": self.std, "alpha": self.alpha}

    @keras.saving.register_keras_serializable(package="tlc")
    class Labelled(keras.metrics.Metric):
        """A task's metric over the labelled images of distillation targets (or of plain targets),
        under the metric's own name (the history's columns stay the task's)."""

        def __init__(self, metric=None, width=1, no_label=-1.0, name=None, dtype=None):
            inner = keras.metrics.deserialize(metric) if isinstance(metric, dict) else metric
            super().__init__(name=name or inner.name, dtype=dtype or inner.dtype)
            self.inner, self.width, self.no_label = inner, int(width), float(no_label)

        def update_state(self, y_true, y_pred, sample_weight=None):
            split = parts(y_true, self.width, self.no_label)
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

    return TagDistillation, ValueDistillation, Labelled


def is_distillation(loss) -> bool:
    return isinstance(loss, distillation_classes()[0])
