"""Segmentation decoders over backbone taps: the plan equals the built Keras model layer for layer,
the parameters equal segmentation_models' Unet built the way that library builds it (its
`build_unet`, written again below in Keras 3, since the library itself no longer imports), and
`check` finds a missing tap or a skip that meets its tap at another size without TensorFlow,
naming the input sizes that work."""
from __future__ import annotations

import functools
import json

import pytest

import tlc
from tlc.plan.planner import plan

from .conftest import tlc as run_cli
from .helpers import in_fresh_interpreter, keras_layers, spec_from_data, trainable_count, unboxed

SM_TAPS = {  # segmentation_models' Backbones._default_feature_layers, first four
    "vgg16": ("block5_conv3", "block4_conv3", "block3_conv3", "block2_conv2"),
    "mobilenet_v2": ("block_13_expand_relu", "block_6_expand_relu", "block_3_expand_relu", "block_1_expand_relu"),
    "efficientnet_b0": ("block6a_expand_activation", "block4a_expand_activation", "block3a_expand_activation",
                        "block2a_expand_activation"),
    "densenet121": ("pool4_conv", "pool3_conv", "pool2_conv", "conv1_relu"),
}


def sm_conv3x3(width, name, batch_norm=True, kernel=3):
    """segmentation_models' Conv3x3BnReLU (its Conv2dBn with he_uniform, same padding, ReLU), or
    with `kernel=1` its Conv1x1BnReLU."""
    from keras import layers

    def apply(x):
        x = layers.Conv2D(width, kernel, padding="same", use_bias=not batch_norm, kernel_initializer="he_uniform",
                          name=name + "_conv")(x)
        if batch_norm:
            x = layers.BatchNormalization(axis=3, name=name + "_bn")(x)
        return layers.Activation("relu", name=name + "_relu")(x)
    return apply


def segmentation_models_unet(backbone, skips, block="upsampling", filters=(256, 128, 64, 32, 16), classes=3,
                             batch_norm=True):
    """segmentation_models.models.unet.build_unet, line for line, in Keras 3."""
    import keras
    from keras import layers

    conv3x3 = functools.partial(sm_conv3x3, batch_norm=batch_norm)

    x = backbone.output
    taps = [backbone.get_layer(name).output for name in skips]
    if isinstance(backbone.layers[-1], layers.MaxPooling2D):
        x = conv3x3(512, "center_block1")(x)
        x = conv3x3(512, "center_block2")(x)
    for i, width in enumerate(filters):
        if block == "upsampling":
            x = layers.UpSampling2D(size=2, name=f"decoder_stage{i}_upsampling")(x)
            if i < len(taps):
                x = layers.Concatenate(axis=3, name=f"decoder_stage{i}_concat")([x, taps[i]])
            x = conv3x3(width, f"decoder_stage{i}a")(x)
            x = conv3x3(width, f"decoder_stage{i}b")(x)
        else:
            x = layers.Conv2DTranspose(width, (4, 4), strides=(2, 2), padding="same", use_bias=not batch_norm,
                                       name=f"decoder_stage{i}a_transpose")(x)
            if batch_norm:
                x = layers.BatchNormalization(axis=3, name=f"decoder_stage{i}a_bn")(x)
            x = layers.Activation("relu", name=f"decoder_stage{i}a_relu")(x)
            if i < len(taps):
                x = layers.Concatenate(axis=3, name=f"decoder_stage{i}_concat")([x, taps[i]])
            x = conv3x3(width, f"decoder_stage{i}b")(x)
    x = layers.Conv2D(classes, (3, 3), padding="same", use_bias=True, name="final_conv")(x)
    x = layers.Activation("softmax", name="softmax")(x)
    return keras.Model(backbone.input, x)


