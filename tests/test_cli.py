"""The CLI contract: exit codes, JSON shapes, files written, and no TensorFlow where promised."""
from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import EXAMPLES, tlc
from .helpers import in_fresh_interpreter, tlc_executable

DIGITS = """
input: {shape: [8, 8, 1]}
backbone:
  type: conv_stack
  blocks: [{filters: 4, convs: 2, dropout: 0.25}]
freeze: {up_to: block1_conv2}
head: {type: dense, units: [8], classes: 3}
"""


@pytest.mark.parametrize("command", ["check", "summarize"])
def test_check_and_summarize_never_import_tensorflow(command):
    results, imported = in_fresh_interpreter([command, EXAMPLES / "vgg16_too_small_48.yaml", "--json"],
                                             modules=("tensorflow", "keras", "sklearn", "matplotlib", "numpy"))
    assert results[0]["exit_code"] == 1, results[0]["output"]
    assert imported == []


def test_schema_and_plugins_never_import_tensorflow():
    results, imported = in_fresh_interpreter(["schema"], ["plugins", "--json"])
    assert [r["exit_code"] for r in results] == [0, 0] and imported == []


def test_check_json_single_ok(write):
    result = tlc("check", write(DIGITS), "--json")
    assert result.exit_code == 0
    obj = json.loads(result.stdout)
    # min_input for a feasible spec too: two valid 3x3 convs and a 2x2 pool need 6x6
    assert obj["ok"] is True and obj["error"] is None and obj["min_input"] == [6, 6]
    assert obj["input_shape"] == [8, 8, 1] and obj["output_shape"] == [3]
    # conv 1*9*4+4=40, conv 4*9*4+4=148 (frozen), dense 16*8+8=136, predictions 8*3+3=27
    assert obj["params"] == {"total": 351, "trainable": 163, "non_trainable": 188}
    assert set(obj) == {"spec", "ok", "input_shape", "output_shape", "error", "min_input", "params", "warnings"}
    assert [w.rsplit("/", 1)[-1] for w in obj["warnings"]] == ["spec.yaml:5:9: freeze: backbone layers are frozen but weights is null: "
                               "they keep their random initial values"]
    text = tlc("check", write(DIGITS))
    assert "ok: output 3, 351 params (163 trainable, 188 frozen); smallest input 6x6" in text.stdout


def test_min_input_of_a_feasible_spec_is_what_keras_accepts(write):
    """For a feasible spec, the reported minimum builds in Keras and one pixel less does not."""
    import tlc as api
    from .helpers import keras_builds

    path = write("input: {shape: [64, 48, 3]}\nbackbone: {type: conv_stack, blocks: "
                 "[{filters: 4, kernel_size: [5, 3], pool_size: [3, 2]}, {filters: 4, strides: 2}]}\n"
                 "head: {type: dense, classes: 2}\n")
    h, w = json.loads(tlc("check", path, "--json").stdout)["min_input"]
    spec = api.load_spec(path)
    assert keras_builds(spec, h, w)
    assert not keras_builds(spec, h - 1, w) and not keras_builds(spec, h, w - 1)


def test_missing_weights_file_warns_in_check_and_fails_build_and_train_early(write, tmp_path):
    path = write(DIGITS.replace("type: conv_stack", "type: conv_stack\n  weights: runs/src/model.keras")
                 + "train: {data: {type: digits, classes: [0, 1, 2]}}\n")
    result = tlc("check", path, "--json")
    assert result.exit_code == 0
    warning = [w for w in json.loads(result.stdout)["warnings"] if "not found" in w]
    assert warning == [f"{path}:4:12: backbone.weights: file not found: {tmp_path / 'runs/src/model.keras'} "
                       "(build and train need it)"]
    text = tlc("check", path)
    assert text.exit_code == 0 and "spec.yaml:4:12: backbone.weights: file not found" in text.stderr
    for command in ("build", "train"):
        result = tlc(command, path)
        assert result.exit_code == 2, result.output
        assert "spec.yaml:4:12: backbone.weights: file not found" in result.stderr


def test_build_and_train_reject_a_bad_spec_before_importing_tensorflow(write):
    """A bad spec under build/train fails as fast as under check: no TensorFlow import first."""
    bad = write("input: {shape: [8, 8, 1]}\nbackbone: {type: conv_stak, blocks: [{filters: 4}]}\n"
                "head: {type: dense, classes: 3}\ntrain: {data: {type: digits}}\n")
    small = write(DIGITS.replace("[8, 8, 1]", "[5, 5, 1]") + "train: {data: {type: digits}}\n", "small.yaml")
    nodata = write(DIGITS + "train: {data: {type: directory, path: nowhere}}\n", "nodata.yaml")
    results, imported = in_fresh_interpreter(["build", bad], ["train", bad], ["build", small], ["train", small],
                                             ["train", nodata], ["predict", "x.keras", "y.png"])
    assert [r["exit_code"] for r in results] == [2, 2, 1, 1, 2, 2] and imported == []


