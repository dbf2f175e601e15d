"""One way in: everything a command can check about a spec before TensorFlow is imported.

`build`, `train`, `predict` and `extract` with a spec, `tune` (its base spec, `check_search_base`)
and the library's `compile`/`train` all start here, so a bad spec fails in the time `check` takes
(exit 2 invalid, 1 infeasible), the same way for every command, and nothing is validated twice:
the result carries the plan and the phases to run. Commands on a run folder start at `Run.open`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tlc.errors import EXIT_OK, InfeasibleError, SpecError
from tlc.layout import RunLayout
from tlc.plan.planner import Plan, plan as make_plan
from tlc.plan.report import Report
from tlc.plugin.components import Task
from tlc.plugin.registry import get_registry

from .models import SpecBase

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
    check_task(spec)
    if training and spec.train is None:
        raise spec.error((), "tlc train needs a `train:` section (data, epochs, ...)")
    if training and (seed is not None or epochs is not None):
        spec = _overridden(spec, seed, epochs)
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
    return Ready(spec, planned, schedule(spec, planned))


def examine(path: str) -> Report:
    """What `tlc check` and `tlc summarize` say of one spec file: its plan (with `min_input`) and
    the located warnings about files it names that do not exist yet (a transfer spec is often
    checked before its source model is trained), or its validation error."""
    from .validation import load_spec

    try:
        spec = load_spec(path)
        check_task(spec)
    except SpecError as exc:
        return Report(path, error=exc)
    planned = make_plan(spec, min_input=True)
    for missing in (missing_weights(spec, " (build and train need it)"), missing_data(spec, " (train needs it)")):
        if missing is not None:
            planned.warnings.append(str(missing))
    if spec.tune is not None:
        planned.warnings += search_warnings(spec)
    return Report(path, plan=planned)


def check_task(spec: SpecBase) -> None:
    """The task and the rest of the spec agree (contract section 9): the head serves the task and
    ends as it needs; the training options, monitored and tuned metrics are the task's."""
    task, head = spec.task, spec.head
    said = "task" in spec.model_fields_set
    if not head.serves(task) and said:
        raise spec.error(("task",), f"the {head.type} head serves {', '.join(head.tasks) or 'no task'}, not "
                                    f"{task.type}; {_heads_serving(task)}")
    meant = [] if head.serves(task) else _tasks_of(head)
    if meant:  # a head of several tasks, none of them the default (`none`'s `features` is no task to train)
        raise spec.error(("head", "type"), f"the {head.type} head serves {', '.join(head.tasks)}, not "
                                           f"{task.type} (the default task); add task: {' or '.join(meant)}")
    activation = getattr(head, "output_activation", None)
    trains = said or spec.train is not None  # (a spec only built may end as it likes)
    if activation is not None and trains and head.serves(task) and activation not in task.activations:
        why = {"classification": "one class per image takes softmax or linear (logits); several tags per image "
                                 "is task: multi_label",
               "multi_label": "each tag has its own probability: sigmoid, or linear (logits, finished by a sigmoid)",
               "regression": "numbers come out of a linear layer (one unit per target)"}.get(task.type, "")
        raise spec.error(("head", "output_activation"), f"{activation} does not fit task {task.type}"
                                                         + (f": {why}" if why else f"; use {', '.join(task.activations)}"))
    outputs = getattr(head, "classes", None)
    if task.type == "regression" and outputs is not None and outputs != len(task.targets):
        raise spec.error(("head", "classes"), f"a regression head has one unit per target: {len(task.targets)} "
                                              f"({', '.join(task.targets)}); leave classes out")
    if spec.train is not None:
        _check_training_for(spec, task)


def _tasks_of(head) -> list[str]:
    """The registered tasks among those `head` serves."""
    from tlc.plugin.registry import get_registry

    return [name for name in head.tasks if name in get_registry().tasks]


