"""The plugin hooks. Built-in backbones and heads are registered through these same hooks."""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("tlc")
hookimpl = pluggy.HookimplMarker("tlc")


@hookspec
def tlc_backbones() -> list[type]:
    """Return the `tlc.Backbone` subclasses this plugin adds.

    Each class has a `type: Literal["name"]` field; "name" is what specs write as
    `backbone.type`. A name already taken is refused with a warning.
    """


@hookspec
def tlc_heads() -> list[type]:
    """Return the `tlc.Head` subclasses this plugin adds (`head.type` in specs)."""


@hookspec
def tlc_data_sources() -> list:
    """Return the `tlc.DataSource` rows this plugin adds (`train.data.type` in specs).

    A row's `read(data, spec)` gives (examples, class names): image files or images in [0, 1].
    A name already taken is refused with a warning.
    """


@hookspec
def tlc_tasks() -> list[type]:
    """Return the `tlc.Task` subclasses this plugin adds (`task.type` in specs).

    A task owns how targets are read and split, the loss, the metrics, the outputs' finishing,
    the evaluation report and the answers of predict and serve.
    """
