"""Third-party plugins through the real entry-point mechanism: the example package and a broken
one are pip-installed into a temporary target that goes on sys.path / PYTHONPATH."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from typing import Literal

import pytest

import tlc
from tlc.plugin import registry
from tlc.plan.layers import Conv2D

from .conftest import REPO, tlc as run
from .helpers import in_fresh_interpreter, keras_layers, tlc_executable, trainable_count


MOBILENET = REPO / "plugins" / "examples" / "tlc-plugin-mobilenet"
BROKEN = REPO / "tests" / "fixtures" / "tlc-plugin-broken"

MOBILE_SPEC = """
input: {shape: [96, 96, 3]}
backbone: {type: keras_mobilenet_v3_small, alpha: 0.75}
freeze: {up_to: expanded_conv_10_expand}
head: {type: conv_head, filters: 16, classes: 4}
"""


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site-packages")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(MOBILENET), str(BROKEN)], check=True, capture_output=True)
    return target


@pytest.fixture
def plugins(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    registry.reset()
    yield plugin_site
    for name in [m for m in sys.modules if m.startswith(("tlc_mobilenet", "tlc_broken"))]:
        del sys.modules[name]


def _cli(plugin_site, *args, env=None):
    environ = {**os.environ, "PYTHONPATH": str(plugin_site), **(env or {})}
    environ.pop("TLC_PLUGINS", None) if env is None or "TLC_PLUGINS" not in env else None
    return subprocess.run([tlc_executable(), *args], capture_output=True, text=True, env=environ, timeout=120)


@pytest.mark.slow
def test_plugins_command_lists_types_and_failures_in_a_real_process(plugin_site):
    done = _cli(plugin_site, "plugins", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    types_ = {t["type"]: t for t in listed["types"]}
    assert types_["keras_mobilenet_v3_small"] | {} == {"type": "keras_mobilenet_v3_small", "kind": "backbone", "plugin": "mobilenet",
                                           "distribution": "tlc-plugin-mobilenet", "version": "0.1.0",
                                           "builtin": False}
    assert types_["conv_head"]["kind"] == "head" and types_["fine_head"]["plugin"] == "taken_name"
    assert types_["vgg16"]["plugin"] == "tlc.plugins.vgg"  # the built-in keeps its name
    failed = {f["plugin"]: f for f in listed["failed"]}
    assert set(failed) == {"import_error", "raises", "not_a_backbone", "taken_name"}
    assert all(f["distribution"] == "tlc-plugin-broken" and f["version"] == "0.0.1" for f in failed.values())
    assert "ModuleNotFoundError: No module named 'tlc_this_module_does_not_exist'" in failed["import_error"]["error"]
    assert "tlc_backbones() raised RuntimeError: boom in the hook" in failed["raises"]["error"]
    assert "is not a tlc.Backbone subclass" in failed["not_a_backbone"]["error"]
    assert "backbone type 'vgg16' is already registered by plugin 'tlc.plugins.vgg'" in failed["taken_name"]["error"]


@pytest.mark.slow
def test_broken_plugins_warn_once_and_everything_else_works(plugin_site):
    done = _cli(plugin_site, "check", str(REPO / "spec_examples" / "digits_source.yaml"))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4 and all("(tlc-plugin-broken 0.0.1)" in w for w in warnings)
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_tlc_plugins_env_and_no_plugins_flag_restrict_loading(plugin_site):
    only = json.loads(_cli(plugin_site, "plugins", "--json", env={"TLC_PLUGINS": "mobilenet"}).stdout)
    assert {t["type"] for t in only["types"] if not t["builtin"]} == {"keras_mobilenet_v3_small", "tiny_resnet", "conv_head"}
    assert only["failed"] == []
    none = json.loads(_cli(plugin_site, "plugins", "--json", env={"TLC_PLUGINS": ""}).stdout)
    assert all(t["builtin"] for t in none["types"]) and none["failed"] == []
    flag = json.loads(_cli(plugin_site, "--no-plugins", "plugins", "--json").stdout)
    assert all(t["builtin"] for t in flag["types"]) and flag["failed"] == []


def test_plugin_types_validate_like_builtins(plugins, write):
    result = run("check", write(MOBILE_SPEC.replace("alpha: 0.75", "alpha: 0.4, depth: 3")))
    assert result.exit_code == 2
    assert "spec.yaml:2:51: backbone.alpha: Input should be 0.75 or 1.0" in result.output
    assert "spec.yaml:2:56: backbone.depth: unknown key 'depth'" in result.output
    unknown = run("check", write(MOBILE_SPEC.replace("keras_mobilenet_v3_small", "keras_mobilenet_v3_smal")))
    assert "did you mean 'keras_mobilenet_v3_small'" in unknown.output and "keras_mobilenet_v3_small, mobilenet, " in unknown.output


@pytest.mark.slow
def test_plugin_spec_plans_like_keras_builds(plugins, write):
    spec = tlc.load_spec(write(MOBILE_SPEC))
    planned = tlc.check(spec)
    assert planned.ok
    model = tlc.compile(spec)
    assert [(p.name, p.kind, p.output_shape, p.params, p.trainable) for p in planned.layers] == \
        [(k["name"], k["kind"], k["output_shape"], k["params"], k["trainable"]) for k in keras_layers(model)]
    assert planned.params()["trainable"] == trainable_count(model)
    frozen = [l.index for l in planned.backbone if not l.trainable]
    assert frozen == list(range(0, [l.name for l in planned.backbone].index("expanded_conv_10_expand") + 1))


@pytest.mark.slow
def test_plugin_backbone_with_too_small_map_for_the_head(plugins, write):
    spec = MOBILE_SPEC.replace("[96, 96, 3]", "[64, 80, 3]").replace(
        "{type: conv_head, filters: 16, classes: 4}", "{type: dense, pool_size: 4, classes: 4}")
    result = run("check", write(spec), "--json")
    assert result.exit_code == 1, result.output
    obj = json.loads(result.stdout)
    assert obj["error"]["layer"] == "head_avgpool" and obj["error"]["input_shape"] == [2, 3, 432]
    assert obj["min_input"] == [97, 97]  # MobileNetV3Small maps h to ceil(h / 32)


@pytest.mark.slow
def test_plugin_summarize_build_and_schema(plugins, write, tmp_path):
    path = write(MOBILE_SPEC)
    summary = json.loads(run("summarize", path, "--json").stdout)
    assert summary["layers"][0] == {"index": 0, "name": "input", "kind": "InputLayer",
                                    "output_shape": [96, 96, 3], "params": 0, "trainable": False}
    assert summary["layers"][-1]["name"] == "predictions" and summary["layers"][-1]["index"] is None
    built = run("build", path, "-o", tmp_path / "m.keras")
    assert built.exit_code == 0, built.output
    import keras

    model = keras.saving.load_model(tmp_path / "m.keras")
    assert model.count_params() == summary["params"]["total"]
    assert trainable_count(model) == summary["params"]["trainable"]
    schema = run("schema").stdout
    assert '"keras_mobilenet_v3_small"' in schema and '"tiny_resnet"' in schema and '"conv_head"' in schema


GRAPH_SPEC = """
input: {shape: [9, 13, 2]}
backbone: {type: tiny_resnet, width: 4, blocks: 2}
freeze: {up_to: block1_add}
head: {type: dense, classes: 3}
"""


@pytest.mark.slow
def test_a_static_graph_plugin_checks_without_tensorflow_and_builds_the_same_model(plugin_site, tmp_path):
    spec = tmp_path / "graph.yaml"
    spec.write_text(GRAPH_SPEC)
    (summarized,), imported = in_fresh_interpreter(["summarize", spec, "--json"],
                                                  env={"PYTHONPATH": str(plugin_site)})
    assert summarized["exit_code"] == 0 and imported == [], summarized["output"]
    summary = json.loads(summarized["stdout"])
    assert [l["name"] for l in summary["layers"][:8]] == [
        "input", "stem_conv", "stem_bn", "stem_relu", "block1_conv1", "block1_conv2", "block1_add", "block1_out"]
    assert [l["trainable"] for l in summary["layers"][:8]] == [False] * 7 + [True]
    built = _cli(plugin_site, "build", str(spec), "-o", str(tmp_path / "g.keras"))
    assert built.returncode == 0, built.stderr
    import keras

    model = keras.saving.load_model(tmp_path / "g.keras")  # (an InputLayer's trainable flag is not saved)
    assert [(l["name"], l["kind"], tuple(l["output_shape"]), l["params"], l["trainable"]) for l in summary["layers"]][1:] \
        == [(k["name"], k["kind"], k["output_shape"], k["params"], k["trainable"]) for k in keras_layers(model)][1:]
    assert summary["params"]["total"] == model.count_params()
    add = model.get_layer("block1_add")
    assert [t._keras_history[0].name for t in add.input] == ["stem_relu", "block1_conv2"]  # the shortcut


class TinyChain(tlc.Backbone):
    """A plugin backbone with no static layers: planned by building it."""

    type: Literal["tiny_chain"] = "tiny_chain"

    def build(self, input_shape):
        import keras

        inputs = keras.Input(shape=tuple(input_shape), name="input")
        x = keras.layers.Conv2D(4, 5, name="tiny_conv1")(inputs)
        x = keras.layers.MaxPooling2D(4, name="tiny_pool")(x)
        x = keras.layers.Conv2D(4, 3, name="tiny_conv2")(x)
        return keras.Model(inputs, x)


class StaticHead(tlc.Head):
    type: Literal["static_conv"] = "static_conv"

    def layers(self, feature_shape):
        return [Conv2D("head_conv", filters=2, kernel_size=(1, 1))]


@pytest.fixture
def in_process_plugin():
    module = types.ModuleType("tiny_plugin")
    module.tlc_backbones = tlc.hookimpl(lambda: [TinyChain])
    module.tlc_heads = tlc.hookimpl(lambda: [StaticHead])
    registry.register_module(module)
    yield module
    registry.reset()


@pytest.mark.slow
def test_symbolic_plugin_reports_the_failing_layer(in_process_plugin, write):
    path = write("input: {shape: [12, 30, 1]}\nbackbone: {type: tiny_chain}\nhead: {type: static_conv}\n")
    obj = json.loads(run("check", path, "--json").stdout)
    assert obj["ok"] is False
    assert obj["error"]["layer"] == "tiny_conv2" and obj["error"]["input_shape"] == [2, 6, 4]
    assert obj["min_input"] == [16, 16]  # (16-4)//4 = 3 rows for the 3x3 conv
    assert "could not be built by Keras: Computed output size would be zero or negative" in obj["error"]["message"]
    ok = json.loads(run("check", write("input: {shape: [16, 16, 1]}\nbackbone: {type: tiny_chain}\n"
                                       "head: {type: static_conv}\n", "ok.yaml"), "--json").stdout)
    assert ok["ok"] and ok["output_shape"] == [1, 1, 2]
    assert ok["params"]["total"] == (25 * 4 + 4) + (9 * 16 + 4) + (4 * 2 + 2)
