"""`tlc tune SPEC`: open (or continue) the study, run its trials in this process or in K worker
processes, then write the outputs. The library entry point is `search`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tlc.errors import RunError
from tlc.layout import RunLayout


@dataclass(frozen=True)
class Request:
    """What `tlc tune` was asked (command-line values override the spec's `tune:`)."""

    spec: Path
    trials: int | None = None
    timeout: float | None = None
    workers: int = 1
    storage: str | None = None
    study: str | None = None
    runs: Path = Path("runs")
    worker: int | None = None  # set in a spawned worker process: run trials, write no outputs
    keep_trials: bool = False  # every trial's run folder stays in tune/trials/ (not only best/)


def load(request: Request):
    """(spec, its tune section with the overrides) after validation and `tlc train`'s preflight
    of the data source, weights file and parameter limit (a missing data folder is exit 2 at
    once, not a study of failed trials), without TensorFlow or Optuna."""
    from tlc.spec.preflight import check_search_base
    from tlc.spec.validation import load_spec

    spec = load_spec(request.spec)
    if spec.tune is None:
        raise spec.error((), "tlc tune needs a `tune:` section (metric, trials, space, ...)")
    if spec.train is None:
        raise spec.error((), "tlc tune needs a `train:` section: every trial trains")
    check_search_base(spec)
    overrides = {k: v for k, v in (("trials", request.trials), ("timeout", request.timeout)) if v is not None}
    return spec, spec.tune.model_copy(update=overrides)


def require_optuna() -> None:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise RunError("tlc tune needs optuna: pip install optuna (`make install` installs it)")


def search(request: Request, reporter=None, loaded=None) -> dict | None:
    """Run the study to `tune.trials` trials in all (or the timeout); the outputs' summary, or
    None in a spawned worker. A KeyboardInterrupt still writes the outputs, then propagates.
    `loaded`: what `load(request)` gave, when the caller has it (the spec is validated once)."""
    from tlc.show.progress import TuneReporter

    from . import outputs, study as studies

    spec, tune = loaded or load(request)
    require_optuna()
    folder = RunLayout(Path(request.runs) / spec.name).tune
    folder.mkdir(parents=True, exist_ok=True)
    storage, lock, url = studies.storage_of(folder, request.storage)
    name = request.study or spec.name
    study = studies.open_study(tune, storage, name, worker=request.worker or 0)
    if request.worker is not None:
        studies.work(study, lock, spec.document, tune, folder, total=tune.budget, timeout=tune.timeout,
                     reporter=TuneReporter(tune.metric, prefix=f"worker {request.worker}: "),
                     keep_trials=request.keep_trials)
        return None
    interrupted = False
    try:
        if request.workers > 1:
            command = ["tune", str(request.spec), "--storage", url, "--study", name, "--runs", str(request.runs),
                       "--trials", str(tune.trials)] + (["--timeout", str(tune.timeout)] if tune.timeout else []) + \
                (["--keep-trials"] if request.keep_trials else [])
            processes = studies.spawn_workers(command, request.workers)
            try:
                studies.wait_for(processes)
            except KeyboardInterrupt:  # the workers got it too: they fail their trials and stop
                studies.wait_for(processes)
                raise
        else:
            studies.work(study, lock, spec.document, tune, folder, total=tune.budget, timeout=tune.timeout,
                         reporter=reporter or TuneReporter(tune.metric), keep_trials=request.keep_trials)
    except KeyboardInterrupt:
        interrupted = True
    summary = outputs.write(study, tune, folder, spec.name, keep_trials=request.keep_trials)
    summary["folder"] = str(folder)
    if interrupted:
        raise KeyboardInterrupt(summary)
    return summary


def exit_code(summary: dict) -> int:
    """0 when a trial completed, 1 when none did (the contract)."""
    return 0 if any(t["state"] == "complete" for t in summary["trials"]) else 1

