"""Small text renderings shared by messages, tables and reports."""
from __future__ import annotations


def format_shape(shape) -> str:
    """(224, 224, 3) -> '224x224x3'."""
    return "x".join(str(d) for d in shape)


def short(value) -> str:
    """A parameter's value in a line or a table: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
