"""A schema that teaches: every field of every built-in model has a description (editors show it
as hover text through `tlc schema`), and docs/spec.md's key tables name exactly the models' keys
with their defaults."""
from __future__ import annotations

import json

import pytest
import yaml

from tlc.plugin.registry import get_registry
from tlc.spec.models import DataSpec, FreezeUpTo, SpecBase, TrainSpec, json_schema
from tlc.spec.tune import TuneSpec

from .conftest import REPO, tlc

DOC = (REPO / "docs" / "spec.md").read_text()
REQUIRED = object()


def _models():
    """Every pydantic model a built-in spec can contain."""
    seen, todo = [], [SpecBase, *get_registry().classes("backbone"), *get_registry().classes("head")]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += [t for t in _types(field.annotation) if isinstance(t, type) and hasattr(t, "model_fields")]
    return seen


def _types(annotation):
    yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _types(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        yield from _types(meta)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None:
        yield from _types(origin)


def test_every_field_of_every_built_in_model_has_a_description():
    models = _models()
    assert {m.__name__ for m in models} >= {"SpecBase", "TrainSpec", "DataSpec", "AugmentSpec", "OptimizerSpec",
                                            "PhaseSpec", "EarlyStoppingSpec", "InputSpec", "FreezeUpTo",
                                            "WeightsFile", "Block", "ConvStack", "VGG16", "DenseHead", "NoHead"}
    missing = [f"{m.__name__}.{name}" for m in models for name, field in m.model_fields.items()
               if not field.description]
    assert missing == []


def test_the_schema_gives_editors_a_description_of_every_key():
    result = tlc("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    undescribed = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in (node.get("properties") or {}).items():
                if not value.get("description"):
                    undescribed.append(f"{where}.{key}")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    walk(schema, "#")
    assert undescribed == [] and schema == json_schema()
    assert schema["$defs"]["Block"]["properties"]["filters"]["description"] == "Conv2D filters"


def _table(heading: str) -> dict[str, str]:
    """key -> documented default, from the first table after `heading` in docs/spec.md."""
    section = DOC.split(heading + "\n", 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("#"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in ("key", "---"):
            rows[cells[0].strip("`")] = cells[1]
        elif rows and not line.startswith("|"):
            break
    assert rows, heading
    return rows


def _documented_value(text: str):
    if text == "required":
        return REQUIRED
    if text in ("-", "null", "all"):  # all: no subset (data.classes)
        return None
    return yaml.safe_load(text.strip("`"))


def _model_default(model, name):
    field = model.model_fields[name]
    if field.is_required():
        return REQUIRED
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _keys(model, prefix="", skip=()):
    return {f"{prefix}{name}": _model_default(model, name) for name in model.model_fields if name not in skip}


@pytest.mark.parametrize("heading,expected", [
    ("## Top level", lambda: {**_keys(SpecBase, skip=("input", "name")), "input.shape": REQUIRED,
                              "name": REQUIRED, "backbone": REQUIRED, "head": REQUIRED, "extends": None}),
    ("### `conv_stack`", lambda: _keys(get_registry().types["backbone"]["conv_stack"].cls.model_fields["blocks"]
                                       .annotation.__args__[0])),
    ("### The keras.applications families", lambda: {
        **_keys(get_registry().types["backbone"]["vgg16"].cls, skip=("type", "weights", "output")),
        "alpha": _model_default(get_registry().types["backbone"]["mobilenet_v2"].cls, "alpha"),
        "minimalistic": _model_default(get_registry().types["backbone"]["mobilenet_v3_small"].cls, "minimalistic")}),
    ("## Freeze numbering", lambda: _keys(FreezeUpTo)),
    ("### `dense`", lambda: _keys(get_registry().types["head"]["dense"].cls, skip=("type",))),
    ("### `unet`", lambda: _keys(get_registry().types["head"]["unet"].cls, skip=("type",))),
    ("### `fpn`", lambda: _keys(get_registry().types["head"]["fpn"].cls, skip=("type",))),
    ("### `linknet`", lambda: _keys(get_registry().types["head"]["linknet"].cls, skip=("type",))),
    ("### `pspnet`", lambda: _keys(get_registry().types["head"]["pspnet"].cls, skip=("type",))),
    ("### `deeplab_v3_plus`", lambda: _keys(get_registry().types["head"]["deeplab_v3_plus"].cls, skip=("type",))),
    ("## `train`", lambda: {**_keys(TrainSpec, skip=("data",)), **_keys(DataSpec, "data.")}),
    ("## `tune`", lambda: _keys(TuneSpec)),
])
def test_the_docs_key_tables_agree_with_the_models(heading, expected):
    documented = {key: _documented_value(default) for key, default in _table(heading).items()}
    if heading == "## Top level":
        documented["name"] = REQUIRED  # documented as "the file's stem": the loader fills it in
    assert documented == expected()


def test_every_documented_default_is_read_literally():
    assert _documented_value("`none`") == "none" and _documented_value("0.2") == 0.2
    assert _documented_value("`{type: adam, learning_rate: 0.001}`") == {"type": "adam", "learning_rate": 0.001}
    assert _documented_value("required") is REQUIRED and _documented_value("-") is None
    assert _table("### `conv_stack`")["filters"] == "required" and _table("## `train`")["epochs"] == "10"
