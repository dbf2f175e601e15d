"""Distillation (`train.distill`): the contract's loss against NumPy, the teacher's probabilities
computed once per image and per cached view and kept, unlabeled images, the feature cache,
phases, `--resume`, `tlc tune` paths, and every located error."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from .conftest import tlc
from .helpers import StopAfter, rows_of

TEACHER = """
name: teacher
input: {shape: [8, 8, 1]}
backbone: {type: conv_stack, blocks: [{filters: 16, convs: 2}]}
head: {type: dense, units: [32], classes: 3}
train:
  data: {type: digits, classes: [5, 6, 7], validation_split: 0.5}
  epochs: 6
"""

STUDENT = """
name: student
input: {{shape: [8, 8, 1]}}
backbone: {{type: conv_stack, blocks: [{{filters: 4, convs: 2}}]}}
freeze: {freeze}
head: {{type: dense, classes: 3}}
train:
  data: {{type: digits, classes: [5, 6, 7], validation_split: 0.8}}
  epochs: 3
  batch_size: 16
  distill: {{teacher: {teacher}{distill}}}
{extra}"""


def student(write, *, teacher, freeze="none", distill="", extra="", name="student.yaml"):
    return write(STUDENT.format(teacher=teacher, freeze=freeze, distill=distill, extra=extra), name)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A trained teacher run (digits 5, 6, 7), and an npz of digits 5-7 without labels."""
    from tlc.train.loop import train

    folder = tmp_path_factory.mktemp("teacher")
    (folder / "teacher.yaml").write_text(TEACHER.lstrip())
    run = train(str(folder / "teacher.yaml"), folder / "runs").folder
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(folder / "unlabeled.npz", x=(d.images[np.isin(d.target, [5, 6, 7])][:40] / 16).astype("float32"))
    return run


# --- the loss -----------------------------------------------------------------------------------
def _kl(p, q):
    return np.sum(p * np.log(p / q), axis=-1)


def _soft(p, t):
    z = np.log(p) / t
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("from_logits", [False, True])
def test_the_loss_is_alpha_t2_kl_plus_cross_entropy_on_labelled_images_only(from_logits):
    from tlc.task.classification import distillation_classes

    loss_class, accuracy_class = distillation_classes()
    rng = np.random.default_rng(0)
    teacher = rng.dirichlet(np.ones(4), 6).astype("float32")
    logits = rng.normal(size=(6, 4)).astype("float32")
    student = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([0, 3, -1, 2, -1, 1], "float32")
    targets = np.concatenate([labels[:, None], teacher], axis=1)
    t, alpha = 3.0, 0.7
    value = float(loss_class(t, alpha, from_logits=from_logits)(targets, logits if from_logits else student))
    labelled = labels >= 0
    ce = -np.log(student[np.arange(6), np.maximum(labels, 0).astype(int)]) * labelled
    expected = np.mean((1 - alpha) * ce) + alpha * t ** 2 * np.mean(_kl(_soft(teacher, t), _soft(student, t)))
    assert value == pytest.approx(expected, rel=1e-4)
    assert value > (1 - alpha) * np.mean(ce) + 1e-3  # the KL term is there (Keras's default one is 0 here)
    # plain labels (validation): the cross-entropy alone, comparable with a run without a teacher
    plain = float(loss_class(t, alpha, from_logits=from_logits)(np.array([0, 3, 1]), (logits if from_logits
                                                                                     else student)[[0, 1, 5]]))
    assert plain == pytest.approx(np.mean(-np.log(student[[0, 1, 5], [0, 3, 1]])), rel=1e-4)
    accuracy = accuracy_class()
    accuracy.update_state(targets, student)
    hits = (np.argmax(student, axis=1) == labels)[labelled]
    assert float(accuracy.result()) == pytest.approx(hits.mean())


# --- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_distilled_run_learns_from_the_teacher_with_unlabeled_images_and_resumes(write, tmp_path, teacher):
    from tlc.use.predictor import Predictor
    from tlc.use.run import Run
    from tlc.train.loop import train

    path = student(write, teacher=teacher, distill=f", temperature: 2.0, unlabeled: {teacher.parent.parent}"
                                                   "/unlabeled.npz")
    result = train(str(path), tmp_path / "runs")
    record, examples = result.metrics["distill"], result.metrics["examples"]
    assert record["unlabeled"] == 40 and record["images"] == examples["train"] + 40
    assert record["probabilities"] == "computed" and record["temperature"] == 2.0 and record["views"] == 1
    # the teacher's probabilities for every training and unlabeled image, then the validation images
    (kept,) = (result.folder / "cache").glob("*-teacher.npy")
    probabilities = np.load(kept)
    assert probabilities.shape == (examples["train"] + 40 + examples["validation"], 3)
    run = Run.open(result.folder)
    val = run.held_out("val")
    assert len(val) == examples["validation"]
    teacher_predictor = Predictor.of_run(Run.open(teacher))
    expected = teacher_predictor.probabilities(run.images(val))
    np.testing.assert_allclose(probabilities[-len(val):], expected, atol=1e-5)
    assert record["teacher_val_accuracy"] == pytest.approx(np.mean(np.argmax(expected, axis=1) == val.labels))
    # a run without a teacher trains otherwise; validation loss is the plain cross-entropy in both
    plain = path.read_text().replace("  distill:", "  # distill:")
    alone = train(str(write(plain, "alone.yaml")), tmp_path / "alone")
    assert rows_of(alone.folder)[0]["loss"] != rows_of(result.folder)[0]["loss"]
    # killed after an epoch and resumed: the same rows; the teacher's probabilities read back
    with pytest.raises(KeyboardInterrupt):
        train(str(path), tmp_path / "again", reporter=StopAfter(1))
    resumed = train(str(path), tmp_path / "again", resume=True)
    assert rows_of(resumed.folder) == rows_of(result.folder)
    assert resumed.metrics["distill"]["probabilities"] == "reused"


