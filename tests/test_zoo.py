"""The backbone zoo (every registered keras.applications type), held against Keras itself: the
static plan equals the built model layer by layer at several input sizes and freeze policies,
`min_input` is exactly where Keras starts to accept the input, and none of it imports TensorFlow."""
from __future__ import annotations

import json
import urllib.error

import pytest

from tlc.build.emit import compile as emit, set_frozen
from tlc.plan.planner import plan
from tlc.plugin import zoo
from tlc.plugins.applications import Application
from tlc.plugin.registry import get_registry

from .conftest import tlc as run
from .helpers import in_fresh_interpreter, keras_builds, keras_layers, one_type_per_family, spec_from_data, \
    trainable_count


#: every built-in keras.applications type (the contract's 40), with extra options to plan with
ZOO = sorted(name for name, info in get_registry().backbones.items() if issubclass(info.cls, Application))
OPTIONS = {"mobilenet_v2": {"alpha": 0.75}, "mobilenet": {"alpha": 0.5}, "mobilenet_v3_small": {"minimalistic": True},
           "mobilenet_v3_large": {"alpha": 0.75}}
#: one type per family module (the variants of a family share its description code)
FAMILIES = one_type_per_family()


def spec_of(kind: str, shape, *, freeze="none", head=None, **backbone):
    return spec_from_data({"input": {"shape": list(shape)}, "freeze": freeze,
                           "backbone": {"type": kind, **OPTIONS.get(kind, {}), **backbone},
                           "head": head or {"type": "none"}}, f"{kind}_case")


def described(planned) -> list[tuple]:
    return [(p.name, p.kind, p.output_shape, p.params, p.trainable) for p in planned.layers]


def as_keras_says(model) -> list[tuple]:
    return [(k["name"], k["kind"], k["output_shape"], k["params"], k["trainable"]) for k in keras_layers(model)]


def keras_accepts(kind: str, h: int, w: int) -> bool:
    """Keras's own input rule (its ValueError comes before any layer is built)."""
    import keras

    cls = get_registry().backbones[kind].cls
    try:
        getattr(keras.applications, cls.keras_function)(include_top=False, weights=None, input_shape=(h, w, 3),
                                                         **OPTIONS.get(kind, {}))
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_the_zoo_is_the_contracts_forty():
    import keras

    assert len(ZOO) == 40 and len(zoo.MODELS) == 40
    assert {row.keras for row in zoo.MODELS} == {n for n in dir(keras.applications) if n[0].isupper()}
    assert {row.type for row in zoo.MODELS} == set(ZOO)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ZOO)
def test_plan_equals_keras_layer_by_layer(kind):
    """Non-square, odd, with Keras's minimum width (correct_pad depends on the sides' parity):
    names, order, kinds, shapes, params and trainable flags under four freeze policies; and
    `min_input` is exactly where Keras starts to accept the input."""
    cls = get_registry().backbones[kind].cls
    m = cls.min_size
    shape = (m + 17, m, 3)
    middle = len(plan(spec_of(kind, shape)).layers) // 2
    planned = plan(spec_of(kind, shape, freeze={"up_to": middle}))
    model = emit(spec_of(kind, shape, freeze={"up_to": middle}))
    assert described(planned) == as_keras_says(model)
    assert planned.params() == {"total": model.count_params(), "trainable": trainable_count(model),
                                "non_trainable": model.count_params() - trainable_count(model)}
    name = planned.layers[middle].name
    by_name = plan(spec_of(kind, shape, freeze={"up_to": name}))
    assert [p.trainable for p in by_name.layers] == [p.trainable for p in planned.layers]
    fine_tune = plan(spec_of(kind, shape, freeze={"up_to": middle, "batch_norm": True}))
    set_frozen(model, middle, batch_norm=True)
    assert described(fine_tune) == as_keras_says(model)
    assert fine_tune.params()["trainable"] == trainable_count(model)
    frozen_all = plan(spec_of(kind, shape, freeze="all"))
    set_frozen(model, len(model.layers) - 1)
    assert [p.trainable for p in frozen_all.layers] == [layer.trainable for layer in model.layers]
    assert frozen_all.params()["trainable"] == trainable_count(model) == 0
    alone = plan(spec_of(kind, (m - 1, m + 5, 3)))
    assert not alone.ok and alone.min_input == (m, m) and alone.failure.layer == "input"
    assert not keras_accepts(kind, m - 1, m) and not keras_accepts(kind, m, m - 1)  # and (m + 17, m) built above


