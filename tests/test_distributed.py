"""tf.distribute: MirroredStrategy over 2 logical CPU devices, and two MultiWorkerMirroredStrategy
workers on 127.0.0.1 (TF_CONFIG); only the chief writes, and accuracy matches one process."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

import tlc
from tlc.train.distribute import local_cluster
from tlc.train.loop import train

from .helpers import tlc_executable

pytestmark = pytest.mark.slow

SPEC = """
name: dist
input: {{shape: [8, 8, 1]}}
backbone: {{type: conv_stack, blocks: [{{filters: 16, convs: 2, batch_norm: true}}]}}
head: {{type: dense, units: [32], classes: 10}}
train: {{data: {{type: digits}}, epochs: 4, batch_size: 32, seed: 0, distribute: {mode}}}
"""
TLC = tlc_executable()


def _two_workers(spec, runs, *extra):
    """Two multi_worker `tlc train` processes on 127.0.0.1; `runs(index)` is each one's --runs."""
    return [subprocess.Popen([TLC, "train", str(spec), "--runs", str(runs(index)), *extra], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CONFIG": config})
            for index, config in enumerate(local_cluster(2))]


def _final(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: the same spec trained in this process without distribution."""
    out = tmp_path_factory.mktemp("single")
    path = out / "dist.yaml"
    path.write_text(SPEC.format(mode="none"))
    return train(tlc.load_spec(path), out / "runs").metrics


def test_mirrored_on_two_logical_cpus(write, tmp_path, single):
    spec = write(SPEC.format(mode="mirrored"))
    done = subprocess.run([TLC, "train", str(spec), "--devices", "2", "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    metrics = _final(tmp_path / "runs" / "dist")
    assert metrics["distribute"] == {"strategy": "mirrored", "replicas": 2}
    assert metrics["epochs"] == 4
    assert abs(metrics["final"]["val_accuracy"] - single["final"]["val_accuracy"]) < 0.08
    assert metrics["recalibrated_bn"]["layers"] == single["recalibrated_bn"]["layers"] == ["block1_bn1", "block1_bn2"]


def test_two_workers_on_localhost(write, tmp_path, single):
    spec = write(SPEC.format(mode="multi_worker"))
    workers = _two_workers(spec, lambda index: tmp_path / f"runs{index}")
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    chief = tmp_path / "runs0" / "dist"
    assert sorted(p.name for p in chief.iterdir()) == [
        "accuracy.png", "history.csv", "logs", "metrics.json", "model.keras", "spec.lock.yaml", "split.json"]
    assert not (tmp_path / "runs1").exists()  # only the chief writes
    assert "the chief writes the run folder" in outputs[1][0]
    metrics = _final(chief)
    assert metrics["distribute"] == {"strategy": "multi_worker", "replicas": 2}
    assert metrics["feature_cache"] == ["feature cache: off (multi_worker: each worker trains the whole model)"]
    assert len((chief / "history.csv").read_text().splitlines()) == 1 + 4
    assert abs(metrics["final"]["val_accuracy"] - single["final"]["val_accuracy"]) < 0.08
    assert metrics["recalibrated_bn"]["layers"] == ["block1_bn1", "block1_bn2"]  # precise batch norm, on the chief
    assert metrics["recalibrated_bn"]["images"] == single["recalibrated_bn"]["images"]


def test_multi_worker_without_tf_config_is_a_clear_error(write, tmp_path):
    spec = write(SPEC.format(mode="multi_worker"))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    done = subprocess.run([TLC, "train", str(spec), "--runs", str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 1
    assert "multi_worker needs the TF_CONFIG environment variable" in done.stderr


def test_two_workers_killed_then_resumed_continue_from_the_checkpoint(write, tmp_path):
    import signal
    import time

    spec = write(SPEC.format(mode="multi_worker").replace("epochs: 4", "epochs: 5"))
    runs = tmp_path / "runs"  # shared by both workers, as on a shared filesystem

    workers = _two_workers(spec, lambda index: runs)
    state = runs / "dist.partial" / "state.json"
    deadline = time.time() + 300
    while not (state.is_file() and '"epochs_done": 2' in state.read_text()):
        assert all(w.poll() is None for w in workers) and time.time() < deadline
        time.sleep(0.05)
    for w in workers:
        w.send_signal(signal.SIGKILL)
        w.wait()
    before = json.loads(state.read_text())["rows"]
    workers = _two_workers(spec, lambda index: runs, "--resume")
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert "resuming dist after epoch 2 of 5" in outputs[0][1]
    rows = [line.split(",") for line in (runs / "dist" / "history.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
    assert [float(r[1]) for r in rows[:2]] == pytest.approx([b["accuracy"] for b in before[:2]])
    # continued, not restarted: a restart would begin again near epoch 0's accuracy (epochs 1 and 2
    # can be level once digits are learnt, so they are not compared with each other)
    assert float(rows[2][1]) > float(rows[0][1]) + 0.05, rows
    assert not (runs / "dist.partial").exists()


def test_two_workers_train_a_folder_of_images(write, tmp_path):
    """multi_worker over a streamed source: each worker decodes only its slice of every global
    batch (tests/test_data.py checks the slices are disjoint and cover the batch)."""
    from .helpers import photos

    photos(tmp_path / "p", n=24, size=(20, 24))
    spec = write("name: folder\ninput: {shape: [16, 16, 3]}\n"
                 "backbone: {type: conv_stack, blocks: [{filters: 4}]}\nhead: {type: dense, classes: 2}\n"
                 "train: {data: {type: directory, path: p, test_split: 0.25}, epochs: 2, batch_size: 8, "
                 "distribute: multi_worker}\n")
    workers = _two_workers(spec, lambda index: tmp_path / f"runs{index}")
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    chief = tmp_path / "runs0" / "folder"
    metrics = _final(chief)
    assert metrics["distribute"] == {"strategy": "multi_worker", "replicas": 2}
    assert metrics["examples"] == {"train": 26, "validation": 10, "test": 12}  # per class: 6 test, 5 val
    assert len((chief / "history.csv").read_text().splitlines()) == 1 + 2
    assert "streamed from files" in outputs[0][1]
    assert len(json.loads((chief / "split.json").read_text())["test_files"]) == 12