def _heads_serving(task) -> str:
    """What to write instead, for a head that does not serve `task`: the registered heads that do."""
    from tlc.plugin.registry import get_registry

    names = [name for name, info in get_registry().heads.items() if info.cls.serves(task)]
    if not names:
        return "no registered head serves it (`tlc plugins` lists them)"
    return f"use head: {{type: {names[0]}, ...}}" + (f" (or {', '.join(names[1:])})" if names[1:] else "")


def _check_training_for(spec: SpecBase, task) -> None:
    """The `train:` options that belong to one task."""
    t, one_class = spec.train, task.type == "classification"
    named = [*task.metrics, "loss"]
    es = t.early_stopping
    if es is not None and es.monitor.removeprefix("val_") not in named:
        raise spec.error(("train", "early_stopping", "monitor"),
                         f"{task.type} records {', '.join(named)} (val_ for validation); not {es.monitor}")
    if spec.tune is not None and spec.tune.metric.removeprefix("val_") not in named:
        raise spec.error(("tune", "metric"), f"{task.type} records {', '.join(named)} (val_ for validation); "
                                             f"not {spec.tune.metric}")
    checks = [
        (("train", "distill"), t.distill is not None and type(task).distillation_loss is Task.distillation_loss,
         f"the {task.type} task cannot learn from a teacher (its Task has no distillation_loss)"),
        (("train", "class_weight"), t.class_weight is not None and not one_class and task.type != "segmentation",
         "balanced class weights are for a class per image or per pixel (task: classification or segmentation)"),
        (("train", "label_smoothing"), t.label_smoothing > 0 and task.type == "regression",
         "label smoothing is for classes and tags, not numbers"),
        (("train", "data", "classes"), t.data.classes is not None and not one_class and task.type != "segmentation",
         "picks classes of a classification source; a multi_label source keeps every tag"),
        (("train", "data", "classes"), t.data.classes is not None and one_class
         and isinstance(t.data.classes[0], str), "picks classes by their labels 0..k-1 (names are a segmentation "
                                                 "source's)"),
        (("train", "data", "classes"), t.data.classes is not None and task.type == "segmentation"
         and isinstance(t.data.classes[0], int), "names the mask values 0..k-1: [background, cat, dog]"),
        (("train", "data", "tags"), (t.data.tags is not None or t.data.columns is not None)
         and task.type != "multi_label", "tags and columns are a multi_label csv's (set task: multi_label)"),
        (("train", "data", "type"), t.data.type in ("masks", "coco") and task.type != "segmentation",
         f"the {t.data.type} source gives masks: set task: segmentation"),
        (("train", "data", "colors"), t.data.colors is not None and t.data.type != "masks",
         "colors read a masks folder's RGB masks (train.data.type: masks)"),
        (("train", "data", "type"), task.type == "segmentation" and t.data.type not in ("masks", "coco", "npz"),
         f"{t.data.type} gives no masks; segmentation reads a masks folder (images/ and masks/), a COCO JSON or "
         "an npz"),
        (("train", "distribute"), t.distribute == "multi_worker" and not one_class,
         f"multi_worker trains classifiers; {task.type} trains with none or mirrored"),
    ]
    for loc, wrong, message in checks:
        if wrong:
            if loc == ("train", "data", "tags") and t.data.tags is None:
                loc = ("train", "data", "columns")
            raise spec.error(loc, message)
    if task.type == "segmentation":
        _check_segmentation(spec)
    if t.distill is not None and Path(t.distill.teacher).exists():
        _check_teacher_task(spec, Path(t.distill.teacher))
    if getattr(task, "threshold", None) == "tuned" and t.data.validation_split == 0:
        raise spec.error(("task", "threshold"), "tuned thresholds come from the validation split: set "
                                                "train.data.validation_split above 0, or give a number")


def worst(reports: list[Report]) -> int:
    """The exit code of a `tlc check` of several specs: the worst of theirs."""
    return max((r.exit_code for r in reports), default=EXIT_OK)


