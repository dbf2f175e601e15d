"""`tlc train` on tiny digits runs: the run folder, transfer, phases, resume, caching, compare."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import tlc
from tlc.data.pipeline import Feed
from tlc.errors import RunError
from tlc.train.loop import train
from tlc.use.run import read_run

from .conftest import tlc as run
from .helpers import StopAfter, rows_of

pytestmark = pytest.mark.slow

SOURCE = """
name: {name}
input: {{shape: [8, 8, 1]}}
backbone:
  type: conv_stack
  blocks: [{{filters: 8, convs: 2{dropout}}}]
head: {{type: dense, units: [16], classes: 3}}
train:
  data: {{type: digits, classes: [{classes}]}}
  epochs: 3
  batch_size: 32
  seed: 1
"""


def digits(write, name="src", classes="0, 1, 2", dropout=", dropout: 0.25", extra=""):
    return write(SOURCE.format(name=name, classes=classes, dropout=dropout) + extra, f"{name}.yaml")


def tensorboard_scalars(folder) -> set:
    """(tag, step) of every scalar in a TensorBoard log folder, read back with TensorFlow."""
    import tensorflow as tf

    out = set()
    for file in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(file)):
            out |= {(value.tag, event.step) for value in event.summary.value}
    return out


def test_run_folder_is_complete(write, tmp_path):
    result = train(tlc.load_spec(digits(write)), tmp_path / "runs")
    folder = tmp_path / "runs" / "src"
    assert result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "accuracy.png", "history.csv", "logs", "metrics.json", "model.keras", "spec.lock.yaml", "split.json"]
    assert tensorboard_scalars(folder / "logs" / "train") == {
        (tag, step) for tag in ("accuracy", "loss") for step in range(3)}
    assert tensorboard_scalars(folder / "logs" / "validation") == {
        (tag, step) for tag in ("accuracy", "loss") for step in range(3)}
    rows = rows_of(folder)
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["train_seconds"] > 0
    assert metrics["final"] == {k: float(v) if k != "epoch" else 2 for k, v in rows[-1].items()}
    assert metrics["params"] == {"total": 1243, "trainable": 1243, "non_trainable": 0}
    assert metrics["classes"] == ["0", "1", "2"]
    assert (folder / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from tlc.train import allocator

    assert allocator._done  # training fixed malloc's mmap threshold (tests/test_allocator.py)
    relocked = tlc.load_spec(folder / "spec.lock.yaml")  # the lock file is itself a valid spec
    assert relocked.model_dump() == tlc.load_spec(digits(write)).model_dump()
    assert not (tmp_path / "runs" / "src.partial").exists()


def test_loaded_model_predicts_like_the_trained_one(write, tmp_path):
    import keras
    from tlc import data

    spec = tlc.load_spec(digits(write))
    result = train(spec, tmp_path)
    x = data.load(spec).val.images[:20]
    loaded = keras.saving.load_model(result.folder / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), result.model.predict(x, verbose=0), rtol=1e-6)


def test_transfer_loads_frozen_source_features_and_beats_scratch_on_scarce_data(tmp_path):
    """The demo's story, on its own specs: with ~45 training images of 5-9, the source's frozen
    features put transfer ahead of scratch after one epoch (by 0.11-0.16 in every seed seen;
    asserted on the mean over three seeds, with a margin, so one unlucky seed cannot fail it)."""
    import shutil

    from .conftest import EXAMPLES

    shutil.copytree(EXAMPLES, tmp_path / "spec_examples")
    runs = tmp_path / "runs"
    source = train(tlc.load_spec(tmp_path / "spec_examples" / "digits_source.yaml"), runs)
    first = {"transfer": [], "scratch": []}
    for seed in range(3):
        for kind in first:
            spec = tlc.load_spec(tmp_path / "spec_examples" / f"digits_{kind}_scarce.yaml")
            spec = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})})
            result = train(spec, tmp_path / f"seed{seed}", epochs=1)
            first[kind].append(read_run(result.folder)[1][0]["val_accuracy"])
            if kind == "transfer":
                for name in ("block1_conv1", "block1_conv2"):
                    for a, b in zip(result.model.get_layer(name).get_weights(),
                                    source.model.get_layer(name).get_weights()):
                        np.testing.assert_array_equal(a, b)  # loaded, and frozen: unchanged by training
                    assert result.model.get_layer(name).trainable is False
                assert result.metrics["params"]["non_trainable"] == 320 + 9248
                assert "feature cache: on, layers 1..3" in result.metrics["feature_cache"][0]
    gap = np.mean(first["transfer"]) - np.mean(first["scratch"])
    ahead = sum(t > s for t, s in zip(first["transfer"], first["scratch"]))
    assert gap >= 0.05 and ahead >= 2, f"first-epoch val accuracy, transfer {first['transfer']} vs scratch {first['scratch']}"


def test_phases_change_trainable_flags_and_learning_rate(write, tmp_path):
    import keras

    extra = ("  phases:\n"
             "    - {freeze: all, epochs: 2, learning_rate: 0.01}\n"
             "    - {freeze: {up_to: block1_conv1}, epochs: 1, learning_rate: 0.0001}\n")
    result = train(tlc.load_spec(digits(write, extra=extra)), tmp_path)
    assert [r["epoch"] for r in rows_of(result.folder)] == ["0", "1", "2"]
    assert [p["learning_rate"] for p in result.metrics["phases"]] == [0.01, 0.0001]
    model = keras.saving.load_model(result.folder / "model.keras").get_layer(result.model.name)
    flags = {l.name: l.trainable for l in model.layers}
    assert flags["block1_conv1"] is False and flags["block1_conv2"] is True
    assert float(result.model.optimizer.learning_rate.numpy()) == pytest.approx(0.0001)
    notes = result.metrics["feature_cache"]
    assert notes[0].startswith("feature cache: on") and notes[1].startswith("feature cache: on, layers 1..1")
    assert len(list((result.folder / "cache").glob("*.npy"))) == 4  # both phases' features kept
    again = train(tlc.load_spec(digits(write, extra=extra)), tmp_path)
    assert [n.split(" (")[0] for n in again.metrics["feature_cache"]] == [
        "feature cache: on, layers 1..3 reused from the cache",
        "feature cache: on, layers 1..1 reused from the cache"]


def test_phases_with_batch_norm_frozen_keep_its_statistics_and_extend_the_cached_prefix(write, tmp_path):
    """`freeze: {up_to: block1_conv1, batch_norm: true}`: block1_bn1 stays frozen (its moving
    statistics do not move) while block1_conv2 trains; the feature cache sees block1_bn1 as the
    frozen layer it is and caches through it (without batch_norm it stops at block1_bn1)."""
    import keras

    spec = SOURCE.format(name="bn", classes="0, 1, 2", dropout="").replace(
        "blocks: [{filters: 8, convs: 2}]", "blocks: [{filters: 8, convs: 2, batch_norm: true}]")
    extra = ("  phases:\n"
             "    - {freeze: all, epochs: 1}\n"
             "    - {freeze: {up_to: block1_conv1, batch_norm: true}, epochs: 2, learning_rate: 0.001}\n")
    path = write(spec + extra, "bn.yaml")
    source = tlc.load_spec(path)
    before = tlc.compile(source)
    result = train(source, tmp_path)
    model = keras.saving.load_model(result.folder / "model.keras").get_layer(result.model.name)
    flags = {layer.name: layer.trainable for layer in model.layers}
    assert flags["block1_conv1"] is False and flags["block1_bn1"] is False and flags["block1_bn2"] is False
    assert flags["block1_conv2"] is True
    for got, initial in zip(model.get_layer("block1_bn1").get_weights(), before.get_layer("block1_bn1").get_weights()):
        np.testing.assert_array_equal(got, initial)  # gamma, beta and the moving statistics: untouched
    assert result.metrics["phases"][1]["freeze"] == {"up_to": "block1_conv1", "batch_norm": True}
    assert result.metrics["feature_cache"][1].startswith("feature cache: on, layers 1..3 computed once "
                                                          "(up to block1_act1; block1_conv2 trains)")
    without = train(tlc.load_spec(write(spec + extra.replace(", batch_norm: true", ""), "bn.yaml")), tmp_path)
    assert without.metrics["feature_cache"][1].startswith("feature cache: on, layers 1..1")


@pytest.mark.parametrize("cache,distribute", [(True, "none"), (False, "none"), (True, "mirrored")])
def test_interrupted_run_resumes_to_the_same_result(write, tmp_path, cache, distribute):
    path = digits(write, extra="freeze: {up_to: 1}\n")
    path.write_text(path.read_text().replace("  seed: 1\n", f"  seed: 1\n  distribute: {distribute}\n"))
    spec = tlc.load_spec(path)
    whole = train(spec, tmp_path / "a", use_cache=cache)
    with pytest.raises(KeyboardInterrupt):
        train(spec, tmp_path / "b", use_cache=cache, reporter=StopAfter(2))
    partial = tmp_path / "b" / "src.partial"
    assert [r["epoch"] for r in rows_of(partial)] == ["0", "1"]
    assert not (tmp_path / "b" / "src").exists()
    # what a SIGKILL between state.json and the clean-up leaves: a half-written file, an old checkpoint
    (partial / ".tmp-999-history.csv").write_text("epoch\n")
    (partial / "ckpt-0.keras").write_bytes(b"stale")
    resumed = train(spec, tmp_path / "b", resume=True, use_cache=cache)
    assert rows_of(resumed.folder) == rows_of(whole.folder)
    assert [p.name for p in resumed.folder.iterdir() if p.name.startswith(".") or "ckpt" in p.name] == []
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert resumed.metrics["resumed"] is True


def test_resume_refuses_a_changed_spec_or_nothing_to_resume(write, tmp_path):
    path = digits(write)
    with pytest.raises(RunError, match="nothing to resume"):
        train(tlc.load_spec(path), tmp_path, resume=True)
    with pytest.raises(KeyboardInterrupt):
        train(tlc.load_spec(path), tmp_path, reporter=StopAfter(1))
    path.write_text(path.read_text().replace("units: [16]", "units: [12]"))
    with pytest.raises(RunError, match="the spec changed"):
        train(tlc.load_spec(path), tmp_path, resume=True)


def test_cached_and_uncached_runs_agree(write, tmp_path):
    spec = tlc.load_spec(digits(write, dropout="", extra="freeze: {up_to: block1_pool}\n"))
    cached = train(spec, tmp_path / "c")
    plain = train(spec, tmp_path / "p", use_cache=False)
    assert cached.metrics["feature_cache"] == [
        "feature cache: on, layers 1..4 computed once (up to head_flatten; head_dense1 trains)"]
    assert plain.metrics["feature_cache"] == ["feature cache: off (--no-cache)"]
    for a, b in zip(rows_of(cached.folder), rows_of(plain.folder)):
        for key in ("accuracy", "val_accuracy", "loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-3)


def test_cache_is_reused_and_invalidated(write, tmp_path):
    path = digits(write, dropout="", extra="freeze: all\n")
    train(tlc.load_spec(path), tmp_path)
    files = sorted((tmp_path / "src" / "cache").glob("*.npy"))
    assert len(files) == 2
    from tlc.train import cache

    calls = []
    real = cache._features

    def spy(forward, shapes, batches, rows, paths, batch_size, memory=None, mask_shape=None):
        calls.append(all(path.is_file() for path in paths))
        return real(forward, shapes, batches, rows, paths, batch_size, memory, mask_shape)

    import shutil

    shutil.copytree(tmp_path / "src" / "cache", tmp_path / "src.partial" / "cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "_features", spy)
        spec = tlc.load_spec(path)
        folder = tmp_path / "src.partial"
        model = __import__("tlc").compile(spec)
        from tlc import data as datasets

        feeds = datasets.feeds(spec, datasets.load(spec))
        part = cache.split(model, *feeds, folder / "cache", enabled=True)
        assert calls == [False, False]  # new random weights: a different key, recomputed
        calls.clear()
        cache.split(model, *feeds, folder / "cache", enabled=True)
        assert calls == [True, True]  # same weights and data: reused
    assert len(list((folder / "cache").glob("*.npy"))) == 4  # kept until the run ends
    kept = cache.drop_unused(folder / "cache", [part.key])
    assert sorted(p.name for p in (folder / "cache").glob("*.npy")) == [
        f"{part.key}-train.npy", f"{part.key}-val.npy"]
    assert kept == sum(p.stat().st_size for p in (folder / "cache").glob("*.npy"))


def test_a_cache_of_gigabytes_is_named_with_how_to_reclaim_it(tmp_path):
    from tlc.train import cache

    assert cache.kept_note(2**30 - 1, tmp_path / "cache") is None  # a head's features: not worth a line
    line = cache.kept_note(int(8.9 * 2**30), tmp_path / "runs" / "shapes" / "cache")
    assert line == (f"feature cache: 8.9 GB kept in {tmp_path / 'runs' / 'shapes' / 'cache'} so the next run of "
                    "this spec skips the frozen part; delete that folder to reclaim the space")


def test_a_rerun_with_another_head_reuses_the_finished_runs_features(write, tmp_path):
    path = digits(write, dropout="", extra="freeze: all\n")
    first = train(tlc.load_spec(path), tmp_path)
    assert "computed once" in first.metrics["feature_cache"][0]
    kept = sorted(p.name for p in (first.folder / "cache").glob("*.npy"))
    path.write_text(path.read_text().replace("units: [16]", "units: [24]"))
    second = train(tlc.load_spec(path), tmp_path)
    assert second.metrics["feature_cache"] == [
        "feature cache: on, layers 1..4 reused from the cache (up to head_flatten; head_dense1 trains)"]
    assert sorted(p.name for p in (second.folder / "cache").glob("*.npy")) == kept
    # another backbone: different features, recomputed, and the stale pair is gone
    path.write_text(path.read_text().replace("filters: 8", "filters: 4"))
    third = train(tlc.load_spec(path), tmp_path)
    assert "computed once" in third.metrics["feature_cache"][0]
    now = sorted(p.name for p in (third.folder / "cache").glob("*.npy"))
    assert len(now) == 2 and not set(now) & set(kept)


def test_cached_features_equal_the_prefix_output_for_any_length(write, tmp_path):
    """The last partial batch is padded to the traced shape; the padding must not leak out."""
    from tlc.train import cache

    spec = tlc.load_spec(digits(write, dropout="", extra="freeze: all\n"))
    model = tlc.compile(spec)
    x = np.random.default_rng(0).random((37, 8, 8, 1), dtype=np.float32)
    part = cache.split(model, Feed.of(x), Feed.of(x[:5]), tmp_path / "cache", enabled=True, batch_size=16)
    prefix_out = model.get_layer("head_flatten").output
    import keras

    expected = keras.Model(model.input, prefix_out).predict(x, verbose=0)
    features = part.train.examples.images
    assert features.shape == (37, *prefix_out.shape[1:])
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(part.val.examples.images, expected[:5], rtol=1e-5, atol=1e-6)
    # validation on features runs in batches of up to 64 MB, never below the training batch
    assert part.eval_batch_size == cache.EVAL_BATCH_BYTES // (4 * features.shape[1])
    empty = cache.split(model, Feed.of(x), Feed.of(x[:0]), tmp_path / "cache2", enabled=True, batch_size=16)
    assert empty.val.examples.images.shape == (0, *prefix_out.shape[1:])


def test_features_over_the_memory_limits_are_memory_mapped_or_gathered_and_train_the_same(write, tmp_path, monkeypatch):
    from tlc.train import cache

    spec = tlc.load_spec(digits(write, dropout="", extra="freeze: all\n"))
    in_memory = train(spec, tmp_path / "m", epochs=2)
    from tlc.data import pipeline

    monkeypatch.setattr(cache, "IN_MEMORY_LIMIT", 1024)
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT", 1024)  # and read back batch by batch
    model = tlc.compile(spec)
    x = np.zeros((40, 8, 8, 1), "float32")
    part = cache.split(model, Feed.of(x), Feed.of(x[:8]), tmp_path / "c", enabled=True)
    assert isinstance(part.train.examples.images, np.memmap) and len(part.train) == 40
    mapped = train(spec, tmp_path / "mm", epochs=2)
    assert rows_of(mapped.folder) == rows_of(in_memory.folder)
    monkeypatch.setattr(cache, "IN_MEMORY_LIMIT", 2**30)
    monkeypatch.setattr(pipeline, "HELD_LIMIT", 0)  # in memory, gathered batch by batch, not held as a tensor
    gathered = train(spec, tmp_path / "g", epochs=2)
    assert rows_of(gathered.folder) == rows_of(in_memory.folder)


def test_dropout_stops_the_cached_prefix(write, tmp_path):
    spec = tlc.load_spec(digits(write, extra="freeze: all\n"))
    result = train(spec, tmp_path, epochs=1)
    assert result.metrics["feature_cache"] == [
        "feature cache: on, layers 1..3 computed once (up to block1_pool; block1_dropout is random during training)"]


def test_cli_train_and_compare(write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = digits(write)
    result = run("train", spec, "--epochs", "1", "--runs", "out")
    assert result.exit_code == 0, result.output
    assert "wrote out/src: accuracy" in result.output and "after 1 epochs" in result.output
    result = run("compare", "out/src", "-o", "cmp.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert "src" in result.stdout and "wrote cmp.png" in result.stdout
    result = run("compare", "nowhere")
    assert result.exit_code == 1 and "nowhere is not a finished tlc run" in result.output


def test_cli_train_errors(write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    no_train = write("input: {shape: [8, 8, 1]}\nbackbone: {type: conv_stack, blocks: [{filters: 2}]}\n"
                     "head: {type: dense, classes: 3}\n", "nt.yaml")
    result = run("train", no_train)
    assert result.exit_code == 2 and "nt.yaml:1:1: tlc train needs a `train:` section" in result.output
    wrong = digits(write, "wrong", classes="0, 1")
    result = run("train", wrong, "--epochs", "1")
    assert result.exit_code == 2  # a located spec error, like every other
    assert re.search(r"wrong\.yaml:\d+:\d+: head\.classes: the head has 3 classes but the data has 2 \(0, 1\); "
                     r"set head\.classes: 2", result.output), result.output
    resized = digits(write, "big").read_text().replace("[8, 8, 1]", "[16, 16, 1]")
    result = run("train", write(resized, "big.yaml"), "--epochs", "1")
    assert result.exit_code == 2
    assert "train.data.resize: the images are 8x8 but input.shape is 16x16; set train.data.resize: [16, 16]" in result.output


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing(write, tmp_path):
    path = digits(write)
    path.write_text(path.read_text().replace("type: conv_stack", "type: conv_stack\n  weights: missing.keras"))
    with pytest.raises(tlc.SpecError, match="backbone.weights: file not found"):
        train(tlc.load_spec(path), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # the preflight refused it before anything was written


def test_a_full_disk_while_caching_features_is_a_clear_error_and_leaves_nothing(write, tmp_path, monkeypatch):
    import errno

    def full(handle, header):
        raise OSError(errno.ENOSPC, "No space left on device", str(handle.name))

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", full)
    with pytest.raises(RunError, match="No space left on device"):
        train(tlc.load_spec(digits(write, extra="freeze: all\n")), tmp_path / "runs")
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_graph_backbone_caches_up_to_a_cut_between_blocks_and_trains_like_no_cache(write, tmp_path):
    """MobileNetV2 frozen through block 13: the layers that train read one tensor of the frozen
    part, so it is cached, and the run matches --no-cache; frozen one layer further, a shortcut
    crosses the cut and both tensors are cached."""
    path = write("""
