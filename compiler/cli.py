"""The `tlc` command line: thin commands over the library. Errors become one message and an
exit code from the contract; a traceback only with `--debug`.

No `from __future__ import annotations` here: typer reads every command's annotations on each
run, and string annotations would cost it ~160 `eval` calls per start-up.
"""
import enum
import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from tlc.use.formats import EXPORT_FORMATS, QUANTIZE_MODES, TTA

from ._version import __version__
from .errors import EXIT_INFEASIBLE, TlcError, UsageError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
# The tlc process uses no pydantic plugins; skipping their entry-point scan saves start-up time.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")

app = typer.Typer(
    name="tlc", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Transfer-learning models as short YAML specs: check, summarize and build them; train, tune, "
         "compare and evaluate runs; predict, extract, explain, export and serve with them.",
)
_state = {"debug": False}

SpecArg = Annotated[Path, typer.Argument(help="A spec YAML file.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
UnsafeOpt = Annotated[bool, typer.Option("--unsafe", help="Allow .keras files that contain code.")]
def choices(name: str, values) -> type[enum.Enum]:
    """A typer choice over `values`: the help lists them, and another value is a usage error (exit 2)."""
    return enum.Enum(name, {value: value for value in values}, type=str)


def chosen(option: enum.Enum | None) -> str | None:
    return None if option is None else option.value


Tta = choices("Tta", TTA)
TtaOpt = Annotated[Optional[Tta], typer.Option(  # noqa: UP007
    "--tta", help="Test-time augmentation: flip averages each image's probabilities with its mirror image's.")]


def say(text: str, *, error: bool = False, label: str = "", color: str = "red") -> None:
    """One plain line (rich is imported only for tables and progress bars)."""
    prefix = typer.style(f"{label}:", fg=color, bold=True) + " " if label else ""
    typer.echo(prefix + text, err=error)


def rich_console(stderr: bool = False):
    from tlc.show.console import console

    return console(stderr)


def command(fn: Callable) -> Callable:
    """Register a command whose user errors print one message and exit with their code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            reader_went_away()
        except TlcError as exc:
            if _state["debug"]:
                raise
            say(str(exc), error=True, label="error")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            say("interrupted", error=True)
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug in tlc or a plugin: still no traceback by default
            if _state["debug"]:
                raise
            say(f"{type(exc).__name__}: {exc}\nRun again with --debug for the traceback.",
                error=True, label="internal error")
            raise typer.Exit(EXIT_INFEASIBLE) from None

    return app.command()(wrapper)


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`


def reader_went_away() -> None:
    """`tlc summarize SPEC | head`: the reader closed the pipe, so stop quietly, as Unix tools
    do. Python would complain again when it flushes at exit, so the streams now go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # pragma: no cover - a stream without a descriptor
            pass
    raise typer.Exit(EXIT_BROKEN_PIPE)


def keras_ready() -> None:
    """Import TensorFlow (without its C++ chatter unless --debug) once the input has been
    validated: a bad spec fails in the time `check` takes, not after a 5 s import."""
    from tlc.show.quiet import import_keras_quietly

    import_keras_quietly()


def _version(value: bool) -> None:
    if value:
        say(f"tlc {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    no_plugins: Annotated[bool, typer.Option("--no-plugins", help="Load only built-in types.")] = False,
    version: Annotated[Optional[bool], typer.Option(  # noqa: UP007 - typer needs Optional
        "--version", callback=_version, is_eager=True, help="Show the version.")] = None,
) -> None:
    _state["debug"] = debug
    from tlc.plugin import registry

    if debug:
        from tlc.show.quiet import show_chatter

        show_chatter()

    if no_plugins:
        registry.disable_third_party()


def refused(answers: list[dict]) -> None:
    """Each file that was not a readable image named on stderr (`FILE: not a readable image
    (why)`); exit 1 when there was one, after every other file was answered."""
    failed = [answer["error"] for answer in answers if "error" in answer]
    for message in failed:
        say(message, error=True)
    if failed:
        raise typer.Exit(EXIT_INFEASIBLE)


def warn_plugin_failures() -> None:
    from tlc.plugin.registry import get_registry

    for failure in get_registry().failures:
        say(str(failure), error=True, label="warning", color="yellow")


def emit_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


@command
def check(
    specs: Annotated[list[Path], typer.Argument(help="Spec files.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Check shape feasibility of specs, without TensorFlow."""
    from tlc.spec.preflight import examine, worst

    warn_plugin_failures()
    outcomes = [examine(str(path)) for path in specs]
    if as_json:
        objects = [o.as_dict() for o in outcomes]
        emit_json(objects[0] if len(objects) == 1 else objects)
    else:
        for outcome in outcomes:
            say(outcome.line(), error=outcome.exit_code != 0)
            for warning in outcome.as_dict()["warnings"]:
                say(warning, error=True, label="warning", color="yellow")
    raise typer.Exit(worst(outcomes))


@command
def summarize(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """Per layer: index, name, kind, output shape, params, trainable; and the totals."""
    from tlc.show.tables import summary_table, totals_line
    from tlc.spec.preflight import examine

    warn_plugin_failures()
    outcome = examine(str(spec))
    if as_json:
        emit_json(outcome.as_dict(layers=True))
    elif outcome.error is not None:
        raise outcome.error
    else:
        rich_console().print(summary_table(outcome.plan))
        if outcome.plan.ok:
            say(totals_line(outcome.plan))
        else:
            say(outcome.line(), error=True)
    raise typer.Exit(outcome.exit_code)


@command
def build(
    spec: SpecArg,
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "-o", "--output", help="Where to write the .keras model (default: models/<name>.keras).")] = None,
    unsafe: UnsafeOpt = False,
) -> None:
    """Compile a spec and save the Keras model (written atomically)."""
    from tlc.build.emit import compile as emit
    from tlc.spec.preflight import prepare

    from .atomic import write_with

    warn_plugin_failures()
    ready = prepare(spec)
    target = output or Path("models") / f"{ready.spec.name}.keras"
    if target.suffix != ".keras":
        raise UsageError(f"--output must end in .keras, got {target}")
    keras_ready()
    p = ready.plan.params()
    notes: list[str] = []
    with rich_console(stderr=True).status(f"building {ready.spec.name} ({p['total']:,} params)"):
        model = emit(ready, safe_mode=not unsafe, notes=notes)
        write_with(target, model.save)
    for note in notes:
        say(note, error=True)
    say(f"wrote {target}: {p['total']:,} params ({p['trainable']:,} trainable, "
        f"{p['non_trainable']:,} frozen)")


@command
def schema() -> None:
    """Print the JSON Schema of the spec language (with every installed plugin's types)."""
    from tlc.spec.models import json_schema

    warn_plugin_failures()
    emit_json(json_schema())


@command
def plugins(as_json: JsonOpt = False) -> None:
    """List every backbone and head type, where it comes from, and plugins that failed."""
    from tlc.plugin.registry import get_registry
    from tlc.show.tables import plugins_dict, plugins_table

    registry = get_registry()
    if as_json:
        emit_json(plugins_dict(registry))
        return
    rich_console().print(plugins_table(registry))
    for failure in registry.failures:
        say(str(failure), error=True, label="failed", color="yellow")


@command
def train(
    spec: SpecArg,
    epochs: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--epochs", min=1, help="Override train.epochs (with phases: every phase's epochs).")] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Folder for run folders.")] = Path("runs"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not cache frozen-prefix features.")] = False,
    unsafe: UnsafeOpt = False,
    devices: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--devices", min=1, max=64, help="Split the CPU into N logical devices (distribute: mirrored).")] = None,
    seed: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--seed", min=0, max=2**32 - 1, help="Override train.seed (e.g. to repeat a run over seeds).")] = None,
) -> None:
    """Train a spec; writes runs/<name>/ (model, history, metrics, plot, resolved spec)."""
    from tlc.show.progress import RichReporter
    from tlc.spec.preflight import prepare
    from tlc.train.loop import train as run_training

    warn_plugin_failures()
    ready = prepare(spec, training=True, epochs=epochs, seed=seed)
    keras_ready()
    try:
        with RichReporter() as reporter:
            result = run_training(ready, runs, resume=resume, use_cache=not no_cache,
                                  reporter=reporter, safe_mode=not unsafe, devices=devices)
    except KeyboardInterrupt:
        again = f"tlc train {spec} --resume" + (f" --runs {runs}" if runs != Path("runs") else "")
        say(f"interrupted; completed epochs are saved. Resume with: {again}", error=True)
        raise typer.Exit(130) from None
    final = result.metrics["final"]
    metric = ready.spec.task.metric
    shown = ", ".join(f"{k} {final[k]:.4f}" for k in (metric, f"val_{metric}") if k in final)
    done = f"wrote {result.folder}" if result.wrote else "done (a non-chief worker: the chief writes the run folder)"
    say(f"{done}: {shown} after {result.metrics['epochs']} epochs in {result.metrics['train_seconds']:.1f} s")


@command
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (runs/<name>).", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")] = Path("compare.png"),
) -> None:
    """Compare runs: accuracy per epoch and training time (PNG), and a table of the results.
    Runs of the same spec (e.g. several seeds) are one row: their mean and range."""
    from tlc.show.figures import compare_plot
    from tlc.show.tables import compare_table
    from tlc.use.compare import load_groups, verdict

    from .atomic import write_with

    groups = load_groups(runs)
    write_with(output, compare_plot(groups))
    rich_console().print(compare_table(groups))
    sentence = verdict(groups)
    if sentence:
        say(sentence)
    say(f"wrote {output}")


@command
def predict(
    model: Annotated[Path, typer.Argument(help="A run folder (runs/<name>), a .keras model or a spec.",
                                          show_default=False)],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.", show_default=False)],
    top: Annotated[int, typer.Option("--top", min=1, help="How many classes to show.")] = 3,
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "-o", "--output", help="segmentation: where the masks and overlays go (default: the run's predict/)")] = None,
    tta: TtaOpt = None,
    as_json: JsonOpt = False,
    unsafe: UnsafeOpt = False,
) -> None:
    """Answer about images: the top classes, the tags or the values; a segmentation's masks."""
    from tlc.use import model_source, predict as infer
    from tlc.use.run import Run

    found = model_source.resolve(model)
    files = infer.image_files(images)
    keras_ready()
    where = output or (found.files.predict if isinstance(found, Run) else Path("predict"))
    results = infer.predict(model_source.load(found, safe_mode=not unsafe), files, top, tta=chosen(tta), output=where)
    if as_json:
        emit_json(results)
    for result in results:
        if "error" not in result and not as_json:
            say(f"{result['image']}: {said(result)}")
    refused(results)


