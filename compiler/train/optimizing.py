"""How a model is compiled for a phase (optimizer, loss, metrics) and its learning rate each
epoch (`optimizer.schedule`, `warmup_epochs`). The rate depends only on the epoch, so `--resume`
after a kill gives the same rows."""
from __future__ import annotations

import math
from typing import Any

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


def optimizer(spec, learning_rate: float) -> Any:
    import keras

    kind = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return kind[spec.train.optimizer.type](learning_rate=learning_rate)


def compile_model(model, loss_fn, metrics, optimizer_, steps_per_execution: int = 1) -> None:
    """Keywords only: Keras 3's third positional argument is `loss_weights`, not metrics.
    `metrics()` makes the task's metrics afresh (a Keras metric holds its state).
    `steps_per_execution` > 1 runs that many steps per call of the traced function: the same
    steps in the same order, without Python between them (a head on cached features takes a
    few milliseconds a step, less than Keras spends calling it)."""
    model.compile(optimizer=optimizer_, loss=loss_fn, metrics=metrics(), steps_per_execution=steps_per_execution)
