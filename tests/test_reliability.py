"""Crash safety and safe loading: SIGKILL and resume, Ctrl-C, unwritable folders, unsafe models."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

import tlc
from tlc.train import loop

from .conftest import REPO, tlc as run
from .helpers import rows_of, tlc_executable

pytestmark = pytest.mark.slow

SPEC = """
name: crash
input: {shape: [8, 8, 1]}
backbone: {type: conv_stack, blocks: [{filters: 8, convs: 2, dropout: 0.25}]}
head: {type: dense, units: [16], dropout: 0.25, classes: 10}
train: {data: {type: digits}, epochs: 6, batch_size: 16, seed: 3, augment: {flip: horizontal, zoom: 0.1}}
"""


def _tlc_process(*args):
    return subprocess.Popen([tlc_executable(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(write, tmp_path):
    spec = write(SPEC)
    whole = _tlc_process("train", spec, "--runs", tmp_path / "whole")
    victim = _tlc_process("train", spec, "--runs", tmp_path / "killed")
    state = tmp_path / "killed" / "crash.partial" / "state.json"
    deadline = time.time() + 240
    while not (state.is_file() and '"epochs_done": 2' in state.read_text()):
        assert victim.poll() is None, victim.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # mid-epoch 3, possibly mid-write
    victim.wait()
    assert whole.wait(timeout=300) == 0, whole.communicate()
    assert not (tmp_path / "killed" / "crash").exists()
    resumed = subprocess.run([sys.executable, "-m", "tlc", "train", str(spec), "--runs",
                              str(tmp_path / "killed"), "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming crash after epoch" in resumed.stderr
    finished, reference = tmp_path / "killed" / "crash", tmp_path / "whole" / "crash"
    assert [r["epoch"] for r in rows_of(finished)] == [str(i) for i in range(6)]
    for a, b in zip(rows_of(finished), rows_of(reference)):
        for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-5)
    assert not (tmp_path / "killed" / "crash.partial").exists()
    leftovers = [p.name for p in finished.iterdir() if p.name.startswith(".") or "ckpt" in p.name]
    assert leftovers == []


def test_ctrl_c_says_how_to_resume(write, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    spec = write(SPEC)
    result = run("train", spec, "--runs", tmp_path / "r")
    assert result.exit_code == 130
    assert f"interrupted; completed epochs are saved. Resume with: tlc train {spec} --resume --runs {tmp_path / 'r'}" \
        in result.output


def test_a_ctrl_c_that_a_failing_cleanup_hides_is_still_a_ctrl_c(write, tmp_path, monkeypatch):
    """A lock released after the interrupt that finds its file gone (Optuna's journal, seen in a
    tune trial) raised an OSError in place of the KeyboardInterrupt: the trial was told 'cannot
    write', and the study went on through Ctrl-C. The interrupt under such an error still stops."""
    from tlc.errors import hides_interrupt

    def interrupted_then_cleanup_fails(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        finally:
            raise FileNotFoundError(2, "No such file or directory", "study.journal.lock.rename")

    monkeypatch.setattr(loop, "_train", interrupted_then_cleanup_fails)
    result = run("train", write(SPEC), "--runs", tmp_path / "r")
    assert result.exit_code == 130 and "cannot write" not in result.output
    try:
        interrupted_then_cleanup_fails()
    except OSError as exc:
        assert hides_interrupt(exc) and not hides_interrupt(RuntimeError("later"))
        assert not hides_interrupt(OSError(28, "No space left on device"))


def test_unwritable_run_folder_is_a_clear_error_and_keeps_the_old_run(write, tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    result = run("train", write(SPEC), "--runs", blocker, "--epochs", "1")
    assert result.exit_code == 1
    assert "cannot write" in result.output and "Not a directory" in result.output
    assert "Traceback" not in result.output and blocker.read_text().startswith("a file")


def test_models_with_code_load_only_with_unsafe(write, tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1), name="input")
    x = keras.layers.Conv2D(2, 3, name="block1_conv1")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(x)
    keras.Model(inputs, x).save(tmp_path / "lambda.keras")
    spec = write("input: {shape: [8, 8, 1]}\n"
                 "backbone: {type: conv_stack, weights: lambda.keras, blocks: [{filters: 2, pool: null}]}\n"
                 "head: {type: none}\n")
    refused = run("build", spec, "-o", tmp_path / "out.keras")
    assert refused.exit_code == 2
    assert "backbone.weights: cannot load" in refused.output and "pass --unsafe only if you trust it" in refused.output
    assert not (tmp_path / "out.keras").exists()
    allowed = run("build", spec, "-o", tmp_path / "out.keras", "--unsafe")
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "out.keras").is_file()


def test_library_api_errors_are_typed(write):
    with pytest.raises(tlc.SpecError):
        tlc.load_spec(write("input: {shape: [8, 8]}\n"))
    with pytest.raises(tlc.InfeasibleError, match="head_avgpool needs at least 4x4"):
        tlc.compile(REPO / "spec_examples" / "vgg16_too_small_48.yaml")


def test_a_second_train_of_the_same_run_stops_at_once_naming_it(write, tmp_path):
    spec = write(SPEC)
    first = _tlc_process("train", spec, "--runs", tmp_path / "runs")
    state = tmp_path / "runs" / "crash.partial" / "state.json"
    deadline = time.time() + 240
    while not state.is_file():
        assert first.poll() is None, first.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    started = time.perf_counter()
    second = run("train", spec, "--runs", tmp_path / "runs")
    assert second.exit_code == 1, second.output
    assert f"{tmp_path / 'runs' / 'crash.partial'} is in use: another tlc train of crash (process {first.pid})" \
        in second.output
    assert time.perf_counter() - started < 5 and state.is_file()  # it touched nothing of the first run
    assert first.wait(timeout=300) == 0, first.communicate()
    assert rows_of(tmp_path / "runs" / "crash")[-1]["epoch"] == "5"
    assert not (tmp_path / "runs" / "crash.lock").exists()


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(write, tmp_path):
    spec = write(SPEC.replace("epochs: 6", "epochs: 1"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / 'runs' / 'crash.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, str(os.getpid()).encode())\nprint('held', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    (tmp_path / "runs").mkdir(exist_ok=True)
    assert holder.stdout.readline().strip() == "held"
    blocked = run("train", spec, "--runs", tmp_path / "runs")
    assert blocked.exit_code == 1 and f"(process {holder.pid})" in blocked.output
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "runs" / "crash.lock").exists()  # left behind, as a killed process leaves it
    result = run("train", spec, "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
