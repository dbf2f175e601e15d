"""The `tlc` command line: thin commands over the library. Errors become one message and an
exit code from the contract; a traceback only with `--debug`."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import EXIT_INFEASIBLE, TlcError, UsageError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter

app = typer.Typer(
    name="tlc", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Transfer-learning models as short YAML specs: check, build, summarize, train.",
)
out = Console()
err = Console(stderr=True)
_state = {"debug": False}

SpecArg = Annotated[Path, typer.Argument(help="A spec YAML file.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def command(fn: Callable) -> Callable:
    """Register a command whose user errors print one message and exit with their code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except TlcError as exc:
            if _state["debug"]:
                raise
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug in tlc or a plugin: still no traceback by default
            if _state["debug"]:
                raise
            err.print(f"[red]internal error:[/] {type(exc).__name__}: {exc}\n"
                      "Run again with --debug for the traceback.", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INFEASIBLE) from None

    return app.command()(wrapper)


def _version(value: bool) -> None:
    if value:
        out.print(f"tlc {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    no_plugins: Annotated[bool, typer.Option("--no-plugins", help="Load only built-in types.")] = False,
    version: Annotated[Optional[bool], typer.Option(  # noqa: UP007 - typer needs Optional
        "--version", callback=_version, is_eager=True, help="Show the version.")] = None,
) -> None:
    _state["debug"] = debug
    from . import registry

    if no_plugins:
        registry.disable_third_party()


def warn_plugin_failures() -> None:
    from .registry import get_registry

    for failure in get_registry().failures:
        err.print(f"[yellow]warning:[/] {failure}", highlight=False, soft_wrap=True)


def emit_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


@command
def check(
    specs: Annotated[list[Path], typer.Argument(help="Spec files.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Check shape feasibility of specs, without TensorFlow."""
    from .report import examine, worst

    warn_plugin_failures()
    outcomes = [examine(str(path)) for path in specs]
    if as_json:
        objects = [o.as_dict() for o in outcomes]
        emit_json(objects[0] if len(objects) == 1 else objects)
    else:
        for outcome in outcomes:
            (out if outcome.exit_code == 0 else err).print(outcome.line(), highlight=False, soft_wrap=True)
            for warning in outcome.as_dict()["warnings"]:
                err.print(f"[yellow]warning:[/] {outcome.path}: {warning}", highlight=False, soft_wrap=True)
    raise typer.Exit(worst(outcomes))


@command
def summarize(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """Per layer: index, name, kind, output shape, params, trainable; and the totals."""
    from .report import examine
    from .views import summary_table, totals_line

    warn_plugin_failures()
    outcome = examine(str(spec))
    if as_json:
        emit_json(outcome.as_dict(layers=True))
    elif outcome.error is not None:
        raise outcome.error
    else:
        out.print(summary_table(outcome.plan))
        if outcome.plan.ok:
            out.print(totals_line(outcome.plan), highlight=False)
        else:
            err.print(outcome.line(), highlight=False, soft_wrap=True)
    raise typer.Exit(outcome.exit_code)


@command
def build(
    spec: SpecArg,
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "-o", "--output", help="Where to write the .keras model [default: models/<name>.keras].")] = None,
    unsafe: Annotated[bool, typer.Option(
        "--unsafe", help="Allow loading weights from .keras files that contain code.")] = False,
) -> None:
    """Compile a spec and save the Keras model (written atomically)."""
    from .atomic import write_with
    from .emit import compile as emit
    from .plan import plan
    from .spec import load_spec

    warn_plugin_failures()
    loaded = load_spec(spec)
    target = output or Path("models") / f"{loaded.name}.keras"
    if target.suffix != ".keras":
        raise UsageError(f"--output must end in .keras, got {target}")
    planned = plan(loaded)
    model = emit(loaded, planned=planned, safe_mode=not unsafe)
    write_with(target, model.save)
    p = planned.params()
    out.print(f"wrote {target}: {p['total']:,} params ({p['trainable']:,} trainable, "
              f"{p['non_trainable']:,} frozen)", highlight=False)


@command
def schema() -> None:
    """Print the JSON Schema of the spec language (with every installed plugin's types)."""
    from .spec import json_schema

    warn_plugin_failures()
    emit_json(json_schema())


@command
def plugins(as_json: JsonOpt = False) -> None:
    """List every backbone and head type, where it comes from, and plugins that failed."""
    from .registry import get_registry
    from .views import plugins_dict, plugins_table

    registry = get_registry()
    if as_json:
        emit_json(plugins_dict(registry))
        return
    out.print(plugins_table(registry))
    for failure in registry.failures:
        err.print(f"[yellow]failed:[/] {failure}", highlight=False, soft_wrap=True)


def main() -> None:
    app()
