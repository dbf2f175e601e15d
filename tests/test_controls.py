"""Training controls and augmentation, end to end on tiny digits runs: early stopping, the cosine
schedule, label smoothing, class weights, augmented training (deterministic, resumable) and
cached augmented views that train exactly like augmenting on the fly."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tlc
from tlc.train.loop import train

from .helpers import StopAfter, rows_of

pytestmark = pytest.mark.slow

SPEC = """
name: ctl
input: {{shape: [8, 8, 1]}}
backbone: {{type: conv_stack, blocks: [{{filters: 8, convs: 2}}]}}
freeze: {freeze}
head: {{type: dense, units: [16], classes: 3}}
train:
  data: {{type: digits, classes: [0, 1, 2]}}
  epochs: {epochs}
  seed: 3
{extra}"""


def spec(write, epochs=3, freeze="none", extra="", name="ctl.yaml"):
    return tlc.load_spec(write(SPEC.format(epochs=epochs, freeze=freeze, extra=extra), name))


def test_early_stopping_stops_a_long_run_and_restores_the_best_epoch(write, tmp_path):
    s = spec(write, epochs=60, extra="  optimizer: {learning_rate: 0.05}\n"
                                     "  early_stopping: {monitor: val_loss, patience: 1}\n")
    result = train(s, tmp_path)
    rows = rows_of(result.folder)
    stop = result.metrics["early_stopping"]
    assert len(stop) == 1 and len(rows) < 60
    best = min(range(len(rows)), key=lambda i: float(rows[i]["val_loss"]))
    assert stop[0]["best_epoch"] == best and len(rows) == best + 3  # patience 1: two epochs without progress
    assert "val_loss did not improve for 2 epochs" in stop[0]["reason"]
    model = result.model  # the best epoch's weights were restored
    from tlc import data
    from tlc.data.pipeline import Feed

    val = data.load(s).val
    x = np.concatenate([b.numpy() for b, _ in Feed(val, s.input.hwc).in_order(256)])
    loss = float(model.evaluate(x, val.labels, verbose=0, return_dict=True)["loss"])
    assert loss == pytest.approx(float(rows[best]["val_loss"]), rel=1e-3)


def test_cosine_schedule_with_warmup_is_in_the_history(write, tmp_path):
    s = spec(write, epochs=4, extra="  optimizer: {learning_rate: 0.01, schedule: cosine, warmup_epochs: 1}\n")
    rows = rows_of(train(s, tmp_path).folder)
    expected = [0.01 / 2, 0.01, 0.01 * 0.5 * (1 + math.cos(math.pi / 3)), 0.01 * 0.5 * (1 + math.cos(2 * math.pi / 3))]
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx(expected)


def test_class_weights_change_the_loss_on_an_imbalanced_subset(write, tmp_path):
    tail = "  data: {type: npz, path: imbalanced.npz, validation_split: 0.2}\n"
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.concatenate([np.flatnonzero(d.target == 0), np.flatnonzero(d.target == 1)[:30],
                           np.flatnonzero(d.target == 2)[:15]])
    np.savez(tmp_path / "imbalanced.npz", x=(d.images[keep] / 16).astype("float32"), y=np.array(
        [0, 1, 2])[d.target[keep]])
    text = SPEC.format(epochs=1, freeze="none", extra="").replace(
        "  data: {type: digits, classes: [0, 1, 2]}\n", tail)
    plain = train(tlc.load_spec(write(text, "plain.yaml")), tmp_path / "p")
    weighted = train(tlc.load_spec(write(text + "  class_weight: balanced\n", "w.yaml")), tmp_path / "w")
    labels = np.array(json.loads((weighted.folder / "split.json").read_text())["counts"]["train"])
    weights = weighted.metrics["class_weight"]
    counts = weighted.metrics["examples"]["train"]
    assert labels == counts and plain.metrics["class_weight"] is None
    assert weights["2"] > weights["1"] > weights["0"] if isinstance(next(iter(weights)), str) else \
        weights[2] > weights[1] > weights[0]
    assert float(rows_of(weighted.folder)[0]["loss"]) != pytest.approx(float(rows_of(plain.folder)[0]["loss"]),
                                                                      rel=1e-3)


def test_label_smoothing_raises_the_loss_and_resumes(write, tmp_path):
    plain = train(spec(write, epochs=2), tmp_path / "p")
    s = spec(write, epochs=2, extra="  label_smoothing: 0.2\n", name="smooth.yaml")
    smooth = train(s, tmp_path / "s")
    assert float(rows_of(smooth.folder)[-1]["loss"]) > float(rows_of(plain.folder)[-1]["loss"])
    with pytest.raises(KeyboardInterrupt):
        train(s, tmp_path / "r", reporter=StopAfter(1))
    assert rows_of(train(s, tmp_path / "r", resume=True).folder) == rows_of(smooth.folder)
    assert "label_smoothing: 0.2" in (smooth.folder / "spec.lock.yaml").read_text()


AUGMENT = "  augment: {flip: horizontal, rotation: 0.1, zoom: 0.1, contrast: 0.2%s}\n"


def test_augmented_training_is_deterministic_and_resumes_exactly(write, tmp_path):
    s = spec(write, epochs=3, extra=AUGMENT % "")
    first, second = train(s, tmp_path / "a"), train(s, tmp_path / "b")
    assert rows_of(first.folder) == rows_of(second.folder)
    assert rows_of(first.folder) != rows_of(train(spec(write, epochs=3, name="plain.yaml"), tmp_path / "c").folder)
    with pytest.raises(KeyboardInterrupt):
        train(s, tmp_path / "k", reporter=StopAfter(2))
    assert rows_of(train(s, tmp_path / "k", resume=True).folder) == rows_of(first.folder)


def test_cached_augmented_views_train_like_augmenting_on_the_fly(write, tmp_path):
    """views: 2 with a frozen prefix: features of two augmented views are computed once; epoch e
    trains on view e mod 2, exactly the images an uncached run augments."""
    s = spec(write, epochs=4, freeze="{up_to: block1_pool}", extra=AUGMENT % ", views: 2")
    cached = train(s, tmp_path / "c")
    note = cached.metrics["feature_cache"][0]
    assert note.startswith("feature cache: on, layers 1..4 computed once") and "2 augmented views of" in note
    assert "MB on disk" in note
    train_rows = cached.metrics["examples"]["train"]
    (features,) = [f for f in (cached.folder / "cache").glob("*-train.npy")]
    assert np.load(features, mmap_mode="r").shape[0] == 2 * train_rows
    plain = train(s, tmp_path / "p", use_cache=False)
    for a, b in zip(rows_of(cached.folder), rows_of(plain.folder)):
        for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-3), key
    off = train(spec(write, epochs=1, freeze="{up_to: block1_pool}", extra=AUGMENT % "", name="off.yaml"),
                tmp_path / "o")
    assert off.metrics["feature_cache"] == ["feature cache: off (augmentation changes the training images every "
                                            "epoch; set train.augment.views: K to cache K augmented views)"]
