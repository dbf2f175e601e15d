"""`multi_label`: any number of tags per image. Sigmoid (or logits) out, binary cross-entropy or
focal loss; mean average precision and F1; per-tag thresholds (a number, or tuned on the
validation split for each tag's best F1) that evaluate, predict, serve and the page all use."""
from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from tlc.plugin.components import Task
from tlc.plugin.fields import by_kind
from tlc.plugin.hookspecs import hookimpl

from .distilling import EPSILON, labelled_metrics, labelled_parts
from .reading import PATH, needed, numbers
from .splits import iterative

if TYPE_CHECKING:
    import numpy as np  # (imported where used: `tlc check` loads the task without NumPy)

DEFAULT_THRESHOLD = 0.5


class MultiLabel(Task):
    """any number of tags per image"""

    type: Literal["multi_label"] = "multi_label"
    threshold: by_kind("a number in (0, 1) or tuned", float=Annotated[float, Field(gt=0, lt=1)],
                       str=Literal["tuned"]) = Field(
        DEFAULT_THRESHOLD, description="a tag is given at or over its threshold: one number for every tag, or tuned "
                                       "(per tag, the threshold of its best F1 on the validation split)")
    loss: Literal["bce", "focal"] = Field("bce", description="binary cross-entropy, or focal (Lin et al.)")

    metrics = ("map", "f1")
    higher = {"map": True, "f1": True}
    activations = ("sigmoid", "linear")
    worst_title, worst_heat = "most wrong tags", "a missed tag, else the top one"
    noun = ("tag", "tags")

    def columns(self, spec):
        data = spec.train.data
        return list(data.columns) if data.columns else [data.tags or "tags"]

    def from_columns(self, rows, columns, spec, where):
        """A tags column (`tags`, split at `delimiter`; empty: no tag) or 0/1 `columns`."""
        import numpy as np

        data = spec.train.data
        if data.columns:
            needed(columns, list(data.columns), spec, where, "one 0/1 column per tag")
            targets = numbers(rows, list(data.columns), spec, where)
            bad = np.argwhere((targets != 0) & (targets != 1))
            if len(bad):
                i, j = bad[0]
                raise spec.error(PATH, f"{where}:{rows[i][1]}: {data.columns[j]} must be 0 or 1; "
                                       f"received: {rows[i][0][data.columns[j]]!r}")
            return targets, list(data.columns), []
        column = data.tags or "tags"
        needed(columns, [column], spec, where, f"each image's tags separated by {data.delimiter!r}; or set "
                                               "train.data.tags to its name, or train.data.columns to 0/1 columns")
        split = re.compile(re.escape(data.delimiter.strip() or data.delimiter) + ("+" if data.delimiter.isspace() else ""))
        lists = [[t.strip() for t in split.split(row[column].strip()) if t.strip()] if row[column].strip() else []
                 for row, _ in rows]
        names = sorted({t for tags in lists for t in tags})
        if not names:
            raise spec.error(PATH, f"{where}: the {column} column has no tags")
        index = {name: i for i, name in enumerate(names)}
        targets = np.zeros((len(rows), len(names)), "float32")
        for i, tags in enumerate(lists):
            targets[i, [index[t] for t in tags]] = 1
        return targets, names, []

    def from_array(self, y, spec, where):
        import numpy as np

        if y.ndim != 2 or not np.isin(y, (0, 1)).all():
            raise spec.error(PATH, f"{where}: y must be an (n, tags) matrix of 0 and 1 for multi_label; got "
                                   f"{y.dtype} {y.shape}")
        return y.astype("float32"), [str(k) for k in range(y.shape[1])]

    def from_classes(self, labels, names, spec):
        raise spec.error(("train", "data", "type"), f"{spec.train.data.type} gives one class per image; tags come "
                                                    "from a csv (a tags column, or 0/1 columns) or an npz (y: n x tags)")

    def split(self, targets, validation, test, seed):
        return iterative(targets, validation, test, seed)

    def aligned(self, targets, names, known):
        """A new csv need not use every tag the run knows (those absent are 0 for every image)."""
        import numpy as np

        if not set(names) <= set(known):
            return None
        out = np.zeros((len(targets), len(known)), "float32")
        out[:, [known.index(n) for n in names]] = targets
        return out

    def from_json(self, targets):
        import numpy as np

        return np.array(targets, dtype="float32").reshape(len(targets), -1)

    def loss_function(self, spec, from_logits, record):
        import keras

        if self.loss == "focal":
            return keras.losses.BinaryFocalCrossentropy(from_logits=from_logits,
                                                        label_smoothing=spec.train.label_smoothing)
        return keras.losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=spec.train.label_smoothing)

    def keras_metrics(self, outputs, from_logits, record):
        import keras

        return [keras.metrics.AUC(curve="PR", multi_label=True, num_labels=outputs, from_logits=from_logits,
                                  name="map"),
                f1_class()(threshold=self.fixed, from_logits=from_logits, name="f1")]

    distillation_note = "{a:g} * T^2 * BCE(teacher_T, student_T) + {b:g} * BCE at T = {t:g}"

    def distillation_loss(self, spec, from_logits, record):
        d = spec.train.distill
        return tag_distillation_class()(d.temperature, d.alpha, label_smoothing=spec.train.label_smoothing,
                                        from_logits=from_logits)

    def distillation_metrics(self, outputs, from_logits, record):
        return labelled_metrics(self, outputs, from_logits, record)

    @property
    def fixed(self) -> float:
        """The threshold before any is tuned (training's F1)."""
        return DEFAULT_THRESHOLD if self.threshold == "tuned" else float(self.threshold)

    def measured(self, targets, outputs, record):
        import numpy as np

        probabilities = outputs if outputs.min() >= 0 and outputs.max() <= 1 else 1 / (1 + np.exp(-outputs))
        return {"map": mean_ap(targets, probabilities),
                "f1": f1_scores(targets, probabilities >= self.fixed)[1]}

    def finishing(self, activation, record):
        import keras

        return keras.layers.Activation("sigmoid", name="probabilities") if activation == "linear" else None

    def calibrate(self, targets, answers, record):
        """The thresholds: the spec's number for every tag, or per tag its best F1's on `targets`
        (the validation split); a tag without a positive there keeps the default."""
        k = answers.shape[1]
        if self.threshold != "tuned":
            return {**record, "thresholds": [float(self.threshold)] * k}
        return {**record, "thresholds": [best_threshold(targets[:, j], answers[:, j]) for j in range(k)],
                "tuned_on": int(len(targets))}

    def thresholds(self, record, k: int) -> np.ndarray:
        import numpy as np

        return np.array(record.get("thresholds") or [self.fixed] * k, dtype="float32")

    def answer(self, row, names, record, top):
        import numpy as np

        limits = self.thresholds(record, len(row))
        return {"tags": [names[j] for j in range(len(row)) if row[j] >= limits[j]],
                "scores": [{"class": names[j], "probability": float(row[j]), "threshold": float(limits[j])}
                           for j in np.argsort(-row, kind="stable")]}

    def evaluate(self, targets, answers, names, files, record):
        from sklearn.metrics import average_precision_score, precision_recall_fscore_support

        import numpy as np

        limits = self.thresholds(record, len(names))
        given = answers >= limits
        precision, recall, f1, support = precision_recall_fscore_support(targets, given, average=None, zero_division=0)
        ap = [float(average_precision_score(targets[:, j], answers[:, j])) if targets[:, j].any() else None
              for j in range(len(names))]
        micro, macro = f1_scores(targets, given)
        wrong = (given != targets.astype(bool)).sum(axis=1)
        order = np.argsort(-wrong, kind="stable")
        return {
            "task": "multi_label",
            "examples": int(len(targets)),
            "map": mean_ap(targets, answers),
            "f1_micro": micro,
            "f1_macro": macro,
            "subset_accuracy": float(np.mean(wrong == 0)),
            "per_class": [{"class": names[j], "ap": ap[j], "precision": float(precision[j]),
                           "recall": float(recall[j]), "f1": float(f1[j]), "threshold": float(limits[j]),
                           "support": int(support[j])} for j in range(len(names))],
            "mistakes": [{"file": files[i], "true": [names[j] for j in np.flatnonzero(targets[i])],
                          "predicted": [names[j] for j in np.flatnonzero(given[i])], "wrong": int(wrong[i])}
                         for i in order if wrong[i]],
        }

    def worst(self, targets, answers, names, record, limit=16):
        import numpy as np

        given = answers >= self.thresholds(record, len(names))
        wrong = np.abs(answers - targets).sum(axis=1)
        out = []
        for i in np.argsort(-wrong, kind="stable")[:limit]:
            if (given[i] == targets[i].astype(bool)).all():
                continue
            missed = [names[j] for j in np.flatnonzero(targets[i].astype(bool) & ~given[i])]
            extra = [names[j] for j in np.flatnonzero(~targets[i].astype(bool) & given[i])]
            caption = "\n".join(p for p in (f"missed {' '.join(missed)}" if missed else "",
                                            f"extra {' '.join(extra)}" if extra else "") if p)
            shown = np.flatnonzero(targets[i].astype(bool) & ~given[i])
            out.append((int(i), caption, int(shown[0] if len(shown) else answers[i].argmax())))
        return out

    def figures(self, result, targets, answers, names, title):
        from tlc.show.figures import pr_curves_plot

        return {"pr_curves.png": pr_curves_plot(targets, answers, names, result["per_class"], title)}

    def headline(self, result):
        return f"mAP {result['map']:.3f}, F1 macro {result['f1_macro']:.3f}, subset accuracy {result['subset_accuracy']:.3f}"


