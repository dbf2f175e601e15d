"""What a study leaves for a person: trials.csv, best.yaml (the best trial's whole spec, which
`tlc train` reproduces), best/ (its run folder, for `tlc evaluate` and `tlc export`),
history.png, importance.png, and the summary printed as a table or `--json`."""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import yaml

from tlc.atomic import swap_folder, write_text, write_with
from tlc.layout import RunLayout


def trial_rows(study, tune) -> list[dict]:
    """Every trial of the study as the contract names it (running ones are left out)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        attrs = t.user_attrs
        state = attrs.get("tlc_state") or {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(
            t.state, "failed")
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        rows.append({"number": t.number, "state": state, "value": t.value if state == "complete" else None,
                     "params": {path: t.params.get(path) for path in tune.space},
                     "epochs": attrs.get("tlc_epochs", 0), "seconds": attrs.get("tlc_seconds", 0.0),
                     "features": attrs.get("tlc_features", ""), "message": attrs.get("tlc_message", ""),
                     "shown": t.value if state == "complete" else last})
    return rows


def best_row(rows: list[dict], maximise: bool) -> dict | None:
    done = [r for r in rows if r["state"] == "complete"]
    if not done:
        return None
    return (max if maximise else min)(done, key=lambda r: (r["value"], -r["number"]))


def write(study, tune, folder: Path, name: str, keep_trials: bool = False) -> dict:
    """Write the outputs into `folder` (runs/<name>/tune); returns the `--json` summary. With
    `keep_trials`, the trials' run folders stay (the best one is copied to best/)."""
    from tlc.show.figures import importance_plot, tune_history_plot

    rows = trial_rows(study, tune)
    write_text(folder / "trials.csv", _csv(rows, list(tune.space)))
    best = best_row(rows, tune.maximise)
    if best is not None:
        _keep_best(folder, best["number"], name, copy=keep_trials)
    if not keep_trials:
        _tidy_trials(folder, rows)
    title = f"{name}: {tune.metric} per trial"
    write_with(folder / "history.png", tune_history_plot(rows, tune.metric, tune.maximise, title))
    importances = _importances(study, tune)
    if importances:
        write_with(folder / "importance.png", importance_plot(importances, f"{name}: what mattered"))
    return {"study": study.study_name,
            "trials": [{k: r[k] for k in ("number", "state", "value", "params", "seconds")} for r in rows],
            "best": None if best is None else {k: best[k] for k in ("number", "value", "params")},
            "importance": importances}


def _csv(rows: list[dict], paths: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", *paths, "epochs", "seconds", "features", "message"])
    for r in rows:
        writer.writerow([r["number"], r["state"], "" if r["value"] is None else r["value"],
                         *[r["params"][p] for p in paths], r["epochs"], r["seconds"], r["features"],
                         r["message"].replace("\n", " ")])
    return buffer.getvalue()


def _keep_best(folder: Path, number: int, name: str, copy: bool = False) -> None:
    """best/ becomes the best trial's run folder (moved, or copied to keep the trial's), best.yaml
    its resolved spec without `tune`."""
    run = folder / "trials" / f"{number:04d}" / name
    best = folder / "best"
    if run.is_dir():
        if copy:
            staged = folder / ".best.copy"
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(run, staged)
            run = staged
        swap_folder(run, best)
        (best / "trial.txt").write_text(f"{number}\n")
    if RunLayout(best).spec_lock.is_file():
        data = yaml.safe_load(RunLayout(best).spec_lock.read_text())
        data.pop("tune", None)
        write_text(folder / "best.yaml", f"# the best trial of study {name} (trial {number}); "
                                         "`tlc train` reproduces its history\n" + yaml.safe_dump(data, sort_keys=False))


def _tidy_trials(folder: Path, rows: list[dict]) -> None:
    """Finished trials' run folders go once the best is kept (a study of big models would fill
    the disk); running trials' folders, perhaps another machine's, stay."""
    for row in rows:
        shutil.rmtree(folder / "trials" / f"{row['number']:04d}", ignore_errors=True)
    trials = folder / "trials"
    if trials.is_dir() and not any(trials.iterdir()):
        trials.rmdir()


def _importances(study, tune) -> dict[str, float]:
    """Optuna's importances of the searched paths, with two or more paths and enough complete trials."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(tune.space) < 2 or len(done) < 3 or len({t.value for t in done}) < 2:
        return {}  # (with one value for every trial, no path explains anything: Optuna warns and splits evenly)
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its evaluator's notes on few trials, for a person to ignore
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # (what the figure names)
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
            return {k: float(v) for k, v in found.items()}
    except (RuntimeError, ValueError):  # e.g. every trial had the same values
        return {}