@command
def extract(
    spec: Annotated[Path, typer.Argument(help="A spec (or .keras model) whose output is the feature.",
                                         show_default=False)],
    data: Annotated[Path, typer.Argument(help="An .npz with array x, an image, or a folder of images.",
                                         show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to save the .npy features.")] = Path(
        "features.npy"),
    unsafe: UnsafeOpt = False,
) -> None:
    """Run a feature extractor (e.g. VGG16 cut at fc2) over data and save the features (.npy)."""
    from tlc.show.progress import bars
    from tlc.use import model_source, predict as infer

    from .atomic import write_text

    if output.suffix != ".npy":
        raise UsageError(f"--output must end in .npy, got {output}")
    found = model_source.resolve(spec)
    if not data.exists():
        raise UsageError(f"{data}: file not found")
    keras_ready()
    predictor = model_source.load(found, safe_mode=not unsafe)
    with bars() as bar:
        task = bar.add_task("extracting", total=None)
        shape, sources, refusals = infer.extract(predictor, data, output,
                                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    write_text(output.with_suffix(".sources.txt"), "\n".join(sources) + "\n")
    say(f"wrote {output}: features {shape} (row order in {output.with_suffix('.sources.txt')})")
    refused([{"error": message} for message in refusals])


@command
def tune(
    spec: SpecArg,
    trials: Annotated[Optional[int], typer.Option(  # noqa: UP007
        "--trials", min=1, help="Trials in the whole study (default: tune.trials).")] = None,
    timeout: Annotated[Optional[float], typer.Option(  # noqa: UP007
        "--timeout", min=1, help="Seconds per worker (default: tune.timeout).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes on this machine.")] = 1,
    storage: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--storage", help="An Optuna RDB URL (e.g. postgresql://user@host/db) shared by many machines "
                          "(default: runs/<name>/tune/study.journal).")] = None,
    study: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--study", help="The study's name in the storage (default: the spec's name).")] = None,
    runs: Annotated[Path, typer.Option("--runs", help="Folder for run folders.")] = Path("runs"),
    keep_trials: Annotated[bool, typer.Option(
        "--keep-trials", help="Keep every trial's run folder (model, history, plot, TensorBoard log) in "
                              "tune/trials/ (default: only the best trial's, as tune/best/).")] = False,
    as_json: JsonOpt = False,
    worker: Annotated[Optional[int], typer.Option("--worker", hidden=True)] = None,  # noqa: UP007
) -> None:
    """Search the spec's `tune.space` with Optuna; trials share the frozen-prefix features.
    Writes runs/<name>/tune/: trials.csv, best.yaml, best/, history.png, importance.png."""
    from tlc.show.progress import RichTuneReporter
    from tlc.show.tables import best_table
    from tlc.spec.preflight import search_warnings
    from tlc.tune.search import Request, exit_code, load, require_optuna, search

    warn_plugin_failures()
    request = Request(spec, trials, timeout, workers, storage, study, runs, worker, keep_trials)
    loaded = load(request)  # an invalid spec or space fails before TensorFlow and Optuna load
    plan = loaded[1]
    require_optuna()
    if worker is None:
        for warning in search_warnings(loaded[0]):
            say(warning, error=True, label="warning", color="yellow")
    keras_ready()
    if worker is not None:
        search(request, loaded=loaded)
        return
    try:
        with RichTuneReporter(plan.metric, plan.budget) as reporter:
            summary = search(request, reporter, loaded)
    except KeyboardInterrupt as stop:
        summary = stop.args[0] if stop.args and isinstance(stop.args[0], dict) else None
        say("interrupted; the running trial is marked failed" + (f", outputs in {summary['folder']}" if summary
                                                                  else "") + f". Continue with: tlc tune {spec}",
            error=True)
        raise typer.Exit(130) from None
    if as_json:
        emit_json({k: summary[k] for k in ("study", "trials", "best")})
    else:
        rich_console().print(best_table(summary, plan.metric, plan.maximise))
        best = summary["best"]
        done = sum(t["state"] == "complete" for t in summary["trials"])
        say(f"{summary['study']}: {len(summary['trials'])} trials ({done} complete)" +
            (f"; best trial {best['number']}: {plan.metric} {best['value']:.4f}" if best else "; none completed") +
            f"; wrote {summary['folder']}")
    raise typer.Exit(exit_code(summary))


