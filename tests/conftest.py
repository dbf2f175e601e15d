"""Shared fixtures: a CLI runner, a spec writer, and a fresh plugin registry per test."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Commands print to pipes as to a log (130 columns); pytest-xdist's workers inherit COLUMNS=80.
os.environ.pop("COLUMNS", None)

import pytest
from typer.testing import CliRunner

from tlc.plugin import registry
from tlc.cli import app

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "spec_examples"


@pytest.fixture(autouse=True)
def fresh_registry():
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def write(tmp_path):
    """write(text, name="spec.yaml") -> path of a dedented spec file in tmp_path."""

    def _write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write


def tlc(*args):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr, output)."""
    return CliRunner().invoke(app, [str(a) for a in args])


SHAPES_SPEC = """
name: shapes
input: {shape: [48, 48, 3]}
backbone:
  type: conv_stack
  blocks:
    - {filters: 16, padding: same}
    - {filters: 32, padding: same}
    - {filters: 64, padding: same, pool: null}
head: {type: dense, pooling: avg, classes: 3}
train:
  data: {type: directory, path: photos, validation_split: 0.15, test_split: 0.15}
  epochs: 25
  batch_size: 32
  optimizer: {learning_rate: 0.003}
  seed: 0
"""


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory):
    """A trained run on generated shapes (the class is the shape, drawn in a random quadrant over
    noise; 200 per class): (run folder, [(image path, class, quadrant)]). Trained once per session
    for the explain, quantize and serve tests (~15 s)."""
    from tlc.train.loop import train
    from tlc.spec.validation import load_spec

    from .helpers import draw_shapes

    folder = tmp_path_factory.mktemp("shapes")
    drawn = draw_shapes(folder / "photos", 200, (48, 48))
    (folder / "shapes.yaml").write_text(SHAPES_SPEC.lstrip())
    result = train(load_spec(folder / "shapes.yaml"), folder / "runs")
    assert result.metrics["final"]["val_accuracy"] > 0.9, result.metrics["final"]
    return result.folder, drawn


TASK_SPEC = """
name: {name}
task: {task}
input: {{shape: [48, 48, 3]}}
backbone:
  type: conv_stack
  blocks: [{{filters: 16}}, {{filters: 32}}, {{filters: 64, pool: null}}]
freeze: none
head: {head}
train:
  data: {{type: csv, path: tagged/labels.csv, validation_split: 0.2, test_split: 0.2{data}}}
  epochs: 12
  batch_size: 32
  optimizer: {{learning_rate: 0.003}}
  seed: 0
"""


@pytest.fixture(scope="session")
def task_runs(tmp_path_factory):
    """Two runs on one folder of generated images with any number of shapes (`draw_tagged`, 480
    images): `tags` (multi_label, tuned thresholds, from the tags column) and `size` (regression
    of the shapes' summed radii). Returns (folder, {name: run folder}, the csv's rows); ~20 s."""
    from tlc.spec.validation import load_spec
    from tlc.train.loop import train

    from .helpers import draw_tagged

    folder = tmp_path_factory.mktemp("tasks")
    rows = draw_tagged(folder / "tagged", 480)
    specs = {"tags": ("{type: multi_label, threshold: tuned}", "{type: dense, pooling: avg, classes: 3}",
                      ", tags: tags"),
             "size": ("{type: regression, targets: [size]}", "{type: dense, pooling: avg}", "")}
    runs = {}
    for name, (task, head, data) in specs.items():
        (folder / f"{name}.yaml").write_text(TASK_SPEC.format(name=name, task=task, head=head, data=data).lstrip())
        runs[name] = train(load_spec(folder / f"{name}.yaml"), folder / "runs").folder
    return folder, runs, rows