input: {shape: [32, 32, 3]}
backbone: {type: mobilenet_v2, alpha: 0.35}
freeze: {up_to: block_13_project_BN}
head: {type: dense, pooling: avg, classes: 3}
train: {data: {type: digits, classes: [0, 1, 2], resize: [32, 32]}, epochs: 2, seed: 4}
""", "graph.yaml")
    spec = tlc.load_spec(path)
    cached = train(spec, tmp_path / "c")
    assert cached.metrics["feature_cache"][0].startswith(
        "feature cache: on, layers 1..124 computed once (up to block_13_project_BN; block_14_expand trains)")
    plain = train(spec, tmp_path / "p", use_cache=False)
    for a, b in zip(rows_of(cached.folder), rows_of(plain.folder)):
        for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-3), key
    # Frozen one block further, a shortcut crosses the cut beside block 14's 1x1 expansion, which
    # is cheaper to run again at each step than to cache (6x the channels of what it reads): one
    # tensor is cached, and the run still matches --no-cache. (test_segmentation caches 2 taps.)
    shortcut = write(path.read_text().replace("block_13_project_BN", "block_14_expand_relu"), "shortcut.yaml")
    crossed = train(tlc.load_spec(shortcut), tmp_path / "s", epochs=1)
    assert crossed.metrics["feature_cache"][0].startswith(
        "feature cache: on, layers 1..127 computed once (up to block_13_project_BN; 3 cheap frozen layers after "
        "it run at each step; block_14_depthwise trains)")
    whole = train(tlc.load_spec(shortcut), tmp_path / "w", epochs=1, use_cache=False)
    for a, b in zip(rows_of(crossed.folder), rows_of(whole.folder)):
        for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-3), key


def test_features_of_a_megabyte_an_example_are_read_from_their_files(write, tmp_path, monkeypatch):
    """A decoder's taps (megabytes an example) stay in the page cache, read batch by batch:
    loaded, the validation set's alone held 160 MB of a U-Net's training."""
    from tlc.train import cache

    model = tlc.compile(tlc.load_spec(digits(write, dropout="", extra="freeze: all\n")))
    x = np.zeros((40, 8, 8, 1), "float32")
    held = cache.split(model, Feed.of(x), Feed.of(x[:8]), tmp_path / "c", enabled=True)
    assert not isinstance(held.train.examples.images, np.memmap)  # small rows: in memory
    monkeypatch.setattr(cache, "READ_ROWS_FROM", 4)  # every row counts as large
    part = cache.split(model, Feed.of(x), Feed.of(x[:8]), tmp_path / "c", enabled=True)
    assert isinstance(part.train.examples.images, np.memmap) and isinstance(part.val.examples.images, np.memmap)
    for a, b in zip(part.val.in_order(3), held.val.in_order(3), strict=True):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
