"""One way in: everything a command can check about a spec before TensorFlow is imported.

`build`, `train`, `predict` and `extract` with a spec, `tune` (its base spec, `check_search_base`)
and the library's `compile`/`train` all start here, so a bad spec fails in the time `check` takes
(exit 2 invalid, 1 infeasible), the same way for every command, and nothing is validated twice:
the result carries the plan and the phases to run. Commands on a run folder start at `Run.open`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import InfeasibleError

from .plan import Plan, missing_weights, plan as make_plan
from .spec import SpecBase

MAX_PARAMS = int(os.environ.get("TLC_MAX_PARAMS", 1_000_000_000))  # keeps hostile specs from exhausting memory


@dataclass(frozen=True)
class Phase:
    """One run of epochs under one freeze policy (`train.phases`, or the spec's own `freeze`)."""

    freeze: Any
    frozen_through: int
    batch_norm: bool  # every backbone batch norm frozen too
    epochs: int
    learning_rate: float
    first_epoch: int


@dataclass(frozen=True)
class Ready:
    """A spec that will build (and, when prepared for training, train): its plan and phases."""

    spec: SpecBase
    plan: Plan
    phases: tuple[Phase, ...] = ()


def prepare(source: str | os.PathLike | SpecBase, *, training: bool = False, epochs: int | None = None,
            seed: int | None = None) -> Ready:
    """Load (a path) and validate, plan, and check the weights file; with `training`, also the
    `train:` section, every phase's freeze policy and the data source. `epochs` overrides every
    phase's epochs, `seed` overrides `train.seed` (recorded in spec.lock.yaml)."""
    from .validation import load_spec

    spec = source if isinstance(source, SpecBase) else load_spec(source)
    if training and spec.train is None:
        raise spec.error((), "tlc train needs a `train:` section (data, epochs, ...)")
    if seed is not None:
        spec = _with_seed(spec, seed)
    planned = make_plan(spec)
    if not planned.ok:
        raise InfeasibleError(f"infeasible: {planned.failure_message()}")
    _check_size(spec, planned)
    missing = missing_weights(spec)
    if missing is not None:
        raise missing
    if not training:
        return Ready(spec, planned)
    _check_training(spec)
    return Ready(spec, planned, schedule(spec, planned, epochs))


def check_search_base(spec: SpecBase) -> None:
    """What `tlc tune` checks of its spec before any trial, as `tlc train` would: the data source,
    the weights file and the parameter limit. Feasibility is each trial's own (its values may
    change the shapes), so an infeasible base spec is left to the trials."""
    _check_training(spec)
    missing = missing_weights(spec)
    if missing is not None:
        raise missing
    planned = make_plan(spec)
    if planned.ok:
        _check_size(spec, planned)


def _check_size(spec: SpecBase, planned) -> None:
    total = planned.params()["total"]
    if total > MAX_PARAMS:
        raise spec.error((), f"the model would have {total:,} parameters, more than the limit of "
                             f"{MAX_PARAMS:,} (raise it with the TLC_MAX_PARAMS environment variable)")


def _with_seed(spec: SpecBase, seed: int) -> SpecBase:
    """The spec with another `train.seed`, still located in its file (errors name its lines)."""
    copy = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})})
    copy._document = spec.document
    return copy


def schedule(spec: SpecBase, planned: Plan, epochs: int | None = None) -> tuple[Phase, ...]:
    """The phases to run: `train.phases`, or one phase with the spec's own freeze policy."""
    t = spec.train
    steps = [(p.freeze, through, bn, p.epochs, p.learning_rate)
             for p, through, bn in zip(t.phases, planned.phases_frozen_through, planned.phases_freeze_batch_norm)]
    if not steps:
        steps = [(spec.freeze, planned.frozen_through, planned.freeze_batch_norm, t.epochs, None)]
    out, first = [], 0
    for policy, through, bn, n, lr in steps:
        n = epochs or n
        out.append(Phase(policy, through, bn, n, lr or t.optimizer.learning_rate, first))
        first += n
    return tuple(out)


def _check_training(spec: SpecBase) -> None:
    from .data import check_source

    check_source(spec)
    es = spec.train.early_stopping
    if es and es.monitor.startswith("val_") and spec.train.data.validation_split == 0:
        raise spec.error(("train", "early_stopping", "monitor"),
                         f"{es.monitor} needs validation data; set train.data.validation_split above 0")
    if spec.train.distill is not None:
        from .train.teacher import check_distill

        check_distill(spec)
