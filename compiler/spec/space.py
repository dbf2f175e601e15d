"""Search-space paths: `head.units`, `train.phases.1.learning_rate` name places in a spec, where
a trial's values are set. A path may name any field the spec can have, written or left to its
default; one that cannot exist (an unknown key, an index past a list's end) is a located error
of the spec itself. No Optuna here: `tlc check` validates a `tune:` section at no cost."""
from __future__ import annotations

import copy
from typing import Any

from tlc.errors import FieldError


def parts(path: str) -> tuple:
    """'train.phases.1.learning_rate' -> ('train', 'phases', 1, 'learning_rate')."""
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def with_values(data: dict, values: dict[str, Any]) -> dict:
    """A copy of spec data with each value set at its path (missing mappings are created) and
    without `tune`: one trial's spec."""
    out = copy.deepcopy(data)
    out.pop("tune", None)
    for path, value in values.items():
        node, loc = out, parts(path)
        for i, part in enumerate(loc[:-1]):
            following = loc[i + 1]
            if isinstance(node, list):
                node = node[part]
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = [] if isinstance(following, int) else {}
                node = node[part]
        node[loc[-1]] = copy.deepcopy(value)
    return out


def check_paths(data: dict, tune, model) -> None:
    """Raise a `FieldError` located at `tune.space.<path>` for a path that cannot exist in a spec
    validated by `model` (the registry's spec model): unknown keys by the models' fields, list
    indices by the lists in `data`. Paths under `backbone`/`head` are checked against the type
    the spec names, or against each type a `backbone.type`/`head.type` space chooses from."""
    types = {part: _types(data, tune, part) for part in ("backbone", "head")}
    for path in tune.space:
        loc = parts(path)
        where = ("tune", "space", path)
        if not all(isinstance(p, int) or p for p in loc):
            raise FieldError(where, f"{path!r} is not a dotted path (e.g. head.units, train.phases.1.epochs)")
        problems = [_problem(loc, data, _root(model, loc, kind)) for kind in (types.get(loc[0]) or [None])]
        if all(problems):
            raise FieldError(where, problems[0])


def _types(data, tune, part: str) -> list[str | None]:
    chosen = tune.space.get(f"{part}.type")
    if chosen is not None and getattr(chosen, "values", None):
        return list(chosen.values)
    value = data.get(part)
    return [value.get("type") if isinstance(value, dict) else None]


def keys_at(loc: tuple, data: dict, model) -> list[str]:
    """The keys the mapping at `loc` may have (for "did you mean"), walking the spec model or the
    backbone's or head's type as `check_paths` does; [] when that cannot be told."""
    if not loc:
        return sorted(model.model_fields)
    kind = data[loc[0]].get("type") if isinstance(data.get(loc[0]), dict) else None
    how, current = _root(model, (*loc, "?"), kind)
    if how != "model":
        return []
    skip = 1 if loc[0] in ("backbone", "head") else 0
    for part in loc[skip:]:
        if isinstance(part, int):
            current = _item_model(current)
        else:
            current = (_fields(current) or {}).get(part)
        if current is None:
            return []
    return sorted(_fields(current) or {})


def _root(model, loc, kind):
    """The pydantic model a path starts in: the spec's, or a backbone/head type's."""
    from tlc.plugin.registry import get_registry

    if loc[0] in ("backbone", "head") and len(loc) > 1 and loc[1] != "type":
        info = get_registry().types[loc[0]].get(kind) if isinstance(kind, str) else None
        return ("model", info.cls) if info else ("unknown", loc[0])
    return ("model", model)


def _problem(loc: tuple, data: Any, start) -> str | None:
    """Why `loc` cannot exist, or None."""
    how, model = start
    if how == "unknown":
        return f"{model}.type is not a registered type, so no path under {model} can be checked"
    skip = 1 if loc[0] in ("backbone", "head") and len(loc) > 1 and loc[1] != "type" else 0
    node: Any = data
    for part in loc[:skip]:
        node = node.get(part) if isinstance(node, dict) else None
    current: Any = model
    for depth, part in enumerate(loc[skip:], start=skip):
        shown = ".".join(map(str, loc[: depth + 1]))
        if isinstance(part, int):
            if node is None and _item_model(current) is not None:
                node = []  # a list left to its default (train.phases: [])
            if not isinstance(node, list):
                return f"{'.'.join(map(str, loc[:depth]))} is not a list in this spec, so {shown} cannot exist"
            if part >= len(node):
                return f"{shown}: index {part} is past the end of the list ({len(node)} items)"
            node, current = node[part], _item_model(current)
            continue
        fields = _fields(current)
        if fields is None:
            return f"{'.'.join(map(str, loc[:depth]))} is not a mapping, so {shown} cannot exist"
        if part not in fields:
            return f"{'no such key' if depth == len(loc) - 1 else f'{shown}: no such key'} (keys here: " \
                   f"{', '.join(sorted(fields))})"
        node = node.get(part) if isinstance(node, dict) else None
        current = fields[part]
    return None


def _fields(annotation) -> dict | None:
    """The fields (name -> annotation) of the model(s) an annotation can be, or None."""
    out: dict = {}
    for model in _models(annotation):
        out.update({name: field.annotation for name, field in model.model_fields.items()})
    return out or None


def _item_model(annotation):
    """The element annotation of list annotations within `annotation`."""
    for candidate in _flatten(annotation):
        if getattr(candidate, "__origin__", None) is list:
            return candidate.__args__[0]
    return None


def _models(annotation) -> list:
    return [c for c in _flatten(annotation) if isinstance(c, type) and hasattr(c, "model_fields")]


def _flatten(annotation) -> list:
    """An annotation with Annotated, Optional and Union unwrapped."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    out = [annotation]
    origin = getattr(annotation, "__origin__", None)
    if origin is list:
        return out
    for arg in getattr(annotation, "__args__", ()) or ():
        out += _flatten(arg)
    if hasattr(annotation, "__metadata__"):
        out += _flatten(annotation.__origin__)
    return out
