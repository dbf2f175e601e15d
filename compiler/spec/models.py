"""The spec language as pydantic models (validation with located errors is `validation`).

`backbone` and `head` are discriminated unions on `type`, built from the plugin registry, so
plugin types validate (and appear in the JSON Schema) exactly like built-in ones.
"""

import os
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (Discriminator, Field, PrivateAttr, Strict, Tag, create_model, field_validator, model_serializer,
                      model_validator)

from tlc.errors import SpecError
from tlc.plan.layers import MAX_SIDE
from tlc.plugin.components import Backbone, Head, StrictModel, Task
from tlc.plugin.fields import by_kind
from tlc.plugin.registry import Registry, get_registry

from .loader import Document, Loc, format_loc
from .tune import TuneSpec

MAX_CHANNELS = int(os.environ.get("TLC_MAX_CHANNELS", 1024))

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
Side = Annotated[int, Strict(), Field(gt=0, le=MAX_SIDE)]


class InputSpec(StrictModel):
    shape: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] = Field(
        description="[height, width, channels] of the images the model takes; any channel count works")

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
    """Freeze backbone layers 1..N (a layer index, or a layer name), and/or every batch norm."""

    up_to: Optional[by_kind("a layer index or name", int=Annotated[int, Strict(), Field(ge=0)],
                            str=Annotated[str, Field(min_length=1)])] = Field(
        None, description="freeze backbone layers 1..N inclusive (an index as `tlc summarize` numbers them, or a "
                          "layer name); the rest train")
    batch_norm: bool = Field(False, description="also freeze every BatchNormalization layer of the backbone "
                                                "(inference mode), wherever it stands: the fine-tuning advice")

    @model_serializer(mode="wrap")
    def _only_what_was_said(self, handler):  # `{up_to: 14}` stays `{up_to: 14}` in a spec.lock.yaml
        return {k: v for k, v in handler(self).items() if (k, v) not in (("up_to", None), ("batch_norm", False))}

    @model_validator(mode="after")
    def _something(self) -> "FreezeUpTo":
        if self.up_to is None and not self.batch_norm:
            raise ValueError("give up_to, batch_norm: true, or both (or use freeze: none)")
        return self


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
    type: Literal["adam", "sgd", "rmsprop"] = Field("adam", description="the Keras optimizer")
    learning_rate: Annotated[float, Field(gt=0, le=10)] = Field(
        0.001, description="the base learning rate (a phase may set its own)")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine decays the rate per epoch to 0 over each phase, after the warm-up")
    warmup_epochs: Annotated[int, Strict(), Field(ge=0, le=100_000)] = Field(
        0, description="epochs of linear warm-up to the learning rate at the start of each phase")


Fraction = Annotated[float, Field(ge=0, lt=1)]


def _source_names() -> list[str]:
    """`train.data.type`'s values: the data-source registry's names (built-ins, then plugins')."""
    return list(get_registry().sources)