def test_check_several_mixed_worst_exit_code_and_json_list(write):
    good = write(DIGITS, "good.yaml")
    small = EXAMPLES / "vgg16_too_small_48.yaml"
    bad = write("input: {shape: [8, 8, 1]}\n", "bad.yaml")
    result = tlc("check", good, small, "--json")
    assert result.exit_code == 1
    objs = json.loads(result.stdout)
    assert [o["ok"] for o in objs] == [True, False]
    assert objs[1]["error"] == {
        "layer": "head_avgpool", "input_shape": [1, 1, 512],
        "message": "head_avgpool needs at least 4x4, got 1x1x512 (from input 48x48x3); "
                   "smallest feasible input is 128x128"}
    assert objs[1]["min_input"] == [128, 128] and objs[1]["params"] is None
    result = tlc("check", good, small, bad, "--json")
    assert result.exit_code == 2
    invalid = json.loads(result.stdout)[2]
    assert invalid["ok"] is False and invalid["error"]["layer"] is None
    assert invalid["error"]["message"].splitlines()[0].endswith("bad.yaml:1:1: backbone: required field is missing")


def test_check_text_message_from_the_contract():
    result = tlc("check", EXAMPLES / "vgg16_too_small_48.yaml")
    assert result.exit_code == 1
    assert ("vgg16_too_small_48.yaml: infeasible: head_avgpool needs at least 4x4, got 1x1x512 "
            "(from input 48x48x3); smallest feasible input is 128x128") in result.stderr


def test_summarize_json_layers_and_indices(write):
    result = tlc("summarize", write(DIGITS), "--json")
    assert result.exit_code == 0
    obj = json.loads(result.stdout)
    names = [(l["index"], l["name"], l["trainable"]) for l in obj["layers"]]
    assert names == [(0, "input", False), (1, "block1_conv1", False), (2, "block1_conv2", False),
                     (3, "block1_pool", True), (4, "block1_dropout", True),
                     (None, "head_flatten", True), (None, "head_dense1", True), (None, "predictions", True)]
    assert obj["layers"][2] == {"index": 2, "name": "block1_conv2", "kind": "Conv2D",
                                "output_shape": [4, 4, 4], "params": 148, "trainable": False}


def test_summarize_table_shows_layers_and_totals(write):
    result = tlc("summarize", write(DIGITS))
    assert result.exit_code == 0
    assert "block1_conv2" in result.stdout and "frozen" in result.stdout
    assert "total params: 351   trainable: 163   frozen (non-trainable): 188" in result.stdout


def test_summarize_infeasible_shows_partial_table_and_exit_1():
    result = tlc("summarize", EXAMPLES / "vgg16_too_small_48.yaml")
    assert result.exit_code == 1
    assert "block5_pool" in result.stdout
    assert "smallest feasible input is 128x128" in result.stderr


def test_build_writes_model_atomically_that_keras_loads(write, tmp_path, monkeypatch):
    import keras

    monkeypatch.chdir(tmp_path)
    spec = write("name: tiny\n" + DIGITS)
    result = tlc("build", spec)
    assert result.exit_code == 0, result.output
    target = tmp_path / "models" / "tiny.keras"
    assert target.is_file()
    assert [p.name for p in target.parent.iterdir()] == ["tiny.keras"]  # no temporary left
    model = keras.saving.load_model(target)
    assert model.name == "tiny" and model.count_params() == 351
    assert [l.trainable for l in model.layers][1:4] == [False, False, True]
    assert "wrote models/tiny.keras: 351 params (163 trainable, 188 frozen)" in result.stdout


def test_build_infeasible_exit_1_nothing_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = tlc("build", EXAMPLES / "vgg16_too_small_48.yaml")
    assert result.exit_code == 1
    assert "infeasible: head_avgpool" in result.stderr
    assert not (tmp_path / "models").exists()


def test_schema_is_json_schema_with_every_type():
    result = tlc("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    for name in ("conv_stack", "vgg16", "dense", "none"):
        assert f'"{name}"' in text
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"input", "backbone", "head"}


def test_every_help_text_is_shown_whole(monkeypatch):
    """Typer renders help as rich markup, where '[default: x]' is a tag that vanishes: every
    command's and option's text must reach the screen as written."""
    import re

    import typer.main

    from tlc.cli import app

    monkeypatch.setenv("COLUMNS", "400")
    squeeze = lambda text: re.sub(r"[\s│]+", "", text)  # noqa: E731 (rich wraps and boxes the cells)
    for name, command in typer.main.get_command(app).commands.items():
        shown = squeeze(tlc(name, "--help").stdout)
        for text in [command.help or ""] + [param.help for param in command.params if getattr(param, "help", None)]:
            assert squeeze(text.split("\f")[0]) in shown, (name, text)


