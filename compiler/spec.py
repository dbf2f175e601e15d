"""The spec language as pydantic models, and validation errors located in the YAML.

`backbone` and `head` are discriminated unions on `type`, built from the plugin registry, so
plugin types validate (and appear in the JSON Schema) exactly like built-in ones.
"""

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    Discriminator,
    Field,
    PrivateAttr,
    Strict,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .components import Backbone, Head, StrictModel
from .fields import by_kind
from .errors import SpecError, did_you_mean
from .loader import Document, Loc, exists, format_loc, load_document, located
from .registry import Registry, get_registry

MAX_SIDE = int(os.environ.get("TLC_MAX_SIDE", 8192))  # largest input height/width
MAX_CHANNELS = int(os.environ.get("TLC_MAX_CHANNELS", 1024))

Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
Side = Annotated[int, Strict(), Field(gt=0, le=MAX_SIDE)]


class InputSpec(StrictModel):
    shape: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]

    @field_validator("shape")
    @classmethod
    def _within_limits(cls, shape: list[int]) -> list[int]:
        if max(shape[:2]) > MAX_SIDE:
            raise ValueError(f"height and width must be at most {MAX_SIDE} "
                             "(raise the limit with the TLC_MAX_SIDE environment variable)")
        if shape[2] > MAX_CHANNELS:
            raise ValueError(f"channels must be at most {MAX_CHANNELS} "
                             "(raise the limit with the TLC_MAX_CHANNELS environment variable)")
        return shape

    @property
    def hwc(self) -> tuple[int, int, int]:
        return tuple(self.shape)  # type: ignore[return-value]


class FreezeUpTo(StrictModel):
    """Freeze backbone layers 1..N (a layer index, or a layer name)."""

    up_to: by_kind("a layer index or name", int=Annotated[int, Strict(), Field(ge=0)],
                   str=Annotated[str, Field(min_length=1)])


def _freeze_kind(value: Any) -> str:
    """Validation sees a dict, serialisation a FreezeUpTo instance: both are `{up_to: ...}`."""
    return "<up_to>" if isinstance(value, (dict, FreezeUpTo)) else "<policy>"


Freeze = Annotated[
    Union[
        Annotated[Literal["all", "none"], Tag("<policy>")],
        Annotated[FreezeUpTo, Tag("<up_to>")],
    ],
    Discriminator(_freeze_kind),
]


class OptimizerSpec(StrictModel):
    type: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 0.001
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: Annotated[int, Strict(), Field(ge=0, le=100_000)] = 0


Fraction = Annotated[float, Field(ge=0, lt=1)]


class DataSpec(StrictModel):
    type: Literal["digits", "npz", "directory", "csv", "cifar10"]
    path: str | None = None
    classes: Annotated[list[Annotated[int, Strict(), Field(ge=0)]], Field(min_length=2)] | None = None
    validation_split: Fraction = 0.2
    test_split: Fraction = 0.0
    resize: Annotated[list[Side], Field(min_length=2, max_length=2)] | None = None
    on_error: Literal["error", "skip"] = "error"

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> "DataSpec":
        if self.validation_split + self.test_split >= 1:
            raise ValueError("validation_split + test_split must be below 1 (training needs examples); "
                             f"received: {self.validation_split} + {self.test_split}")
        return self


Factor = Annotated[float, Field(ge=0, le=1)]


class AugmentSpec(StrictModel):
    """Random image transformations for training images (Keras preprocessing layers)."""

    flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = None
    rotation: Factor = 0.0
    zoom: Factor = 0.0
    translation: Factor = 0.0
    contrast: Factor = 0.0
    brightness: Factor = 0.0
    views: Annotated[int, Strict(), Field(ge=1, le=1000)] | None = None

    @property
    def active(self) -> bool:
        return bool(self.flip or self.rotation or self.zoom or self.translation or self.contrast
                    or self.brightness)


class EarlyStoppingSpec(StrictModel):
    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"] = "val_loss"
    patience: Annotated[int, Strict(), Field(ge=0, le=100_000)] = 3
    restore_best: bool = True


class PhaseSpec(StrictModel):
    """One fine-tuning phase: a freeze policy, epochs, and optionally a new learning rate."""

    freeze: Freeze
    epochs: Annotated[int, Strict(), Field(gt=0, le=100_000)]
    learning_rate: Annotated[float, Field(gt=0, le=10)] | None = None


class TrainSpec(StrictModel):
    data: DataSpec
    epochs: Annotated[int, Strict(), Field(gt=0, le=100_000)] = 10
    batch_size: Annotated[int, Strict(), Field(gt=0, le=65_536)] = 32
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    seed: Annotated[int, Strict(), Field(ge=0, lt=2**32)] = 0
    phases: list[PhaseSpec] = []
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    augment: AugmentSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    class_weight: Literal["balanced"] | None = None


