"""The loss and metrics `tlc train` compiles with: the task's, or with a teacher the task's
distillation loss and metrics (`Task.distillation_loss`, `Task.distillation_metrics`; the
contract's alpha * T^2 * KL + (1 - alpha) * the task's loss for classes). Each class is defined
and registered with Keras on first use (Keras is imported late), so a checkpoint that carries it
loads again for `--resume` (`register`).
"""
from __future__ import annotations

from typing import Any

import numpy as np


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
    from_logits = getattr(spec.head, "output_activation", "softmax") == "linear"
    if spec.train.distill is None:
        return spec.task.loss_function(spec, from_logits, record)
    return spec.task.distillation_loss(spec, from_logits, record)  # (check refuses a task without one)


def metrics_for(spec, record: dict, outputs: int):
    """A maker of the task's Keras metrics (fresh instances for each compile); with a teacher,
    the task's metrics on distillation's targets (labelled images only)."""
    from_logits = getattr(spec.head, "output_activation", "softmax") == "linear"
    if spec.train.distill is not None:
        return lambda: spec.task.distillation_metrics(outputs, from_logits, record)
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
    from tlc.task.classification import distillation_classes, smoothed_class
    from tlc.task.distilling import labelled_class
    from tlc.task.multi_label import f1_class, tag_distillation_class
    from tlc.task.regression import in_units_classes, standardized_class, value_distillation_class
    from tlc.task.segmentation import pixel_accuracy_class, pixel_loss_class, pixel_mean_iou_class

    for make in (smoothed_class, f1_class, in_units_classes, standardized_class, pixel_loss_class,
                 pixel_accuracy_class, pixel_mean_iou_class, distillation_classes, labelled_class,
                 tag_distillation_class, value_distillation_class):
        make()
