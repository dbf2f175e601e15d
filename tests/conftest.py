"""Shared fixtures: a CLI runner, a spec writer, and a fresh plugin registry per test."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest
from typer.testing import CliRunner

from tlc import registry
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
