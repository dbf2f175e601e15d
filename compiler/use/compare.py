"""`tlc compare`: runs grouped by name (the same spec trained with several seeds is one group),
with the figures the seed article compares: validation accuracy (the task's metric: mAP, MAE)
after the first and the last epoch, training time, trainable vs frozen parameters, and the test
figure once evaluated."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from tlc.errors import UsageError
from tlc.layout import RunLayout

from .run import read_run


@dataclass
class Group:
    name: str
    metrics: list[dict] = field(default_factory=list)
    rows: list[list[dict]] = field(default_factory=list)
    tests: list[float] = field(default_factory=list)  # the task's metric of evaluated runs (test accuracy)

    @property
    def metric(self) -> str:
        """The runs' task's metric (accuracy; map for tags, mae for numbers)."""
        return task_metric(self.metrics[0])[0]

    @property
    def higher(self) -> bool:
        return task_metric(self.metrics[0])[1]

    @property
    def key(self) -> str:
        rows = self.rows[0]
        return f"val_{self.metric}" if rows and f"val_{self.metric}" in rows[0] else self.metric

    def at(self, epoch: int) -> list[float]:
        """The metric of every run after `epoch` (0-based; -1: the last)."""
        return [rows[epoch][self.key] for rows in self.rows if rows]

    def curve(self) -> tuple[list[int], list[float], list[float], list[float]]:
        """(epochs, mean, min, max) over the runs, for the epochs all of them have."""
        n = min(len(rows) for rows in self.rows)
        values = [[rows[e][self.key] for rows in self.rows] for e in range(n)]
        return (list(range(1, n + 1)), [statistics.fmean(v) for v in values], [min(v) for v in values],
                [max(v) for v in values])

    def seconds(self) -> float:
        return statistics.fmean(m.get("train_seconds", 0.0) for m in self.metrics)


def load_groups(paths: list[Path]) -> list[Group]:
    groups: dict[str, Group] = {}
    for path in paths:
        metrics, rows = read_run(path)
        group = groups.setdefault(metrics.get("name", Path(path).name), Group(metrics.get("name", Path(path).name)))
        group.metrics.append(metrics)
        group.rows.append(rows)
        kinds = {metrics.get("task", {}).get("type", "classification")} | \
            {m.get("task", {}).get("type", "classification") for g in groups.values() for m in g.metrics}
        if len(kinds) > 1:
            raise UsageError(f"{path} answers {metrics.get('task', {}).get('type', 'classification')}; tlc compare "
                             f"compares runs of one task (these answer {', '.join(sorted(kinds))})")
        evaluation = RunLayout(path).evaluation
        if evaluation.is_file():
            group.tests.append(json.loads(evaluation.read_text())[group.metric])
    return list(groups.values())


def task_metric(metrics: dict) -> tuple[str, bool]:
    """(a run's task's first metric, whether higher is better), from its metrics.json (a run from
    before tasks classified)."""
    from tlc.plugin.registry import get_registry

    kind = metrics.get("task", {}).get("type", "classification")
    tasks = get_registry().tasks
    if kind not in tasks:
        return "accuracy", True
    task = tasks[kind].cls
    return task.metrics[0], task.higher.get(task.metrics[0], True)


def verdict(groups: list[Group]) -> str | None:
    """One sentence comparing two groups, first vs second (e.g. transfer vs scratch), by seed."""
    if len(groups) != 2:
        return None
    a, b = groups
    parts = []
    for label, epoch in (("after epoch 1", 0), ("at the end", -1)):
        va, vb = a.at(epoch), b.at(epoch)
        ahead = sum((x > y) == a.higher for x, y in zip(va, vb) if x != y)
        parts.append(f"{label} {statistics.fmean(va):.3f} vs {statistics.fmean(vb):.3f} "
                     f"({statistics.fmean(va) - statistics.fmean(vb):+.3f}, ahead in {ahead} of {min(len(va), len(vb))})")
    what = a.key.replace("_", " ")
    return (f"{a.name} vs {b.name}, {what}: " + "; ".join(parts) +
            f"; training time {a.seconds():.1f} s vs {b.seconds():.1f} s")