@pytest.mark.slow
@pytest.mark.parametrize("kind", ZOO)
def test_plan_equals_keras_with_the_top_and_at_a_cut(kind):
    import keras

    cls = get_registry().backbones[kind].cls
    shape = (cls.min_size, cls.min_size + 8, 3)
    top = spec_of(kind, shape, include_top=True, classes=7)
    planned = plan(top)
    model = emit(top)
    assert planned.layers[-1].output_shape == (7,) and described(planned) == as_keras_says(model)
    cut_at = planned.layers[len(planned.layers) * 2 // 3].name  # a graph cut keeps only what the cut layer needs
    cut = keras.Model(model.input, model.get_layer(cut_at).output)
    assert described(plan(spec_of(kind, shape, include_top=True, classes=7, output=cut_at))) == as_keras_says(cut)


@pytest.mark.slow
@pytest.mark.parametrize("kind", FAMILIES)
def test_min_input_follows_the_networks_arithmetic(kind):
    """A head that needs a 5x5 map: the edge now comes from the network's own strides and
    paddings, and Keras agrees on both sides of it."""
    m = get_registry().backbones[kind].cls.min_size
    needy = spec_of(kind, (m, m, 3), head={"type": "dense", "pool_size": 5, "classes": 2})
    h, w = plan(needy, min_input=True).min_input
    assert h > m and w > m and plan(needy.model_copy(update={"input": needy.input.model_copy(
        update={"shape": [h, w, 3]})})).ok
    assert keras_builds(needy, h, w) and not keras_builds(needy, h - 1, w) and not keras_builds(needy, h, w - 1)


@pytest.mark.slow
def test_check_and_summarize_of_every_zoo_type_never_import_tensorflow(tmp_path):
    """Check all 40 at 80x96 (each type's min_input too) and summarize a fine-tuning spec."""
    paths = []
    for kind in ZOO:
        path = tmp_path / f"{kind}.yaml"
        path.write_text(f"input: {{shape: [80, 96, 3]}}\nbackbone: {{type: {kind}}}\nfreeze: all\n"
                        "head: {type: dense, pooling: avg, classes: 5}\n")
        paths.append(str(path))
    fine = tmp_path / "fine.yaml"
    fine.write_text("input: {shape: [96, 96, 3]}\nbackbone: {type: resnet50}\n"
                    "freeze: {up_to: conv4_block6_out, batch_norm: true}\nhead: {type: dense, pooling: avg, classes: 5}\n")
    (checked, summarized), imported = in_fresh_interpreter(["check", "--json", *paths],
                                                          ["summarize", str(fine), "--json"])
    reports = json.loads(checked["stdout"])
    assert checked["exit_code"] == 0 and summarized["exit_code"] == 0 and imported == []
    assert len(reports) == 40 and all(r["ok"] and r["params"]["trainable"] > 0 and r["min_input"] for r in reports)
    layers = json.loads(summarized["stdout"])["layers"]
    batch_norms = [layer for layer in layers if layer["kind"] == "BatchNormalization"]
    assert len(batch_norms) == 53 and not any(layer["trainable"] for layer in batch_norms)
    assert json.loads(summarized["stdout"])["frozen_batch_norms"] == 53
    assert [layer["trainable"] for layer in layers if layer["name"] == "conv5_block1_1_conv"] == [True]


@pytest.mark.slow
def test_summarize_of_a_frozen_efficientnet_has_keras_summary_totals(write, capsys):
    path = write("input: {shape: [224, 224, 3]}\nbackbone: {type: efficientnet_b0}\nfreeze: all\n"
                 "head: {type: dense, pooling: avg, classes: 5}\n")
    text = run("summarize", path).stdout
    import tlc

    tlc.compile(tlc.load_spec(path)).summary()
    keras_text = capsys.readouterr().out
    for label, ours in (("Total params", "total params"), ("Trainable params", "trainable"),
                        ("Non-trainable params", "frozen (non-trainable)")):
        theirs = next(line for line in keras_text.splitlines() if line.strip().startswith(label + ":"))
        number = theirs.split(":")[1].split("(")[0].strip()
        assert f"{ours}: {number}" in text, (label, number, text[-300:])


def test_zoo_rules_are_located_errors(write):
    cases = {
        "backbone: {type: resnet50, weights: imagenet, include_top: true}\ninput: {shape: [224, 224, 1]}\n":
            "input.shape: resnet50 with include_top and imagenet weights needs input [224, 224, 3]",
        "backbone: {type: xception, weights: imagenet, include_top: true}\ninput: {shape: [224, 224, 3]}\n":
            "xception with include_top and imagenet weights needs input [299, 299, 3]",
        "backbone: {type: mobilenet_v2, weights: imagenet, alpha: 0.6}\ninput: {shape: [96, 96, 3]}\n":
            "backbone: imagenet weights exist for alpha 0.35, 0.5, 0.75, 1.0, 1.3, 1.4; received: 0.6",
        "backbone: {type: densenet121, classes: 10}\ninput: {shape: [96, 96, 3]}\n":
            "classes is only used with include_top: true",
    }
    for text, message in cases.items():
        result = run("check", write(text + "head: {type: dense, pooling: avg, classes: 2}\n"))
        assert result.exit_code == 2 and message in result.output and "spec.yaml:" in result.output, result.output
    small = run("check", write("input: {shape: [70, 100, 3]}\nbackbone: {type: xception}\nhead: {type: none}\n"))
    assert small.exit_code == 1
    assert "input needs at least 71x71 (Keras's Xception minimum), got 70x100x3" in small.output


@pytest.mark.slow
def test_imagenet_offline_names_the_zoo_file_to_cache(write, tmp_path, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "kh"))
    path = write("input: {shape: [64, 64, 3]}\nbackbone: {type: resnet50, weights: imagenet}\nhead: {type: none}\n")
    result = run("build", path, "-o", tmp_path / "out.keras")
    assert result.exit_code == 1, result.output
    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert f"weights: imagenet: could not download {name}" in result.output
    assert f"copy {name} into {tmp_path / 'kh' / 'models'}/" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.keras").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind,mode", [("resnet50", "caffe"), ("resnet50_v2", "tf"), ("densenet121", "torch")])
def test_preprocessing_is_the_familys(kind, mode):
    import numpy as np
    from keras.applications.imagenet_utils import preprocess_input

    x = np.random.default_rng(0).random((2, 40, 40, 3), dtype=np.float32)
    got = np.asarray(spec_of(kind, (40, 40, 3)).backbone.preprocess(x))
    np.testing.assert_allclose(got, preprocess_input(x * 255.0, mode=mode), rtol=1e-6)
    efficient = np.asarray(spec_of("efficientnet_b0", (40, 40, 3)).backbone.preprocess(x))
    np.testing.assert_allclose(efficient, x * 255.0)  # its rescaling and normalization are model layers
