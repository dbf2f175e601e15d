"""What a model is trained with: loss (with label smoothing), optimizer, metrics, learning-rate
schedule, early stopping, class weights and TensorBoard logs. Each depends only on the epoch and
on what `State` records, so `--resume` after a kill gives the same rows."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from tlc.layout import RunLayout

METRICS = ("accuracy",)


def learning_rate(spec, base: float, epoch_in_phase: int, phase_epochs: int) -> float | None:
    """This epoch's learning rate under `optimizer.schedule` and `warmup_epochs` (None: constant,
    leave the optimizer alone). Warm-up ramps linearly to `base`; cosine then decays to 0 over
    the rest of the phase (per epoch)."""
    o = spec.train.optimizer
    if o.schedule == "constant" and o.warmup_epochs == 0:
        return None
    warmup = min(o.warmup_epochs, phase_epochs)
    if epoch_in_phase < warmup:
        return base * (epoch_in_phase + 1) / (warmup + 1)
    if o.schedule == "constant":
        return base
    span = max(phase_epochs - warmup, 1)
    return base * 0.5 * (1 + math.cos(math.pi * (epoch_in_phase - warmup) / span))


class EarlyStopping:
    """`train.early_stopping`: stop a phase once `monitor` has not improved for `patience` epochs.
    Its memory (best value, best epoch, epochs waited) lives in the run's state, so it resumes."""

    def __init__(self, spec, memory: dict):
        self.spec, self.memory = spec, memory

    @property
    def mode(self) -> str:
        return "max" if "accuracy" in self.spec.monitor else "min"

    def update(self, epoch: int, row: dict) -> bool:
        """Record `row`; True when the phase should stop now. Returns whether this epoch is the best."""
        value = row.get(self.spec.monitor)
        best = self.memory.get("best")
        better = value is not None and (best is None or (value > best if self.mode == "max" else value < best))
        if better:
            self.memory.update(best=value, best_epoch=epoch, wait=0)
        else:
            self.memory["wait"] = self.memory.get("wait", 0) + 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.memory.get("wait", 0) > self.spec.patience

    def reason(self, epoch: int) -> dict:
        m = self.memory
        return {"epoch": epoch, "monitor": self.spec.monitor, "best": m.get("best"),
                "best_epoch": m.get("best_epoch"), "patience": self.spec.patience,
                "restored_best": self.spec.restore_best,
                "reason": f"{self.spec.monitor} did not improve for {self.spec.patience + 1} epochs after its best "
                          f"({m.get('best'):.4f} at epoch {m.get('best_epoch', 0) + 1})"}


def class_weights(spec, labels: np.ndarray, classes: int) -> dict[int, float] | None:
    """`class_weight: balanced`: n / (k * count(c)), as scikit-learn computes it."""
    if spec.train.class_weight != "balanced":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    out = {c: 1.0 for c in range(classes)}
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out


def loss_for(spec, model, dataset) -> Any:
    """The loss of a single-label classifier whose head fits the data (else a clear error)."""
    out = tuple(model.output.shape[1:])
    if out != (dataset.num_classes,):
        if len(out) != 1:
            raise spec.error(("head", "type"), f"tlc train needs a classifier head; the model outputs {out} "
                                               "(use head: {type: dense, classes: N})")
        raise spec.error(("head", "classes") if "classes" in type(spec.head).model_fields else ("head",),
                         f"the head has {out[0]} classes but the data has {dataset.num_classes} "
                         f"({', '.join(dataset.class_names)}); set head.classes: {dataset.num_classes}")
    activation = getattr(spec.head, "output_activation", "softmax")
    if activation == "sigmoid":
        raise spec.error(("head", "output_activation"),
                         "tlc train trains single-label classifiers: use output_activation: softmax (or linear)")
    t, from_logits = spec.train, activation == "linear"
    if t.distill is not None:
        from .losses import distillation_classes

        return distillation_classes()[0](t.distill.temperature, t.distill.alpha, t.label_smoothing, from_logits)
    from .losses import cross_entropy

    return cross_entropy(t.label_smoothing, from_logits)


def optimizer(spec, learning_rate: float) -> Any:
    import keras

    kind = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return kind[spec.train.optimizer.type](learning_rate=learning_rate)


def compile_model(model, loss_fn, optimizer_, steps_per_execution: int = 1) -> None:
    """Keywords only: Keras 3's third positional argument is `loss_weights`, not metrics.
    `steps_per_execution` > 1 runs that many steps per call of the traced function: the same
    steps in the same order, without Python between them (a head on cached features takes a
    few milliseconds a step, less than Keras spends calling it). A distillation loss comes with
    its accuracy, which counts labelled images only."""
    from .losses import distillation_classes, is_distillation

    metrics = [distillation_classes()[1]()] if is_distillation(loss_fn) else list(METRICS)
    model.compile(optimizer=optimizer_, loss=loss_fn, metrics=metrics, steps_per_execution=steps_per_execution)


class TensorBoardLog:
    """`runs/<name>/logs/{train,validation}`: one scalar per metric per epoch (chief only)."""

    def __init__(self, folder, enabled: bool):
        self.writers = None
        if enabled:
            import tensorflow as tf

            self.writers = {part: tf.summary.create_file_writer(str(RunLayout(folder).logs / part))
                            for part in ("train", "validation")}

    def write(self, epoch: int, row: dict) -> None:
        if not self.writers:
            return
        import tensorflow as tf

        for key, value in row.items():
            if key == "epoch":
                continue
            part, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[part].as_default():
                tf.summary.scalar(name, value, step=epoch)
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in (self.writers or {}).values():
            writer.close()

    @classmethod
    def replay(cls, folder, rows: list[dict], enabled: bool) -> None:
        """The log of a run that kept none while it trained, written from its history."""
        log = cls(folder, enabled)
        for row in rows:
            log.write(row["epoch"], row)
        log.close()
