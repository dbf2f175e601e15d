"""Every hook must be documented in docs/plugins.md and exercised by a test (datasette's rule)."""
from __future__ import annotations

import inspect

import pytest

from tlc.plugin import hookspecs

from .conftest import REPO

HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(fn, "tlc_spec"))


def test_there_are_hooks():
    assert HOOKS == ["tlc_backbones", "tlc_data_sources", "tlc_heads", "tlc_tasks"]


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    guide = (REPO / "docs" / "plugins.md").read_text()
    assert f"### `{hook}(" in guide, f"{hook} has no section in docs/plugins.md"
    assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring in hookspecs.py"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_tested(hook):
    tests = [p for p in (REPO / "tests").glob("test_*.py") if p.name != "test_hooks_documented.py"]
    assert any(hook in p.read_text() for p in tests), f"no test mentions {hook}"
