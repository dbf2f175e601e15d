"""`segmentation`: a class per pixel. Masks of class indices (`ignore_index` pixels count in no
loss or metric); per-pixel softmax (or logits) out; cross-entropy, Dice, both, or focal; mean IoU
(Keras's `MeanIoU` with `ignore_class`) and pixel accuracy; evaluate's per-class IoU, Dice,
precision and recall with the pixel confusion matrix and the images of lowest IoU."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from tlc.plugin.components import Task
from tlc.plugin.hookspecs import hookimpl

from .distilling import EPSILON
from .reading import PATH
from .splits import iterative

if TYPE_CHECKING:
    import numpy as np  # (imported where used: `tlc check` loads the task without NumPy)


class Segmentation(Task):
    """a class per pixel"""

    type: Literal["segmentation"] = "segmentation"
    ignore_index: Annotated[int, Field(ge=0, le=255)] = Field(
        255, description="the mask value of pixels that count in no loss or metric (also what padding fills)")
    loss: Literal["ce", "dice", "ce_dice", "jaccard", "ce_jaccard", "focal"] = Field(
        "ce", description="per-pixel cross-entropy, Dice, their sum, Jaccard (soft IoU), its sum with "
                          "cross-entropy (the pairing of segmentation_models' cce_jaccard_loss), or focal cross-entropy")

    @property
    def no_label(self) -> int:
        """An unlabeled photo's mask (distillation's extra photos): every pixel ignored."""
        return self.ignore_index

    metrics = ("miou", "pixel_accuracy")
    higher = {"miou": True, "pixel_accuracy": True}
    activations = ("softmax", "linear")
    worst_figure, worst_title = "worst.png", "lowest IoU (image, true mask, predicted mask)"

    def columns(self, spec):
        return []

    def output_shape(self, names, spec):
        return (*spec.input.hwc[:2], len(names))

    def from_classes(self, labels, names, spec):
        raise spec.error(("train", "data", "type"), f"{spec.train.data.type} gives one class per image; masks come "
                                                    "from a masks folder (images/ and masks/) or an npz (y: n x h x w)")

    def from_columns(self, rows, columns, spec, where):
        raise spec.error(PATH, f"{where}: a csv gives no masks; use train.data.type: masks (images/ and masks/)")

    def from_array(self, y, spec, where, files=None):
        """(n, h, w) class indices, each a class (0..k-1) or `ignore_index`; another value is named
        with the file (or the npz's index) it is in."""
        import numpy as np

        y = np.asarray(y)
        if y.ndim == 4 and y.shape[-1] == 1:
            y = y[..., 0]
        if y.ndim != 3 or not np.issubdtype(y.dtype, np.integer):
            raise spec.error(PATH, f"{where}: masks must be (n, height, width) class indices; got {y.dtype} {y.shape}")
        names = self.names(spec)
        bad = (y >= len(names)) & (y != self.ignore_index)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(len(y), -1).any(axis=1))[0])
            value = int(y[i][bad[i]][0])
            which = files[i] if files is not None else f"{where}[{i}]"
            lossy = str(which).lower().endswith((".jpg", ".jpeg"))  # a mask saved as JPEG: edges blurred into new values
            raise spec.error(PATH, f"{which}: mask value {value} is neither a class (0..{len(names) - 1}: "
                                   f"{', '.join(names)}) nor ignored ({self.ignore_index})"
                                   + ("; JPEG compression blurs a mask's edges into values of no class: save masks "
                                      "as PNG" if lossy else ""))
        h, w, _ = spec.input.hwc
        if y.shape[1:] != (h, w):
            raise spec.error(PATH, f"{where}: masks are {y.shape[1]}x{y.shape[2]}; the input is {h}x{w}")
        return y.astype("uint8"), names

    @staticmethod
    def names(spec) -> list[str]:
        """The classes' names: `train.data.classes`, else 0..k-1 for the head's classes."""
        given = spec.train.data.classes if spec.train is not None else None
        if given:
            return [str(c) for c in given]
        return [str(c) for c in range(int(getattr(spec.head, "classes", 2)))]

    def split(self, targets, validation, test, seed):
        """Every class's share of images kept (iterative stratification on which classes each mask holds)."""
        import numpy as np

        k = int(targets[targets != self.ignore_index].max(initial=0)) + 1
        present = np.stack([(targets == c).any(axis=(1, 2)) for c in range(k)], axis=1).astype("float32")
        return iterative(present, validation, test, seed)

    def to_json(self, target):
        return None  # (split.json names the held-out files; their masks are read again from the source)

    def record(self, train_targets):
        """Each class's pixels in the training split (what `class_weight: balanced` weighs by)."""
        import numpy as np

        counted = train_targets[train_targets != self.ignore_index]
        return {"pixels": np.bincount(counted.reshape(-1), minlength=2).tolist()}

    def loss_function(self, spec, from_logits, record):
        classes = int(spec.head.classes)
        weights = pixel_class_weights(record.get("pixels", []), classes) if spec.train is not None and \
            spec.train.class_weight == "balanced" else None
        return pixel_loss_class()(self.loss, classes, self.ignore_index, from_logits, class_weights=weights)

    def keras_metrics(self, outputs, from_logits, record):
        return [pixel_mean_iou_class()(num_classes=outputs, ignore_class=self.ignore_index, sparse_y_pred=False,
                                       name="miou"),
                pixel_accuracy_class()(self.ignore_index, name="pixel_accuracy")]

    distillation_note = "{a:g} * T^2 * KL per pixel + {b:g} * the task's loss at T = {t:g}"

    def distillation_loss(self, spec, from_logits, record):
        """alpha * T^2 * KL(teacher_T || student_T) per pixel + (1 - alpha) * the task's loss on the
        labelled pixels (an unlabeled photo's are all ignored)."""
        d = spec.train.distill
        return pixel_loss_class()(self.loss, int(spec.head.classes), self.ignore_index, from_logits,
                                  temperature=d.temperature, alpha=d.alpha)

    def measured(self, targets, outputs, record):
        import numpy as np

        confusion = pixel_confusion(targets, outputs.argmax(axis=-1), outputs.shape[-1], self.ignore_index)
        return {"miou": float(np.nanmean(iou(confusion))),
                "pixel_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1))}

    def finishing(self, activation, record):
        import keras

        return keras.layers.Softmax(name="probabilities") if activation == "linear" else None

    def answer(self, row, names, record, top):
        import numpy as np

        predicted = row.argmax(axis=-1)
        counts = np.bincount(predicted.reshape(-1), minlength=len(names))
        return {"classes": [{"class": names[c], "fraction": float(counts[c] / predicted.size)}
                            for c in np.argsort(-counts, kind="stable") if counts[c]]}

    def evaluate(self, targets, answers, names, files, record):
        import numpy as np

        k = len(names)
        predicted = answers.argmax(axis=-1)
        confusion = pixel_confusion(targets, predicted, k, self.ignore_index)
        per_image, order = self.lowest_iou(targets, predicted, k)
        ious, truth, given = iou(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
        hits = np.diag(confusion)
        return {
            "task": "segmentation",
            "examples": int(len(targets)),
            "miou": float(np.nanmean(ious)),
            "pixel_accuracy": float(hits.sum() / max(confusion.sum(), 1)),
            "per_class": [{"class": names[c], "iou": _number(ious[c]),
                           "dice": _number(2 * hits[c] / (truth[c] + given[c]) if truth[c] + given[c] else np.nan),
                           "precision": _number(hits[c] / given[c] if given[c] else np.nan),
                           "recall": _number(hits[c] / truth[c] if truth[c] else np.nan),
                           "pixels": int(truth[c])} for c in range(k)],
            "confusion": confusion.tolist(),
            "classes": list(names),
            "worst": [{"file": files[i], "iou": _number(per_image[i])} for i in order[:20]],
        }

    def worst(self, targets, answers, names, record, limit=8):
        per_image, order = self.lowest_iou(targets, answers.argmax(axis=-1), len(names))
        return [(int(i), f"IoU {per_image[i]:.2f}", 0) for i in order[:limit]]

    def lowest_iou(self, targets, predicted, k: int) -> tuple[list[float], np.ndarray]:
        """(each image's mIoU, the images ordered from the lowest; an image of no counted pixel last)."""
        import numpy as np

        per_image = [float(np.nanmean(iou(pixel_confusion(t, p, k, self.ignore_index))))
                     for t, p in zip(targets, predicted)]
        return per_image, np.argsort(np.nan_to_num(per_image, nan=1.0), kind="stable")

    def worst_grid(self, images, picked, targets, answers, names, captions, title, record):
        from tlc.show.figures import masks_grid

        return masks_grid(images, targets[picked], answers[picked].argmax(axis=-1), captions, names,
                          title.replace(" (Grad-CAM", " ("), class_colours(record, len(names)), self.ignore_index)

    def figures(self, result, targets, answers, names, title):
        from tlc.show.figures import confusion_plot

        import numpy as np

        return {"confusion.png": confusion_plot(np.array(result["confusion"]), names, title)}

    def headline(self, result):
        return f"mIoU {result['miou']:.3f}, pixel accuracy {result['pixel_accuracy']:.3f}"


def _number(value) -> float | None:
    import numpy as np

    return None if value is None or np.isnan(value) else float(value)


def class_colours(record: dict, k: int) -> np.ndarray:
    """(k, 3) uint8 colours of the classes in masks, legends and overlays: those the run recorded
    (the masks' own, `train.data.colors`), else tlc's (`mask_colours`)."""
    from tlc.show.figures import mask_colours

    import numpy as np

    given = record.get("colors")
    return np.asarray(given, np.uint8) if given is not None and len(given) == k else mask_colours(k)


def pixel_class_weights(pixels: list[int], classes: int) -> list[float]:
    """`class_weight: balanced` per pixel: n / (k * pixels of c) over the k classes present, as
    scikit-learn's `compute_class_weight` computes it; 1 for a class with no pixel."""
    import numpy as np

    counts = np.zeros(classes, "float64")
    counts[:min(classes, len(pixels))] = pixels[:classes]
    present = counts > 0
    out = np.ones(classes)
    out[present] = counts[present].sum() / (present.sum() * counts[present])
    return out.tolist()


def pixel_confusion(targets: np.ndarray, predicted: np.ndarray, k: int, ignore: int) -> np.ndarray:
    """(k, k) pixel counts, rows true, columns predicted, without the ignored pixels."""
    import numpy as np

    truth, guess = np.asarray(targets).reshape(-1).astype("int64"), np.asarray(predicted).reshape(-1).astype("int64")
    keep = truth != ignore
    return np.bincount(truth[keep] * k + guess[keep], minlength=k * k).reshape(k, k)


def iou(confusion: np.ndarray) -> np.ndarray:
    """Per class: intersection over union (NaN for a class in neither the truth nor the prediction)."""
    import numpy as np

    hits = np.diag(confusion).astype("float64")
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / np.where(union > 0, union, 1), np.nan)


@functools.cache
def pixel_loss_class():
    """The per-pixel loss (cross-entropy, Dice, Jaccard, cross-entropy with either, focal) without
    the ignored pixels, each image's mean over its counted pixels; `class_weights` weigh each
    pixel's cross-entropy by its class and Dice's or Jaccard's mean over classes; registered for
    `--resume`."""
    import keras

    @keras.saving.register_keras_serializable(package="tlc")
    class PixelLoss(keras.losses.Loss):
        def __init__(self, kind="ce", classes=2, ignore_index=255, from_logits=False, gamma=2.0,
                     class_weights=None, temperature=None, alpha=0.9, reduction="sum_over_batch_size",
                     name="pixel_loss", dtype=None):
            super().__init__(name=name, reduction=reduction, dtype=dtype)
            self.kind, self.classes, self.ignore_index = kind, int(classes), int(ignore_index)
            self.from_logits, self.gamma = from_logits, float(gamma)
            self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
            self.temperature = None if temperature is None else float(temperature)
            self.alpha = float(alpha)

        def call(self, y_true, y_pred):
            ops = keras.ops
            if self.temperature is None or not carries_teacher(y_true, y_pred):
                return self.labelled(y_true, y_pred)
            teacher, t = y_true[..., 1:], self.temperature  # distillation: the mask, then the teacher's probabilities
            student_log = ops.log_softmax(y_pred / t if self.from_logits else ops.log(ops.clip(y_pred, EPSILON, 1.0)) / t,
                                          axis=-1)
            teacher_p = ops.softmax(ops.log(ops.clip(teacher, EPSILON, 1.0)) / t, axis=-1)
            kl = ops.sum(teacher_p * (ops.log(ops.clip(teacher_p, EPSILON, 1.0)) - student_log), axis=-1)
            soft = ops.mean(kl, axis=(1, 2)) * t * t
            return self.alpha * soft + (1 - self.alpha) * self.labelled(y_true[..., 0], y_pred)

        def labelled(self, y_true, y_pred):
            """The task's loss on the mask's counted pixels."""
            ops = keras.ops
            labels = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
            counted = ops.cast(ops.not_equal(labels, self.ignore_index), y_pred.dtype)
            one_hot = ops.one_hot(ops.where(labels == self.ignore_index, 0, labels), self.classes) * counted[..., None]
            probabilities = ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred
            log_p = ops.log_softmax(y_pred, axis=-1) if self.from_logits else ops.log(ops.clip(y_pred, EPSILON, 1.0))
            pixels = ops.maximum(ops.sum(counted, axis=(1, 2)), 1.0)
            loss = 0.0
            if self.kind in ("ce", "ce_dice", "ce_jaccard", "focal"):
                per_pixel = -ops.sum(one_hot * log_p, axis=-1)
                if self.kind == "focal":
                    p_true = ops.sum(one_hot * probabilities, axis=-1)
                    per_pixel = per_pixel * ops.power(1.0 - p_true, self.gamma)
                if self.class_weights is not None:
                    per_pixel = per_pixel * ops.sum(one_hot * ops.convert_to_tensor(self.class_weights, y_pred.dtype),
                                                    axis=-1)
                loss = loss + ops.sum(per_pixel, axis=(1, 2)) / pixels
            if self.kind in ("dice", "ce_dice", "jaccard", "ce_jaccard"):
                p = probabilities * counted[..., None]
                overlap = ops.sum(p * one_hot, axis=(1, 2))
                total = ops.sum(p + one_hot, axis=(1, 2))
                if self.kind.endswith("dice"):
                    score = (2.0 * overlap + 1.0) / (total + 1.0)
                else:  # soft intersection over union
                    score = (overlap + 1.0) / (total - overlap + 1.0)
                if self.class_weights is None:
                    loss = loss + 1.0 - ops.mean(score, axis=-1)
                else:
                    weights = ops.convert_to_tensor(self.class_weights, y_pred.dtype)
                    loss = loss + 1.0 - ops.sum(score * weights, axis=-1) / ops.sum(weights)
            return loss

        def get_config(self):
            return {**super().get_config(), "kind": self.kind, "classes": self.classes,
                    "ignore_index": self.ignore_index, "from_logits": self.from_logits, "gamma": self.gamma,
                    "class_weights": self.class_weights, "temperature": self.temperature, "alpha": self.alpha}

    return PixelLoss


def carries_teacher(y_true, y_pred) -> bool:
    """Whether a batch of targets is distillation's: (n, h, w, 1 + classes), the mask, then the
    teacher's probabilities per pixel (a mask alone is (n, h, w) or (n, h, w, 1))."""
    return len(y_true.shape) == 4 and y_true.shape[-1] == y_pred.shape[-1] + 1


def masks_of(y_true, y_pred):
    """The masks of a batch of targets: the targets, or their first channel when distillation put
    the teacher's probabilities after it."""
    return y_true[..., 0] if carries_teacher(y_true, y_pred) else y_true


@functools.cache
def pixel_mean_iou_class():
    """Keras's MeanIoU on the masks of the targets (`masks_of`); registered for `--resume`.

    Its confusion matrix is counted with one `bincount` over the kept pixels: Keras's own
    (a scatter of every pixel) took 39 ms of a 0.53 s training step of 16 photos at 256x256,
    this 15 ms; with sample weights, Keras's counts them."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="tlc")
    class PixelMeanIoU(keras.metrics.MeanIoU):
        def update_state(self, y_true, y_pred, sample_weight=None):
            y_true = masks_of(y_true, y_pred)
            if sample_weight is not None or self.sparse_y_pred:
                return super().update_state(y_true, y_pred, sample_weight)
            k = self.num_classes
            labels = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int32)
            kept = tf.not_equal(labels, -1 if self.ignore_class is None else self.ignore_class)
            kept &= (labels >= 0) & (labels < k)  # (Keras's matrix would fail on these: left out)
            cells = labels * k + tf.argmax(y_pred, axis=-1, output_type=tf.int32)
            counts = tf.math.bincount(tf.boolean_mask(cells, kept), minlength=k * k, maxlength=k * k,
                                      dtype=self.total_cm.dtype)
            self.total_cm.assign_add(tf.reshape(counts, (k, k)))

    return PixelMeanIoU


@functools.cache
def pixel_accuracy_class():
    """The share of counted pixels whose top class is the true one; registered for `--resume`."""
    import keras

    @keras.saving.register_keras_serializable(package="tlc")
    class PixelAccuracy(keras.metrics.Metric):
        def __init__(self, ignore_index=255, name="pixel_accuracy", dtype=None):
            super().__init__(name=name, dtype=dtype)
            self.ignore_index = int(ignore_index)
            self.hits = self.add_variable(shape=(), initializer="zeros", name="hits")
            self.pixels = self.add_variable(shape=(), initializer="zeros", name="pixels")

        def update_state(self, y_true, y_pred, sample_weight=None):
            ops = keras.ops
            labels = ops.cast(ops.reshape(masks_of(y_true, y_pred), ops.shape(y_pred)[:-1]), "int32")
            counted = ops.cast(ops.not_equal(labels, self.ignore_index), self.dtype)
            right = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels), self.dtype)
            self.hits.assign_add(ops.sum(right * counted))
            self.pixels.assign_add(ops.sum(counted))

        def result(self):
            return self.hits / keras.ops.maximum(self.pixels, 1.0)

        def reset_state(self):
            self.hits.assign(0.0)
            self.pixels.assign(0.0)

        def get_config(self):
            return {**super().get_config(), "ignore_index": self.ignore_index}

    return PixelAccuracy


@hookimpl
def tlc_tasks():
    return [Segmentation]
