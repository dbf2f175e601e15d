"""`classification`: one class per image (the default task). Softmax or logits out, sparse
cross-entropy, accuracy; evaluate's per-class report, confusion matrix and worst mistakes."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

from tlc.plugin.components import Task
from tlc.plugin.hookspecs import hookimpl

from .distilling import EPSILON
from .reading import label_column, looks_like_numbers, looks_like_tags
from .splits import stratified

if TYPE_CHECKING:
    import numpy as np  # (imported where used: `tlc check` loads the task without NumPy)


class Classification(Task):
    """one class per image"""

    type: Literal["classification"] = "classification"

    metrics = ("accuracy",)
    higher = {"accuracy": True}
    activations = ("softmax", "linear")

    def from_classes(self, labels, names, spec):
        return labels, names

    def columns(self, spec):
        return ["label"]

    def from_columns(self, rows, columns, spec, where):
        """`path,label`: labels are names, or integers 0..k-1; a column that looks like numbers
        or tags trains as asked, with a located warning naming the task that fits."""
        import numpy as np

        raw = label_column(rows, columns, spec, where)
        if all(label.isdigit() for label in raw):
            labels = np.array([int(label) for label in raw], dtype="int64")
            names = [str(c) for c in range(int(labels.max()) + 1)]
        else:
            names = sorted(set(raw))
            index = {name: i for i, name in enumerate(names)}
            labels = np.array([index[label] for label in raw], dtype="int64")
        warnings = []
        numbers = looks_like_numbers(raw)
        if numbers:
            warnings.append(str(spec.error(("train", "data", "path"), (
                f"{where}: the labels look like numbers ({numbers}): each distinct value becomes a class "
                f"({len(set(raw))} classes); a number per image is task: {{type: regression, targets: [label]}}"))))
        tags = looks_like_tags(raw)
        if tags:
            warnings.append(str(spec.error(("train", "data", "path"), (
                f"{where}: the labels look like tags ({tags}): each combination becomes a class "
                f"({len(set(raw))} classes); several tags per image is task: multi_label with "
                "train.data.tags: label"))))
        return labels, names, warnings

    def from_array(self, y, spec, where):
        import numpy as np

        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise spec.error(("train", "data", "path"), f"{where}: y must be (n,) class indices for classification; "
                                                        f"got {y.shape} (tags are task: multi_label)")
        y = y.reshape(-1)
        if not np.all(np.equal(np.mod(y, 1), 0)) or (len(y) and y.min() < 0):
            raise spec.error(("train", "data", "path"), f"{where}: y must hold class indices 0..k-1 for "
                                                        "classification (numbers are task: regression)")
        y = y.astype("int64")
        return y, [str(c) for c in range(int(y.max()) + 1)]

    def split(self, targets, validation, test, seed):
        return stratified(targets, validation, test, seed)

    def split_warnings(self, spec, targets, parts):
        """A located warning for each split the spec asks for that came out empty: every class is
        too small for a share of it to round to one example."""
        import numpy as np

        out = []
        for key, indices in parts.items():
            share = getattr(spec.train.data, key)
            if share > 0 and len(indices) == 0:
                largest = int(np.bincount(targets).max()) if len(targets) else 0
                out.append(str(spec.error(("train", "data", key), (
                    f"{share} gives no {key.split('_')[0]} examples: the largest class has {largest} "
                    f"(round({largest} x {share}) = 0); add examples or raise {key}"))))
        return out

    def from_json(self, targets):
        import numpy as np

        return np.array([int(y) for y in targets], dtype="int64")

    def loss_function(self, spec, from_logits, record):
        return cross_entropy(spec.train.label_smoothing, from_logits)

    def keras_metrics(self, outputs, from_logits, record):
        return ["accuracy"]

    distillation_note = "{a:g} * T^2 * KL + {b:g} * CE at T = {t:g}"

    def distillation_loss(self, spec, from_logits, record):
        d = spec.train.distill
        return distillation_classes()[0](d.temperature, d.alpha, spec.train.label_smoothing, from_logits)

    def distillation_metrics(self, outputs, from_logits, record):
        return [distillation_classes()[1]()]

    def measured(self, targets, outputs, record):
        import numpy as np

        return {"accuracy": float(np.mean(np.argmax(outputs, axis=-1) == targets))}

    def finishing(self, activation, record):
        import keras

        return keras.layers.Softmax(name="probabilities") if activation == "linear" else None

    def answer(self, row, names, record, top):
        import numpy as np

        best = np.argsort(-row, kind="stable")[:top]
        return {"top": [{"class": names[i] if names else str(i), "index": int(i), "probability": float(row[i])}
                        for i in best]}

    def evaluate(self, targets, answers, names, files, record):
        return {**scores(targets, answers, names), "mistakes": mistakes(targets, answers, names, files)}

    def worst(self, targets, answers, names, record, limit=16):
        return [(int(i), f"true {names[targets[i]]}\npredicted {names[answers[i].argmax()]} ({answers[i].max():.2f})",
                 int(answers[i].argmax())) for i in worst_mistakes(targets, answers, limit)]

    def figures(self, result, targets, answers, names, title):
        from tlc.show.figures import confusion_plot

        import numpy as np

        return {"confusion.png": confusion_plot(np.array(result["confusion"]), names, title)}


def scores(labels: np.ndarray, probabilities: np.ndarray, names: list[str]) -> dict:
    """Accuracy, loss, top-k, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support, top_k_accuracy_score

    import numpy as np

    k = len(names)
    predicted = probabilities.argmax(axis=1)
    every = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=every,
                                                                     zero_division=0)
    out = {
        "task": "classification",
        "examples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "loss": float(log_loss(labels, np.clip(probabilities, 1e-7, 1), labels=every)),
        "top_k": {},
        "per_class": [{"class": names[c], "precision": float(precision[c]), "recall": float(recall[c]),
                       "f1": float(f1[c]), "support": int(support[c])} for c in every],
        "confusion": confusion_matrix(labels, predicted, labels=every).tolist(),
        "classes": list(names),
    }
    if k > 3:
        out["top_k"]["3"] = float(top_k_accuracy_score(labels, probabilities, k=3, labels=every))
    return out