@pytest.mark.slow
def test_cached_features_views_and_phases_train_as_without_the_cache(write, tmp_path, teacher):
    from tlc.train.loop import train

    extra = ("  augment: {flip: horizontal, rotation: 0.1, views: 2}\n"
             "  phases:\n    - {freeze: {up_to: block1_conv1}, epochs: 2}\n    - {freeze: none, epochs: 1}\n")
    path = student(write, teacher=teacher, freeze="{up_to: block1_conv1}", extra=extra)
    cached = train(str(path), tmp_path / "c")
    assert cached.metrics["feature_cache"][0].startswith("feature cache: on")
    assert cached.metrics["distill"]["views"] == 2
    (kept,) = (cached.folder / "cache").glob("*-teacher.npy")
    n, val = cached.metrics["examples"]["train"], cached.metrics["examples"]["validation"]
    views = np.load(kept)
    assert views.shape == (2 * n + val, 3) and not np.allclose(views[:n], views[n:2 * n])  # two augmented views
    plain = train(str(path), tmp_path / "p", use_cache=False)
    for a, b in zip(rows_of(cached.folder), rows_of(plain.folder), strict=True):
        for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-3), key


@pytest.mark.slow
def test_a_bare_keras_teacher_at_another_input_size_and_tune_paths(write, tmp_path, teacher):
    """A .keras model is fed at its own input size (here 8x8 resized to 16x16, one channel to three)."""
    import keras

    inputs = keras.Input((16, 16, 3))
    small = keras.layers.AveragePooling2D(2)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(small)))
    model.save(tmp_path / "bare.keras")
    done = tlc("train", student(write, teacher=tmp_path / "bare.keras"), "--runs", tmp_path / "runs")
    assert done.exit_code == 0, done.output
    assert "bare.keras (3 classes at 16x16x3)" in " ".join(done.output.split())
    record = json.loads((tmp_path / "runs" / "student" / "metrics.json").read_text())["distill"]
    assert record["teacher"].endswith("bare.keras") and record["probabilities"] == "computed"
    text = student(write, teacher=teacher, name="tuned.yaml").read_text() + (
        "tune:\n  trials: 2\n  space:\n    train.distill.temperature: {type: uniform, low: 1.0, high: 5.0}\n"
        "    train.distill.alpha: {type: choice, values: [0.5, 0.9]}\n")
    done = tlc("tune", write(text, "tuned.yaml"), "--runs", tmp_path / "tuned")
    assert done.exit_code == 0, done.output
    assert "2 trials (2 complete)" in done.output
    header, *trials = (tmp_path / "tuned" / "student" / "tune" / "trials.csv").read_text().splitlines()
    assert "train.distill.temperature" in header and len(trials) == 2
    features = tmp_path / "tuned" / "student" / "tune" / "features"
    assert len(list(features.glob("*-teacher.npy"))) == 1  # the trials share the teacher's probabilities


# --- located errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("change,where,message", [
    (("TEACHER", "nowhere"), "train.distill.teacher", "not found"),
    (("distill: {teacher: TEACHER}", "distill: {teacher: TEACHER, unlabeled: missing.npz}"),
     "train.distill.unlabeled", "not found"),
    (("  batch_size: 16\n", "  batch_size: 16\n  distribute: multi_worker\n"), "train.distribute", "none or mirrored"),
    (("  batch_size: 16\n", "  batch_size: 16\n  class_weight: balanced\n"), "train.class_weight", "cannot be"),
    (("  batch_size: 16\n", "  batch_size: 16\n  augment: {flip: horizontal}\n"), "train.augment.views", "views: K"),
])
def test_what_distillation_needs_is_a_located_error_before_training(write, tmp_path, teacher, change, where, message):
    text = student(write, teacher="TEACHER").read_text().replace(*change).replace("TEACHER", str(teacher))
    done = tlc("train", write(text, "bad.yaml"), "--runs", tmp_path / "runs")
    assert done.exit_code == 2, done.output
    assert "bad.yaml:" in done.output and f"{where}: " in done.output and message in done.output
    assert not (tmp_path / "runs" / "student").exists()


@pytest.mark.slow
def test_a_teacher_of_other_classes_or_no_run_is_refused(write, tmp_path, teacher):
    other = student(write, teacher=teacher).read_text().replace("classes: [5, 6, 7]", "classes: [7, 6, 5]")
    done = tlc("train", write(other, "other.yaml"), "--runs", tmp_path / "runs")
    assert done.exit_code == 2 and "train.distill.teacher: the teacher's classes (5, 6, 7) are not the data's " \
                                   "(7, 6, 5)" in done.output
    half = tmp_path / "half"
    shutil.copytree(teacher, half)
    (half / "split.json").unlink()
    done = tlc("train", student(write, teacher=half, name="half.yaml"), "--runs", tmp_path / "runs")
    assert done.exit_code == 2 and "is not a finished tlc run (missing split.json)" in done.output
    features = tmp_path / "features.keras"
    import keras

    inputs = keras.Input((8, 8, 1))
    keras.Model(inputs, keras.layers.Flatten()(inputs)).save(features)
    done = tlc("train", student(write, teacher=features, name="features.yaml"), "--runs", tmp_path / "runs")
    assert done.exit_code == 2 and "outputs (64,) features per image, not class probabilities" in done.output
    assert not any((tmp_path / "runs").glob("student*"))
