"""Data sources are a registry: the built-ins and a plugin's (`tlc_data_sources`) alike."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

import tlc
from tlc.plugin import registry
from tlc.data import Examples

from .conftest import tlc as run

SPEC = """
name: stripes
input: {shape: [8, 8, 1]}
backbone: {type: conv_stack, blocks: [{filters: 4, pool: null}]}
head: {type: dense, pooling: avg, classes: 2}
train: {data: {type: stripes, test_split: 0.25}, epochs: 1, batch_size: 16}
"""


def read_stripes(data, spec):
    """Generated images: horizontal stripes (class 0) or vertical ones (class 1)."""
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 2
    rows = (np.arange(8) % 2).astype("float32")
    images = np.stack([np.tile(rows[:, None], (1, 8)) if y == 0 else np.tile(rows[None, :], (8, 1)) for y in labels])
    images = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1).astype("float32")[..., None]
    return Examples(labels.astype("int64"), images=images), ["horizontal", "vertical"]


@pytest.fixture
def stripes_plugin():
    module = types.ModuleType("stripes_plugin")
    module.tlc_data_sources = tlc.hookimpl(lambda: [tlc.DataSource("stripes", read_stripes, "generated stripes")])
    registry.register_module(module)
    yield module
    registry.reset()


def test_an_unknown_source_names_the_registered_ones(write):
    result = run("check", write(SPEC))
    assert result.exit_code == 2
    assert "train.data.type: unknown data source; registered: digits, npz, directory, csv, cifar10, masks, coco; " \
           "received: 'stripes'" in result.output


@pytest.mark.slow
def test_a_plugins_source_is_checked_listed_trained_and_evaluated(stripes_plugin, write, tmp_path):
    spec = write(SPEC)
    assert run("check", spec).exit_code == 0
    listed = json.loads(run("plugins", "--json").stdout)["data_sources"]
    assert {"type": "stripes", "plugin": "stripes_plugin", "distribution": "(in-process)", "version": "-",
            "builtin": False} in listed
    assert "stripes" in json.dumps(run("schema").stdout)
    trained = run("train", spec, "--runs", tmp_path)
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((tmp_path / "stripes" / "metrics.json").read_text())
    assert metrics["classes"] == ["horizontal", "vertical"] and metrics["examples"]["test"] == 16
    evaluated = run("evaluate", tmp_path / "stripes", "--json")  # the held-out images are read again from the source
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["examples"] == 16


def test_a_taken_name_or_a_wrong_row_is_a_plugin_failure_and_the_rest_works():
    module = types.ModuleType("clumsy")
    module.tlc_data_sources = tlc.hookimpl(lambda: [tlc.DataSource("digits", read_stripes), "not a row",
                                                   tlc.DataSource("fine", read_stripes)])
    registry.register_module(module)
    failures = [str(f) for f in registry.get_registry().failures]
    assert any("data source 'digits' is already registered by plugin 'tlc.data.sources'" in f for f in failures)
    assert any("tlc_data_sources() returned 'not a row', which is not a tlc.DataSource" in f for f in failures)
    assert registry.get_registry().data_source("fine").read is read_stripes
    assert registry.get_registry().data_source("digits").read.__module__ == "tlc.data.sources"