def search_warnings(spec: SpecBase) -> list[str]:
    """Located warnings for `tune.space` paths that change nothing for some values. The spec is
    validated as a trial's would be with each value of each choice (or as it is, with no choice
    to make); a searched `backbone.X` or `head.X` that the component reports unused in all of
    them changes nothing in this spec, in some of them, when the first such value is chosen."""
    from .loader import Document
    from .space import with_values
    from .validation import validate

    doc, tune = spec.document, spec.tune
    variants = [(path, value) for path, space in tune.space.items() if getattr(space, "type", None) == "choice"
                for value in space.values] or [("", None)]
    unused: dict[str, list[tuple[str, Any]]] = {}
    valid = 0
    for path, value in variants:
        try:
            trial = validate(Document(doc.path, with_values(doc.data, {path: value} if path else {}),
                                      doc.values, doc.keys))
        except SpecError:
            continue  # an invalid combination is the trial's own (infeasible, with its message)
        valid += 1
        for part in ("backbone", "head"):
            for name in getattr(trial, part).unused_fields():
                if f"{part}.{name}" in tune.space and f"{part}.{name}" != path:
                    unused.setdefault(f"{part}.{name}", []).append((path, value))
    out = []
    for searched, where in unused.items():
        path, value = where[0]
        when = "in this spec" if len(where) == valid else f"when {path} is {value!r}"
        out.append(str(spec.error(("tune", "space", searched),
                                  f"changes nothing {when}: those trials differ in it for nothing")))
    return out


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


def _overridden(spec: SpecBase, seed: int | None, epochs: int | None) -> SpecBase:
    """The spec with the command line's `--seed` and `--epochs` written in (every phase's epochs),
    still located in its file (errors name its lines): what runs, and what spec.lock.yaml records."""
    update: dict[str, Any] = {}
    if seed is not None:
        update["seed"] = seed
    if epochs is not None:
        update["epochs"] = epochs
        update["phases"] = [p.model_copy(update={"epochs": epochs}) for p in spec.train.phases]
    return spec.with_train(**update)


def schedule(spec: SpecBase, planned: Plan) -> tuple[Phase, ...]:
    """The phases to run: `train.phases`, or one phase with the spec's own freeze policy."""
    t = spec.train
    steps = [(p.freeze, through, bn, p.epochs, p.learning_rate)
             for p, through, bn in zip(t.phases, planned.phases_frozen_through, planned.phases_freeze_batch_norm)]
    if not steps:
        steps = [(spec.freeze, planned.frozen_through, planned.freeze_batch_norm, t.epochs, None)]
    out, first = [], 0
    for policy, through, bn, n, lr in steps:
        out.append(Phase(policy, through, bn, n, lr or t.optimizer.learning_rate, first))
        first += n
    return tuple(out)


def _check_training(spec: SpecBase) -> None:
    missing = missing_data(spec)
    if missing is not None:
        raise missing
    es = spec.train.early_stopping
    if es and es.monitor.startswith("val_") and spec.train.data.validation_split == 0:
        raise spec.error(("train", "early_stopping", "monitor"),
                         f"{es.monitor} needs validation data; set train.data.validation_split above 0")
    if spec.train.distill is not None:
        _check_distill(spec)


def missing_weights(spec: SpecBase, note: str = ""):
    """A located `SpecError` when `backbone.weights` names a file that does not exist, else None."""
    source = spec.backbone.weights_file
    if source is None or os.path.isfile(source[0]):
        return None
    loc = ("backbone", "weights", "path") if source[1] else ("backbone", "weights")
    return spec.error(loc, f"file not found: {source[0]}{note}")


def missing_data(spec: SpecBase, note: str = ""):
    """A located `SpecError` when the data source needs a path and `train.data.path` is missing
    or names nothing, else None (checked without reading the source)."""
    data = spec.train.data if spec.train is not None else None
    if data is None or not get_registry().data_source(data.type).needs_path:
        return None
    if not data.path:
        return spec.error(("train", "data"), f"type {data.type} needs a path")
    if not os.path.exists(data.path):
        return spec.error(("train", "data", "path"), f"not found: {data.path}{note}")
    return None


