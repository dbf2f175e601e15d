"""`tlc tune` against KerasTuner on the same search, side by side in one run.

The search (bench/specs/tune_vgg_block3.yaml): a head on a frozen VGG16 cut at block3_pool
(weights: null), digits upscaled to 32x32x3, searching head units, dropout and learning rate;
12 trials of 8 epochs, random sampler, no pruning. KerasTuner's `RandomSearch` gets the same
train/validation arrays (tlc's split, preprocessed once in NumPy as a user would) and the same
model; it runs the whole model, frozen prefix included, every epoch of every trial. Both are
whole processes (start-up included). Also: the same study with `--workers 2`, with the median
pruner, and the memory after 3 vs 30 trials. Target: tlc >= 10x faster, best validation
accuracy within 0.02 of KerasTuner's or better. (KerasTuner scores a trial by its best epoch,
tlc by its last, which favours KerasTuner.)

Needs keras-tuner (`pip install keras-tuner`; for this benchmark only).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

from _timing import REPO, run_python, tlc_code

SPEC = REPO / "bench" / "specs" / "tune_vgg_block3.yaml"

KERAS_TUNER = """
import json, sys, numpy as np
import keras, keras_tuner as kt
import tlc
from tlc import data
spec = tlc.load_spec({spec!r})
split = data.load(spec)
pre = lambda x: np.asarray(spec.backbone.preprocess(x))  # the same caffe preprocessing, once
x, y = pre(split.train.images), split.train.labels
xv, yv = pre(split.val.images), split.val.labels

def build(hp):
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    base.trainable = False
    features = base.get_layer("block3_pool").output
    h = keras.layers.Flatten()(features)
    h = keras.layers.Dense(hp.Choice("units", [32, 64, 128, 256]), activation="relu")(h)
    h = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5))(h)
    out = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(base.input, out)
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

tuner = kt.RandomSearch(build, objective="val_accuracy", max_trials={trials}, seed=0,
                        directory={folder!r}, project_name="kt", overwrite=True)
tuner.search(x, y, epochs=8, batch_size=64, validation_data=(xv, yv), verbose=0)
best = tuner.oracle.get_best_trials(1)[0]
print(json.dumps({{"best": best.score, "trials": len(tuner.oracle.trials)}}))
"""


def tune(spec: Path, runs: Path, *extra: str) -> tuple[float, float, dict]:
    seconds, peak, _ = run_python(tlc_code("tune", str(spec), "--runs", str(runs), *extra))
    rows = list(csv.DictReader(open(runs / spec.stem / "tune" / "trials.csv")))
    done = [float(r["value"]) for r in rows if r["state"] == "complete"]
    epochs = sum(int(r["epochs"]) for r in rows)
    reused = [float(r["seconds"]) for r in rows if r["features"] == "reused"]
    return seconds, peak, {"best": max(done), "trials": len(rows), "epochs": epochs,
                           "states": sorted({r["state"] for r in rows}),
                           "cached_trial": sorted(reused)[len(reused) // 2] if reused else None}


def with_settings(out: Path, name: str, **tune) -> Path:
    path = out / f"{name}.yaml"
    settings = ", ".join(f"{k}: {v}" for k, v in tune.items())
    path.write_text(f"extends: {SPEC}\nname: {name}\ntune: {{{settings}}}\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--skip-memory", action="store_true", help="skip the 3 vs 30 trials memory check")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tlc-bench-tune-"))
    try:
        spec = with_settings(out, "tune_vgg_block3", trials=args.trials)
        tlc_seconds, tlc_peak, tlc_result = tune(spec, out / "tlc")
        kt_seconds, kt_peak, kt_out = run_python(KERAS_TUNER.format(spec=str(spec), trials=args.trials,
                                                                    folder=str(out / "kt")))
        kt_result = json.loads(kt_out.strip().splitlines()[-1])
        two_seconds, _, two_result = tune(spec, out / "two", "--workers", "2")
        pruned = with_settings(out, "tune_vgg_block3_pruned", trials=args.trials, pruner="median")
        pruned_seconds, _, pruned_result = tune(pruned, out / "pruned")
        print(f"search: {args.trials} trials x 8 epochs, frozen VGG16 (block3_pool) on 32x32x3 digits, random sampler")
        print(f"{'':26s}{'seconds':>9s}{'best val_accuracy':>19s}{'peak RSS':>10s}")
        print(f"{'KerasTuner RandomSearch':26s}{kt_seconds:9.1f}{kt_result['best']:19.4f}{kt_peak:8.0f}MB")
        print(f"{'tlc tune':26s}{tlc_seconds:9.1f}{tlc_result['best']:19.4f}{tlc_peak:8.0f}MB")
        print(f"{'tlc tune --workers 2':26s}{two_seconds:9.1f}{two_result['best']:19.4f}"
              f"   ({two_result['trials']} trials)")
        print(f"{'tlc tune, median pruner':26s}{pruned_seconds:9.1f}{pruned_result['best']:19.4f}"
              f"   ({pruned_result['epochs']} of {8 * args.trials} epochs trained)")
        print(f"tlc tune is {kt_seconds / tlc_seconds:.1f}x faster than KerasTuner (target >= 10x); best accuracy "
              f"{tlc_result['best'] - kt_result['best']:+.4f} (target >= -0.02)")
        print(f"a trial on shared features takes {tlc_result['cached_trial']:.2f} s (median; 8 epochs of the head "
              f"plus building, tracing and saving it)")
        print(f"2 workers: {tlc_seconds / two_seconds:.2f}x; median pruner: {tlc_seconds / pruned_seconds:.2f}x "
              f"at best accuracy {pruned_result['best'] - tlc_result['best']:+.4f}")
        if not args.skip_memory:
            small = with_settings(out, "mem3", trials=3)
            large = with_settings(out, "mem30", trials=30)
            _, peak3, _ = tune(small, out / "m3")
            _, peak30, _ = tune(large, out / "m30")
            print(f"memory: peak RSS {peak3:.0f} MB after 3 trials, {peak30:.0f} MB after 30 "
                  f"({peak30 / peak3:.2f}x; flat is 1.0x)")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