def test_version():
    result = tlc("--version")
    assert result.exit_code == 0 and result.stdout.startswith("tlc 0.")


def test_plugins_lists_builtins_with_their_source():
    result = tlc("plugins", "--json")
    assert result.exit_code == 0
    listed = {(t["type"], t["kind"], t["plugin"], t["distribution"]) for t in json.loads(result.stdout)["types"]}
    assert {("conv_stack", "backbone", "tlc.plugins.conv_stack", "tlc"), ("vgg16", "backbone", "tlc.plugins.vgg", "tlc"),
            ("dense", "head", "tlc.plugins.dense_head", "tlc"), ("none", "head", "tlc.plugins.no_head", "tlc")} <= listed
    sources = [(s["type"], s["plugin"], s["builtin"]) for s in json.loads(result.stdout)["data_sources"]]
    assert sources == [(name, "tlc.data.sources", True)
                       for name in ("digits", "npz", "directory", "csv", "cifar10", "masks", "coco")]


def test_the_table_of_built_in_types_is_what_their_modules_register():
    """Built-in modules are imported only when a type of theirs is used; the table that names
    their types must not drift from the classes their hooks return."""
    import importlib

    from tlc.plugin.registry import BUILTIN_TYPES, KINDS, type_name

    for module_name, kinds in BUILTIN_TYPES.items():
        module = importlib.import_module(module_name)
        for kind, (hook, base) in KINDS.items():
            returned = [type_name(cls, base) for cls in getattr(module, hook, lambda: [])()]
            assert returned == list(kinds.get(kind, ())), (module_name, kind)
    from tlc.plugin.registry import BUILTIN_SOURCES

    for module_name, names in BUILTIN_SOURCES.items():
        assert [row.name for row in importlib.import_module(module_name).tlc_data_sources()] == list(names)


def test_a_spec_imports_only_the_built_in_modules_it_names():
    _, imported = in_fresh_interpreter(["check", EXAMPLES / "vgg16_too_small_48.yaml"], modules=("tlc.plugins.",))
    assert imported == ["tlc.plugins.applications", "tlc.plugins.dense_head", "tlc.plugins.vgg"]


def test_console_script_runs_as_a_process():
    done = subprocess.run([tlc_executable(), "check", str(EXAMPLES / "vgg16_too_small_48.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "smallest feasible input is 128x128" in done.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`tlc summarize SPEC | head -1`: no BrokenPipeError, no internal error, exit 141 (SIGPIPE's)."""
    spec = tmp_path / "long.yaml"
    blocks = ", ".join(["{filters: 2, convs: 16, padding: same, pool: null}"] * 60)  # >> a pipe's 64 KiB
    spec.write_text(f"input: {{shape: [8, 8, 1]}}\nbackbone: {{type: conv_stack, blocks: [{blocks}]}}\n"
                    "head: {type: none}\n")
    short = tmp_path / "short.yaml"  # ~290 bytes of JSON each: 400 of them overflow a pipe, at no planning cost
    short.write_text("input: {shape: [8, 8, 1]}\nbackbone: {type: conv_stack, blocks: [{filters: 2}]}\nhead: {type: none}\n")
    for args in (["summarize", spec], ["summarize", spec, "--json"], ["check", "--json", *[short] * 400]):
        process = subprocess.Popen([tlc_executable(), *map(str, args)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        assert process.stdout.readline()  # the reader takes one line, then goes away
        process.stdout.close()
        stderr = process.stderr.read().decode()
        code = process.wait(timeout=60)
        assert stderr == "", stderr
        # the table is written line by line, so it meets the closed pipe; one large JSON write may
        # be taken whole by the kernel's pipe (it is, on this sandbox's kernel) and then ends with 0
        assert code == 141 if "--json" not in args else code in (0, 141), (args, code)


def test_a_warning_names_the_spec_it_is_about(write):
    write("input: {shape: [8, 8, 1]}\nbackbone: {type: conv_stack, weights: gone.keras, blocks: [{filters: 2}]}\n"
          "freeze: all\nhead: {type: dense, classes: 2}\n", "base.yaml")
    child = write("extends: base.yaml\nhead: {classes: 3}\n", "child.yaml")
    result = tlc("check", child.parent / "base.yaml", child)
    warnings = [line for line in result.output.splitlines() if "file not found" in line]
    assert len(warnings) == 2 and warnings[0] != warnings[1]
    assert warnings[1].endswith(f"(for {child}, which extends {child.parent / 'base.yaml'})")
    assert "base.yaml:2:" in warnings[0] and "(for " not in warnings[0]