class DataSpec(StrictModel):
    type: str = Field(
        description="the data source: digits (scikit-learn's), npz (arrays x and y), directory (one sub-folder "
                    "per class), csv (columns path,label), cifar10, masks and coco (segmentation), or one a plugin "
                    "adds (`tlc plugins` lists them)",
        json_schema_extra=lambda schema: schema.update(enum=_source_names()))
    path: str | None = Field(None, description="the npz file, folder or csv file, relative to the spec's folder")
    classes: Union[Annotated[list[Annotated[int, Strict(), Field(ge=0)]], Field(min_length=2)],
                   Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)]] | None = Field(
        None, description="classification: a subset of the labels, relabelled 0..k-1 in this order; segmentation: "
                          "the names of the mask values 0..k-1 (background first)")
    tags: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="multi_label csv: the column of each image's tags, split at `delimiter` (may be empty)")
    delimiter: Annotated[str, Field(min_length=1, max_length=4)] = Field(
        " ", description="multi_label csv: what separates the tags in the tags column")
    columns: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = Field(
        None, description="multi_label csv: one 0/1 column per tag, named so (instead of a tags column)")
    colors: dict[Annotated[str, Field(min_length=1)],
                 Annotated[list[Annotated[int, Strict(), Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]] \
        | None = Field(None, description="segmentation masks drawn in colours: {class: [r, g, b]} (names from classes; "
                                         "`ignore`: pixels left out); a pixel of another colour is an error naming it")
    validation_split: Fraction = Field(0.2, description="share of each class held out for validation (seeded)")
    test_split: Fraction = Field(0.0, description="share of each class held out for `tlc evaluate`, never trained on")
    resize: Annotated[list[Side], Field(min_length=2, max_length=2)] | None = Field(
        None, description="[h, w]: resize in-memory images to the input (image files are always resized)")
    on_error: Literal["error", "skip"] = Field(
        "error", description="an unreadable image: error names it and stops; skip leaves it out and lists it")
    fit: Literal["stretch", "crop", "pad"] = Field(
        "stretch", description="how an image of another aspect ratio meets the input: stretch (as Keras), crop "
                               "(the centre, Keras's crop_to_aspect_ratio) or pad (letterboxed, pad_to_aspect_ratio); "
                               "the same in train, predict, explain, serve and export")
    decode_cache: bool = Field(
        True, description="keep every image file decoded at the input size (uint8, <runs>/.cache/images/) "
                          "after its first read, for later epochs, other specs, tune trials and evaluate")

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        names = _source_names()
        if value not in names:
            raise ValueError(f"unknown data source; registered: {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> "DataSpec":
        if self.validation_split + self.test_split >= 1:
            raise ValueError("validation_split + test_split must be below 1 (training needs examples); "
                             f"received: {self.validation_split} + {self.test_split}")
        return self


Factor = Annotated[float, Field(ge=0, le=1)]


class AugmentSpec(StrictModel):
    """Random image transformations for training images (Keras preprocessing layers)."""

    flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = Field(
        None, description="random flips (keras.layers.RandomFlip)")
    rotation: Factor = Field(0.0, description="random rotation by up to this fraction of a full turn (RandomRotation)")
    zoom: Factor = Field(0.0, description="random zoom by up to this fraction (RandomZoom)")
    translation: Factor = Field(0.0, description="random shift by up to this fraction of height and width")
    contrast: Factor = Field(0.0, description="random contrast change by up to this factor (RandomContrast)")
    brightness: Factor = Field(0.0, description="random brightness change by up to this factor (RandomBrightness)")
    views: Annotated[int, Strict(), Field(ge=1, le=1000)] | None = Field(
        None, description="with a frozen prefix: cache K augmented views of every training image "
                          "(epoch e uses view e mod K); null augments on the fly without the feature cache")

    @property
    def active(self) -> bool:
        return bool(self.flip or self.rotation or self.zoom or self.translation or self.contrast
                    or self.brightness)


class EarlyStoppingSpec(StrictModel):
    monitor: Annotated[str, Field(pattern=r"^(val_)?[a-z0-9_]+$")] = Field(
        "val_loss", description="the metric that must improve: loss, or the task's metric (accuracy; map, f1; mae, "
                                "rmse, r2), val_ for the validation split's")
    patience: Annotated[int, Strict(), Field(ge=0, le=100_000)] = Field(
        3, description="epochs without improvement to wait before stopping the phase")
    restore_best: bool = Field(True, description="end the phase with the weights of its best epoch")


class PhaseSpec(StrictModel):
    """One fine-tuning phase: a freeze policy, epochs, and optionally a new learning rate."""

    freeze: Freeze = Field(description="this phase's freeze policy: all, none or {up_to: N or layer name}")
    epochs: Annotated[int, Strict(), Field(gt=0, le=100_000)] = Field(description="epochs of this phase")
    learning_rate: Annotated[float, Field(gt=0, le=10)] | None = Field(
        None, description="this phase's learning rate (null: the optimizer's)")


PRECISE_BN_IMAGES = 2000


class RecalibrateBNSpec(StrictModel):
    images: Annotated[int, Strict(), Field(ge=1, le=10_000_000)] = Field(
        PRECISE_BN_IMAGES, description="training images to average the batch statistics over")


class DistillSpec(StrictModel):
    """Learning from a teacher's probabilities as well as from labels (`train.distill`)."""

    teacher: str = Field(description="a finished run folder, or a .keras model taking [0, 1] images, with the "
                                     "same classes; relative to the spec's folder")
    temperature: Annotated[float, Field(gt=0, le=100)] = Field(
        4.0, description="softens both distributions: the KL term compares softmax(logits / T)")
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(
        0.9, description="loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)")
    unlabeled: str | None = Field(
        None, description="images without labels, taught by the teacher alone: a folder of images or an npz "
                          "with x only, relative to the spec's folder")


class TrainSpec(StrictModel):
    data: DataSpec = Field(description="where the examples come from and how they are split")
    epochs: Annotated[int, Strict(), Field(gt=0, le=100_000)] = Field(10, description="epochs (without phases)")
    batch_size: Annotated[int, Strict(), Field(gt=0, le=65_536)] = Field(
        32, description="examples per step (the global batch under distribution)")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="optimizer and learning-rate schedule")
    seed: Annotated[int, Strict(), Field(ge=0, lt=2**32)] = Field(
        0, description="weights, split, shuffling, augmentation and Dropout all follow it")
    phases: list[PhaseSpec] = Field([], description="fine-tuning phases run in order, each with its own freeze "
                                                    "policy, epochs and learning rate; epochs count on")
    distribute: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="tf.distribute: mirrored over local devices, multi_worker over TF_CONFIG's cluster")
    augment: AugmentSpec | None = Field(None, description="random transformations of training images")
    early_stopping: EarlyStoppingSpec | None = Field(
        None, description="stop a phase when its monitored metric stops improving")
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="label smoothing of the categorical cross-entropy")
    class_weight: Literal["balanced"] | None = Field(
        None, description="balanced: weight classes inversely to their frequency in the training split (images, "
                          "or pixels for segmentation)")
    recalibrate_bn: by_kind("auto, true, false or {images: N}", str=Literal["auto"], bool=Annotated[bool, Strict()],
                            map=RecalibrateBNSpec) = Field(
        "auto", description="after training, set the moving mean and variance of every batch norm that trained "
                            f"in the last phase to exact averages over N training images ({PRECISE_BN_IMAGES:,} by "
                            "default, or {images: N}); auto: when any did")
    distill: DistillSpec | None = Field(
        None, description="learn from a teacher's probabilities too, computed once per image and cached view")


