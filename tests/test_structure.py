"""The code's shape: the stages import only downwards (import-linter's layers contract in
pyproject.toml), no import circles between tlc's modules (counting imports inside functions,
which hide a circle without removing it), and dead helpers stay gone."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

PACKAGES = {"tlc": REPO / "compiler", "tlc.plugins": REPO / "plugins"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            if "examples" in path.relative_to(root).parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The tlc modules `name` imports anywhere in its code: `from . import x` imports the module
    x when there is one, else a name of the package's __init__ (an edge to the package)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert "tlc.plan.graph" in graph and "tlc.data.images" in graph and len(graph) > 40
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dead_helpers_stay_removed():
    import tlc.data.images
    import tlc.data.pipeline
    import tlc.data.sources
    import tlc.spec.models

    assert not hasattr(tlc.data.images, "read_files") and not hasattr(tlc.data.pipeline.Feed, "element_shape")
    assert not hasattr(tlc.data.sources, "file_digest") and not hasattr(tlc.spec, "Int")


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("lint-imports")
    command = [str(tool) if tool.exists() else shutil.which("lint-imports"), "--no-cache", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_stages_import_only_downwards():
    done = _lint_imports()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stages import downwards KEPT" in done.stdout and "0 broken" in done.stdout


def test_the_contract_catches_an_upward_import(tmp_path):
    """The same tool, told that `plan` sits above `cli`: cli's imports of plan now point up."""
    config = tmp_path / "upside_down.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["tlc"]\n\n[[tool.importlinter.contracts]]\n'
                      'name = "upside down"\ntype = "layers"\nlayers = ["tlc.plan", "tlc.cli"]\n')
    done = _lint_imports("--config", str(config))
    assert done.returncode == 1 and "tlc.cli is not allowed to import tlc.plan" in done.stdout, done.stdout


def test_no_stage_imports_the_built_in_plugins():
    """`tlc.plugins` (a package of its own folder, which import-linter does not see under `tlc`)
    is loaded by the registry by name, like any plugin: no module of compiler/ imports it."""
    offenders = [name for name, path in _modules().items() if not name.startswith("tlc.plugins")
                 and any(m.startswith("tlc.plugins") for m in _imports(name, path, set(_modules())))]
    assert offenders == []


def test_what_the_benchmarks_and_docs_import_from_tlc_exists():
    """bench/ scripts (and the code they run in other processes, kept in strings) and the docs'
    examples name tlc's modules by path: a module moved into a stage package breaks them without
    a test failing (bench/serve_load.py's baseline imported tlc.validation, gone since)."""
    import importlib
    import re

    pattern = re.compile(r"^\s*from (tlc(?:\.\w+)*) import ([\w, ]+)|^\s*import (tlc(?:\.\w+)*)", re.M)
    texts = {p: p.read_text() for p in [*(REPO / "bench").glob("*.py"), *(REPO / "docs").glob("*.md"), REPO / "README.md"]}
    named = [(path.name, m) for path, text in texts.items() for m in pattern.finditer(text)]
    assert len(named) > 10  # (the pattern finds them)
    for where, match in named:
        module = importlib.import_module(match.group(1) or match.group(3))
        for name in (match.group(2) or "").replace(" ", "").split(","):
            assert not name or hasattr(module, name) or importlib.util.find_spec(f"{module.__name__}.{name}"), \
                f"{where}: {match.group(0).strip()}"