RunArg = Annotated[Path, typer.Argument(help="A run folder (runs/<name>).", show_default=False)]
Split = choices("Split", ("test", "val"))
Format = choices("Format", EXPORT_FORMATS)
Quantize = choices("Quantize", QUANTIZE_MODES)


MISTAKES_SHOWN = 5  # `tlc evaluate` names the worst few; evaluation.json lists every one


def nearby(path: str) -> str:
    """A recorded (absolute) path as a person typed it: relative to here when it is below here."""
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return path if relative.startswith("..") else relative


@command
def evaluate(
    run: RunArg,
    split: Annotated[Optional[Split], typer.Option(  # noqa: UP007
        "--split", help="The held-out split (default: test, or val when the run has no test split).")] = None,
    data: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--data", help="Every example of another source of the run's kind (a new labelled folder, csv or "
                       "npz) in place of the held-out split.")] = None,
    tta: TtaOpt = None,
    as_json: JsonOpt = False,
    unsafe: UnsafeOpt = False,
) -> None:
    """Per-class metrics and confusion matrix of a run on its held-out split, or on another source
    with --data (evaluation.json, confusion.png and misclassified.png in the run folder)."""
    from tlc.show.tables import evaluation_table
    from tlc.use.evaluate import evaluate as run_evaluation
    from tlc.use.run import Run

    opened = Run.open(run)
    if data is not None and split is not None:
        raise UsageError("--split and --data: choose one (--data evaluates every example of another source)")
    if data is None:
        opened.choose_split(chosen(split))  # a bad folder or split fails before TensorFlow loads
    elif not data.exists():
        raise UsageError(f"--data: {data}: not found")
    keras_ready()
    result = run_evaluation(opened, chosen(split), data=data, safe_mode=not unsafe, tta=chosen(tta))
    if as_json:
        emit_json(result)
        return
    rich_console().print(evaluation_table(result))
    if result.get("task", "classification") != "classification":
        _said_evaluation(run, opened, result)
        return
    top = "".join(f", top-{k} {v:.4f}" for k, v in result["top_k"].items())
    plain = f" ({result['tta']} test-time augmentation; {result['accuracy_no_tta']:.4f} without)" if tta else ""
    for wrong in result["mistakes"][:MISTAKES_SHOWN]:
        say(f"mistake: {nearby(wrong['file'])}: {wrong['true']}, predicted {wrong['predicted']} "
            f"({wrong['probability']:.3f})")
    more = len(result["mistakes"]) - MISTAKES_SHOWN
    if more > 0:
        say(f"... and {more} more mistakes (evaluation.json lists them all)")
    files = opened.files
    pictures = [files.evaluation, files.confusion_plot] + ([files.mistakes_plot] if result["mistakes"] else [])
    where = f"{result['data']}:" if "data" in result else result["split"]
    say(f"{run}: {where} accuracy {result['accuracy']:.4f}{plain}{top}, loss {result['loss']:.4f} on "
        f"{result['examples']} examples; wrote {', '.join(map(str, pictures))}")