class SpecBase(StrictModel):
    """Fields every spec has; `backbone` and `head` are added per registry in `spec_model`."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")] = Field(
        description="names models/<name>.keras and runs/<name>/ (default: the file's stem)")
    input: InputSpec = Field(description="the images the model takes")
    freeze: Freeze = Field("none", description="which backbone layers do not train: none, all, or {up_to: N or "
                                               "layer name} (layers 1..N); head layers always train")
    train: TrainSpec | None = Field(None, description="how `tlc train` trains the model (only it needs this)")
    tune: TuneSpec | None = Field(None, description="hyperparameter search over paths of this spec (`tlc tune`)")

    _document: Document | None = PrivateAttr(default=None)

    @property
    def document(self) -> Document | None:
        """Where the spec came from (for located errors); None when built in Python."""
        return self._document

    def with_train(self, **changes) -> "SpecBase":
        """The spec with `train`'s fields changed (a command line's override, another data path),
        still located in its file: errors about it name its lines."""
        copy = self.model_copy(update={"train": self.train.model_copy(update=changes)})
        copy._document = self._document
        return copy

    def unlocated(self) -> "SpecBase":
        """The spec without its file: its errors name fields, not lines (a source given on the
        command line is not in the file)."""
        copy = self.model_copy()
        copy._document = None
        return copy

    def error(self, loc: Loc, message: str) -> SpecError:
        if self._document is None:
            return SpecError(f"{format_loc(loc)}: {message}")
        return self._document.error(loc, message)


def spec_model(registry: Registry | None = None, backbone: str | None = None,
               head: str | None = None, task: str | None = None) -> type[SpecBase]:
    """The `Spec` model for the registry's types, or narrowed to one backbone, head and task type
    when those are registered: validating a spec then builds (and imports) only the classes it
    names. Built once per registry and triple of types."""
    registry = registry or get_registry()
    key = (backbone if backbone in registry.backbones else None, head if head in registry.heads else None,
           task if task in registry.tasks else None)
    if key not in registry.spec_models:
        classification = registry.tasks["classification"]
        registry.spec_models[key] = create_model(
            "Spec",
            __base__=SpecBase,
            backbone=(_union(_classes(registry, "backbone", key[0]), Backbone),
                      Field(description="the feature extractor: a type and that type's keys")),
            head=(_union(_classes(registry, "head", key[1]), Head),
                  Field(description="what sits on the backbone's output: a type and that type's keys")),
            task=(_union(_classes(registry, "task", key[2]), Task),
                  Field(default_factory=lambda: classification.cls(),
                        description="what the model answers per image: classification (one class, the default), "
                                    "multi_label (tags), regression (numbers), or a plugin's; a name or "
                                    "{type: ..., its keys}")),
        )
    return registry.spec_models[key]


def _classes(registry: Registry, kind: str, name: str | None) -> list[type]:
    return [registry.types[kind][name].cls] if name is not None else registry.classes(kind)


def _union(classes: list[type], base: type) -> Any:
    if len(classes) == 1:  # a discriminator needs a union; a lone type is its own union
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="type")]


def json_schema(registry: Registry | None = None) -> dict:
    schema = spec_model(registry).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tlc spec"
    return schema
