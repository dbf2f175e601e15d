"""The rich console every command prints tables and progress to."""
from __future__ import annotations

import os

LOG_WIDTH = 130  # logs and pipes: do not cut tables and notes at rich's default of 80


def console(stderr: bool = False):
    from rich.console import Console

    out = Console(stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, width=LOG_WIDTH)
    return out