def segmentation_models_linknet(backbone, skips, block="upsampling", filters=(None, None, None, None, 16), classes=3,
                                batch_norm=True):
    """segmentation_models.models.linknet.build_linknet, line for line, in Keras 3 (its last
    convolution, unnamed there, named `final_conv` as tlc names it)."""
    import keras
    from keras import layers

    def conv(width, kernel, name):
        return sm_conv3x3(width, name, batch_norm, kernel)

    x = backbone.output
    taps = [backbone.get_layer(name).output for name in skips]
    if isinstance(backbone.layers[-1], layers.MaxPooling2D):
        x = conv(512, 3, "center_block1")(x)
        x = conv(512, 3, "center_block2")(x)
    for i, width in enumerate(filters):
        skip = taps[i] if i < len(taps) else None
        quarter = x.shape[-1] // 4
        out = skip.shape[-1] if skip is not None else width
        x = conv(quarter, 1, f"decoder_stage{i}a")(x)
        if block == "upsampling":
            x = layers.UpSampling2D((2, 2), name=f"decoder_stage{i}_upsampling")(x)
            x = conv(quarter, 3, f"decoder_stage{i}b")(x)
        else:
            x = layers.Conv2DTranspose(quarter, (4, 4), strides=(2, 2), padding="same", use_bias=not batch_norm,
                                       name=f"decoder_stage{i}b_transpose")(x)
            if batch_norm:
                x = layers.BatchNormalization(axis=3, name=f"decoder_stage{i}b_bn")(x)
            x = layers.Activation("relu", name=f"decoder_stage{i}b_relu")(x)
        x = conv(out, 1, f"decoder_stage{i}c")(x)
        if skip is not None:
            x = layers.Add(name=f"decoder_stage{i}_add")([x, skip])
    x = layers.Conv2D(classes, (3, 3), padding="same", use_bias=True, kernel_initializer="glorot_uniform",
                      name="final_conv")(x)
    return keras.Model(backbone.input, layers.Activation("softmax", name="softmax")(x))


