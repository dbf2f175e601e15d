"""A plugin head whose layers merge tensors (a graph, not a chain): planned, checked and
summarized without TensorFlow, built exactly as planned, and trained; a merge that cannot join
its inputs names its layer and both shapes."""
from __future__ import annotations

import json
import types
from typing import Literal

import numpy as np
import pytest

import tlc
from tlc.plan.graph import HEAD_INPUT
from tlc.plan.layers import Concatenate, Conv2D, Dense, GlobalPooling2D, Layer, Shape
from tlc.plugin import registry

from .conftest import tlc as run
from .helpers import keras_layers


class TwinPoolHead(tlc.Head):
    """Average and max pooling of the feature map side by side (`avg_max`), then the classes;
    with `bad_skip`, a branch that keeps the map spatial, so the concatenation cannot join."""

    type: Literal["twin_pool"] = "twin_pool"
    classes: int = 3
    bad_skip: bool = False

    def layers(self, feature_shape: Shape) -> list[Layer]:
        second = (Conv2D("head_skip", filters=4, kernel_size=(1, 1), strides=(1, 1), padding="valid",
                         activation="relu", use_bias=True, inputs=(HEAD_INPUT,)) if self.bad_skip
                  else GlobalPooling2D("head_gmp", mode="max", inputs=(HEAD_INPUT,)))
        return [GlobalPooling2D("head_gap", mode="avg"), second,
                Concatenate("head_avg_max", inputs=("head_gap", second.name)),
                Dense("predictions", units=self.classes, activation="softmax")]


SPEC = """
input: {shape: [8, 8, 1]}
backbone:
  type: conv_stack
  blocks: [{filters: 8, padding: same}, {filters: 16, padding: same, pool: null}]
head: {type: twin_pool, classes: 3%s}
train:
  data: {type: digits, classes: [0, 1, 2]}
  epochs: 3
  seed: 0
"""


@pytest.fixture
def twin_pool():
    module = types.ModuleType("twin_pool_plugin")
    module.tlc_heads = tlc.hookimpl(lambda: [TwinPoolHead])
    registry.register_module(module)
    yield module
    registry.reset()


def test_a_merging_head_is_planned_checked_and_summarized(twin_pool, write):
    done = run("summarize", write(SPEC % ""), "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    head = [layer for layer in report["layers"] if layer["index"] is None]
    assert [(layer["name"], layer["kind"], layer["output_shape"]) for layer in head] == [
        ("head_gap", "GlobalAveragePooling2D", [16]), ("head_gmp", "GlobalMaxPooling2D", [16]),
        ("head_avg_max", "Concatenate", [32]), ("predictions", "Dense", [3])]
    assert report["output_shape"] == [3] and head[-1]["params"] == 32 * 3 + 3
    assert report["params"]["total"] == (9 * 8 + 8) + (9 * 8 * 16 + 16) + 32 * 3 + 3


def test_a_merge_that_cannot_join_names_its_layer_and_both_shapes(twin_pool, write):
    done = run("check", write(SPEC % ", bad_skip: true"), "--json")
    assert done.exit_code == 1
    error = json.loads(done.stdout)["error"]
    assert error["layer"] == "head_avg_max"
    assert "cannot concatenate 16 and 4x4x4" in error["message"], error


@pytest.mark.slow
def test_a_merging_head_builds_as_planned_and_trains(twin_pool, write, tmp_path):
    spec = tlc.load_spec(write(SPEC % ""))
    planned = tlc.check(spec)
    model = tlc.compile(spec)
    built = keras_layers(model)
    assert [(p.name, p.kind, p.output_shape, p.params) for p in planned.layers] == \
        [(k["name"], k["kind"], k["output_shape"], k["params"]) for k in built]
    assert model.count_params() == planned.params()["total"]
    result = tlc.train(spec, tmp_path / "runs")
    assert result.metrics["epochs"] == 3 and result.metrics["final"]["val_accuracy"] > 0.6
    assert [answer["image"] for answer in result.predict(np.zeros((2, 8, 8, 1), "float32"))] == [0, 1]
