"""`regression`: numbers per image (one or more named targets). Linear outputs, one per target,
trained to give the targets standardised with the training split's mean and deviation (recorded
in the run; the loss standardises, the finishing layer undoes it, so every answer and metric is in
the targets' units); MSE, MAE or
Huber; MAE, RMSE and R² (in the targets' units)."""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from tlc.plugin.components import Task
from tlc.plugin.hookspecs import hookimpl

from .distilling import labelled_metrics, labelled_parts
from .reading import PATH, needed, numbers
from .splits import by_quantiles

if TYPE_CHECKING:
    import numpy as np  # (imported where used: `tlc check` loads the task without NumPy)


class Regression(Task):
    """numbers per image"""

    type: Literal["regression"] = "regression"
    targets: Annotated[list[Annotated[str, Field(pattern=r"^[^,\s][^,]*$")]], Field(min_length=1, max_length=256)] = \
        Field(["value"], description="the targets' names: csv columns, the answers' keys (default one, value)")
    loss: Literal["mse", "mae", "huber"] = Field("mse", description="mean squared error, mean absolute error or Huber "
                                                                    "(on the standardised targets)")

    metrics = ("mae", "rmse", "r2")
    higher = {"mae": False, "rmse": False, "r2": True}
    activations = ("linear",)
    no_label = float("nan")  # (-1 is a value)
    noun = ("target", "targets")
    worst_figure, worst_title, worst_heat = "worst.png", "largest errors", "the output"

    @classmethod
    def head_defaults(cls, raw):
        targets = raw.get("targets", ["value"])
        return {"output_activation": "linear", **({"classes": len(targets)} if isinstance(targets, list) else {})}

    def columns(self, spec):
        return list(self.targets)

    def from_columns(self, rows, columns, spec, where):
        needed(columns, list(self.targets), spec, where, "a column per target, named as task.targets")
        return numbers(rows, list(self.targets), spec, where), list(self.targets), []

    def from_array(self, y, spec, where):
        import numpy as np

        if not np.issubdtype(y.dtype, np.number):
            raise spec.error(PATH, f"{where}: y must be numbers for regression; got {y.dtype}")
        y = y.reshape(len(y), -1).astype("float32")
        if y.shape[1] != len(self.targets):
            raise spec.error(("task", "targets"), f"{where}: y has {y.shape[1]} value(s) per image; task.targets "
                                                  f"names {len(self.targets)} ({', '.join(self.targets)})")
        if not np.isfinite(y).all():
            raise spec.error(PATH, f"{where}: y has {int((~np.isfinite(y)).sum())} value(s) that are not finite")
        return y, list(self.targets)

    def from_classes(self, labels, names, spec):
        raise spec.error(("train", "data", "type"), f"{spec.train.data.type} gives one class per image; numbers come "
                                                    "from a csv (a column per target) or an npz (float y)")

    def split(self, targets, validation, test, seed):
        return by_quantiles(targets[:, 0], validation, test, seed)

    def from_json(self, targets):
        import numpy as np

        return np.array(targets, dtype="float32").reshape(len(targets), -1)

    def record(self, train_targets):
        import numpy as np

        mean, std = train_targets.mean(axis=0), train_targets.std(axis=0)
        return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}

    def loss_function(self, spec, from_logits, record):
        """The loss on standardised targets (the model learns values of deviation 1; the targets
        stay in their units everywhere else)."""
        return standardized_class()(self.loss, record["mean"], record["std"])

    distillation_note = "{a:g} * L(teacher's values) + {b:g} * L(targets)"

    def distillation_loss(self, spec, from_logits, record):
        return value_distillation_class()(self.loss, record["mean"], record["std"], spec.train.distill.alpha)

    def distillation_metrics(self, outputs, from_logits, record):
        return labelled_metrics(self, outputs, from_logits, record)

    def keras_metrics(self, outputs, from_logits, record):
        mae, rmse, r2 = in_units_classes()
        return [cls(record["mean"], record["std"], name=name) for cls, name in ((mae, "mae"), (rmse, "rmse"), (r2, "r2"))]

    def measured(self, targets, outputs, record):
        import numpy as np

        scores = per_target(targets, in_units(outputs, record))
        return {"mae": float(np.mean(scores["mae"])), "rmse": float(np.sqrt(np.mean(scores["mse"]))),
                "r2": float(np.mean(scores["r2"]))}

    def finishing(self, activation, record):
        import keras

        import numpy as np

        return keras.layers.Rescaling(scale=np.array(record["std"], "float32"),
                                      offset=np.array(record["mean"], "float32"), name="in_units")

    def answer(self, row, names, record, top):
        return {"values": {name: float(v) for name, v in zip(names, row)}}

    def evaluate(self, targets, answers, names, files, record):
        import numpy as np

        scores = per_target(targets, answers)
        error = np.abs(answers - targets).mean(axis=1)
        order = np.argsort(-error, kind="stable")[:20]

        def shown(row):
            return float(row[0]) if len(names) == 1 else {n: float(v) for n, v in zip(names, row)}

        return {
            "task": "regression",
            "examples": int(len(targets)),
            "mae": float(scores["mae"][0]),
            "rmse": float(np.sqrt(scores["mse"][0])),
            "r2": float(scores["r2"][0]),
            "per_target": [{"target": n, "mae": float(scores["mae"][j]), "rmse": float(np.sqrt(scores["mse"][j])),
                            "r2": float(scores["r2"][j])} for j, n in enumerate(names)],
            "worst": [{"file": files[i], "true": shown(targets[i]), "predicted": shown(answers[i])} for i in order],
        }

    def worst(self, targets, answers, names, record, limit=16):
        import numpy as np

        error = np.abs(answers - targets).mean(axis=1)
        return [(int(i), f"true {_short(targets[i])}\npredicted {_short(answers[i])}", 0)
                for i in np.argsort(-error, kind="stable")[:limit]]

    def figures(self, result, targets, answers, names, title):
        from tlc.show.figures import predicted_vs_true_plot

        return {"predicted_vs_true.png": predicted_vs_true_plot(targets, answers, names, result["per_target"], title)}

    def headline(self, result):
        return f"MAE {result['mae']:.4g}, RMSE {result['rmse']:.4g}, R² {result['r2']:.3f}"