def segmentation_models_psp(backbone, psp_layer, factor=8, filters=512, classes=3, pooling="avg", batch_norm=True):
    """segmentation_models.models.pspnet.build_psp (with its SpatialContextBlock), line for line,
    in Keras 3."""
    import keras
    from keras import layers

    def conv1x1(x, name):
        return sm_conv3x3(filters, name, batch_norm, kernel=1)(x)

    def level(x, k):
        size = [x.shape[1] // k, x.shape[2] // k]
        pool = layers.MaxPool2D if pooling == "max" else layers.AveragePooling2D
        y = pool(size, strides=size, padding="same", name=f"psp_level{k}_pooling")(x)
        y = conv1x1(y, f"psp_level{k}")
        return layers.UpSampling2D(size, interpolation="bilinear", name=f"psp_level{k}_upsampling")(y)

    x = backbone.get_layer(psp_layer).output
    x = layers.Concatenate(axis=3, name="psp_concat")([x, level(x, 1), level(x, 2), level(x, 3), level(x, 6)])
    x = conv1x1(x, "aggregation")
    x = layers.Conv2D(classes, (3, 3), padding="same", kernel_initializer="glorot_uniform", name="final_conv")(x)
    x = layers.UpSampling2D(factor, name="final_upsampling", interpolation="bilinear")(x)
    return keras.Model(backbone.input, layers.Activation("softmax", name="softmax")(x))


def segmentation_models_fpn(backbone, skips, pyramid=256, classes=3, aggregation="concat", batch_norm=True):
    """segmentation_models.models.fpn.build_fpn, line for line, in Keras 3 (segmentation
    channels: half the pyramid's, as its `FPN` passes them)."""
    import keras
    from keras import layers

    conv3x3 = functools.partial(sm_conv3x3, batch_norm=batch_norm)

    def block(x, skip, stage):
        if x.shape[-1] != pyramid:
            x = layers.Conv2D(pyramid, (1, 1), kernel_initializer="he_uniform", name=f"fpn_stage_p{stage}_pre_conv")(x)
        skip = layers.Conv2D(pyramid, (1, 1), kernel_initializer="he_uniform", name=f"fpn_stage_p{stage}_conv")(skip)
        x = layers.UpSampling2D((2, 2), name=f"fpn_stage_p{stage}_upsampling")(x)
        return layers.Add(name=f"fpn_stage_p{stage}_add")([x, skip])

    taps = [backbone.get_layer(name).output for name in skips]
    p5 = block(backbone.output, taps[0], 5)
    p4 = block(p5, taps[1], 4)
    p3 = block(p4, taps[2], 3)
    p2 = block(p3, taps[3], 2)
    half = pyramid // 2
    s5, s4, s3, s2 = (conv3x3(half, f"segm_stage{k}b")(conv3x3(half, f"segm_stage{k}a")(p))
                      for k, p in ((5, p5), (4, p4), (3, p3), (2, p2)))
    s5 = layers.UpSampling2D((8, 8), interpolation="nearest", name="upsampling_stage5")(s5)
    s4 = layers.UpSampling2D((4, 4), interpolation="nearest", name="upsampling_stage4")(s4)
    s3 = layers.UpSampling2D((2, 2), interpolation="nearest", name="upsampling_stage3")(s3)
    x = layers.Add(name="aggregation_sum")([s2, s3, s4, s5]) if aggregation == "sum" else \
        layers.Concatenate(axis=3, name="aggregation_concat")([s2, s3, s4, s5])
    x = conv3x3(half, "final_stage")(x)
    x = layers.UpSampling2D(size=(2, 2), interpolation="bilinear", name="final_upsampling")(x)
    x = layers.Conv2D(classes, (3, 3), padding="same", use_bias=True, name="head_conv")(x)
    return keras.Model(backbone.input, layers.Activation("softmax", name="softmax")(x))


def keras_example_deeplab_v3_plus(backbone, high, low, classes):
    """keras.io's "Multiclass semantic segmentation using DeepLabV3+" (its `DeeplabV3Plus`, with
    `convolution_block` and `DilatedSpatialPyramidPooling`), line for line in Keras 3."""
    import keras
    from keras import layers, ops

    def convolution_block(block_input, num_filters=256, kernel_size=3, dilation_rate=1, use_bias=False):
        x = layers.Conv2D(num_filters, kernel_size=kernel_size, dilation_rate=dilation_rate, padding="same",
                          use_bias=use_bias, kernel_initializer=keras.initializers.HeNormal())(block_input)
        x = layers.BatchNormalization()(x)
        return ops.nn.relu(x)

    def dilated_spatial_pyramid_pooling(dspp_input):
        dims = dspp_input.shape
        x = layers.AveragePooling2D(pool_size=(dims[-3], dims[-2]))(dspp_input)
        x = convolution_block(x, kernel_size=1, use_bias=True)
        out_pool = layers.UpSampling2D(size=(dims[-3] // x.shape[1], dims[-2] // x.shape[2]),
                                       interpolation="bilinear")(x)
        outs = [convolution_block(dspp_input, kernel_size=1, dilation_rate=1)]
        outs += [convolution_block(dspp_input, kernel_size=3, dilation_rate=rate) for rate in (6, 12, 18)]
        return convolution_block(layers.Concatenate(axis=-1)([out_pool, *outs]), kernel_size=1)

    size = backbone.inputs[0].shape[1]
    x = dilated_spatial_pyramid_pooling(backbone.get_layer(high).output)
    input_a = layers.UpSampling2D(size=(size // 4 // x.shape[1], size // 4 // x.shape[2]),
                                  interpolation="bilinear")(x)
    input_b = convolution_block(backbone.get_layer(low).output, num_filters=48, kernel_size=1)
    x = convolution_block(convolution_block(layers.Concatenate(axis=-1)([input_a, input_b])))
    x = layers.UpSampling2D(size=(size // x.shape[1], size // x.shape[2]), interpolation="bilinear")(x)
    return keras.Model(backbone.inputs, layers.Conv2D(classes, kernel_size=(1, 1), padding="same")(x))


def deeplab_spec(side: int, classes: int, **backbone):
    return spec_from_data({"task": "segmentation", "input": {"shape": [side, side, 3]},
                           "backbone": {"type": "resnet50", "weights": None, "output": "conv4_block6_2_relu",
                                        **backbone},
                           "head": {"type": "deeplab_v3_plus", "classes": classes,
                                    "taps": ["conv2_block3_2_relu"]}}, "deeplab")


def test_deeplab_v3_plus_has_the_keras_examples_parameter_count():
    # keras.io's DeepLabV3+ on ResNet50 at 512x512 with 20 classes: "Total params: 11,857,236"
    assert plan(deeplab_spec(512, 20)).params() == {"total": 11_857_236, "trainable": 11_824_500,
                                                    "non_trainable": 32_736}


@pytest.mark.slow
def test_deeplab_v3_plus_equals_the_keras_example_and_its_plan():
    import keras

    spec = deeplab_spec(64, 5)
    planned = plan(spec)
    model = tlc.compile(spec)
    planned_layers = [{"name": p.name, "kind": p.kind, "output_shape": p.output_shape,
                       "params": p.params, "trainable": p.trainable} for p in planned.layers]
    assert planned_layers == keras_layers(model)
    assert tuple(model.output.shape[1:]) == (64, 64, 5)
    keras.backend.clear_session()
    reference = keras_example_deeplab_v3_plus(spec.backbone.build((64, 64, 3)), "conv4_block6_2_relu",
                                              "conv2_block3_2_relu", 5)
    assert model.count_params() == reference.count_params()
    keras.backend.clear_session()


def test_deeplab_v3_plus_takes_the_stride_4_tap_and_refuses_a_coarse_one(write):
    spec = spec_from_data({"task": "segmentation", "input": {"shape": [128, 128, 3]},
                           "backbone": {"type": "mobilenet_v2", "weights": None, "output": "block_13_expand_relu"},
                           "head": {"type": "deeplab_v3_plus", "classes": 2}}, "deeplab")
    planned = plan(spec)
    assert planned.ok and planned.taps == {"block_3_expand_relu": "low_level_conv"} \
        and planned.output_shape == (128, 128, 2)
    path = write("task: segmentation\ninput: {shape: [128, 128, 3]}\nbackbone: {type: vgg16, weights: null}\n"
                 "head: {type: deeplab_v3_plus, classes: 2, taps: [block5_pool]}\n")
    result = run_cli("check", path)
    assert result.exit_code == 2 and "head.taps: block5_pool is at stride 32, not below" in unboxed(result.output)


def unet_spec(backbone: str, side: int = 64, **head):
    return spec_from_data({"task": "segmentation", "input": {"shape": [side, side, 3]},
                           "backbone": {"type": backbone, "weights": None},
                           "head": {"type": "unet", "classes": 3, **head}}, f"unet_{backbone}")


@pytest.mark.slow
@pytest.mark.parametrize("block", ["upsampling", "transpose"])
@pytest.mark.parametrize("backbone", sorted(SM_TAPS))
def test_unet_equals_segmentation_models_and_its_plan(backbone, block):
    assert_plan_and_reference_equal(unet_spec(backbone, block=block), 64, ("decoder", "center", "final"),
                                    lambda encoder: segmentation_models_unet(encoder, SM_TAPS[backbone], block))


def assert_plan_and_reference_equal(spec, side: int, decoder: tuple[str, ...], reference) -> None:
    """The plan equals the built model layer for layer (names, order, shapes, params, trainable
    flags), a mask per input pixel comes out, and the parameters and the decoder's layer names (by
    prefix) equal `reference`'s: segmentation_models' build, given the whole encoder model."""
    import keras

    planned = plan(spec)
    assert planned.ok, planned.failure_message()
    model = tlc.compile(spec)
    planned_layers = [{"name": p.name, "kind": p.kind, "output_shape": p.output_shape,
                       "params": p.params, "trainable": p.trainable} for p in planned.layers]
    assert planned_layers == keras_layers(model)
    assert planned.params()["trainable"] == trainable_count(model)
    assert tuple(model.output.shape[1:]) == (side, side, 3)
    keras.backend.clear_session()
    built = reference(spec.backbone.model_copy(update={"output": None}).build((side, side, 3)))
    assert model.count_params() == built.count_params()
    assert [layer.name for layer in model.layers if layer.name.startswith(decoder)] == \
        [layer.name for layer in built.layers if layer.name.startswith(decoder)]
    keras.backend.clear_session()


@pytest.mark.slow
@pytest.mark.parametrize("backbone, aggregation", [(b, "concat") for b in sorted(SM_TAPS)] + [("vgg16", "sum")])
def test_fpn_equals_segmentation_models_and_its_plan(backbone, aggregation):
    import keras

    spec = spec_from_data({"task": "segmentation", "input": {"shape": [64, 64, 3]},
                           "backbone": {"type": backbone, "weights": None}, "head": {"type": "fpn", "classes": 3, "aggregation": aggregation}}, f"fpn_{backbone}")
    planned = plan(spec)
    assert planned.ok, planned.failure_message()
    model = tlc.compile(spec)
    assert [(p.name, p.output_shape, p.params) for p in planned.layers] == \
        [(layer["name"], layer["output_shape"], layer["params"]) for layer in keras_layers(model)]
    assert tuple(model.output.shape[1:]) == (64, 64, 3)
    keras.backend.clear_session()
    reference = segmentation_models_fpn(spec.backbone.build((64, 64, 3)), SM_TAPS[backbone], aggregation=aggregation)
    assert model.count_params() == reference.count_params()
    decoder = ("fpn", "segm", "upsampling", "aggregation", "final", "head_conv")
    assert sorted(layer.name for layer in model.layers if layer.name.startswith(decoder)) == \
        sorted(layer.name for layer in reference.layers if layer.name.startswith(decoder))
    keras.backend.clear_session()


@pytest.mark.slow
@pytest.mark.parametrize("backbone, block", [(b, "upsampling") for b in sorted(SM_TAPS)] + [("vgg16", "transpose")])
def test_linknet_equals_segmentation_models_and_its_plan(backbone, block):
    spec = spec_from_data({"input": {"shape": [64, 64, 3]}, "backbone": {"type": backbone, "weights": None},
                           "head": {"type": "linknet", "classes": 3, "block": block}}, f"linknet_{backbone}")
    assert spec.task.type == "segmentation"
    assert_plan_and_reference_equal(spec, 64, ("decoder", "center", "final"),
                                    lambda encoder: segmentation_models_linknet(encoder, SM_TAPS[backbone], block))


@pytest.mark.slow
@pytest.mark.parametrize("backbone, pooling", [(b, "avg") for b in sorted(SM_TAPS)] + [("vgg16", "max")])
def test_pspnet_equals_segmentation_models_and_its_plan(backbone, pooling):
    cut = SM_TAPS[backbone][1]  # segmentation_models' PSPNet layer for downsample_factor 8
    spec = spec_from_data({"input": {"shape": [96, 96, 3]}, "backbone": {"type": backbone, "weights": None,
                                                                        "output": cut},
                           "head": {"type": "pspnet", "classes": 3, "pooling": pooling}}, f"psp_{backbone}")
    assert_plan_and_reference_equal(spec, 96, ("psp", "aggregation", "final"),
                                    lambda encoder: segmentation_models_psp(encoder, cut, pooling=pooling))


@pytest.mark.parametrize("text, message", [
    ("input: {shape: [250, 250, 3]}\nbackbone: {type: vgg16, weights: null, output: block4_conv3}\n", (
        1, "psp_level2_pooling pools 31x31 into 2x2 bins: the feature map's sides must divide by 2 (input 250x250); "
           "the input must be a multiple of 48: 240x240 or 288x288")),
    ("input: {shape: [384, 384, 3]}\nbackbone: {type: resnet50, weights: null}\n", (
        2, "head.downsample_factor: 8, but the backbone's output conv5_block3_out is at stride 32: cut it there with "
           "backbone: {output: conv3_block4_out} (its last layer at stride 8)")),
    ("input: {shape: [384, 384, 3]}\nbackbone: {type: vgg16, weights: null, output: block5_conv3}\n", (
        2, "head.downsample_factor: 8, but the backbone's output block5_conv3 is at stride 16: cut it there with "
           "backbone: {output: block4_conv3} (its last layer at stride 8)")),
])
def test_check_refuses_a_pspnet_it_cannot_build_saying_what_would_do_without_tensorflow(write, text, message):
    path = write(text + "head: {type: pspnet, classes: 3}\n", "psp.yaml")
    [result], imported = in_fresh_interpreter(["check", path], modules=("tensorflow", "keras", "numpy"))
    code, said = message
    assert result["exit_code"] == code and said in " ".join(result["output"].split()), result["output"]
    assert not imported, imported


@pytest.mark.parametrize("factor, cut", [(None, "block4_conv3"), (16, "block5_conv3"), (4, "block3_conv3")])
def test_a_pspnet_cuts_a_backbone_of_segmentation_models_table_at_its_layer_for_the_factor(write, factor, cut):
    head = "{type: pspnet, classes: 3" + (f", downsample_factor: {factor}" if factor else "") + "}"
    spec = tlc.load_spec(write(f"input: {{shape: [384, 384, 3]}}\nbackbone: {{type: vgg16, weights: null}}\nhead: {head}\n"))
    assert spec.backbone.output == cut and plan(spec).ok


def test_summarize_marks_the_taps_and_the_cut_the_decoder_reads(write):
    psp = run_cli("summarize", write("input: {shape: [96, 96, 3]}\nbackbone: {type: vgg16, weights: null}\n"
                                     "head: {type: pspnet, classes: 3}\n", "psp.yaml"))
    unet = run_cli("summarize", write("input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16, weights: null}\n"
                                      "head: {type: unet, classes: 3}\n", "unet.yaml"))
    assert psp.exit_code == unet.exit_code == 0
    rows = {line.split("│")[2].strip() for line in psp.output.splitlines() if line.count("│") > 3}
    assert "block4_conv3 ◂ cut here (backbone.output)" in rows and "◂ tap of" not in psp.output
    rows = {line.split("│")[2].strip() for line in unet.output.splitlines() if line.count("│") > 3}
    assert "block5_conv3 ◂ tap of decoder_stage0_concat" in rows and "cut here" not in unet.output


def test_a_pspnet_check_accepts_builds_trains_and_segments_at_the_smallest_input_it_names(write, tmp_path):
    import keras
    import numpy as np

    from tlc.train.loop import train

    text = ("input: {shape: [96, 96, 3]}\nbackbone: {type: mobilenet_v2, weights: null, alpha: 0.35, "
            "output: block_6_expand_relu}\nhead: {type: pspnet, classes: 3, filters: 16, dropout: 0.1}\n")
    report = json.loads(run_cli("check", write(text, "probe.yaml"), "--json").stdout)
    assert report["ok"] and report["min_input"] == [48, 48], report
    rng = np.random.default_rng(0)
    x = rng.random((6, 48, 48, 3), dtype=np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, y=rng.integers(0, 3, (6, 48, 48)).astype("uint8"))
    spec = write(text.replace("[96, 96, 3]", "[48, 48, 3]") + "freeze: all\ntrain: {data: {type: npz, path: tiny.npz, "
                 "validation_split: 0.34}, epochs: 1, batch_size: 2}\n", "psp.yaml")
    planned = json.loads(run_cli("check", spec, "--json").stdout)
    result = train(spec, tmp_path / "runs")
    assert result.metrics["params"] == planned["params"] and 0 <= result.metrics["final"]["val_miou"] <= 1
    assert np.asarray(result.model(x[:1], training=False)).shape == (1, 48, 48, 3)
    keras.backend.clear_session()


@pytest.mark.parametrize("head, message", [
    ("decoder_filters: [null, 64, null, null, null]",
     "head.decoder_filters[1]: 64, but stage 1 adds its tap block4_conv3, of 512 channels: leave it null"),
    ("taps: [block5_conv3]", "head.decoder_filters[1]: stage 1 has no tap to take its width from: give a number"),
    ("decoder_filters: [null, null, 16]", "head.decoder_filters: 3 stages of x2 upsampling; the backbone's output "
                                          "(block5_pool, stride 32) needs 5"),
])
def test_check_names_a_linknet_stage_whose_width_cannot_be(write, head, message):
    path = write(f"input: {{shape: [64, 64, 3]}}\nbackbone: {{type: vgg16, weights: null}}\n"
                 f"head: {{type: linknet, classes: 3, {head}}}\n")
    done = run_cli("check", path)
    assert done.exit_code == 2 and message in unboxed(done.output), done.output


def test_check_refuses_a_misaligned_linknet_as_a_unet(write):
    done = run_cli("check", write("input: {shape: [250, 250, 3]}\nbackbone: {type: vgg16, weights: null}\n"
                                  "head: {type: linknet, classes: 3}\n"))
    assert done.exit_code == 1 and "decoder_stage0_add adds 14x14 (block5_pool 7x7 upsampled) to 15x15 from " \
        "block5_conv3 (input 250x250); the input must be a multiple of 32: 224x224 or 256x256" in unboxed(done.output)


@pytest.mark.slow
def test_weights_saved_from_a_segmentation_models_unet_as_legacy_h5_load_by_name(tmp_path):
    """segmentation_models wrote Keras 2 .h5 weight files (layer by layer, by name): one saved
    from its U-Net loads into tlc's by name, every weight, and both give the same masks."""
    import h5py
    import keras
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

    from tlc.plan.graph import fresh_layer_names

    spec = unet_spec("mobilenet_v2")
    with fresh_layer_names():
        reference = segmentation_models_unet(spec.backbone.build((64, 64, 3)), SM_TAPS["mobilenet_v2"])
    rng = np.random.default_rng(0)
    for layer in reference.layers:  # (not the initial values both would share: BN's zeros and ones)
        layer.set_weights([(w * rng.uniform(0.9, 1.1, w.shape) + rng.uniform(0, 0.01, w.shape)).astype("float32")
                           for w in layer.get_weights()])
    with h5py.File(tmp_path / "sm_unet.h5", "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    model = tlc.compile(spec)
    model.load_weights(tmp_path / "sm_unet.h5", by_name=True)  # (raises on a shape that differs)
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert all(np.array_equal(a, b) for name in weighted
               for a, b in zip(model.get_layer(name).get_weights(), reference.get_layer(name).get_weights()))
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(model(x, training=False), reference(x, training=False), atol=1e-5)
    keras.backend.clear_session()


def test_the_vgg16_unet_has_segmentation_models_parameter_count():
    # sm.Unet("vgg16", classes=1) has 23,752,273 parameters; 3 classes add 2 x (3 x 3 x 16 + 1)
    assert plan(unet_spec("vgg16", 224)).params()["total"] == 23_752_273 + 2 * (3 * 3 * 16 + 1)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["conv_stack", "resnet50", "mobilenet", "mobilenet_v3_small", "efficientnet_v2_b0",
                                      "convnext_tiny"])
def test_taps_from_the_plan_build_as_planned(backbone):
    """Where segmentation_models has no table, the last layer at each stride; conv_stack's three
    poolings take three stages."""
    side = 64
    import keras

    extra = {"blocks": [{"filters": 4, "padding": "same"}, {"filters": 8, "padding": "same"},
                        {"filters": 8, "padding": "same"}]} if backbone == "conv_stack" else {}
    spec = spec_from_data({"task": "segmentation", "input": {"shape": [side, side, 3]},
                           "backbone": {"type": backbone, "weights": None, **extra},
                           "head": {"type": "unet", "classes": 2}}, "taps")
    planned = plan(spec)
    assert planned.ok, planned.failure_message()
    model = tlc.compile(spec)
    assert [p.name for p in planned.layers] == [layer.name for layer in model.layers]
    assert planned.params()["total"] == model.count_params() and tuple(model.output.shape[1:]) == (side, side, 2)
    keras.backend.clear_session()


def test_check_refuses_a_misaligned_unet_naming_the_sizes_that_work_without_tensorflow(write):
    path = write("task: segmentation\ninput: {shape: [250, 250, 3]}\nbackbone: {type: vgg16, weights: null}\n"
                 "head: {type: unet, classes: 3}\n", "unet.yaml")
    [result], imported = in_fresh_interpreter(["check", path], modules=("tensorflow", "keras", "numpy"))
    assert result["exit_code"] == 1
    assert ("unet.yaml: infeasible: decoder_stage0_concat joins 14x14 (block5_pool 7x7 upsampled) with 15x15 from "
            "block5_conv3 (input 250x250); the input must be a multiple of 32: 224x224 or 256x256") in result["output"]
    assert imported == []


@pytest.mark.parametrize("backbone, side, message", [
    ("xception", 101, "infeasible: the decoder gives 96x96 masks, not the input's size (input 101x101); no input "
                      "near it aligns"),
    ("nasnet_mobile", 65, "infeasible: the decoder gives 64x64 masks, not the input's size (input 65x65); no input "
                          "near it aligns"),
])
def test_a_stem_of_unpadded_convolutions_that_aligns_its_skips_still_loses_pixels(write, backbone, side, message):
    """At 32k + 5 (Xception) or 32k + 1 (NASNet) every skip meets its tap, but the masks come out
    smaller than the photo: check refuses what training could not take."""
    path = write(f"input: {{shape: [{side}, {side}, 3]}}\nbackbone: {{type: {backbone}, weights: null}}\n"
                 "head: {type: unet, classes: 2}\n")
    result = run_cli("check", path)
    assert result.exit_code == 1 and message in unboxed(result.output), result.output


def test_unpadded_convolutions_never_align_and_check_says_so(write):
    path = write("input: {shape: [64, 64, 3]}\nbackbone: {type: conv_stack, blocks: [{filters: 4}, {filters: 8}]}\n"
                 "head: {type: unet, classes: 2}\n")
    result = run_cli("check", path)
    assert result.exit_code == 1 and "decoder_stage0_concat joins 28x28 (block2_pool 14x14 upsampled) with 29x29 " \
        "from block2_conv1 (input 64x64); no input near it aligns them" in unboxed(result.output)


def test_check_names_a_missing_tap_and_a_wrong_number_of_stages(write):
    path = write("input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16, weights: null}\n"
                 "head: {type: unet, classes: 3, taps: [block5_conv3, block4_conv9]}\n")
    result = run_cli("check", path)
    assert result.exit_code == 2 and "head.taps[1]: no backbone layer named 'block4_conv9' (did you mean " \
        "'block4_conv3'?)" in unboxed(result.output)
    path = write("input: {shape: [64, 64, 3]}\nbackbone: {type: vgg16, weights: null}\n"
                 "head: {type: unet, classes: 3, decoder_filters: [32, 16]}\n")
    result = run_cli("check", path)
    assert result.exit_code == 2 and "head.decoder_filters: 2 stages of x2 upsampling; the backbone's output " \
        "(block5_pool, stride 32) needs 5" in unboxed(result.output)


def test_the_smallest_input_of_a_unet_is_a_multiple_of_its_stride(write):
    path = write("input: {shape: [96, 160, 3]}\nbackbone: {type: vgg16, weights: null}\n"
                 "head: {type: unet, classes: 2}\n")
    report = json.loads(run_cli("check", path, "--json").stdout)
    assert report["ok"] and report["output_shape"] == [96, 160, 2] and report["min_input"] == [32, 32]
