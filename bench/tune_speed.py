"""`tlc tune` against KerasTuner on the same search, side by side in one run.

The search (bench/specs/tune_vgg_block3.yaml): a head on a frozen VGG16 cut at block3_pool
(weights: null), digits upscaled to 32x32x3, searching head units, dropout and learning rate;
12 trials of 8 epochs, random sampler, no pruning. KerasTuner's `RandomSearch` gets the same
train/validation arrays (tlc's split, preprocessed once in NumPy as a user would) and the same
model; it runs the whole model, frozen prefix included, every epoch of every trial. Both are
whole processes (start-up included). Also: the same study with `--workers 2`; what a trial on
shared features costs beyond its head's epochs; 30 trials with and without the median pruner
(and the memory after 3 vs 30 trials). Targets: tlc >= 18x faster (goal 20x: one feature pass
plus the heads' epochs), best validation accuracy within 0.02 of KerasTuner's or better; a
trial's cost beyond its epochs <= 0.3 s; the pruner saves >= 30% of the 30-trial study at the
same best. (KerasTuner scores a trial by its best epoch, tlc by its last, which favours KerasTuner.)

Needs keras-tuner (`pip install keras-tuner`; for this benchmark only).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
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
    folder = runs / spec.stem / "tune"
    rows = list(csv.DictReader(open(folder / "trials.csv")))
    done = [float(r["value"]) for r in rows if r["state"] == "complete"]
    epochs = sum(int(r["epochs"]) for r in rows)
    reused = [float(r["seconds"]) for r in rows if r["features"] == "reused"]
    beyond = [a["tlc_seconds"] - a["tlc_epoch_seconds"] for a in _user_attrs(folder, spec.stem)
              if a.get("tlc_features") == "reused"]
    return seconds, peak, {"best": max(done), "trials": len(rows), "epochs": epochs,
                           "states": sorted({r["state"] for r in rows}),
                           "cached_trial": statistics.median(reused) if reused else None,
                           "beyond_epochs": statistics.median(beyond) if beyond else None}


def _user_attrs(folder: Path, study: str) -> list[dict]:
    """Each trial's tlc attributes from the study's journal (seconds in its epochs among them)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    return [t.user_attrs for t in optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)]


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
        full = with_settings(out, "tune_vgg_block3_30", trials=30)
        full_seconds, full_peak, full_result = tune(full, out / "full")
        pruned = with_settings(out, "tune_vgg_block3_pruned", trials=30, pruner="median")
        pruned_seconds, _, pruned_result = tune(pruned, out / "pruned")
        print(f"search: {args.trials} trials x 8 epochs, frozen VGG16 (block3_pool) on 32x32x3 digits, random sampler")
        print(f"{'':26s}{'seconds':>9s}{'best val_accuracy':>19s}{'peak RSS':>10s}")
        print(f"{'KerasTuner RandomSearch':26s}{kt_seconds:9.1f}{kt_result['best']:19.4f}{kt_peak:8.0f}MB")
        print(f"{'tlc tune':26s}{tlc_seconds:9.1f}{tlc_result['best']:19.4f}{tlc_peak:8.0f}MB")
        print(f"{'tlc tune --workers 2':26s}{two_seconds:9.1f}{two_result['best']:19.4f}"
              f"   ({two_result['trials']} trials)")
        print(f"{'tlc tune, 30 trials':26s}{full_seconds:9.1f}{full_result['best']:19.4f}{full_peak:8.0f}MB")
        print(f"{'  with the median pruner':26s}{pruned_seconds:9.1f}{pruned_result['best']:19.4f}"
              f"   ({pruned_result['epochs']} of {8 * 30} epochs trained)")
        print(f"tlc tune is {kt_seconds / tlc_seconds:.1f}x faster than KerasTuner (target >= 18x); best accuracy "
              f"{tlc_result['best'] - kt_result['best']:+.4f} (target >= -0.02)")
        print(f"a trial on shared features takes {tlc_result['cached_trial']:.2f} s (median), "
              f"{tlc_result['beyond_epochs']:.2f} s of it beyond its head's 8 epochs (target <= 0.3 s)")
        print(f"2 workers: {tlc_seconds / two_seconds:.2f}x; the median pruner saves "
              f"{1 - pruned_seconds / full_seconds:.0%} of 30 trials' time (target >= 30%) at best accuracy "
              f"{pruned_result['best'] - full_result['best']:+.4f}")
        if not args.skip_memory:
            small = with_settings(out, "mem3", trials=3)
            _, peak3, _ = tune(small, out / "m3")
            print(f"memory: peak RSS {peak3:.0f} MB after 3 trials, {full_peak:.0f} MB after 30 "
                  f"({full_peak / peak3:.2f}x; flat is 1.0x)")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