def _short(row) -> str:
    return " ".join(f"{v:.3g}" for v in row)


def per_target(truth: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Per target (columns): mae, mse and r2 (scikit-learn's)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    import numpy as np

    if not len(truth):
        nan = np.full(truth.shape[1], np.nan)
        return {"mae": nan, "mse": nan, "r2": nan}
    return {"mae": mean_absolute_error(truth, predicted, multioutput="raw_values"),
            "mse": mean_squared_error(truth, predicted, multioutput="raw_values"),
            "r2": np.atleast_1d(r2_score(truth, predicted, multioutput="raw_values")) if len(truth) > 1
            else np.full(truth.shape[1], np.nan)}


def in_units(outputs: np.ndarray, record: dict) -> np.ndarray:
    """The model's standardised outputs in the targets' units."""
    import numpy as np

    return outputs * np.array(record["std"], "float32") + np.array(record["mean"], "float32")


@functools.cache
def standardized_class():
    """Registered once, so checkpoints that carry the loss load again (`--resume`)."""
    import keras

    @keras.saving.register_keras_serializable(package="tlc")
    class StandardizedLoss(keras.losses.Loss):
        """`kind` (mse, mae or huber) between standardised targets and the outputs."""

        def __init__(self, kind="mse", mean=(0.0,), std=(1.0,), reduction="sum_over_batch_size",
                     name="standardized", dtype=None):
            super().__init__(name=name, reduction=reduction, dtype=dtype)
            self.kind, self.mean, self.std = kind, [float(m) for m in mean], [float(s) for s in std]

        def call(self, y_true, y_pred):
            y_true = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), keras.ops.shape(y_pred))
            scaled = (y_true - keras.ops.convert_to_tensor(self.mean, y_pred.dtype)) / \
                keras.ops.convert_to_tensor(self.std, y_pred.dtype)
            return {"mse": keras.losses.mean_squared_error, "mae": keras.losses.mean_absolute_error,
                    "huber": keras.losses.huber}[self.kind](scaled, y_pred)

        def get_config(self):
            return {**super().get_config(), "kind": self.kind, "mean": self.mean, "std": self.std}

    return StandardizedLoss


@functools.cache
def in_units_classes():
    """Keras's MAE, RMSE and R² of the standardised outputs taken back to the targets' units,
    registered for `--resume`."""
    import keras

    def in_units_of(base):
        @keras.saving.register_keras_serializable(package="tlc", name=f"InUnits{base.__name__}")
        class InUnits(base):
            def __init__(self, mean=(0.0,), std=(1.0,), name=None, dtype=None, **kwargs):
                super().__init__(name=name, dtype=dtype, **kwargs)
                self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

            def update_state(self, y_true, y_pred, sample_weight=None):
                y_pred = y_pred * keras.ops.convert_to_tensor(self.std, y_pred.dtype) + \
                    keras.ops.convert_to_tensor(self.mean, y_pred.dtype)
                y_true = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), keras.ops.shape(y_pred))
                return super().update_state(y_true, y_pred, sample_weight)

            def get_config(self):
                return {**super().get_config(), "mean": self.mean, "std": self.std}

        return InUnits

    return (in_units_of(keras.metrics.MeanAbsoluteError), in_units_of(keras.metrics.RootMeanSquaredError),
            in_units_of(keras.metrics.R2Score))


@functools.cache
def value_distillation_class():
    """ValueDistillation, defined and registered with Keras on first use (for `--resume`)."""
    import keras

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
            targets, labelled, teacher = labelled_parts(y_true, width, math.nan)
            return self.alpha * self.base.call(teacher, y_pred) + (1 - self.alpha) * labelled * \
                self.base.call(targets, y_pred)

        def get_config(self):
            return {**super().get_config(), "kind": self.kind, "mean": self.mean, "std": self.std, "alpha": self.alpha}

    return ValueDistillation


@hookimpl
def tlc_tasks():
    return [Regression]