def _said_evaluation(run: Path, opened, result: dict) -> None:
    """evaluate's console lines for a task other than classification: its worst examples and its
    headline, with the files written."""
    task = opened.spec.task
    for wrong in (result.get("mistakes") or result.get("worst") or [])[:MISTAKES_SHOWN]:
        if "iou" in wrong:
            say(f"worst: {nearby(wrong['file'])}: IoU {_shown(wrong['iou'])}")
            continue
        say(f"{'mistake' if 'mistakes' in result else 'error'}: {nearby(wrong['file'])}: true {_shown(wrong['true'])}, "
            f"predicted {_shown(wrong['predicted'])}")
    plain = f" ({result['tta']} test-time augmentation; {task.metric} {result[task.metric + '_no_tta']:.4g} " \
            "without)" if "tta" in result else ""
    written = [opened.files.evaluation] + [opened.folder / name for name in result["figures"]]
    where = f"{result['data']}:" if "data" in result else result["split"]
    say(f"{run}: {where} {task.headline(result)}{plain} on {result['examples']} examples; "
        f"wrote {', '.join(map(str, written))}")


def _shares(classes: list[dict]) -> str:
    """A mask's classes by their share of its pixels; those under 0.05% (a few stray pixels, "0.0%")
    counted, not listed (`--json` lists them all)."""
    shown = [c for c in classes if c["fraction"] >= 0.0005] or classes[:1]
    rest = len(classes) - len(shown)
    return ", ".join(f"{c['class']} {c['fraction']:.1%}" for c in shown) + (f" (+{rest} under 0.1%)" if rest else "")


