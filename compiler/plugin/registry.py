"""Which backbone and head types and which data sources exist, and where each came from.

Third-party plugins are modules named by entry points in the group `tlc`; the built-ins are
registered through the very same hooks. One bad plugin (fails to import, raises in a hook,
returns something odd, reuses a taken name) is recorded as a failure and skipped; everything
else keeps working. `TLC_PLUGINS` (comma-separated entry-point names, or empty for none)
restricts which third-party plugins load.
"""
from __future__ import annotations

import importlib
import os
import typing
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs, zoo
from .components import Backbone, DataSource, Head, Task

#: The built-in types and the module that registers each (through the same hooks as plugins).
#: Listed here so that a spec's type is found without importing every module: `tlc check` of a
#: VGG16 spec pays for neither the other zoo families nor their part of the schema (~35 ms).
#: A test holds this table equal to what the modules' hooks return.
BUILTIN_TYPES = {
    "tlc.plugins.conv_stack": {"backbone": ("conv_stack",)},
    **{f"tlc.plugins.{family}": {"backbone": kinds} for family, kinds in zoo.by_family().items()},
    "tlc.plugins.dense_head": {"head": ("dense",)},
    "tlc.plugins.no_head": {"head": ("none",)},
    "tlc.plugins.unet": {"head": ("unet",)},
    "tlc.plugins.fpn": {"head": ("fpn",)},
    "tlc.plugins.linknet": {"head": ("linknet",)},
    "tlc.plugins.pspnet": {"head": ("pspnet",)},
    "tlc.plugins.deeplab": {"head": ("deeplab_v3_plus",)},
    **{f"tlc.task.{name}": {"task": (name,)} for name in ("classification", "multi_label", "regression",
                                                         "segmentation")},
}
#: The built-in data sources (`train.data.type`), registered by `tlc.data.sources` through
#: `tlc_data_sources` like a plugin's; named here so validating a spec imports nothing more.
BUILTIN_SOURCES = {"tlc.data.sources": ("digits", "npz", "directory", "csv", "cifar10", "masks", "coco")}
ENTRY_POINT_GROUP = "tlc"
KINDS = {"backbone": ("tlc_backbones", Backbone), "head": ("tlc_heads", Head), "task": ("tlc_tasks", Task)}


@dataclass(frozen=True)
class Source:
    """Where a plugin comes from: its name and the distribution that ships it."""

    plugin: str
    distribution: str
    version: str
    builtin: bool = False

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class TypeInfo:
    name: str
    kind: str  # "backbone" | "head" | "task"
    source: Source
    loaded: type | None = None  # a plugin's class; None for a built-in until it is first used

    @property
    def cls(self) -> type:
        return self.loaded or _builtin_class(self.source.plugin, self.kind, self.name)


def _builtin_class(module_name: str, kind: str, name: str) -> type:
    """A built-in type's class, importing its module on first use."""
    hook_name, base = KINDS[kind]
    return _registered_by(module_name, hook_name, lambda cls: type_name(cls, base) == name, f"the {kind} type {name!r}")


def _registered_by(module_name: str, hook_name: str, wanted, what: str):
    """What a built-in module's hook returns that is `wanted`, importing the module on first use."""
    module = importlib.import_module(module_name)
    for item in getattr(module, hook_name)():
        if wanted(item):
            return item
    raise LookupError(f"{module_name}.{hook_name}() does not return {what}")


@dataclass(frozen=True)
class SourceInfo:
    """A data source's name, where it comes from, and its row (a built-in's is read on first use)."""

    name: str
    source: Source
    loaded: DataSource | None = None

    @property
    def row(self) -> DataSource:
        return self.loaded or _registered_by(self.source.plugin, "tlc_data_sources", lambda row: row.name == self.name,
                                             f"the data source {self.name!r}")


@dataclass(frozen=True)
class PluginFailure:
    source: Source
    error: str

    def __str__(self) -> str:
        return f"{self.source}: {self.error}"


@dataclass(eq=False)
class Registry:
    types: dict[str, dict[str, TypeInfo]] = field(default_factory=lambda: {k: {} for k in KINDS})
    sources: dict[str, SourceInfo] = field(default_factory=dict)  # train.data.type -> its row
    failures: list[PluginFailure] = field(default_factory=list)
    plugins: list[Source] = field(default_factory=list)
    spec_models: dict = field(default_factory=dict)  # (backbone type, head type) -> pydantic Spec model
    manager: Any = None  # the pluggy PluginManager

    @property
    def backbones(self) -> dict[str, TypeInfo]:
        return self.types["backbone"]

    @property
    def heads(self) -> dict[str, TypeInfo]:
        return self.types["head"]

    @property
    def tasks(self) -> dict[str, TypeInfo]:
        return self.types["task"]

    def classes(self, kind: str) -> list[type]:
        return [info.cls for info in self.types[kind].values()]

    def data_source(self, name: str) -> DataSource:
        return self.sources[name].row


_third_party = True
_registry: Registry | None = None


def disable_third_party() -> None:
    """`--no-plugins`: only the built-in types. Takes effect on the next `get_registry`."""
    global _third_party, _registry
    _third_party, _registry = False, None


