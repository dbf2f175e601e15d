"""Rich tables for people: a plan's layers, the plugins, compared runs, an evaluation, the best
tune trials. They render what they are handed and import none of the stages."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .text import format_shape, short

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

    from tlc.plan.planner import Plan
    from tlc.plugin.registry import Registry
    from tlc.use.compare import Group


def summary_table(plan: Plan) -> Table:
    from rich.table import Table

    table = Table(title=f"{plan.spec.name}  (input {format_shape(plan.input_shape)})", title_justify="left")
    for column, justify in (("index", "right"), ("name", "left"), ("kind", "left"),
                            ("output shape", "left"), ("params", "right"), ("trainable", "center")):
        table.add_column(column, justify=justify)
    head_started = False
    backbone = [layer.name for layer in plan.layers if layer.part == "backbone"]
    cut = backbone[-1] if backbone and plan.spec.backbone.output is not None else None
    for layer in plan.layers:
        if layer.part == "head" and not head_started:
            table.add_section()
            head_started = True
        tapped = f" [magenta]◂ tap of {plan.taps[layer.name]}[/]" if layer.name in plan.taps else ""
        tapped += " [magenta]◂ cut here (backbone.output)[/]" if layer.name == cut else ""
        table.add_row("" if layer.index is None else str(layer.index), layer.name + tapped, layer.kind,
                      format_shape(layer.output_shape), f"{layer.params:,}",
                      "[green]yes[/]" if layer.trainable else "[blue]frozen[/]")
    return table


def totals_line(plan: Plan) -> str:
    p = plan.params()
    bn = f"   frozen batch norms: {plan.frozen_batch_norms()}" if plan.freeze_batch_norm else ""
    return (f"total params: {p['total']:,}   trainable: {p['trainable']:,}   "
            f"frozen (non-trainable): {p['non_trainable']:,}{bn}")


def plugins_table(registry: Registry) -> Table:
    from rich.table import Table

    table = Table(title="backbone, head and task types, and data sources")
    for column in ("type", "kind", "plugin", "distribution", "version"):
        table.add_column(column)
    for kind in ("backbone", "head", "task"):
        for info in registry.types[kind].values():
            s = info.source
            table.add_row(info.name, kind, s.plugin, s.distribution, s.version)
    for info in registry.sources.values():
        s = info.source
        table.add_row(info.name, "data source", s.plugin, s.distribution, s.version)
    return table


def plugins_dict(registry: Registry) -> dict:
    types = [{"type": info.name, "kind": kind, "plugin": info.source.plugin,
              "distribution": info.source.distribution, "version": info.source.version,
              "builtin": info.source.builtin}
             for kind in ("backbone", "head", "task") for info in registry.types[kind].values()]
    failed = [{"plugin": f.source.plugin, "distribution": f.source.distribution,
               "version": f.source.version, "error": f.error} for f in registry.failures]
    sources = [{"type": info.name, "plugin": info.source.plugin, "distribution": info.source.distribution,
                "version": info.source.version, "builtin": info.source.builtin} for info in registry.sources.values()]
    return {"types": types, "data_sources": sources, "failed": failed}


def compare_table(groups) -> Table:
    """One row per run name; with several runs (seeds), the mean and the range."""
    from rich.table import Table

    metric = groups[0].metric if groups else "accuracy"
    short = {"accuracy": "acc"}.get(metric, metric)
    table = Table(title=f"runs (validation {metric} after epoch 1 and at the end; several runs: their mean)",
                  title_justify="left")
    table.add_column("run", no_wrap=True)
    for column in ("runs", "epochs", f"{short}@1", f"{short}@end", "test", "secs", "trainable", "frozen"):
        table.add_column(column, justify="right", no_wrap=True)
    for g in groups:
        g: Group
        params = g.metrics[0].get("params", {})
        table.add_row(g.name, str(len(g.metrics)), str(g.metrics[0].get("epochs", "")), _spread(g.at(0)),
                      _spread(g.at(-1)), _spread(g.tests), f"{g.seconds():.1f}", f"{params.get('trainable', 0):,}",
                      f"{params.get('non_trainable', 0):,}")
    return table


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{sum(values) / len(values):.3f}"


def evaluation_table(result: dict) -> Table:
    """evaluate's rows: per class (or tag) its precision, recall, F1 and support (a tag's AP and
    threshold too); per target its MAE, RMSE and R²."""
    from rich.table import Table

    where = result["data"] if "data" in result else f"{result['split']} split"
    table = Table(title=f"{where}: {result['examples']} examples", title_justify="left")
    rows = result.get("per_class") or result.get("per_target") or []
    first = "target" if "per_target" in result else "tag" if result.get("task") == "multi_label" else "class"
    columns = [c for c in ("iou", "dice", "ap", "precision", "recall", "f1", "threshold", "mae", "rmse", "r2",
                           "support", "pixels") if rows and c in rows[0]]
    table.add_column(first)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row[first if first != "tag" else "class"],
                      *("-" if row[c] is None else f"{row[c]:,}" if c in ("support", "pixels") else f"{row[c]:.3f}" if c != "mae"
                        and c != "rmse" else f"{row[c]:.4g}" for c in columns))
    return table


def best_table(summary: dict, metric: str, maximise: bool, limit: int = 5):
    from rich.table import Table

    done = [t for t in summary["trials"] if t["state"] == "complete"]
    done.sort(key=lambda t: -t["value"] if maximise else t["value"])
    table = Table(title=f"best trials of {summary['study']} ({metric})", title_justify="left")
    for column in ("trial", metric, "seconds", *(done[0]["params"] if done else [])):
        table.add_column(column, justify="right" if column in ("trial", metric, "seconds") else "left")
    for t in done[:limit]:
        table.add_row(str(t["number"]), f"{t['value']:.4f}", f"{t['seconds']:.1f}",
                      *[short(v) for v in t["params"].values()])
    return table