def worst_mistakes(labels: np.ndarray, probabilities: np.ndarray, limit: int = 16) -> np.ndarray:
    """Up to `limit` misclassified examples, the most confident mistakes first, taken in turn from
    each true class (so one confused class does not fill the grid)."""
    import numpy as np

    wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    wrong = wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")]
    per_class = [list(wrong[labels[wrong] == c]) for c in np.unique(labels[wrong])]
    picked = []
    while len(picked) < limit and any(per_class):
        picked += [queue.pop(0) for queue in per_class if queue][: limit - len(picked)]
    return np.array(picked, dtype="int64")


def mistakes(labels: np.ndarray, probabilities: np.ndarray, names: list[str], files: list[str]) -> list[dict]:
    """Every misclassified example, the most confident mistake first: what `evaluation.json`
    lists and the console names."""
    import numpy as np

    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    return [{"file": files[i], "true": names[labels[i]], "predicted": names[predicted[i]],
             "probability": float(probabilities[i, predicted[i]])} for i in wrong]


def cross_entropy(label_smoothing: float, from_logits: bool, reduction: str = "sum_over_batch_size") -> Any:
    """Sparse categorical cross-entropy, with `label_smoothing` when asked (Keras's sparse loss has
    no smoothing, so the labels are one-hot encoded inside the loss)."""
    import keras

    if label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction=reduction)
    return smoothed_class()(label_smoothing=label_smoothing, from_logits=from_logits, reduction=reduction)


@functools.cache
def smoothed_class():
    """Registered once, so checkpoints that carry this loss load again (`--resume`)."""
    import keras

    @keras.saving.register_keras_serializable(package="tlc")
    class SparseSmoothedCrossentropy(keras.losses.Loss):
        def __init__(self, label_smoothing=0.0, from_logits=False, reduction="sum_over_batch_size",
                     name="sparse_smoothed_crossentropy", dtype=None):
            super().__init__(name=name, reduction=reduction, dtype=dtype)
            self.label_smoothing, self.from_logits = label_smoothing, from_logits

        def call(self, y_true, y_pred):
            classes = keras.ops.shape(y_pred)[-1]
            one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), classes)
            return keras.losses.categorical_crossentropy(one_hot, y_pred, from_logits=self.from_logits,
                                                         label_smoothing=self.label_smoothing)

        def get_config(self):
            return {**super().get_config(), "label_smoothing": self.label_smoothing,
                    "from_logits": self.from_logits}

    return SparseSmoothedCrossentropy


@functools.cache
def distillation_classes():
    """(DistillationLoss, LabelledAccuracy), defined and registered with Keras on first use.

    A training target row is (label, the teacher's probabilities...), the label -1 for an
    unlabeled image, which the teacher alone teaches. The loss is the contract's
    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(label), the KL term from
    `keras.distillation.LogitsDistillation` (the teacher's logits are its log-probabilities, which
    differ from its logits by a constant per image, so softmax(logits / T) is the same); accuracy
    counts labelled images only."""
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


@hookimpl
def tlc_tasks():
    return [Classification]
