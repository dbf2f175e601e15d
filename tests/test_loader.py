"""Loading: positions, extends (deep merge, chains, cycles, relative paths), safe YAML."""
from __future__ import annotations

import os

import pytest

import tlc
from tlc.errors import SpecError
from tlc.spec.loader import deep_merge, format_loc, load_document

BASE = """
input: {shape: [8, 8, 1]}
backbone:
  type: conv_stack
  weights: weights/source.keras
  blocks: [{filters: 4}, {filters: 8, pool: null}]
head: {type: dense, units: [16], classes: 5}
"""


def test_deep_merge_merges_mappings_and_replaces_everything_else():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert deep_merge(base, {"a": {"y": [3]}, "c": 2}) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}
    assert deep_merge(base, {"a": 5}) == {"a": 5, "b": 1}


def test_positions_are_one_based_and_point_at_values(write):
    doc = load_document(write("a: 1\nb:\n  c: [x, y]\n"))
    assert str(doc.mark(("b", "c", 1))).endswith("spec.yaml:3:10")
    assert str(doc.mark(("b", "c", 7))).endswith("spec.yaml:3:6")  # nearest ancestor
    assert str(doc.mark(("b", "c"), key=True)).endswith("spec.yaml:3:3")


def test_format_loc():
    assert format_loc(("backbone", "blocks", 1, "filters")) == "backbone.blocks[1].filters"


def test_extends_chain_merges_and_resolves_paths_relative_to_the_writing_file(write, tmp_path):
    write(BASE, "lib/base.yaml")
    write("extends: base.yaml\nhead: {classes: 3}\n", "lib/mid.yaml")
    child = write("extends: lib/mid.yaml\nname: child\nfreeze: all\n"
                  "backbone: {blocks: [{filters: 2}]}\n", "child.yaml")
    spec = tlc.load_spec(child)
    assert spec.name == "child"
    assert spec.head.classes == 3 and spec.head.units == [16]  # mapping merged key by key
    assert [b.filters for b in spec.backbone.blocks] == [2]  # list replaced
    assert spec.backbone.weights == os.path.normpath(tmp_path / "lib" / "weights" / "source.keras")
    assert spec.freeze == "all"


def test_errors_in_a_base_file_name_the_base_file(write):
    write(BASE.replace("filters: 8", "filters: 0"), "base.yaml")
    child = write("extends: base.yaml\n", "child.yaml")
    with pytest.raises(SpecError, match=r"base\.yaml:5:36: backbone\.blocks\[1\]\.filters: Input should be greater than 0"):
        tlc.load_spec(child)


def test_name_defaults_to_the_top_file_stem(write):
    write(BASE, "base.yaml")
    assert tlc.load_spec(write("extends: base.yaml\n", "my_model.yaml")).name == "my_model"


def test_extends_cycle_and_missing_base(write):
    write("extends: b.yaml\n", "a.yaml")
    write("extends: a.yaml\n", "b.yaml")
    with pytest.raises(SpecError, match=r"b\.yaml:1:10: extends: extends cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_document(write("extends: b.yaml\n", "a.yaml"))
    with pytest.raises(SpecError, match=r"c\.yaml:1:10: extends: file not found: .*nope\.yaml"):
        load_document(write("extends: nope.yaml\n", "c.yaml"))


def test_self_extends_is_a_cycle(write):
    with pytest.raises(SpecError, match="extends cycle"):
        load_document(write("extends: self.yaml\n", "self.yaml"))


def test_dates_stay_strings_and_non_utf8_is_refused(write, tmp_path):
    assert load_document(write("name: 2024-01-01\n")).data["name"] == "2024-01-01"
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_document(path)


def test_merge_keys_are_refused_with_a_hint(write):
    with pytest.raises(SpecError, match=r"merge keys \(<<\) are not supported; use extends"):
        load_document(write("a: &a {x: 1}\nb:\n  <<: *a\n"))


def test_default_name_is_a_safe_version_of_the_file_stem(write):
    write(BASE, "base.yaml")
    assert tlc.load_spec(write("extends: base.yaml\n", "my model (v2).yaml")).name == "my_model__v2_"
    assert tlc.load_spec(write("extends: base.yaml\n", "..hidden.yaml")).name == "hidden"


def test_resolved_spec_round_trips_through_serialisation(write, recwarn):
    path = write("input: {shape: [8, 8, 1]}\n"
                 "backbone: {type: conv_stack, weights: {path: w.keras, sha256: '" + "a" * 64 + "'},\n"
                 "           blocks: [{filters: 2, kernel_size: [3, 1]}], output: 1}\n"
                 "freeze: {up_to: block1_conv1}\nhead: {type: dense, classes: 2}\n")
    spec = tlc.load_spec(path)
    dumped = spec.model_dump(mode="json")
    assert dumped["freeze"] == {"up_to": "block1_conv1"}
    assert dumped["backbone"]["weights"]["sha256"] == "a" * 64
    assert dumped["backbone"]["blocks"][0]["kernel_size"] == [3, 1]
    assert not [w for w in recwarn if "serializ" in str(w.message).lower()]
    assert type(spec).model_validate(dumped).model_dump(mode="json") == dumped
