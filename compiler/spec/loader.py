"""Read a spec file into plain data while remembering where every value came from.

PyYAML's composer gives nodes with marks; we build the Python values ourselves so that
(1) every value keeps its file, line and column for error messages, (2) only the plain YAML
tags are accepted (nothing is ever constructed from `!!python/...`), and (3) alias expansion
and nesting are bounded, so a billion-laughs document costs nothing.
`extends` chains are deep-merged here, before validation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlc.errors import SpecError

MAX_FILE_BYTES = int(os.environ.get("TLC_MAX_SPEC_BYTES", 1_000_000))
MAX_NODES = int(os.environ.get("TLC_MAX_YAML_NODES", 20_000))  # after alias expansion
MAX_DEPTH = int(os.environ.get("TLC_MAX_YAML_DEPTH", 40))
MAX_EXTENDS = 16

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}

Loc = tuple  # a path into the data: keys and list indices


@dataclass(frozen=True)
class Mark:
    """A position in a spec file, printed as `file:line:col` (1-based)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    @classmethod
    def of(cls, file: str, node: yaml.Node) -> Mark:
        return cls(file, node.start_mark.line + 1, node.start_mark.column + 1)


@dataclass
class Document:
    """A loaded (and merged) spec: plain data plus the position of every value and key."""

    path: Path
    data: dict
    values: dict[Loc, Mark] = field(default_factory=dict)
    keys: dict[Loc, Mark] = field(default_factory=dict)

    def mark(self, loc: Loc, *, key: bool = False) -> Mark:
        """The position of `loc`, or of its nearest ancestor that has one."""
        loc = tuple(loc)
        if key and loc in self.keys:
            return self.keys[loc]
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.values:
                return self.values[loc[:end]]
        return Mark(str(self.path), 1, 1)

    def folder_of(self, loc: Loc) -> Path:
        """The folder of the file that wrote `loc`: relative paths in specs are relative to it."""
        return Path(self.mark(loc).file).parent

    def error(self, loc: Loc, message: str, *, key: bool = False) -> SpecError:
        return SpecError(self.located(self.mark(loc, key=key), loc, message))

    def located(self, mark: Mark, loc: Loc, message: str) -> str:
        """`located`, saying which spec a message is about when the node lives in a file it extends
        (two specs extending one base must not give the same message twice)."""
        text = located(mark, loc, message)
        if mark.file != str(self.path):
            text += f" (for {self.path}, which extends {mark.file})"
        return text


def located(mark: Mark, loc: Loc, message: str) -> str:
    """`file:line:col: field.path: message`, the one format of every spec error."""
    return f"{mark}: {format_loc(loc)}{': ' if loc else ''}{message}"


def format_loc(loc: Loc) -> str:
    """('backbone', 'blocks', 1, 'filters') -> 'backbone.blocks[1].filters'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_document(path: str | os.PathLike) -> Document:
    """Load a spec file and everything it `extends`, deep-merged."""
    return _load(Path(path), chain=())


def _load(path: Path, chain: tuple[str, ...]) -> Document:
    real = os.path.realpath(path)
    doc = Document(path, *_parse(path))
    base_ref = doc.data.pop("extends", None)
    if base_ref is None:
        doc.values.pop(("extends",), None)
        return doc
    if not isinstance(base_ref, str) or not base_ref:
        raise doc.error(("extends",), "must be a path to another spec file")
    base_path = Path(os.path.normpath(path.parent / base_ref))
    if os.path.realpath(base_path) in chain + (real,):
        cycle = " -> ".join([*chain, real, os.path.realpath(base_path)])
        raise doc.error(("extends",), f"extends cycle: {cycle}")
    if len(chain) >= MAX_EXTENDS:
        raise doc.error(("extends",), f"more than {MAX_EXTENDS} levels of extends")
    if not base_path.is_file():
        raise doc.error(("extends",), f"file not found: {base_path}")
    base = _load(base_path, chain + (real,))
    merged = deep_merge(base.data, doc.data)
    values = {**base.values, **doc.values}
    keys = {**base.keys, **doc.keys}
    values.pop(("extends",), None)
    keys.pop(("extends",), None)
    return Document(
        path,
        merged,
        {loc: m for loc, m in values.items() if exists(merged, loc)},
        {loc: m for loc, m in keys.items() if exists(merged, loc)},
    )


def deep_merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key; anything else in `override` replaces what `base` had."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = deep_merge(base[key], value) if key in base else value
        return out
    return override


def exists(data: Any, loc: Loc) -> bool:
    """Whether the path `loc` (keys and list indices) exists in `data`."""
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False
    return True


def _parse(path: Path) -> tuple[Any, dict, dict]:
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{name}: is a folder, not a spec file") from None
    except OSError as exc:
        raise SpecError(f"{name}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(f"{name}: larger than {MAX_FILE_BYTES} bytes; specs are short YAML files "
                        "(raise the limit with TLC_MAX_SPEC_BYTES)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader already rejects control characters here
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise SpecError(f"{where}: YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        where = f"{name}:{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise SpecError(f"{where}: character {char} is not allowed in YAML") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{name}: YAML error: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None or not isinstance(node, yaml.MappingNode):
        where = Mark.of(name, node) if node is not None else Mark(name, 1, 1)
        raise SpecError(f"{where}: a spec must be a mapping of keys such as input, backbone, head")
    builder = _Builder(name, loader)
    data = builder.build(node, (), 0)
    return data, builder.values, builder.keys


class _Builder:
    """Turns composed YAML nodes into dicts, lists and scalars, recording marks."""

    def __init__(self, file: str, loader: yaml.SafeLoader):
        self.file, self.loader = file, loader
        self.values: dict[Loc, Mark] = {}
        self.keys: dict[Loc, Mark] = {}
        self.count = 0

    def fail(self, node: yaml.Node, message: str) -> SpecError:
        return SpecError(f"{Mark.of(self.file, node)}: {message}")

    def build(self, node: yaml.Node, loc: Loc, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, f"more than {MAX_NODES} YAML nodes (after expanding aliases; "
                                  "raise the limit with TLC_MAX_YAML_NODES)")
        if depth > MAX_DEPTH:
            raise self.fail(node, f"nested deeper than {MAX_DEPTH} levels (raise the limit with TLC_MAX_YAML_DEPTH)")
        self.values[loc] = Mark.of(self.file, node)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _TAG + "map":
                raise self.fail(node, f"YAML tag {node.tag!r} is not allowed in a spec")
            out: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == _TAG + "merge":
                    raise self.fail(key_node, "YAML merge keys (<<) are not supported; use extends")
                key = self.scalar(key_node)
                if not isinstance(key, str):
                    raise self.fail(key_node, f"keys must be strings, got {key!r}")
                if key in out:
                    raise self.fail(key_node, f"duplicate key {key!r}")
                self.keys[loc + (key,)] = Mark.of(self.file, key_node)
                out[key] = self.build(value_node, loc + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _TAG + "seq":
                raise self.fail(node, f"YAML tag {node.tag!r} is not allowed in a spec")
            return [self.build(item, loc + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, "keys must be plain scalars")
        if node.tag == _TAG + "timestamp":  # a date-like string stays a string
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise self.fail(node, f"YAML tag {node.tag!r} is not allowed in a spec")
        return self.loader.construct_object(node)