TEACHER = ("train", "distill", "teacher")


def _check_segmentation(spec: SpecBase) -> None:
    """Masks of at least two classes, named as many as the head has, colours of those classes."""
    t, classes = spec.train, getattr(spec.head, "classes", None)
    names = t.data.classes
    if classes is not None and classes < 2:
        raise spec.error(("head", "classes"), "segmentation counts the background as a class: at least 2")
    if names is not None and classes is not None and len(names) != classes:
        raise spec.error(("train", "data", "classes"), f"names {len(names)} classes; head.classes is {classes}")
    if t.data.colors is not None:
        _check_colors(spec, t.data.colors)


def _check_colors(spec: SpecBase, colors: dict) -> None:
    """`colors` names classes (by `classes`' names, or 0..k-1 without them) or `ignore`, one colour each."""
    names = [*spec.task.names(spec), "ignore"]
    for name in colors:
        if name not in names:
            raise spec.error(("train", "data", "colors", name), f"no class named {name!r}; the classes are "
                                                                f"{', '.join(names)}")
    seen: dict[tuple, str] = {}
    for name, rgb in colors.items():
        if tuple(rgb) in seen:
            raise spec.error(("train", "data", "colors", name), f"{rgb} is already {seen[tuple(rgb)]}'s colour")
        seen[tuple(rgb)] = name


def _check_teacher_task(spec, where: Path) -> None:
    """The teacher answers the student's task: a run records its own (spec.lock.yaml); a bare
    .keras model is taken for a classifier, so another task names a run folder."""
    task = spec.task.type
    folder = where if where.is_dir() else where.parent if where.name == RunLayout(where).model.name else None
    if folder is None or not RunLayout(folder).finished:
        if task != "classification":
            raise spec.error(TEACHER, f"a .keras teacher is taken for a classifier; a {task} student learns from a "
                                      "teacher's run folder (which records its task, thresholds and units)")
        return
    try:
        locked = yaml.safe_load(RunLayout(folder).spec_lock.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return  # (opening the run says what is wrong with it)
    theirs = (locked.get("task") or {}).get("type", "classification")
    if theirs != task:
        raise spec.error(TEACHER, f"{folder} answers {theirs}, the student is {task}: a teacher of the same task "
                                  "teaches")


def _check_distill(spec) -> None:
    """What `train.distill` needs, checked in the time `tlc check` takes: the teacher and the
    unlabeled source exist, and the rest of the spec trains with a teacher."""
    d, t = spec.train.distill, spec.train
    where = Path(d.teacher)
    if not where.exists():
        raise spec.error(TEACHER, f"not found: {where} (a run folder of `tlc train`, or a .keras model)")
    if where.is_dir():
        missing = RunLayout(where).missing()
        if missing:
            raise spec.error(TEACHER, f"{where} is not a finished tlc run (missing {', '.join(missing)}); "
                                      "train the teacher first, or name a .keras model")
    elif where.suffix != ".keras":
        raise spec.error(TEACHER, f"must be a run folder or a .keras model; got {where}")
    if d.unlabeled:
        source = Path(d.unlabeled)
        if not source.exists():
            raise spec.error(("train", "distill", "unlabeled"), f"not found: {source}")
        if not source.is_dir() and source.suffix != ".npz":
            raise spec.error(("train", "distill", "unlabeled"),
                             f"must be a folder of images or an .npz with x; got {source}")
    if t.distribute == "multi_worker":
        raise spec.error(("train", "distribute"), "train.distill trains with Keras's fit: use none or mirrored")
    if t.class_weight is not None:
        raise spec.error(("train", "class_weight"), "cannot be combined with train.distill (the teacher's "
                                                    "probabilities already carry how likely each class is)")
    if t.augment is not None and t.augment.active and not t.augment.views:
        raise spec.error(("train", "augment", "views"),
                         "train.distill keeps the teacher's probabilities per augmented view: set views: K "
                         "(K views of every training image, augmented once, taught once)")
