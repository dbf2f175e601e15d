"""`tlc tune` (contract section 7): the space is validated and located like the rest of a spec;
trials share frozen features, end as complete, pruned, infeasible or failed, and the study
reaches exactly `trials` across workers, storages, kills and Ctrl-C."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import pytest

from .conftest import tlc
from .helpers import in_fresh_interpreter, rows_of, tlc_executable

SPEC = """
name: search
input: {shape: [8, 8, 1]}
backbone: {type: conv_stack, blocks: [{filters: 8, convs: 2}]}
freeze: all
head: {type: dense, units: [16], classes: 10}
train: {data: {type: digits}, epochs: 3, batch_size: 64, seed: 1}
tune:
  trials: 5
  sampler: random
  pruner: none
  seed: 3
  space:
    head.units: {type: choice, values: [[], [16], [32, 8]]}
    head.dropout: {type: uniform, low: 0.0, high: 0.4}
    train.optimizer.learning_rate: {type: loguniform, low: 1.0e-3, high: 3.0e-2}
"""


def _trials(folder) -> list[dict]:
    with open(folder / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("space,message", [
    ("head.unitz: {type: choice, values: [[8]]}", "tune.space.head.unitz: no such key (keys here: activation,"),
    ("train.phases.0.epochs: {type: int, low: 1, high: 3}",
     "tune.space.train.phases.0.epochs: train.phases.0: index 0 is past the end of the list (0 items)"),
    ("head.units: {type: choice, values: []}", "tune.space.head.units.values: List should have at least 1 item"),
    ("head.dropout: {type: uniform, low: 0.5, high: 0.1}",
     "tune.space.head.dropout: low must not exceed high; received: low 0.5, high 0.1"),
    ("train.optimizer.learning_rate: {type: loguniform, low: 0, high: 0.1}",
     "tune.space.train.optimizer.learning_rate: loguniform needs low > 0; received: 0.0"),
    ("backbone.alpha: {type: uniform, low: 0.5, high: 1.0}", "tune.space.backbone.alpha: no such key"),
])
def test_a_space_that_cannot_be_searched_is_a_located_error(write, space, message):
    path = write(SPEC.split("  space:")[0] + f"  space:\n    {space}\n")
    for command in ("check", "tune"):
        result = tlc(command, path)
        assert result.exit_code == 2, result.output
        assert "spec.yaml:13:" in result.output and message in result.output, result.output
        assert "Traceback" not in result.output


def test_the_base_spec_is_preflighted_like_tlc_train_before_any_trial(write, tmp_path):
    missing = write(SPEC.replace("train: {data: {type: digits}", "train: {data: {type: directory, path: nowhere}"),
                    "missing_data.yaml")
    weights = write(SPEC.replace("blocks: [{filters: 8, convs: 2}]}", "blocks: [{filters: 8, convs: 2}], "
                                 "weights: gone.keras}"), "missing_weights.yaml")
    for path, message in ((missing, "missing_data.yaml:6:39: train.data.path: not found:"),
                          (weights, "missing_weights.yaml:3:")):
        result = tlc("tune", path, "--runs", tmp_path / "runs")
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "runs").exists()  # no study, no trial
    assert tlc("train", missing, "--runs", tmp_path / "runs").exit_code == 2  # the same verdict as train


def test_grid_takes_choice_spaces_only_and_defaults_are_searchable(write):
    grid = write(SPEC.replace("sampler: random", "sampler: grid"))
    result = tlc("check", grid)
    assert result.exit_code == 2
    assert "spec.yaml:14:26: tune.space.head.dropout.type: sampler grid tries every combination, so it takes " \
           "choice spaces only; this one is uniform" in result.output
    unwritten = write(SPEC.replace("train: {data: {type: digits}, epochs: 3, batch_size: 64, seed: 1}",
                                   "train: {data: {type: digits}}"), "defaults.yaml")
    assert tlc("check", unwritten).exit_code == 0  # train.optimizer.learning_rate is left to its default


def test_tune_validates_before_tensorflow_and_optuna():
    results, imported = in_fresh_interpreter(["tune", "missing.yaml"], ["check", "--json", "missing.yaml"],
                                             modules=("tensorflow", "keras", "optuna"))
    assert [r["exit_code"] for r in results] == [2, 2] and imported == []


@pytest.mark.slow
def test_a_study_shares_features_records_every_state_and_its_best_reproduces(write, tmp_path):
    spec = write(SPEC.replace("trials: 5", "trials: 10").replace("seed: 3", "seed: 18").replace(
        "    head.units:", "    head.classes: {type: choice, values: [10, 3]}\n"
                          "    input.shape: {type: choice, values: [[8, 8, 1], [2, 2, 1]]}\n    head.units:"))
    started = time.perf_counter()
    result = tlc("tune", spec, "--runs", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    folder = tmp_path / "runs" / "search" / "tune"
    rows = _trials(folder)
    assert [int(r["number"]) for r in rows] == list(range(10)) == [t["number"] for t in summary["trials"]]
    assert {r["state"] for r in rows} == {"complete", "infeasible", "failed"}
    assert sum(r["state"] == "complete" for r in rows) >= 3
    for row in rows:
        params = json.loads(json.dumps({k: row[k] for k in ("input.shape", "head.classes")}))
        if params["input.shape"] == "[2, 2, 1]":  # too small for the convolutions: infeasible, at no cost
            assert row["state"] == "infeasible" and "block1_conv1 needs at least 3x3" in row["message"]
            assert float(row["seconds"]) < 2 and row["features"] == ""
        elif params["head.classes"] == "3":  # the head does not fit the data: the trial fails, the study goes on
            assert row["state"] == "failed" and "the head has 3 classes but the data has 10" in row["message"]
        else:
            assert row["state"] == "complete" and row["epochs"] == "3" and 0 <= float(row["value"]) <= 1
    trained = [r for r in rows if r["features"]]
    assert [r["features"] for r in trained][0] == "computed" and {r["features"] for r in trained[1:]} <= {"reused"}
    best = summary["best"]
    assert best["value"] == max(float(r["value"]) for r in rows if r["state"] == "complete")
    assert set(best["params"]) == {"head.classes", "input.shape", "head.units", "head.dropout",
                                   "train.optimizer.learning_rate"}
    assert (folder / "history.png").stat().st_size > 10_000 and (folder / "importance.png").stat().st_size > 10_000
    assert int((folder / "best" / "trial.txt").read_text()) == best["number"] and not (folder / "trials").exists()
    assert time.perf_counter() - started < 240
    import optuna  # what optuna-dashboard reads: the journal, opened with Optuna's own storage
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    trials = optuna.load_study(study_name="search", storage=storage).get_trials(deepcopy=False)
    states = {"complete": "COMPLETE", "infeasible": "FAIL", "failed": "FAIL", "pruned": "PRUNED"}
    assert [(t.number, t.state.name, t.user_attrs["tlc_state"]) for t in trials] == \
        [(int(r["number"]), states[r["state"]], r["state"]) for r in rows]

    again = tlc("train", folder / "best.yaml", "--runs", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert rows_of(tmp_path / "again" / "search") == rows_of(folder / "best")  # the trial's history, exactly
    evaluated = tlc("evaluate", folder / "best", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(best["value"], abs=1e-6)
    exported = tlc("export", folder / "best", "--format", "saved_model", "--json")
    assert exported.exit_code == 0 and json.loads(exported.stdout)["max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_running_again_continues_the_study_up_to_its_trials(write, tmp_path):
    spec = write(SPEC.replace("trials: 5", "trials: 2"))
    assert tlc("tune", spec, "--runs", tmp_path / "runs").exit_code == 0
    assert tlc("tune", spec, "--runs", tmp_path / "runs", "--trials", "3").exit_code == 0
    assert [r["number"] for r in _trials(tmp_path / "runs" / "search" / "tune")] == ["0", "1", "2"]
    done = tlc("tune", spec, "--runs", tmp_path / "runs", "--trials", "3", "--json")
    assert done.exit_code == 0 and len(json.loads(done.stdout)["trials"]) == 3  # nothing more to run


@pytest.mark.slow
def test_the_median_pruner_prunes_clearly_worse_trials(write, tmp_path):
    spec = write(SPEC.replace("trials: 5", "trials: 8").replace("pruner: none", "pruner: median")
                 .replace("epochs: 3", "epochs: 4").replace("low: 1.0e-3, high: 3.0e-2", "low: 1.0e-6, high: 3.0e-2"))
    result = tlc("tune", spec, "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    rows = _trials(tmp_path / "runs" / "search" / "tune")
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and all(int(r["epochs"]) < 4 and "pruned after epoch" in r["message"] for r in pruned)


def _tune_process(spec, runs, *extra, env=None):
    # Ctrl-C reaches the child as a shell's foreground job: a test run in the background (nohup,
    # `make test &`) ignores SIGINT, the child would inherit that, and Python would keep it ignored.
    return subprocess.Popen([tlc_executable(), "tune", str(spec), "--runs", str(runs), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_running_trial(folder, process, deadline=240):
    import optuna

    from tlc.tune.study import storage_of

    end = time.time() + deadline
    while time.time() < end:
        assert process.poll() is None, process.communicate()
        journal = folder / "study.journal"
        if journal.is_file():
            storage, _, _ = storage_of(folder, None)
            trials = optuna.load_study(study_name="search", storage=storage).get_trials()
            running = [t for t in trials if t.state.name == "RUNNING" and t.system_attrs.get("tlc_heartbeat")
                       and t.intermediate_values]
            if running:
                return running[0].number
        time.sleep(1.0)  # each look takes Optuna's journal lock; polling it 5x a second made a
        # trial's own lock release fail now and then (rename of a vanished lock file)
    raise AssertionError("no trial started")


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_it_failed_and_running_again_completes_the_study(write, tmp_path):
    # A trial on cached features runs 30 epochs in under a second, faster than the test looks
    # (CI once saw the whole study end first): a thousand epochs keep the victim's trial running.
    spec = write(SPEC.replace("trials: 5", "trials: 3").replace("epochs: 3", "epochs: 1000"))
    folder = tmp_path / "runs" / "search" / "tune"
    victim = _tune_process(spec, tmp_path / "runs")
    killed = _wait_for_running_trial(folder, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    result = tlc("tune", write(SPEC.replace("trials: 5", "trials: 3")), "--runs", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    rows = {int(r["number"]): r for r in _trials(folder)}
    assert sorted(rows) == [0, 1, 2]
    assert rows[killed]["state"] == "failed" and "stopped mid-trial" in rows[killed]["message"]
    assert sum(r["state"] == "complete" for r in rows.values()) == 2


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_still_writes_the_outputs(write, tmp_path):
    spec = write(SPEC.replace("epochs: 3", "epochs: 1000").replace("trials: 5", "trials: 20"))
    folder = tmp_path / "runs" / "search" / "tune"
    process = _tune_process(spec, tmp_path / "runs")
    number = _wait_for_running_trial(folder, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted; the running trial is marked failed" in stderr and "Traceback" not in stderr
    # The trial running when Ctrl-C came: the one seen running, or, when that one ended between
    # the look and the signal (under load), the one after it.
    failed = [r for r in _trials(folder) if r["state"] == "failed"]
    assert len(failed) == 1 and int(failed[0]["number"]) >= number, failed
    assert failed[0]["message"] == "interrupted (Ctrl-C)"
    assert (folder / "history.png").is_file()


@pytest.mark.slow
def test_two_workers_share_one_embedded_study(write, tmp_path):
    spec = write(SPEC.replace("trials: 5", "trials: 6"))
    result = tlc("tune", spec, "--runs", tmp_path / "runs", "--workers", "2", "--json")
    assert result.exit_code == 0, result.output
    _check_two_workers(json.loads(result.stdout), _trials(tmp_path / "runs" / "search" / "tune"), 6)


def _check_two_workers(summary, rows, total):
    assert sorted(int(r["number"]) for r in rows) == list(range(total))  # exactly `trials`, no number twice
    assert len(summary["trials"]) == total
    computed = [r for r in rows if r["features"] == "computed"]
    assert len(computed) == 1, rows  # the second worker waited for the first worker's features


@pytest.fixture
def postgres(tmp_path):
    """A real PostgreSQL server (pgserver ships its binaries), on a Unix socket of its own."""
    pgserver = pytest.importorskip("pgserver") if os.environ.get("CI") != "true" else __import__("pgserver")
    server = pgserver.get_server(str(tmp_path / "pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(write, tmp_path, postgres):
    spec = write(SPEC.replace("trials: 5", "trials: 4"))
    result = tlc("tune", spec, "--runs", tmp_path / "runs", "--workers", "2", "--storage", postgres,
                 "--study", "shared", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["study"] == "shared"
    _check_two_workers(summary, _trials(tmp_path / "runs" / "search" / "tune"), 4)
    import optuna

    study = optuna.load_study(study_name="shared", storage=postgres)
    assert len(study.trials) == 4 and study.best_value == summary["best"]["value"]


@pytest.mark.slow
def test_a_grid_runs_every_combination_once(write, tmp_path):
    spec = write(SPEC.replace("sampler: random", "sampler: grid").replace("trials: 5", "trials: 50").replace(
        "    head.dropout: {type: uniform, low: 0.0, high: 0.4}\n    train.optimizer.learning_rate: "
        "{type: loguniform, low: 1.0e-3, high: 3.0e-2}\n", "    train.epochs: {type: choice, values: [1, 2]}\n"))
    result = tlc("tune", spec, "--runs", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    combos = sorted((t["params"]["head.units"], t["params"]["train.epochs"]) for t in json.loads(result.stdout)["trials"])
    assert combos == sorted((u, e) for u in ("[]", "[16]", "[32, 8]") for e in (1, 2))


@pytest.mark.slow
def test_a_study_where_no_trial_completes_exits_1_and_still_draws_its_history_without_a_warning(write, tmp_path,
                                                                                                recwarn):
    spec = write(SPEC.replace("trials: 5", "trials: 2").replace(
        "    head.units:", "    input.shape: {type: choice, values: [[2, 2, 1]]}\n    head.units:"))
    result = tlc("tune", spec, "--runs", tmp_path / "runs")
    assert result.exit_code == 1 and "2 trials (0 complete); none completed" in result.output, result.output
    assert not [w for w in recwarn if "No artists" in str(w.message)]
    assert (tmp_path / "runs" / "search" / "tune" / "history.png").stat().st_size > 5_000


@pytest.mark.parametrize("values, expected", [([0.5, 0.5, 0.5, 0.5], set()), ([0.2, 0.9, 0.3, 0.8], {"a", "b"})])
def test_importances_need_trials_that_differ_and_say_nothing_else(values, expected):
    """Every trial with one value explains nothing: no importances and no warning from Optuna's
    evaluator (it warned, then split evenly); otherwise each searched path has one."""
    import warnings
    from types import SimpleNamespace

    import optuna

    from tlc.tune.outputs import _importances

    study = optuna.create_study(direction="maximize")
    space = {"a": optuna.distributions.FloatDistribution(0, 1), "b": optuna.distributions.FloatDistribution(0, 1)}
    for i, value in enumerate(values):
        study.add_trial(optuna.trial.create_trial(params={"a": i / 4, "b": (3 - i) / 4}, distributions=space,
                                                  value=value))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = _importances(study, SimpleNamespace(space=space))
    assert set(found) == expected


def test_tensorflow_retracing_warnings_are_kept_from_the_user():
    """Each trial and phase compiles a new model, so Keras traces new steps by design."""
    import logging

    from tlc.show.quiet import _not_retracing

    def record(message):
        return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, None, None)

    assert not _not_retracing(record("5 out of the last 20 calls to <function f> triggered tf.function retracing."))
    assert _not_retracing(record("something a user should see"))


@pytest.mark.slow
def test_a_head_of_a_structure_seen_before_trains_its_compiled_copy_with_the_same_history(write, tmp_path,
                                                                                         monkeypatch):
    """A tune worker's pool: the second head of a structure trains the first one's compiled copy
    (no new trace) with its own weights, learning rate and dropout rate held in variables, and
    its history and trained weights equal those of a run of its own, exactly. TensorFlow's global
    seed is not set again (that clears its instantiated functions, ~0.12 s a run)."""
    import numpy as np
    import tensorflow as tf

    from tlc.train.loop import train
    from tlc.train.pool import Pool
    from tlc.spec.validation import load_spec

    base = SPEC.split("tune:")[0].replace("units: [16]", "units: [16, 8], dropout: DROP").replace(
        "epochs: 3", "epochs: 3, optimizer: {learning_rate: RATE}")
    first, second = (load_spec(write(base.replace("DROP", d).replace("RATE", r), name=f"{n}.yaml"))
                     for n, d, r in (("a", "0.3", "0.01"), ("b", "0.15", "0.003")))
    pool, features = Pool(), tmp_path / "features"
    train(first, tmp_path / "a", checkpoints=False, features_dir=features, pool=pool)
    (head,) = pool.heads.values()
    traced = head.model.train_function
    seeded = []
    with monkeypatch.context() as patch:
        patch.setattr(tf.random, "set_seed", lambda seed: seeded.append(seed))
        pooled = train(second, tmp_path / "b", checkpoints=False, features_dir=features, pool=pool)
    assert seeded == []
    assert len(pool.heads) == 1 and head.model.train_function is traced  # the same traced step, not a new one
    assert [layer.held.rate.numpy() for layer in head.model.layers if hasattr(layer, "held")] == \
        [np.float32(0.15)] * 2 and float(head.optimizer.learning_rate.numpy()) == np.float32(0.003)
    alone = train(second, tmp_path / "alone", checkpoints=False, features_dir=features)
    assert pooled.metrics["features"] == ["reused"] and alone.metrics["features"] == ["reused"]
    assert rows_of(tmp_path / "b" / "search") == rows_of(tmp_path / "alone" / "search")
    for mine, theirs in zip(pooled.model.get_weights(), alone.model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.slow
def test_only_a_trial_that_is_the_best_so_far_writes_a_run_folder_unless_every_one_is_kept(write, tmp_path):
    from tlc.train.loop import train
    from tlc.spec.validation import load_spec

    spec = load_spec(write(SPEC.split("tune:")[0]))
    dropped = train(spec, tmp_path / "dropped", checkpoints=False, keep=lambda metrics: False)
    assert not dropped.wrote and 0 <= dropped.metrics["final"]["val_accuracy"] <= 1
    assert sorted(p.name for p in (tmp_path / "dropped").iterdir()) == []  # no folder, no .partial, no lock

    kept = tlc("tune", write(SPEC.replace("trials: 5", "trials: 3")), "--runs", tmp_path / "runs", "--keep-trials")
    assert kept.exit_code == 0, kept.output
    folder = tmp_path / "runs" / "search" / "tune"
    complete = [r for r in _trials(folder) if r["state"] == "complete"]
    for row in complete:
        run = folder / "trials" / f"{int(row['number']):04d}" / "search"
        assert {"model.keras", "history.csv", "accuracy.png", "metrics.json"} <= {p.name for p in run.iterdir()}
        assert len(rows_of(run)) == 3 and len(list((run / "logs" / "validation").iterdir())) == 1
    best = int((folder / "best" / "trial.txt").read_text())
    assert rows_of(folder / "best") == rows_of(folder / "trials" / f"{best:04d}" / "search")


def test_a_kept_backbone_does_not_keep_the_models_built_on_it_alive(write):
    """A tune worker keeps its built backbone; Keras records each layer called on a backbone
    layer's output in that layer, so the kept backbone held every trial's head (its weights
    too) for the rest of the study."""
    import gc
    import weakref

    import keras

    from tlc.build.emit import compile as emit
    from tlc.spec.validation import load_spec
    from tlc.train.pool import KeptBackbones

    spec, kept = load_spec(write(SPEC.split("tune:")[0])), KeptBackbones()
    keras.utils.set_random_seed(1)
    first = emit(spec, backbones=kept)
    backbone_layer, head = first.layers[1], weakref.ref(first.layers[-1])
    keras.utils.set_random_seed(1)
    second = emit(spec, backbones=kept)
    assert second.layers[1] is backbone_layer  # the kept backbone, not a new one
    del first
    gc.collect()
    assert head() is None
    assert tuple(second.output.shape) == (None, 10)


@pytest.mark.slow
def test_a_worker_lets_go_of_each_trials_model_before_freezing_what_is_alive(write, tmp_path, monkeypatch):
    """A worker freezes what is alive after each trial (a full collection over TensorFlow's objects
    is slow): whatever of a trial is still referenced then, and dies later in a cycle, would never
    be collected. So when it freezes, no trial's model may be alive."""
    import gc
    import weakref

    import tlc.train.loop as loop

    models, alive_at_freeze, train, freeze = [], [], loop.train, gc.freeze

    def recording(*args, **kwargs):
        result = train(*args, **kwargs)
        models.append(weakref.ref(result.model))
        return result

    def counting():
        alive_at_freeze.append(sum(model() is not None for model in models))
        freeze()

    monkeypatch.setattr(loop, "train", recording)
    monkeypatch.setattr(gc, "freeze", counting)
    result = tlc("tune", write(SPEC.replace("trials: 5", "trials: 3")), "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert len(models) == 3 and alive_at_freeze == [0, 0, 0]