class SpecBase(StrictModel):
    """Fields every spec has; `backbone` and `head` are added per registry in `spec_model`."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    input: InputSpec
    freeze: Freeze = "none"
    train: TrainSpec | None = None

    _document: Document | None = PrivateAttr(default=None)

    @property
    def document(self) -> Document | None:
        """Where the spec came from (for located errors); None when built in Python."""
        return self._document

    def error(self, loc: Loc, message: str) -> SpecError:
        if self._document is None:
            return SpecError(f"{format_loc(loc)}: {message}")
        return self._document.error(loc, message)


def spec_model(registry: Registry | None = None, backbone: str | None = None,
               head: str | None = None) -> type[SpecBase]:
    """The `Spec` model for the registry's types, or narrowed to one backbone and one head type
    when those are registered: validating a spec then builds (and imports) only the classes it
    names. Built once per registry and pair of types."""
    registry = registry or get_registry()
    key = (backbone if backbone in registry.backbones else None, head if head in registry.heads else None)
    if key not in registry.spec_models:
        registry.spec_models[key] = create_model(
            "Spec",
            __base__=SpecBase,
            backbone=(_union(_classes(registry, "backbone", key[0]), Backbone), ...),
            head=(_union(_classes(registry, "head", key[1]), Head), ...),
        )
    return registry.spec_models[key]


def _classes(registry: Registry, kind: str, name: str | None) -> list[type]:
    return [registry.types[kind][name].cls] if name is not None else registry.classes(kind)


def _type_of(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None


def _union(classes: list[type], base: type) -> Any:
    if len(classes) == 1:  # a discriminator needs a union; a lone type is its own union
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="type")]


def json_schema(registry: Registry | None = None) -> dict:
    schema = spec_model(registry).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tlc spec"
    return schema


def load_spec(path: str | os.PathLike) -> SpecBase:
    """Load, merge and validate a spec file; raise `SpecError` located at the bad node."""
    return validate(load_document(path))


def validate(doc: Document, registry: Registry | None = None) -> SpecBase:
    registry = registry or get_registry()
    data = dict(doc.data)
    data.setdefault("name", default_name(doc.path))
    _resolve_paths(doc, data)
    try:
        model = spec_model(registry, _type_of(data.get("backbone")), _type_of(data.get("head")))
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise _located(doc, data, exc.errors(include_url=False), registry) from None
    spec._document = doc
    return spec


def default_name(path: str | os.PathLike) -> str:
    """The file's stem, made safe for file names (`my model.yaml` -> `my_model`)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem).lstrip("._-")[:100]
    return name or "spec"


def _resolve_paths(doc: Document, data: dict) -> None:
    """Relative paths are relative to the folder of the file that wrote them."""
    for loc in (("backbone", "weights"), ("backbone", "weights", "path"), ("train", "data", "path")):
        parent = data
        for part in loc[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        value = parent.get(loc[-1])
        if isinstance(value, str) and value and value != "imagenet" and not os.path.isabs(value):
            copy = dict(parent)
            copy[loc[-1]] = os.path.normpath(doc.folder_of(loc) / value)
            _set(data, loc[:-1], copy)


def _set(data: dict, loc: Loc, value: Any) -> None:
    for part in loc[:-1]:
        data[part] = dict(data[part])
        data = data[part]
    data[loc[-1]] = value


def _located(doc: Document, data: dict, errors: list[dict], registry: Registry) -> SpecError:
    """One message per problem, `file:line:col: field.path: message`, first position first."""
    lines = []
    for err in errors:
        loc = _data_loc(data, err["loc"])
        if err["type"] == "union_tag_invalid" and exists(data, loc + ("type",)):
            loc = loc + ("type",)
        lines.append((doc.mark(loc, key=err["type"] == "extra_forbidden"), loc, _message(err, loc, registry)))
    lines.sort(key=lambda item: (item[0].file != str(doc.path), item[0].line, item[0].col))
    rendered = [located(mark, loc, msg) for mark, loc, msg in lines]
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


def _message(err: dict, loc: Loc, registry: Registry) -> str:
    kind = err["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found") and loc and loc[0] in ("backbone", "head"):
        what = loc[0]
        known = ", ".join(sorted(registry.types[what]))
        if kind == "union_tag_not_found":
            return f"missing 'type'; registered {what} types: {known}"
        tag = err.get("ctx", {}).get("tag")
        hint = did_you_mean(str(tag), registry.types[what])
        return (f"unknown {what} type {tag!r}{hint}; registered {what} types: {known}. "
                f"A plugin providing it may not be installed (see `tlc plugins`)")
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}" if loc else "unknown key"
    if kind == "missing":
        return "required field is missing"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)) or value is None:
        shown = repr(value) if not isinstance(value, str) or len(value) < 60 else repr(value[:57] + "...")
        message += f"; received: {shown}"
    return message