def mean_ap(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """The mean over tags (those with a positive) of scikit-learn's average precision."""
    from sklearn.metrics import average_precision_score

    import numpy as np

    present = np.flatnonzero(targets.any(axis=0))
    if not len(present):
        return 0.0
    return float(np.mean([average_precision_score(targets[:, j], probabilities[:, j]) for j in present]))


def f1_scores(targets: np.ndarray, given: np.ndarray) -> tuple[float, float]:
    """(micro, macro) F1 of the tags given."""
    from sklearn.metrics import f1_score

    truth = targets.astype(bool)
    return (float(f1_score(truth, given, average="micro", zero_division=0)),
            float(f1_score(truth, given, average="macro", zero_division=0)))


def best_threshold(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """The threshold of a tag's best F1 over its precision-recall curve (ties: the highest)."""
    from sklearn.metrics import precision_recall_curve

    import numpy as np

    if not truth.any():
        return DEFAULT_THRESHOLD
    precision, recall, thresholds = precision_recall_curve(truth, probabilities)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(np.clip(thresholds[best], 1e-6, 1 - 1e-6))


@functools.cache
def f1_class():
    """Keras's macro F1 over sigmoid outputs, or over logits (sigmoid first), registered for `--resume`."""
    import keras

    @keras.saving.register_keras_serializable(package="tlc")
    class TagF1(keras.metrics.F1Score):
        def __init__(self, threshold=DEFAULT_THRESHOLD, from_logits=False, name="f1", dtype=None, **kwargs):
            kwargs.pop("average", None)
            super().__init__(average="macro", threshold=threshold, name=name, dtype=dtype)
            self.from_logits = from_logits

        def update_state(self, y_true, y_pred, sample_weight=None):
            if self.from_logits:
                y_pred = keras.ops.sigmoid(y_pred)
            return super().update_state(keras.ops.cast(y_true, self.dtype), y_pred, sample_weight)

        def get_config(self):
            return {**super().get_config(), "from_logits": self.from_logits}

    return TagF1


@functools.cache
def tag_distillation_class():
    """TagDistillation, defined and registered with Keras on first use (for `--resume`)."""
    import keras

    @keras.saving.register_keras_serializable(package="tlc")
    class TagDistillation(keras.losses.Loss):
        """alpha * T^2 * BCE(sigmoid(teacher logits / T), sigmoid(student logits / T)) + (1 - alpha) * BCE(tags),
        each the mean over tags; an unlabeled image has the first term only."""

        def __init__(self, temperature=4.0, alpha=0.9, width=None, label_smoothing=0.0, from_logits=False,
                     reduction="sum_over_batch_size", name="tag_distillation", dtype=None):
            super().__init__(name=name, reduction=reduction, dtype=dtype)
            # (`width`, the tags', is the outputs' now; kept so that older checkpoints load)
            self.temperature, self.alpha = float(temperature), float(alpha)
            self.label_smoothing, self.from_logits = label_smoothing, from_logits

        def call(self, y_true, y_pred):
            hard = keras.losses.binary_crossentropy
            split = labelled_parts(y_true, y_pred.shape[-1])
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
            return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha,
                    "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}

    return TagDistillation


@hookimpl
def tlc_tasks():
    return [MultiLabel]