def reset() -> None:
    """Forget the loaded registry (tests, or after installing a plugin at run time)."""
    global _third_party, _registry
    _third_party, _registry = True, None


def get_registry() -> Registry:
    global _registry
    if _registry is None:
        _registry = _load(third_party=_third_party)
    return _registry


def register_module(module: object, name: str | None = None) -> None:
    """Register an in-process plugin module (tests, notebooks) through the same hooks.

    `reset()` forgets it again.
    """
    registry = get_registry()
    name = name or getattr(module, "__name__", repr(module))
    source = Source(name, "(in-process)", "-")
    try:
        registry.manager.register(module, name=name)
    except Exception as exc:
        registry.failures.append(PluginFailure(source, f"failed to register: {_describe(exc)}"))
        return
    registry.plugins.append(source)
    _collect_all(registry, registry.manager, module, source)
    registry.spec_models.clear()


def _load(third_party: bool) -> Registry:
    pm = pluggy.PluginManager("tlc")
    pm.add_hookspecs(hookspecs)
    registry = Registry(manager=pm)
    from tlc._version import __version__ as tlc_version

    for module_name, kinds in BUILTIN_TYPES.items():  # imported when a type of theirs is used
        source = Source(module_name, "tlc", tlc_version, builtin=True)
        registry.plugins.append(source)
        for kind, names in kinds.items():
            registry.types[kind].update({name: TypeInfo(name, kind, source) for name in names})
    for module_name, names in BUILTIN_SOURCES.items():
        source = Source(module_name, "tlc", tlc_version, builtin=True)
        registry.sources.update({name: SourceInfo(name, source) for name in names})
    ordered: list[tuple[object, Source]] = []
    if third_party:
        for entry_point in _selected_entry_points():
            dist = entry_point.dist
            source = Source(entry_point.name, dist.name if dist else "?", dist.version if dist else "?")
            try:
                module = entry_point.load()
                pm.register(module, name=f"ep:{entry_point.name}")
            except Exception as exc:  # a broken plugin must not break tlc
                registry.failures.append(PluginFailure(source, f"failed to load: {_describe(exc)}"))
                continue
            ordered.append((module, source))
    for module, source in ordered:
        registry.plugins.append(source)
        _collect_all(registry, pm, module, source)
    return registry


def _selected_entry_points() -> list[metadata.EntryPoint]:
    found = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    wanted = os.environ.get("TLC_PLUGINS")
    if wanted is None:
        return found
    names = {n.strip() for n in wanted.split(",") if n.strip()}
    return [ep for ep in found if ep.name in names]


def _collect_all(registry: Registry, pm: pluggy.PluginManager, module: object, source: Source) -> None:
    """What `module` adds through every hook: backbone, head and task types, then data sources."""
    for kind, (hook_name, base) in KINDS.items():
        for cls in _returned(registry, pm, module, source, hook_name):
            name = type_name(cls, base)
            if name is None:
                registry.failures.append(PluginFailure(
                    source,
                    f"{hook_name}() returned {cls!r}, which is not a tlc.{base.__name__} subclass "
                    'with a field like type: Literal["name"]',
                ))
            elif _free(registry, registry.types[kind], name, f"{kind} type", source):
                registry.types[kind][name] = TypeInfo(name, kind, source, cls)
    for row in _returned(registry, pm, module, source, "tlc_data_sources"):
        if not (isinstance(row, DataSource) and isinstance(row.name, str) and row.name and callable(row.read)):
            registry.failures.append(PluginFailure(
                source, f"tlc_data_sources() returned {row!r}, which is not a tlc.DataSource(name, read, ...)"))
        elif _free(registry, registry.sources, row.name, "data source", source):
            registry.sources[row.name] = SourceInfo(row.name, source, row)


def _returned(registry: Registry, pm: pluggy.PluginManager, module: object, source: Source, hook_name: str):
    """Everything `module`'s implementations of `hook_name` return; one that raises is a failure."""
    for impl in [i for i in getattr(pm.hook, hook_name).get_hookimpls() if i.plugin is module]:
        try:
            returned = list(impl.function() or [])
        except Exception as exc:
            registry.failures.append(PluginFailure(source, f"{hook_name}() raised {_describe(exc)}"))
            continue
        yield from returned


def _free(registry: Registry, table: dict, name: str, what: str, source: Source) -> bool:
    """Whether `name` is still free in `table`; a taken one is a failure (the first registration wins)."""
    taken = table.get(name)
    if taken is not None:
        registry.failures.append(PluginFailure(source, f"{what} {name!r} is already registered by {taken.source}; ignored"))
    return taken is None


def type_name(cls: object, base: type) -> str | None:
    """The `type` literal of a Backbone/Head/Task subclass, or None if it is not one."""
    if not (isinstance(cls, type) and issubclass(cls, base) and cls is not base):
        return None
    field_info = cls.model_fields.get("type")
    if field_info is None:
        return None
    args = typing.get_args(field_info.annotation)
    if typing.get_origin(field_info.annotation) is not typing.Literal or len(args) != 1:
        return None
    return args[0] if isinstance(args[0], str) else None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
