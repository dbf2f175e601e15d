"""The static plan must equal what Keras builds: per layer and in total, for every example and
a table of generated cases; and `min_input` must be exactly the edge where Keras starts to work."""
from __future__ import annotations

import textwrap

import pytest
import yaml

import tlc
from tlc.build.emit import compile as emit
from tlc.plan.planner import plan

from .conftest import EXAMPLES
from .helpers import keras_builds, keras_layers, spec_from_data, trainable_count, with_input, without_weights

CASES = {
    "seed_conv_stack": """
        input: {shape: [8, 8, 1]}
        backbone: {type: conv_stack, blocks: [{filters: 32, convs: 2, dropout: 0.25}]}
        head: {type: dense, units: [128], dropout: 0.25, classes: 5}
    """,
    "bn_strides_same_nonsquare": """
        input: {shape: [37, 23, 2]}
        backbone:
          type: conv_stack
          blocks:
            - {filters: 8, kernel_size: [5, 3], strides: [2, 1], padding: same, batch_norm: true, pool: avg}
            - {filters: 12, convs: 3, strides: 2, padding: same, batch_norm: true, activation: elu, pool: null}
        freeze: {up_to: 4}
        head: {type: dense, pooling: avg, units: [7, 5], activation: tanh, classes: 2, output_activation: sigmoid}
    """,
    "rect_pools_freeze_by_name": """
        input: {shape: [30, 50, 3]}
        backbone:
          type: conv_stack
          blocks:
            - {filters: 4, kernel_size: 1, pool_size: [3, 5]}
            - {filters: 6, kernel_size: [2, 4], pool: max, pool_size: [1, 2], dropout: 0.5}
        freeze: {up_to: block2_pool}
        head: {type: dense, pool_size: [2, 1], pooling: max, classes: 4, output_activation: linear}
    """,
    "vgg16_top_small_classes": """
        input: {shape: [64, 64, 3]}
        backbone: {type: vgg16, include_top: true, classes: 7}
        freeze: {up_to: 14}
        head: {type: none}
    """,
    "vgg16_cut_index_gap_head": """
        input: {shape: [40, 72, 1]}
        backbone: {type: vgg16, output: 10}
        freeze: all
        head: {type: dense, pooling: avg, classes: 3}
    """,
    "vgg16_cut_fc2_frozen": """
        input: {shape: [32, 32, 3]}
        backbone: {type: vgg16, include_top: true, classes: 10, output: fc2}
        freeze: all
        head: {type: dense, units: [16], classes: 2}
    """,
    "no_head_feature_map": """
        input: {shape: [16, 16, 3]}
        backbone: {type: conv_stack, blocks: [{filters: 5, padding: same, pool: null}]}
        head: {type: none}
    """,
}


def spec_from(text: str, name: str = "case"):
    return spec_from_data(yaml.safe_load(textwrap.dedent(text)), name)


def assert_plan_equals_keras(spec) -> None:
    planned = plan(spec)
    assert planned.ok, planned.failure_message()
    model = emit(spec)
    planned_layers = [{"name": p.name, "kind": p.kind, "output_shape": p.output_shape,
                       "params": p.params, "trainable": p.trainable} for p in planned.layers]
    assert planned_layers == keras_layers(model)
    assert planned.params()["total"] == model.count_params()
    assert planned.params()["trainable"] == trainable_count(model)
    assert tuple(model.output.shape[1:]) == planned.output_shape
    assert model.name == spec.name


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_case_matches_keras(case):
    assert_plan_equals_keras(spec_from(CASES[case], case))


INFEASIBLE = {
    "vgg48_avgpool4": (EXAMPLES / "vgg16_too_small_48.yaml", (128, 128)),
}
MISALIGNED = {EXAMPLES / "unet_vgg16_250.yaml": ((224, 224), (256, 256))}  # infeasible by alignment, not size
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.yaml")
                       if p not in {f for f, _ in INFEASIBLE.values()} and p not in MISALIGNED)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_every_feasible_example_matches_keras(path):
    assert_plan_equals_keras(without_weights(tlc.load_spec(path)))


def test_every_example_is_feasible_or_has_a_min_input_test():
    for path in EXAMPLES.glob("*.yaml"):
        infeasible = path in {f for f, _ in INFEASIBLE.values()} or path in MISALIGNED
        assert plan(tlc.load_spec(path)).ok != infeasible, path


@pytest.mark.parametrize("path", sorted(MISALIGNED), ids=[p.stem for p in sorted(MISALIGNED)])
def test_a_misaligned_example_names_the_sizes_that_build(path):
    planned = plan(without_weights(tlc.load_spec(path)))
    below, above = MISALIGNED[path]
    assert planned.failure.misaligned and planned.aligned[1:] == (below, above)
    for size in (below, above):
        assert plan(without_weights(tlc.load_spec(path)), input_shape=(*size, 3)).ok
INFEASIBLE_TEXT = {
    "conv_valid_stack": ("""
        input: {shape: [6, 9, 1]}
        backbone: {type: conv_stack, blocks: [{filters: 2, kernel_size: [5, 3], convs: 2}, {filters: 2}]}
        head: {type: dense, classes: 2}
    """, (16, 12)),
    "strided_nonsquare": ("""
        input: {shape: [4, 4, 3]}
        backbone: {type: conv_stack, blocks: [{filters: 2, kernel_size: 3, strides: [3, 2], pool_size: [2, 3]}]}
        head: {type: dense, pool_size: [2, 1], classes: 2}
    """, (12, 7)),
    "vgg_cut_min32": ("""
        input: {shape: [20, 100, 3]}
        backbone: {type: vgg16, output: block2_pool}
        head: {type: dense, classes: 2}
    """, (32, 32)),
}


def _infeasible_specs():
    for name, (path, expected) in INFEASIBLE.items():
        yield pytest.param(without_weights(tlc.load_spec(path)), expected, id=name)
    for name, (text, expected) in INFEASIBLE_TEXT.items():
        yield pytest.param(spec_from(text, name), expected, id=name)


@pytest.mark.parametrize("spec,expected", list(_infeasible_specs()))
def test_min_input_is_where_keras_starts_to_build(spec, expected):
    planned = plan(spec)
    assert not planned.ok
    assert planned.min_input == expected
    h, w = expected
    assert keras_builds(spec, h, w)
    assert not keras_builds(spec, h - 1, w)
    assert not keras_builds(spec, h, w - 1)
    assert plan(with_input(spec, h, w)).ok
    assert not plan(with_input(spec, h - 1, w)).ok and not plan(with_input(spec, h, w - 1)).ok


def test_freeze_up_to_index_equals_up_to_name_and_keras_idiom():
    by_index = spec_from(CASES["vgg16_top_small_classes"])  # up_to: 14
    by_name = spec_from(CASES["vgg16_top_small_classes"].replace("up_to: 14", "up_to: block4_pool"))
    a, b = emit(by_index), emit(by_name)
    assert [l.trainable for l in a.layers] == [l.trainable for l in b.layers]
    import keras

    base = keras.applications.VGG16(include_top=True, weights=None, input_shape=(64, 64, 3), classes=7)
    for layer in base.layers[:15]:
        layer.trainable = False
    assert [l.trainable for l in a.layers] == [l.trainable for l in base.layers]
    assert trainable_count(a) == trainable_count(base)
