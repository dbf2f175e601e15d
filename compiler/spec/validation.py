"""Validating a loaded spec: resolve its relative paths, pick the spec model for the types it
names, and turn pydantic's errors into `file:line:col: field.path: message` lines located at
the YAML node (or key) they are about."""

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tlc.errors import SpecError, did_you_mean
from tlc.plugin.registry import Registry, get_registry

from .loader import Document, Loc, exists, load_document
from .models import SpecBase, spec_model


def load_spec(path: str | os.PathLike) -> SpecBase:
    """Load, merge and validate a spec file; raise `SpecError` located at the bad node."""
    return validate(load_document(path))


def validate(doc: Document, registry: Registry | None = None) -> SpecBase:
    registry = registry or get_registry()
    data = dict(doc.data)
    data.setdefault("name", default_name(doc.path))
    _resolve_paths(doc, data)
    task = data.get("task")
    if isinstance(task, str):  # `task: multi_label` is short for `{type: multi_label}`
        data["task"] = task = {"type": task}
    if task is None and (meant := _task_of_head(data.get("head"), registry)) is not None:
        data["task"] = task = meant
    _head_defaults(data, registry)
    model = spec_model(registry, _type_of(data.get("backbone")), _type_of(data.get("head")),
                       _type_of(task) if task is not None else "classification")
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise _located(doc, data, exc.errors(include_url=False), registry, model) from None
    spec._document = doc
    if spec.tune is not None:
        _check_tune(spec, data)
    return spec


def _task_of_head(head: Any, registry: Registry) -> dict | None:
    """The task a spec without `task:` means: classification (the default), or the one task its
    head serves when that is not classification (`head: {type: unet}` segments)."""
    info = registry.heads.get(_type_of(head)) if isinstance(head, dict) else None
    served = [name for name in info.cls.tasks if name in registry.tasks] if info is not None else []
    if len(served) == 1 and served[0] != "classification":
        return {"type": served[0]}
    return None


def _head_defaults(data: dict, registry: Registry) -> None:
    """What the task decides for a head that leaves it out (`Task.head_defaults`): the output
    activation (sigmoid for tags, linear for numbers), and a regression's units, one per target;
    and what the head decides for the backbone (`Head.backbone_defaults`: PSPNet's cut)."""
    task, head = data.get("task") or {"type": "classification"}, data.get("head")
    task_info = registry.tasks.get(_type_of(task)) if isinstance(task, dict) else None
    head_info = registry.heads.get(_type_of(head)) if isinstance(head, dict) else None
    if task_info is None or head_info is None:
        return  # validation names what is wrong
    fields = head_info.cls.model_fields
    defaults = {k: v for k, v in task_info.cls.head_defaults(task).items() if k in fields and k not in head}
    if defaults:
        data["head"] = {**head, **defaults}  # (a copy: the document's mapping stays as written)
    backbone = data.get("backbone")
    if isinstance(backbone, dict):
        decided = {k: v for k, v in head_info.cls.backbone_defaults(head, _type_of(backbone)).items()
                   if k not in backbone}
        if decided:
            data["backbone"] = {**backbone, **decided}
    tune = data.get("tune")
    if isinstance(tune, dict) and "direction" not in tune:  # which way the task's metric is better
        metric = tune.get("metric", f"val_{task_info.cls.metrics[0]}")
        higher = task_info.cls.higher.get(metric.removeprefix("val_")) if isinstance(metric, str) else None
        if higher is not None:
            data["tune"] = {**tune, "metric": metric, "direction": "maximize" if higher else "minimize"}


def _check_tune(spec: SpecBase, data: dict) -> None:
    """A search space that cannot be searched is an error of the spec itself (exit 2), before
    any trial runs: a grid over a continuous space, or a path that cannot exist."""
    from tlc.errors import FieldError

    from .space import check_paths

    grid = spec.tune.grid_error()
    if grid is not None:
        raise spec.error(("tune", "space", grid[0], "type"), grid[1])
    try:
        check_paths(data, spec.tune, type(spec))
    except FieldError as exc:
        raise spec.error(exc.loc, exc.message) from None


def default_name(path: str | os.PathLike) -> str:
    """The file's stem, made safe for file names (`my model.yaml` -> `my_model`)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem).lstrip("._-")[:100]
    return name or "spec"


def _type_of(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def _resolve_paths(doc: Document, data: dict) -> None:
    """Relative paths are relative to the folder of the file that wrote them."""
    for loc in (("backbone", "weights"), ("backbone", "weights", "path"), ("train", "data", "path"),
                ("train", "distill", "teacher"), ("train", "distill", "unlabeled")):
        parent = data
        for part in loc[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        value = parent.get(loc[-1])
        if isinstance(value, str) and value and value != "imagenet" and not os.path.isabs(value):
            copy = dict(parent)
            copy[loc[-1]] = os.path.abspath(doc.folder_of(loc) / value)  # a spec.lock.yaml elsewhere finds it
            _set(data, loc[:-1], copy)


def _set(data: dict, loc: Loc, value: Any) -> None:
    for part in loc[:-1]:
        data[part] = dict(data[part])
        data = data[part]
    data[loc[-1]] = value


def _located(doc: Document, data: dict, errors: list[dict], registry: Registry, model) -> SpecError:
    """One message per problem, `file:line:col: field.path: message`, first position first."""
    lines = []
    for err in errors:
        loc = _data_loc(data, err["loc"])
        if err["type"] == "union_tag_invalid" and exists(data, loc + ("type",)):
            loc = loc + ("type",)
        lines.append((doc.mark(loc, key=err["type"] == "extra_forbidden"), loc, _message(err, loc, registry, data, model)))
    lines.sort(key=lambda item: (item[0].file != str(doc.path), item[0].line, item[0].col))
    rendered = [doc.located(mark, loc, msg) for mark, loc, msg in lines]
    return SpecError("\n".join(dict.fromkeys(rendered)))


def _data_loc(data: Any, loc: tuple) -> Loc:
    """Pydantic's error location minus union tags, i.e. a path into the spec's data."""
    out: list = []
    for part in loc:
        if isinstance(part, str) and part.startswith("<"):
            continue
        if isinstance(data, dict) and part not in data and part == data.get("type"):
            continue  # the discriminated union's tag
        out.append(part)
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
    return tuple(out)


def _message(err: dict, loc: Loc, registry: Registry, data: dict, model) -> str:
    kind = err["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found") and loc and loc[0] in ("backbone", "head", "task"):
        what = loc[0]
        known = ", ".join(sorted(registry.types[what]))
        if kind == "union_tag_not_found":
            return f"missing 'type'; registered {what} types: {known}"
        tag = err.get("ctx", {}).get("tag")
        hint = did_you_mean(str(tag), registry.types[what])
        return (f"unknown {what} type {tag!r}{hint}; registered {what} types: {known}. "
                f"A plugin providing it may not be installed (see `tlc plugins`)")
    if kind == "extra_forbidden":
        if not loc:
            return "unknown key"
        from .space import keys_at

        return f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), keys_at(loc[:-1], data, model))}"
    if kind == "missing":
        return "required field is missing"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        shown = repr(value) if not isinstance(value, str) or len(value) < 60 else repr(value[:57] + "...")
        message += f"; received: {shown}"
    return message
