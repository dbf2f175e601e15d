"""The task layer (contract section 9): tags (multi_label) and numbers (regression) read from csv
and npz, split keeping their spread, trained with their losses and metrics, and answered in
their own terms by evaluate, predict, serve and export; `check` refuses a head, an activation or
a training option that does not fit the task, with the field named; a classification source that
looks like tags or numbers trains as asked but says which task fits."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

import tlc
from tlc.plugin import registry
from tlc.task.regression import Regression

from .conftest import tlc as run_cli
from .helpers import draw_tagged, spec_from_data, unboxed

HEAD = {"type": "dense", "pooling": "avg", "classes": 3}
STACK = {"type": "conv_stack", "blocks": [{"filters": 4}]}


def spec_for(task, data: dict, head: dict | None = None, **train):
    return spec_from_data({"task": task, "input": {"shape": [48, 48, 3]}, "backbone": STACK,
                           "head": head or HEAD, "train": {"data": data, **train}})


def loaded(spec):
    from tlc.data import load

    return load(spec)


# --- reading targets ---------------------------------------------------------------------------

def test_a_tags_column_reads_as_0_1_rows_with_images_of_no_tag(tmp_path):
    rows = draw_tagged(tmp_path, 40, (16, 16), empty=0.2)
    dataset = loaded(spec_for("multi_label", {"type": "csv", "path": str(tmp_path / "labels.csv"), "tags": "tags",
                                              "validation_split": 0, "test_split": 0}))
    assert dataset.class_names == ["circle", "square", "triangle"]
    expected = np.array([[r[t] for t in dataset.class_names] for r in rows], "float32")
    np.testing.assert_array_equal(dataset.train.labels, expected)
    assert (dataset.train.labels.sum(axis=1) == 0).any()  # images with no tag are examples too


def test_zero_one_columns_and_another_delimiter_read_the_same_tags(tmp_path):
    rows = draw_tagged(tmp_path, 30, (16, 16))
    by_columns = loaded(spec_for("multi_label", {"type": "csv", "path": str(tmp_path / "labels.csv"),
                                                 "columns": ["triangle", "circle"], "validation_split": 0}))
    assert by_columns.class_names == ["triangle", "circle"]
    np.testing.assert_array_equal(by_columns.train.labels, [[r["triangle"], r["circle"]] for r in rows])
    commas = tmp_path / "commas.csv"
    commas.write_text("path,tags\n" + "".join(f"{r['path']},\"{', '.join(r['tags'].split())}\"\n" for r in rows))
    by_comma = loaded(spec_for("multi_label", {"type": "csv", "path": str(commas), "tags": "tags", "delimiter": ",",
                                               "validation_split": 0}))
    np.testing.assert_array_equal(by_comma.train.labels, [[r[t] for t in by_comma.class_names] for r in rows])


def test_a_cell_that_is_not_0_or_1_is_named_with_its_line(tmp_path):
    draw_tagged(tmp_path, 6, (16, 16))
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 4)[0] + ",2,0,0,5.0"
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(tlc.SpecError, match=r"labels.csv:4: circle must be 0 or 1; received: '2'"):
        loaded(spec_for("multi_label", {"type": "csv", "path": str(tmp_path / "labels.csv"),
                                        "columns": ["circle", "square", "triangle"]}))


def test_a_missing_target_column_names_the_columns_found(tmp_path):
    draw_tagged(tmp_path, 6, (16, 16))
    with pytest.raises(tlc.SpecError, match=r"needs the column age .*found tags,circle,square,triangle,size"):
        loaded(spec_for({"type": "regression", "targets": ["age"]}, {"type": "csv", "path": str(tmp_path / "labels.csv")},
                        head={"type": "dense", "pooling": "avg"}))


def test_npz_targets_keep_their_floats_and_their_shape(tmp_path):
    x = np.random.default_rng(0).random((12, 48, 48, 3), dtype=np.float32)
    values = np.linspace(0.5, 6.5, 24, dtype=np.float32).reshape(12, 2)
    np.savez(tmp_path / "values.npz", x=x, y=values)
    dataset = loaded(spec_for({"type": "regression", "targets": ["a", "b"]},
                              {"type": "npz", "path": str(tmp_path / "values.npz"), "validation_split": 0},
                              head={"type": "dense", "pooling": "avg"}))
    assert dataset.class_names == ["a", "b"] and dataset.train.labels.dtype == np.float32
    np.testing.assert_array_equal(np.sort(dataset.train.labels, axis=0), values)  # never cast to int
    np.savez(tmp_path / "tags.npz", x=x, y=np.eye(3, dtype="int64")[np.arange(12) % 3])
    tags = loaded(spec_for("multi_label", {"type": "npz", "path": str(tmp_path / "tags.npz"), "validation_split": 0}))
    assert tags.train.labels.shape == (12, 3)
    with pytest.raises(tlc.SpecError, match=r"y must be an \(n, tags\) matrix of 0 and 1"):
        loaded(spec_for("multi_label", {"type": "npz", "path": str(tmp_path / "values.npz")}))


def test_a_folder_per_class_cannot_give_tags(tmp_path):
    from .helpers import photos

    photos(tmp_path / "photos")
    with pytest.raises(tlc.SpecError, match=r"train.data.type: directory gives one class per image; tags come from"):
        loaded(spec_for("multi_label", {"type": "directory", "path": str(tmp_path / "photos")}))


# --- splits ------------------------------------------------------------------------------------

def test_iterative_stratification_keeps_every_tags_share_and_is_seeded():
    from tlc.task.splits import iterative

    rng = np.random.default_rng(1)
    tags = (rng.random((600, 5)) < [0.5, 0.3, 0.1, 0.05, 0.6]).astype("float32")
    train, val, test = iterative(tags, 0.2, 0.1, seed=3)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(600))
    assert (len(val), len(test)) == (120, 60)
    for part in (val, test):  # every tag's share within a point or two of the whole set's
        np.testing.assert_allclose(tags[part].mean(axis=0), tags.mean(axis=0), atol=0.025)
    again = iterative(tags, 0.2, 0.1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))


def test_a_regression_split_keeps_the_spread_and_is_never_empty_when_asked():
    from tlc.task.splits import by_quantiles

    values = np.random.default_rng(0).exponential(10, 500).astype("float32")
    train, val, test = by_quantiles(values, 0.2, 0.2, seed=0)
    assert (len(val), len(test)) == (100, 100)
    for part in (val, test):  # the quartiles of each split near the whole set's
        np.testing.assert_allclose(np.quantile(values[part], [0.25, 0.5, 0.75]),
                                   np.quantile(values, [0.25, 0.5, 0.75]), rtol=0.15)
    tiny = by_quantiles(np.arange(5, dtype="float32"), 0.1, 0.1, seed=0)
    assert [len(p) for p in tiny] == [3, 1, 1]


def test_an_empty_split_is_a_warning_under_every_task(tmp_path):
    x = np.zeros((3, 48, 48, 3), np.float32)
    np.savez(tmp_path / "few.npz", x=x, y=np.array([0, 1, 2]))
    dataset = loaded(spec_for("classification", {"type": "npz", "path": str(tmp_path / "few.npz"),
                                                 "validation_split": 0.2}))
    [warning] = dataset.warnings
    assert "train.data.validation_split: 0.2 gives no validation examples" in warning


# --- nothing silent ----------------------------------------------------------------------------

def test_labels_that_look_like_tags_or_numbers_train_as_asked_with_a_warning_naming_the_task(tmp_path):
    rows = draw_tagged(tmp_path, 40, (16, 16))
    (tmp_path / "tags.csv").write_text("path,label\n" + "".join(f"{r['path']},{r['tags']}\n" for r in rows))
    (tmp_path / "sizes.csv").write_text("path,label\n" + "".join(f"{r['path']},{r['size']}\n" for r in rows))
    tags = loaded(spec_for("classification", {"type": "csv", "path": str(tmp_path / "tags.csv"), "validation_split": 0},
                           head={**HEAD, "classes": 8}))
    [warning] = tags.warnings
    assert "tags.csv: the labels look like tags" in warning and "task: multi_label with train.data.tags: label" \
        in warning
    sizes = loaded(spec_for("classification", {"type": "csv", "path": str(tmp_path / "sizes.csv"),
                                               "validation_split": 0}))
    [warning] = sizes.warnings
    assert "look like numbers" in warning and "task: {type: regression, targets: [label]}" in warning


@pytest.mark.parametrize("case, field, message", [
    ({"task": "multi_label", "head": {**HEAD, "output_activation": "softmax"}}, "head.output_activation",
     "softmax does not fit task multi_label"),
    ({"task": "multi_label", "head": {"type": "none"}}, "task", "the none head serves features, not multi_label"),
    ({"task": {"type": "regression", "targets": ["a", "b"]}, "head": HEAD}, "head.classes",
     "a regression head has one unit per target: 2 (a, b)"),
    ({"task": "regression", "early_stopping": {"monitor": "val_accuracy"}}, "train.early_stopping.monitor",
     "regression records mae, rmse, r2, loss (val_ for validation); not val_accuracy"),
    ({"task": "multi_label", "class_weight": "balanced"}, "train.class_weight", "a class per image or per pixel"),
    ({"task": {"type": "multi_label", "threshold": "tuned"}, "validation_split": 0}, "task.threshold",
     "tuned thresholds come from the validation split"),
    ({"task": "classification", "tags": "tags"}, "train.data.tags", "set task: multi_label"),
])
def test_check_refuses_what_does_not_fit_the_task_naming_the_field(write, case, field, message):
    import yaml

    train = {"data": {"type": "csv", "path": "labels.csv", **({"tags": case["tags"]} if "tags" in case else {}),
                      **({"validation_split": case["validation_split"]} if "validation_split" in case else {})},
             **{k: case[k] for k in ("early_stopping", "class_weight") if k in case}}
    head = case.get("head") or ({"type": "dense", "pooling": "avg"} if "regression" in str(case["task"]) else HEAD)
    path = write(yaml.safe_dump({"task": case["task"], "input": {"shape": [48, 48, 3]}, "backbone": STACK,
                                 "head": head, "train": train}))
    result = run_cli("check", path)
    assert result.exit_code == 2, result.output
    said = unboxed(result.output)
    assert f"{field}: " in said and message in said and "Traceback" not in result.output


# --- a plugin's task ---------------------------------------------------------------------------

class Count(tlc.Task):
    """how many (a plugin's task)"""

    type: Literal["count"] = "count"
    metrics = ("mae",)
    higher = {"mae": False}
    activations = ("linear", "relu")


def test_a_plugin_task_registers_through_tlc_tasks_and_validates(write):
    module = types.ModuleType("count_plugin")
    module.tlc_tasks = tlc.hookimpl(lambda: [Count])
    registry.register_module(module)
    try:
        assert "count" in registry.get_registry().tasks
        listed = json.loads(run_cli("plugins", "--json").stdout)
        assert any(row["type"] == "count" and row["kind"] == "task" for row in listed["types"])
        path = write("task: count\ninput: {shape: [48, 48, 3]}\nbackbone: {type: conv_stack, blocks: [{filters: 4}]}\n"
                     "head: {type: dense, pooling: avg, classes: 1}\n")
        spec = tlc.load_spec(path)
        assert isinstance(spec.task, Count) and spec.head.output_activation == "linear"
        done = run_cli("check", path)  # the dense head serves the built-in tasks only
        assert done.exit_code == 2 and "the dense head serves classification, multi_label, regression, not count" \
            in unboxed(done.output)
    finally:
        registry.reset()


class Tally(Regression):
    """regression under another name, without a distillation loss (a plugin's)"""

    type: Literal["tally"] = "tally"
    distillation_loss = tlc.Task.distillation_loss


def test_a_plugin_task_derived_from_a_built_in_takes_its_heads_and_distills_only_with_a_loss(write):
    module = types.ModuleType("tally_plugin")
    module.tlc_tasks = tlc.hookimpl(lambda: [Tally])
    registry.register_module(module)
    try:
        text = ("task: {type: tally, targets: [size]}\ninput: {shape: [48, 48, 3]}\n"
                "backbone: {type: conv_stack, blocks: [{filters: 4}]}\nhead: {type: dense, pooling: avg}\n")
        done = run_cli("check", write(text, "tally.yaml"))
        assert done.exit_code == 0, done.output
        taught = write(text + "train: {data: {type: digits}, epochs: 1, distill: {teacher: nowhere}}\n", "taught.yaml")
        done = run_cli("check", taught)
        assert done.exit_code == 2, done.output
        assert "taught.yaml:" in done.output and "train.distill: the tally task cannot learn from a teacher" in \
            unboxed(done.output)
    finally:
        registry.reset()


def test_a_spec_without_task_takes_its_heads_one_task_and_names_the_choice_when_it_serves_several(write):
    from tlc.plugins.dense_head import DenseHead

    class Scores(DenseHead):
        """a plugin's head for tags or numbers, not one class"""

        type: Literal["scores"] = "scores"
        tasks = ("multi_label", "regression")

    class Sizes(Scores):
        type: Literal["sizes"] = "sizes"
        tasks = ("regression",)

    module = types.ModuleType("scores_plugin")
    module.tlc_heads = tlc.hookimpl(lambda: [Scores, Sizes])
    registry.register_module(module)
    try:
        text = "input: {shape: [48, 48, 3]}\nbackbone: {type: conv_stack, blocks: [{filters: 4}]}\n"
        done = run_cli("check", write(text + "head: {type: scores, pooling: avg, classes: 3}\n", "scores.yaml"))
        assert done.exit_code == 2 and "scores.yaml:3:14: head.type: the scores head serves multi_label, regression, " \
            "not classification (the default task); add task: multi_label or regression" in unboxed(done.output)
        sizes = tlc.load_spec(write(text + "head: {type: sizes, pooling: avg}\n", "sizes.yaml"))
        assert sizes.task.type == "regression" and sizes.head.output_activation == "linear"
        assert tlc.check(sizes).ok
    finally:
        registry.reset()


# --- trained runs ------------------------------------------------------------------------------

def model_outputs(run, files) -> np.ndarray:
    """model.keras's outputs for image files, computed by plain Keras in a fresh interpreter (no
    tlc class registered): what a user without tlc gets."""
    code = ("import sys, json, numpy as np, keras; from PIL import Image\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "x = np.stack([np.asarray(Image.open(f).convert('RGB'), 'float32') / 255 for f in sys.argv[2:]])\n"
            "print(json.dumps(np.asarray(m(x, training=False)).tolist()))")
    done = subprocess.run([sys.executable, "-c", code, str(run / "model.keras"), *map(str, files)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.array(json.loads(done.stdout.strip().splitlines()[-1]), "float32")


@pytest.mark.slow
def test_multi_label_trains_tunes_its_thresholds_and_evaluates_as_scikit_learn(task_runs):
    from sklearn.metrics import average_precision_score, f1_score

    folder, runs, rows = task_runs
    run = runs["tags"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val_map", "val_f1", "map", "f1"} <= set(metrics["final"])
    task = metrics["task"]
    assert task["type"] == "multi_label" and len(task["thresholds"]) == 3 and task["tuned_on"] == 96
    assert all(0 < t < 1 for t in task["thresholds"])

    result = run_cli("evaluate", run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    split = json.loads((run / "split.json").read_text())
    files = [f for f, _ in split["test_files"]]
    truth = np.array([y for _, y in split["test_files"]], "float32")
    probabilities = model_outputs(run, files)  # model.keras: sigmoid probabilities, in plain Keras
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    aps = [average_precision_score(truth[:, j], probabilities[:, j]) for j in range(3)]
    assert report["map"] == pytest.approx(np.mean(aps), abs=1e-4)
    assert [c["ap"] for c in report["per_class"]] == pytest.approx(aps, abs=1e-4)
    given = probabilities >= np.array(task["thresholds"])
    assert report["f1_macro"] == pytest.approx(f1_score(truth, given, average="macro"), abs=1e-4)
    assert report["subset_accuracy"] == pytest.approx(np.mean((given == truth.astype(bool)).all(axis=1)), abs=1e-6)
    assert [c["threshold"] for c in report["per_class"]] == pytest.approx(task["thresholds"])
    assert report["map"] > 0.7, report["map"]  # chance is each tag's share, about 0.5
    assert (run / "pr_curves.png").stat().st_size > 10_000 and "pr_curves.png" in report["figures"]

    predicted = json.loads(run_cli("predict", run, *files[:4], "--json").stdout)
    for answer, row in zip(predicted, probabilities):
        scores = {s["class"]: s for s in answer["scores"]}
        assert sorted(answer["tags"]) == sorted(c for c, s in scores.items() if s["probability"] >= s["threshold"])
        assert [scores[c]["probability"] for c in ("circle", "square", "triangle")] == pytest.approx(row, abs=1e-5)
        assert [scores[c]["threshold"] for c in ("circle", "square", "triangle")] == pytest.approx(task["thresholds"])


@pytest.mark.slow
def test_regression_answers_in_the_targets_units_and_evaluates_as_scikit_learn(task_runs):
    from sklearn.metrics import mean_absolute_error, r2_score

    folder, runs, rows = task_runs
    run = runs["size"]
    metrics = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    held = {f for part in ("val", "test") for f, _ in split[f"{part}_files"]}
    train_sizes = np.array([r["size"] for r in rows if str(folder / "tagged" / r["path"]) not in held], "float32")
    assert metrics["task"]["mean"] == pytest.approx([train_sizes.mean()], rel=1e-5)
    assert metrics["task"]["std"] == pytest.approx([train_sizes.std()], rel=1e-5)
    assert {"val_mae", "val_rmse", "val_r2"} <= set(metrics["final"])

    report = json.loads(run_cli("evaluate", run, "--json").stdout)
    files = [f for f, _ in split["test_files"]]
    truth = np.array([y for _, y in split["test_files"]], "float32").reshape(-1)
    values = model_outputs(run, files).reshape(-1)  # model.keras gives values in the targets' units
    assert report["mae"] == pytest.approx(mean_absolute_error(truth, values), abs=1e-3)
    assert report["r2"] == pytest.approx(r2_score(truth, values), abs=1e-4)
    assert report["per_target"][0]["target"] == "size" and report["r2"] > 0.8, report
    assert report["worst"][0]["file"] in files and (run / "predicted_vs_true.png").is_file()
    assert abs(float(np.mean(values)) - float(truth.mean())) < 0.2 * float(truth.std())  # not standardised

    [answer] = json.loads(run_cli("predict", run, files[0], "--json").stdout)
    assert answer["values"]["size"] == pytest.approx(values[0], abs=1e-3)
    flipped = json.loads(run_cli("evaluate", run, "--json", "--tta", "flip").stdout)
    assert flipped["tta"] == "flip" and flipped["mae_no_tta"] == pytest.approx(report["mae"], abs=1e-5)


@pytest.mark.slow
def test_serve_export_and_int8_answer_in_the_tasks_terms(task_runs, tmp_path):
    import httpx

    from .helpers import serving

    folder, runs, rows = task_runs
    image = folder / "tagged" / rows[0]["path"]
    [cli_answer] = json.loads(run_cli("predict", runs["tags"], image, "--json").stdout)
    with serving(runs["tags"]) as (url, _, _):  # (the page test serves the regression)
        served = httpx.post(f"{url}/predict", files={"file": (image.name, image.read_bytes())}).json()
        meta = httpx.get(f"{url}/metadata").json()
    [answer] = served["predictions"]
    assert answer["tags"] == cli_answer["tags"]
    assert [(s["class"], s["threshold"]) for s in answer["scores"]] == \
        [(s["class"], s["threshold"]) for s in cli_answer["scores"]]
    assert [s["probability"] for s in answer["scores"]] == \
        pytest.approx([s["probability"] for s in cli_answer["scores"]], abs=1e-5)
    assert meta["task"]["type"] == "multi_label" and len(meta["task"]["thresholds"]) == 3
    for name in ("tags", "size"):

        exported = run_cli("export", runs[name], "--format", "tflite", "--quantize", "int8", "--json",
                           "-o", tmp_path / f"{name}.tflite")
        assert exported.exit_code == 0, exported.output
        report = json.loads(exported.stdout)
        assert report["metric"] == {"tags": "map", "size": "mae"}[name] and "accuracy" not in report
        assert abs(report["value"] - report["keras_value"]) < 0.05 * max(abs(report["keras_value"]), 1)
        card = json.loads((tmp_path / f"{name}.tflite.json").read_text())
        assert card["task"] == {"tags": "multi_label", "size": "regression"}[name]
        assert ("thresholds" in card) == (name == "tags")


@pytest.mark.slow
def test_evaluate_data_takes_a_new_csv_of_some_of_the_tags_and_refuses_unknown_ones(task_runs, tmp_path):
    folder, runs, _ = task_runs
    draw_tagged(tmp_path / "two", 30, seed=7, tags=("circle", "square"))
    report = json.loads(run_cli("evaluate", runs["tags"], "--data", tmp_path / "two" / "labels.csv", "--json").stdout)
    assert report["examples"] == 30 and [c["class"] for c in report["per_class"]] == ["circle", "square", "triangle"]
    assert report["per_class"][2]["support"] == 0
    draw_tagged(tmp_path / "other", 10, seed=8, tags=("circle", "star"))
    refused = run_cli("evaluate", runs["tags"], "--data", tmp_path / "other" / "labels.csv")
    assert refused.exit_code == 2 and "has the tags circle, star" in unboxed(refused.output)
    values = json.loads(run_cli("evaluate", runs["size"], "--data", tmp_path / "two" / "labels.csv", "--json").stdout)
    assert values["examples"] == 30 and values["per_target"][0]["target"] == "size"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tags", "size"])
def test_a_student_learns_tags_or_numbers_from_a_teacher_run_of_the_same_task(task_runs, name, tmp_path):
    import shutil

    from tlc.train.loop import train

    folder, runs, rows = task_runs
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for row in rows[:20]:
        shutil.copy(folder / "tagged" / row["path"], unlabeled / f"u{Path(row['path']).name}")
    lock = (runs[name] / "spec.lock.yaml").read_text()
    spec = tmp_path / "student.yaml"
    spec.write_text(lock.replace(f"name: {name}", "name: student").replace("epochs: 12", "epochs: 1")
                    .replace("distill: null", f"distill: {{teacher: {runs[name]}, unlabeled: {unlabeled}}}"))
    result = train(tlc.load_spec(spec), tmp_path / "runs")
    record, final = result.metrics["distill"], result.metrics["final"]
    metric = {"tags": "map", "size": "mae"}[name]
    assert record["unlabeled"] == 20 and record["images"] == 288 + 20
    teacher_val = json.loads(run_cli("evaluate", runs[name], "--split", "val", "--json").stdout)[metric]
    assert record[f"teacher_val_{metric}"] == pytest.approx(teacher_val, rel=1e-4)
    assert np.isfinite(final["loss"]) and np.isfinite(final[f"val_{metric}"]) and metric in final
    [answer] = json.loads(run_cli("predict", result.folder, folder / "tagged" / rows[0]["path"], "--json").stdout)
    assert ("tags" if name == "tags" else "values") in answer


def test_a_teacher_of_another_task_or_a_bare_model_cannot_teach_tags(write, tmp_path):
    import yaml

    model = tmp_path / "teacher.keras"
    model.write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    for file in ("model.keras", "metrics.json", "history.csv", "split.json", "accuracy.png"):
        (run / file).write_text("{}")
    (run / "spec.lock.yaml").write_text(yaml.safe_dump({"task": {"type": "regression"}}))
    for teacher, message in ((model, "a .keras teacher is taken for a classifier; a multi_label student learns from "
                                     "a teacher's run folder"),
                             (run, "answers regression, the student is multi_label")):
        path = write(yaml.safe_dump({"task": "multi_label", "input": {"shape": [48, 48, 3]}, "backbone": STACK,
                                     "head": HEAD, "train": {"data": {"type": "csv", "path": "labels.csv"},
                                                             "distill": {"teacher": str(teacher)}}}))
        result = run_cli("check", path)
        assert result.exit_code == 2 and message in unboxed(result.output), result.output


@pytest.mark.slow
def test_tune_searches_a_regression_on_its_mae_and_keeps_the_lowest(task_runs, tmp_path):
    folder, runs, _ = task_runs
    spec = tmp_path / "tune_size.yaml"
    spec.write_text((runs["size"] / "spec.lock.yaml").read_text().replace("name: size", "name: tune_size")
                    .replace("epochs: 12", "epochs: 2").replace("tune: null", "")
                    + "tune:\n  trials: 3\n  sampler: grid\n  space:\n    train.optimizer.learning_rate: "
                      "{type: choice, values: [0.0001, 0.001, 0.003]}\n")
    result = run_cli("tune", spec, "--runs", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    values = [t["value"] for t in summary["trials"] if t["state"] == "complete"]
    assert len(values) == 3 and summary["best"]["value"] == min(values)  # MAE: lower is better
    assert (tmp_path / "runs" / "tune_size" / "tune" / "history.png").is_file()


@pytest.mark.slow
def test_compare_plots_the_tasks_metric_and_refuses_runs_of_two_tasks(task_runs, tmp_path):
    folder, runs, _ = task_runs
    mixed = run_cli("compare", runs["tags"], runs["size"], "-o", tmp_path / "mixed.png")
    assert mixed.exit_code == 2 and "compares runs of one task (these answer multi_label, regression)" in \
        unboxed(mixed.output)
    alone = run_cli("compare", runs["size"], "-o", tmp_path / "size.png")
    assert alone.exit_code == 0 and "mae@1" in alone.output and (tmp_path / "size.png").is_file()


@pytest.mark.slow
def test_explain_draws_a_chosen_tag_and_a_regressions_output(task_runs, tmp_path):
    folder, runs, rows = task_runs
    image = folder / "tagged" / rows[0]["path"]
    [answer] = json.loads(run_cli("predict", runs["tags"], image, "--json").stdout)
    [record] = json.loads(run_cli("explain", runs["tags"], image, "--class", "square", "-o", tmp_path / "tags",
                                  "--json").stdout)
    square = next(s for s in answer["scores"] if s["class"] == "square")
    assert record["class"] == "square" and record["probability"] == pytest.approx(square["probability"], abs=1e-5)
    [value] = json.loads(run_cli("predict", runs["size"], image, "--json").stdout)
    [record] = json.loads(run_cli("explain", runs["size"], image, "-o", tmp_path / "size", "--json").stdout)
    assert record["class"] == "size" and record["value"] == pytest.approx(value["values"]["size"], abs=1e-3)
    assert "probability" not in record and Path(record["png"]).is_file()


@pytest.mark.slow
def test_the_page_shows_every_tag_with_its_threshold_and_a_regression_its_values(task_runs, tmp_path):
    """(here, beside the runs it serves: test files go to one worker each, and the runs train once)"""
    from playwright.sync_api import expect, sync_playwright

    from .helpers import serving
    from .test_page import BROWSER_ARGS, chromium_path

    folder, runs, rows = task_runs
    photo = folder / "tagged" / rows[0]["path"]
    [tags] = json.loads(run_cli("predict", runs["tags"], photo, "--json").stdout)
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=BROWSER_ARGS)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    with serving(runs["tags"]) as (url, _, _):
        page.goto(f"{url}/")
        expect(page.locator("#about")).to_contain_text("3 tags: circle, square, triangle")
        expect(page.locator("#classes-title")).to_have_text("Tags")
        page.set_input_files("#file", str(photo))
        expect(page.locator("#classes li")).to_have_count(3)
        for item, score in zip(page.locator("#classes li").all(), tags["scores"]):  # every tag, most probable first
            given = score["class"] in tags["tags"]
            expect(item.locator(".class")).to_have_text(("✓ " if given else "") + score["class"])
            expect(item.locator(".probability")).to_contain_text(f"{100 * score['probability']:.1f}% (threshold "
                                                                 f"{100 * score['threshold']:.1f}%)")
            assert item.locator(".threshold").get_attribute("style").startswith(f"left: {100 * score['threshold']:.1f}%")
        expect(page.locator("#status")).to_contain_text(", ".join(tags["tags"]) or "no tag over its threshold")
        page.screenshot(path=str(tmp_path / "tags.png"), full_page=True)
    [values] = json.loads(run_cli("predict", runs["size"], photo, "--json").stdout)
    with serving(runs["size"]) as (url, _, _):
        page.goto(f"{url}/")
        expect(page.locator("#classes-title")).to_have_text("Values")
        page.set_input_files("#file", str(photo))
        expect(page.locator("#classes li .class")).to_have_text("size")
        assert float(page.locator("#classes li .probability").text_content().replace(",", "")) == \
            pytest.approx(values["values"]["size"], rel=1e-3)
        page.screenshot(path=str(tmp_path / "values.png"), full_page=True)
    browser.close()
    playwright.stop()
