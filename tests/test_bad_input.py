"""Bad input gets one located message, exit 2, no traceback, and nothing written."""
from __future__ import annotations

import re

import pytest

from .conftest import tlc

GOOD_TAIL = "head: {type: dense, classes: 2}\n"

BAD = {
    "unknown_backbone_type": (
        "input: {shape: [32, 32, 3]}\nbackbone:\n  type: conv_stak\n  blocks: [{filters: 3}]\n" + GOOD_TAIL,
        r"spec\.yaml:3:9: backbone\.type: unknown backbone type 'conv_stak' \(did you mean 'conv_stack'\?\); "
        r"registered backbone types: conv_stack, convnext_base, .*, vgg16, vgg19, xception\. "),
    "unknown_head_type": (
        "input: {shape: [32, 32, 3]}\nbackbone: {type: vgg16}\nhead: {type: softmax}\n",
        r"spec\.yaml:3:14: head\.type: unknown head type 'softmax'.*registered head types: deeplab_v3_plus, dense, fpn, linknet, none, pspnet, unet"),
    "unknown_key": (
        "input: {shape: [32, 32, 3]}\nbackbone:\n  type: conv_stack\n  blocks:\n    - {filters: 3, kernal_size: 3}\n"
        + GOOD_TAIL,
        r"spec\.yaml:5:20: backbone\.blocks\[0\]\.kernal_size: unknown key 'kernal_size'"),
    "unknown_top_level_key": (
        "input: {shape: [32, 32, 3]}\nbackbone: {type: vgg16}\nhed: {type: none}\nhead: {type: none}\n",
        r"spec\.yaml:3:1: hed: unknown key 'hed'"),
    "negative_filters": (
        "input: {shape: [32, 32, 3]}\nbackbone:\n  type: conv_stack\n  blocks:\n    - {filters: 3}\n"
        "    - {filters: -1}\n" + GOOD_TAIL,
        r"spec\.yaml:6:17: backbone\.blocks\[1\]\.filters: Input should be greater than 0; received: -1"),
    "string_for_int": (
        "input: {shape: [32, 32, 3]}\nbackbone: {type: vgg16}\nhead: {type: dense, classes: two}\n",
        r"spec\.yaml:3:30: head\.classes: Input should be a valid integer; received: 'two'"),
    "float_for_int": (
        "input: {shape: [32.0, 32, 3]}\nbackbone: {type: vgg16}\nhead: {type: none}\n",
        r"spec\.yaml:1:17: input\.shape\[0\]: Input should be a valid integer"),
    "missing_required": (
        "input: {shape: [32, 32, 3]}\nbackbone: {type: conv_stack}\n" + GOOD_TAIL,
        r"spec\.yaml:2:11: backbone\.blocks: required field is missing"),
    "bad_activation": (
        "input: {shape: [32, 32, 3]}\nbackbone: {type: conv_stack, blocks: [{filters: 2, activation: rleu}]}\n"
        + GOOD_TAIL,
        r"spec\.yaml:2:64: backbone\.blocks\[0\]\.activation: unknown activation 'rleu'"),
    "yaml_syntax": (
        "input: {shape: [32, 32, 3]\nbackbone: x\n",
        r"spec\.yaml:2:1: YAML syntax error"),
    "not_a_mapping": ("- 1\n- 2\n", r"spec\.yaml:1:1: a spec must be a mapping"),
    "empty_file": ("", r"spec\.yaml:1:1: a spec must be a mapping"),
    "duplicate_key": (
        "input: {shape: [32, 32, 3]}\ninput: {shape: [8, 8, 3]}\n",
        r"spec\.yaml:2:1: duplicate key 'input'"),
    "python_tag": (
        "input: !!python/object/apply:os.system ['echo pwned']\n",
        r"spec\.yaml:1:8: YAML tag 'tag:yaml\.org,2002:python/object/apply:os\.system' is not allowed"),
    "alias_bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        r"spec\.yaml:\d+:\d+: more than 20000 YAML nodes \(after expanding aliases; raise the limit with "
        r"TLC_MAX_YAML_NODES\)"),
    "huge_number": (
        "input: {shape: [99999999999999999999999, 32, 3]}\nbackbone: {type: vgg16}\nhead: {type: none}\n",
        r"spec\.yaml:1:16: input\.shape: height and width must be at most 8192 \(raise the limit with "
        r"the TLC_MAX_SIDE environment variable\)"),
    "freeze_beyond_last_layer": (
        "input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16}\nfreeze: {up_to: 19}\nhead: {type: none}\n",
        r"spec\.yaml:3:17: freeze\.up_to: layer index 19 is out of range; the backbone's layers are "
        r"0\.\.18 \(input \.\. block5_pool\)"),
    "freeze_unknown_name": (
        "input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16}\nfreeze: {up_to: block4_pol}\nhead: {type: none}\n",
        r"spec\.yaml:3:17: freeze\.up_to: no backbone layer named 'block4_pol' \(did you mean 'block4_pool'\?\); "
        r"layers: input, block1_conv1"),
    "freeze_bad_word": (
        "input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16}\nfreeze: some\nhead: {type: none}\n",
        r"spec\.yaml:3:9: freeze: Input should be 'all' or 'none'; received: 'some'"),
    "output_unknown": (
        "input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16, output: fc2}\nhead: {type: none}\n",
        r"spec\.yaml:2:33: backbone\.output: no backbone layer named 'fc2'"),
    "imagenet_on_conv_stack": (
        "input: {shape: [8, 8, 1]}\nbackbone: {type: conv_stack, weights: imagenet, blocks: [{filters: 2}]}\n"
        + GOOD_TAIL,
        r"spec\.yaml:2:39: backbone\.weights: this backbone has no imagenet weights"),
    "imagenet_top_needs_its_rgb_input": (  # without the top, ImageNet weights adapt to 1 channel
        "input: {shape: [224, 224, 1]}\nbackbone: {type: vgg16, weights: imagenet, include_top: true}\n"
        "head: {type: none}\n",
        r"spec\.yaml:1:16: input\.shape: vgg16 with include_top and imagenet weights needs input \[224, 224, 3\]"),
    "duplicate_layer_name": (
        "input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16, include_top: true, classes: 3}\n" + GOOD_TAIL,
        r"spec\.yaml:3:7: head: layer name 'predictions' is used twice"),
    "bad_name": (
        "name: ../evil\ninput: {shape: [64, 64, 3]}\nbackbone: {type: vgg16}\nhead: {type: none}\n",
        r"spec\.yaml:1:7: name: String should match pattern"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["check", "summarize", "build"])
def test_bad_spec_is_located_exit_2_without_traceback(case, command, write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, pattern = BAD[case]
    path = write(text)
    result = tlc(command, path.name, *(["-o", "out.keras"] if command == "build" else []))
    assert result.exit_code == 2, result.output
    assert re.search(pattern, result.output), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.keras").exists() and not (tmp_path / "models").exists()


def test_python_tag_executes_nothing(write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    path = write(f"input: !!python/object/apply:os.system ['touch {marker}']\n")
    assert tlc("check", path).exit_code == 2
    assert not marker.exists()


def test_missing_file_is_exit_2(tmp_path):
    result = tlc("check", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml: file not found" in result.output


def test_several_errors_are_all_reported_in_file_order(write):
    path = write("input: {shape: [0, 32, 3]}\nbackbone: {type: vgg16, colour: red}\nhead: {type: dense, classes: 0}\n")
    lines = [line for line in tlc("check", path).stderr.splitlines() if "spec.yaml:" in line]
    assert [line.split(": ")[1] for line in lines] == ["input.shape[0]", "backbone.colour", "head.classes"]


def test_debug_shows_the_traceback(write):
    path = write("input: {shape: [32, 32, 3]}\n")
    result = tlc("--debug", "build", path)
    assert result.exit_code != 0
    assert result.exception is not None and "backbone" in str(result.exception)


def test_build_output_must_be_keras(write):
    path = write("input: {shape: [8, 8, 1]}\nbackbone: {type: conv_stack, blocks: [{filters: 2}]}\n" + GOOD_TAIL)
    result = tlc("build", path, "-o", "model.h5")
    assert result.exit_code == 2 and "--output must end in .keras" in result.output


def test_phase_freeze_references_are_checked_without_training(write):
    path = write("input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16}\nhead: {type: none}\n"
                 "train:\n  data: {type: digits}\n  phases:\n    - {freeze: all, epochs: 1}\n"
                 "    - {freeze: {up_to: block9_pool}, epochs: 1}\n")
    result = tlc("check", path)
    assert result.exit_code == 2
    assert "spec.yaml:8:24: train.phases[1].freeze.up_to: no backbone layer named 'block9_pool'" in result.output


def test_exceptions_become_one_readable_line():
    from tlc.errors import one_line

    keras_style = ValueError("Exception encountered when calling Conv2D.call().\n\n"
                             "\x1b[1mComputed output size would be zero or negative.\x1b[0m\n\nArguments received ...")
    assert one_line(keras_style) == "Computed output size would be zero or negative."
    assert one_line(OSError()) == "OSError"  # an empty message still says something
    assert one_line(RuntimeError("boom\nmore")) == "boom"
