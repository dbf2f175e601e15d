"""`regression`: numbers per image (one or more named targets). Linear outputs, one per target,
trained on targets standardised with the training split's mean and deviation (recorded in the
run, and undone by the finishing layer, so every answer is in the targets' units); MSE, MAE or
Huber; MAE, RMSE and R² (in the targets' units)."""
from __future__ import annotations

import functools
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from tlc.plugin.components import Task
from tlc.plugin.hookspecs import hookimpl

from .reading import PATH, needed, numbers
from .splits import by_quantiles


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

    @classmethod
    def head_defaults(cls, raw):
        targets = raw.get("targets", ["value"])
        return {"output_activation": "linear", **({"classes": len(targets)} if isinstance(targets, list) else {})}

    def from_columns(self, rows, columns, spec, where):
        needed(columns, list(self.targets), spec, where, "a column per target, named as task.targets")
        return numbers(rows, list(self.targets), spec, where), list(self.targets), []

    def from_array(self, y, spec, where):
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
        return np.array(targets, dtype="float32").reshape(len(targets), -1)

    def record(self, train_targets):
        mean, std = train_targets.mean(axis=0), train_targets.std(axis=0)
        return {"mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}

    def encoded(self, targets, record):
        return ((targets - np.array(record["mean"], "float32")) / np.array(record["std"], "float32")).astype("float32")

    def loss_function(self, spec, from_logits, record):
        import keras

        return {"mse": keras.losses.MeanSquaredError, "mae": keras.losses.MeanAbsoluteError,
                "huber": keras.losses.Huber}[self.loss]()

    def keras_metrics(self, outputs, from_logits, record):
        import keras

        scaled = scaled_classes()
        std = [float(s) for s in record["std"]]
        return [scaled[0](std, name="mae"), scaled[1](std, name="rmse"), keras.metrics.R2Score(name="r2")]

    def measured(self, targets, outputs, record):
        std = np.array(record["std"], "float32")
        scores = per_target(targets * std, outputs * std)
        return {"mae": float(np.mean(scores["mae"])), "rmse": float(np.sqrt(np.mean(scores["mse"]))),
                "r2": float(np.mean(scores["r2"]))}

    def finishing(self, activation, record):
        import keras

        return keras.layers.Rescaling(scale=np.array(record["std"], "float32"),
                                      offset=np.array(record["mean"], "float32"), name="in_units")

    def answer(self, row, names, record, top):
        return {"values": {name: float(v) for name, v in zip(names, row)}}

    def evaluate(self, targets, answers, names, files, record):
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

    if not len(truth):
        nan = np.full(truth.shape[1], np.nan)
        return {"mae": nan, "mse": nan, "r2": nan}
    return {"mae": mean_absolute_error(truth, predicted, multioutput="raw_values"),
            "mse": mean_squared_error(truth, predicted, multioutput="raw_values"),
            "r2": np.atleast_1d(r2_score(truth, predicted, multioutput="raw_values")) if len(truth) > 1
            else np.full(truth.shape[1], np.nan)}


@functools.cache
def scaled_classes():
    """(MAE, RMSE) of standardised outputs in the targets' units (times each target's deviation),
    registered for `--resume`."""
    import keras

    def scaled(base):
        @keras.saving.register_keras_serializable(package="tlc", name=f"InUnits{base.__name__}")
        class InUnits(base):
            def __init__(self, scale=(1.0,), name=None, dtype=None):
                super().__init__(name=name, dtype=dtype)
                self.scale = [float(s) for s in scale]

            def update_state(self, y_true, y_pred, sample_weight=None):
                scale = keras.ops.convert_to_tensor(self.scale, y_pred.dtype)
                return super().update_state(keras.ops.cast(y_true, y_pred.dtype) * scale, y_pred * scale,
                                            sample_weight)

            def get_config(self):
                return {**super().get_config(), "scale": self.scale}

        return InUnits

    return scaled(keras.metrics.MeanAbsoluteError), scaled(keras.metrics.RootMeanSquaredError)


@hookimpl
def tlc_tasks():
    return [Regression]
