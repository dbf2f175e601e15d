"""`pip install .` (not editable) gives a working `tlc` package and console script."""
from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import EXAMPLES, REPO

pytestmark = pytest.mark.slow


def test_plain_pip_install_works(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True, timeout=600)
    assert all((target / "tlc" / part).is_file() for part in ("cli.py", "plugins/vgg.py", "plugin/zoo.py", "spec/preflight.py", "task/__init__.py"))
    assert not (target / "compiler").exists() and not (target / "plugins").exists()
    code = ("import tlc, sys; from tlc.cli import main; print(tlc.__file__); "
            f"sys.argv = ['tlc', 'check', {str(EXAMPLES / 'digits_source.yaml')!r}]; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(target / "tlc" / "__init__.py"))
    assert "digits_source.yaml: ok: output 5, 26,725 params" in done.stdout