def said(answer: dict) -> str:
    """A predict answer in one line: the top classes, the tags given, or the values."""
    if "top" in answer:
        return ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in answer["top"])
    if "mask" in answer:
        return _shares(answer["classes"]) + f"; wrote {answer['mask']}"
    if "tags" in answer:
        given = ", ".join(f"{s['class']} ({s['probability']:.3f})" for s in answer["scores"]
                          if s["class"] in answer["tags"])
        return f"tags: {given or '(none over their thresholds)'}"
    return _shown(answer["values"])


def _shown(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " ".join(value) or "(no tag)"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.4g}" for k, v in value.items())
    return f"{value:.4g}"


@command
def export(
    run: RunArg,
    format: Annotated[Format, typer.Option("--format", help="The artifact's format.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "-o", "--output", help="Where to write (default: RUN/export/model.<ext>).")] = None,
    quantize: Annotated[Optional[Quantize], typer.Option(  # noqa: UP007
        "--quantize", help="tflite only; int8 is calibrated, with float32 in and out.")] = None,
    calibration: Annotated[int, typer.Option(
        "--calibration", help="int8: how many training images calibrate the ranges.")] = 200,
    max_drop: Annotated[float, typer.Option(
        "--max-drop", help="quantized: the held-out drop of the task's metric allowed before nothing is written "
                           "(accuracy, mAP: absolute; MAE: relative).")] = 0.02,
    as_json: JsonOpt = False,
    unsafe: UnsafeOpt = False,
) -> None:
    """Export a run's model for serving (preprocessing inside, probabilities out), then run the
    artifact in its own runtime and compare it with Keras (quantized: by held-out accuracy)."""
    from tlc.use.export import check_target, export as run_export
    from tlc.use.quantize import check_mode
    from tlc.use.run import Run

    fmt, mode = format.value, chosen(quantize)
    check_mode(fmt, mode, calibration, max_drop)
    opened = Run.open(run)
    check_target(opened.folder, fmt, output)  # before TensorFlow loads
    keras_ready()
    with rich_console(stderr=True).status(f"exporting {run} to {fmt}" + (f" ({mode})" if mode else "")):
        report = run_export(opened, fmt, output, safe_mode=not unsafe, quantize=mode, calibration=calibration,
                            max_drop=max_drop)
    if as_json:
        emit_json(report)
        return
    if mode:
        compared = f"{mode} accuracy {report['accuracy']:.4f} vs Keras {report['keras_accuracy']:.4f}, same top-1 " \
                   f"class on {report['agreement']:.1%} of" if "accuracy" in report else \
            f"{mode} {report['metric']} {report['value']:.4g} vs Keras {report['keras_value']:.4g} on"
        say(f"wrote {report['path']} ({report['bytes'] / 2**20:.2f} MB, {report['float32_bytes'] / report['bytes']:.1f}x "
            f"smaller than float32): {compared} {report['examples']} {report['split']} images; its inputs and "
            f"outputs: {report['card']}")
        return
    say(f"wrote {report['path']} ({report['bytes'] / 2**20:.1f} MB): {report['format']} artifact matches the "
        f"Keras model on {report['examples']} images (max |difference| {report['max_abs_diff']:.1e}); its inputs and "
        f"outputs: {report['card']}")


@command
def explain(
    run: RunArg,
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "-o", "--output", help="Where to write the PNGs (default: RUN/explain/).")] = None,
    class_name: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--class", help="Explain this class (default: each image's top prediction).")] = None,
    layer: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--layer", help="The feature map to explain (default: the backbone's last spatial one).")] = None,
    tta: TtaOpt = None,
    as_json: JsonOpt = False,
    unsafe: UnsafeOpt = False,
) -> None:
    """Grad-CAM heat maps: where in each image the model finds its class (one PNG per image, and
    a labelled grid for several)."""
    from tlc.use import predict as infer
    from tlc.use.explain import explain as run_explain
    from tlc.use.run import Run

    opened = Run.open(run)
    files = infer.image_files(images)
    keras_ready()
    with rich_console(stderr=True).status(f"explaining {len(files)} image(s)"):
        records = run_explain(opened, files, output=output, class_name=class_name, layer=layer, safe_mode=not unsafe,
                              tta=chosen(tta))
    answered = [record for record in records if "error" not in record]
    if as_json:
        emit_json(records)
    for record in answered if not as_json else ():
        number = f"{record['probability']:.3f}" if "probability" in record else \
            f"{record['fraction']:.1%} of the pixels" if "fraction" in record else f"{record['value']:.4g}"
        say(f"{record['image']}: {record['class']} ({number}), peak at y={record['peak'][0]} "
            f"x={record['peak'][1]}; wrote {record['png']}")
    if len(answered) > 1 and not as_json:
        say(f"wrote {Path(answered[0]['png']).parent / 'explain.png'}")
    refused(records)


@command
def serve(
    run: RunArg,
    host: Annotated[str, typer.Option("--host", help="The address to listen on (0.0.0.0: every interface).")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="The TCP port (0: any free one).")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Images per model call, at most.")] = 32,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Images per request, at most.")] = 64,
    max_bytes: Annotated[int, typer.Option("--max-bytes", min=1, help="Bytes per request, at most.")] = 20_000_000,
    api_key_env: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--api-key-env", help="Require `Authorization: Bearer <the value of this variable>`.")] = None,
    unsafe: UnsafeOpt = False,
) -> None:
    """Serve a run's model over HTTP: a page at / (drop a photo, see its classes and heat map),
    POST /predict (images), POST /explain (a heat map), GET /metadata, GET /health; concurrent
    requests are batched into one model call. Stops cleanly on SIGTERM or Ctrl-C."""
    from tlc.use.run import Run

    from .serve import Limits, api_key_from, serve as run_server

    opened = Run.open(run)
    key = api_key_from(api_key_env)
    keras_ready()
    run_server(opened, host=host, port=port, limits=Limits(max_batch, max_images, max_bytes), api_key=key,
               safe_mode=not unsafe, announce=lambda text: say(text, error=True))


def main() -> None:
    try:
        app()
    except SystemExit:
        try:  # what is still buffered goes out now, so a closed pipe is noticed here
            sys.stdout.flush()
        except BrokenPipeError:
            try:
                reader_went_away()
            except typer.Exit as done:
                raise SystemExit(done.exit_code) from None
        raise


if __name__ == "__main__":
    main()
