"""The study: its storage (an embedded journal file by default, or any Optuna RDB URL), its
sampler and pruner, and the workers that run its trials until it has `tune.trials` in all.

Trials are claimed under a lock (a file lock beside the embedded storage or an SQLite file, a
PostgreSQL advisory lock), counting every trial the study has, so K workers on one or many
machines never run more than `trials` between them and no number is used twice. Each running
trial records its owner (host, process) and a heartbeat; a trial whose process died (SIGKILL,
a lost machine) is marked failed by the next worker that starts, so running the command again
completes the study and nothing else is lost.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from tlc.errors import RunError, UsageError, one_line

STALE_SECONDS = 900  # a trial on another machine whose heartbeat is older than this is abandoned


def storage_of(folder: Path, url: str | None):
    """(Optuna storage, a lock for claiming trials, the URL a worker process is given)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if url is None or "://" not in url:
        path = Path(url) if url else folder / "study.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        return storage, _file_lock(path.with_name(path.name + ".claim")), str(path)  # (.lock is Optuna's own)
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:
        raise RunError(f"--storage {_redacted(url)}: cannot open the study storage: {one_line(exc)}") from None
    if url.startswith("sqlite:///"):
        return storage, _file_lock(Path(url.removeprefix("sqlite:///") + ".claim")), url
    if url.startswith("postgresql"):
        return storage, _advisory_lock(storage), url
    return storage, contextlib.nullcontext, url  # other databases: may overshoot by a trial per worker


def _redacted(url: str) -> str:
    """A URL without its password, for messages."""
    import re

    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _file_lock(path: Path):
    @contextlib.contextmanager
    def lock() -> Iterator[None]:
        import fcntl

        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return lock


def _advisory_lock(storage):
    @contextlib.contextmanager
    def lock() -> Iterator[None]:
        from sqlalchemy import text

        with storage.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(2026120119)"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(2026120119)"))
                connection.commit()

    return lock


def open_study(tune, storage, name: str, worker: int = 0):
    """The named study (created on first use), with the spec's sampler and pruner. Worker k's
    sampler is seeded with `tune.seed + k`, so workers do not draw the same values."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from tlc.spec.tune import PRUNERS, SAMPLERS

    from .objective import optuna_choices

    grid = {"search_space": {path: optuna_choices(s.values) for path, s in tune.space.items()}} \
        if tune.sampler == "grid" else {}
    sampler = getattr(optuna.samplers, SAMPLERS[tune.sampler])(**grid, seed=tune.seed + worker)
    pruner_class, arguments = PRUNERS[tune.pruner]
    pruner = getattr(optuna.pruners, pruner_class)(**arguments)
    direction = "maximize" if tune.maximise else "minimize"
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise UsageError(f"study {name!r} in this storage {study.direction.name.lower()}s its value; "
                         f"tune.metric {tune.metric} needs a study that {direction}s (use another --study)")
    return study


def owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid())}


def _started(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat), so a reused pid is not mistaken
    for the process that owned a trial."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _abandoned(who: dict, beat: float, now: float) -> bool:
    """On this machine: its process is gone (or its pid now belongs to another process).
    Elsewhere: its heartbeat stopped."""
    if who.get("host") != socket.gethostname():
        return now - beat > STALE_SECONDS
    started = _started(int(who.get("pid", -1)))
    return started is None or started != who.get("started")


def fail_abandoned(study) -> list[int]:
    """Mark failed the running trials whose process is gone (same machine) or whose heartbeat
    stopped (another machine); returns their numbers."""
    from optuna.trial import TrialState

    gone = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = trial.system_attrs.get("tlc_owner")
        if who is None or not _abandoned(who, trial.system_attrs.get("tlc_heartbeat", 0), now):
            continue  # (no owner yet: a worker is claiming it this moment)
        study._storage.set_trial_user_attr(trial._trial_id, "tlc_state", "failed")
        study._storage.set_trial_user_attr(trial._trial_id, "tlc_message",
                                           f"its worker (process {who.get('pid')} on {who.get('host')}) "
                                           "stopped mid-trial")
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        gone.append(trial.number)
    return gone


def claim(study, total: int, lock):
    """A new trial, or None when the study already has `total` trials (of any state)."""
    with lock():
        if len(study.get_trials(deepcopy=False)) >= total:
            return None
        trial = study.ask()
    me = owner()
    study._storage.set_trial_system_attr(trial._trial_id, "tlc_owner", me)
    study._storage.set_trial_system_attr(trial._trial_id, "tlc_heartbeat", time.time())
    return trial


def heartbeat(study, trial):
    return lambda: study._storage.set_trial_system_attr(trial._trial_id, "tlc_heartbeat", time.time())


def work(study, lock, base, tune, folder: Path, *, total: int, timeout: float | None, reporter,
         keep_trials: bool = False) -> list:
    """Run trials until the study has `total` or `timeout` seconds have passed; the outcomes.
    The trials share this process's datasets, features and compiled heads (`train.pool`)."""
    from tlc.train.pool import Pool

    from .objective import custom_gradients, release_memory, run_trial

    outcomes, started, pool = [], time.monotonic(), Pool()
    fail_abandoned(study)
    try:
        while timeout is None or time.monotonic() - started < timeout:
            trial = claim(study, total, lock)
            if trial is None:
                break
            reporter.trial_started(trial.number, total)
            gradients = custom_gradients()
            outcome = run_trial(study, trial, base, tune, folder / "trials" / f"{trial.number:04d}",
                                folder / "features", heartbeat=heartbeat(study, trial), reporter=reporter,
                                images_dir=folder.parent.parent / ".cache" / "images",  # <runs>/<name>/tune
                                pool=pool, keep_all=keep_trials)
            pool.release()
            release_memory(gradients)  # (here, not inside the trial: its frames still held its model)
            outcomes.append(outcome)
            reporter.trial_done(outcome)
    finally:
        import gc

        gc.unfreeze()  # (each trial froze what was alive: a library caller's process collects it all again)
    return outcomes


def spawn_workers(command: list[str], workers: int) -> list[subprocess.Popen]:
    """`workers` processes running `command` (this `tlc tune` as one worker each)."""
    return [subprocess.Popen([sys.executable, "-m", "tlc", *command, "--worker", str(index)])
            for index in range(workers)]


def wait_for(processes: list[subprocess.Popen]) -> list[int]:
    return [process.wait() for process in processes]
