"""Rich renderings for people: the summary table and the plugin list."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .layers import format_shape
from .plan import Plan
from .registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table


def summary_table(plan: Plan) -> Table:
    from rich.table import Table

    table = Table(title=f"{plan.spec.name}  (input {format_shape(plan.input_shape)})", title_justify="left")
    for column, justify in (("index", "right"), ("name", "left"), ("kind", "left"),
                            ("output shape", "left"), ("params", "right"), ("trainable", "center")):
        table.add_column(column, justify=justify)
    head_started = False
    for layer in plan.layers:
        if layer.part == "head" and not head_started:
            table.add_section()
            head_started = True
        table.add_row("" if layer.index is None else str(layer.index), layer.name, layer.kind,
                      format_shape(layer.output_shape), f"{layer.params:,}",
                      "[green]yes[/]" if layer.trainable else "[blue]frozen[/]")
    return table


def totals_line(plan: Plan) -> str:
    p = plan.params()
    return (f"total params: {p['total']:,}   trainable: {p['trainable']:,}   "
            f"frozen (non-trainable): {p['non_trainable']:,}")


def plugins_table(registry: Registry) -> Table:
    from rich.table import Table

    table = Table(title="backbone and head types")
    for column in ("type", "kind", "plugin", "distribution", "version"):
        table.add_column(column)
    for kind in ("backbone", "head"):
        for info in registry.types[kind].values():
            s = info.source
            table.add_row(info.name, kind, s.plugin, s.distribution, s.version)
    return table


def plugins_dict(registry: Registry) -> dict:
    types = [{"type": info.name, "kind": kind, "plugin": info.source.plugin,
              "distribution": info.source.distribution, "version": info.source.version,
              "builtin": info.source.builtin}
             for kind in ("backbone", "head") for info in registry.types[kind].values()]
    failed = [{"plugin": f.source.plugin, "distribution": f.source.distribution,
               "version": f.source.version, "error": f.error} for f in registry.failures]
    return {"types": types, "failed": failed}


def compare_table(runs: list[tuple[str, dict, list[dict]]]) -> Table:
    from rich.table import Table

    table = Table(title="runs")
    table.add_column("run", no_wrap=True)
    for column in ("epochs", "val acc", "acc", "time (s)", "trainable", "frozen"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, metrics, _rows in runs:
        final, params = metrics.get("final", {}), metrics.get("params", {})
        table.add_row(name, str(metrics.get("epochs", "")), _fmt(final.get("val_accuracy")),
                      _fmt(final.get("accuracy")), f"{metrics.get('train_seconds', 0):.1f}",
                      f"{params.get('trainable', 0):,}", f"{params.get('non_trainable', 0):,}")
    return table


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
