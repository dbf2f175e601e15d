"""The graph a phase trains (`tlc.train.rewrite`): the model's own function in faster kernels, over
the model's own variables. Each replacement is held equal to the Keras layers it replaces, forward,
backward and in the statistics a batch norm keeps; a U-Net's twin replaces what it should and
shares every variable; training through it matches training the model itself."""
from __future__ import annotations

import numpy as np
import pytest

import tlc
from tlc.train.rewrite import faster, replaced

from .helpers import spec_from_data


def gradients(model, x, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]


def close_gradients(model, twin, x, y, rtol=1e-4):
    """The twin's gradients equal the model's, variable for variable (the twin lists the same
    variables, perhaps in another order)."""
    import tensorflow as tf

    expected = dict(zip(map(id, model.trainable_weights), gradients(model, x, y)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(twin(x, training=True) - y))
    got = tape.gradient(loss, model.trainable_weights)
    for variable, g in zip(model.trainable_weights, got):
        np.testing.assert_allclose(g.numpy(), expected[id(variable)], rtol=rtol, atol=1e-6, err_msg=variable.path)


def test_an_upsampled_convolution_equals_upsampling_then_the_convolution():
    """Two upsampled parts of odd sizes joined with a full-size one, bias and activation: the
    transposed convolutions equal Keras's UpSampling2D -> Concatenate -> Conv2D, forward and back."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    a, skip, b = keras.Input((5, 7, 3)), keras.Input((10, 14, 4)), keras.Input((5, 7, 2))
    joined = layers.Concatenate()([layers.UpSampling2D(2)(a), skip, layers.UpSampling2D(2)(b)])
    conv = layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer="random_normal", name="joined")
    alone = layers.Conv2D(5, 3, padding="same", name="alone")(layers.UpSampling2D(2)(a))  # no join
    model = keras.Model([a, skip, b], [conv(joined), alone])
    twin = faster(model)
    assert sorted(replaced(twin)) == ["alone", "joined"]
    assert {id(v) for v in twin.weights} == {id(v) for v in model.weights}
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, *t.shape[1:])).astype("float32") for t in (a, skip, b)]
    for mine, theirs in zip(twin(x), model(x)):
        np.testing.assert_allclose(mine, theirs, atol=1e-5)
    import tensorflow as tf

    for variable in model.trainable_weights:
        grads = []
        for m in (model, twin):
            with tf.GradientTape() as tape:
                out = m(x)
                loss = tf.reduce_sum(out[0] * np.arange(6, dtype="float32")) + tf.reduce_sum(tf.square(out[1]))
            grads.append(tape.gradient(loss, variable).numpy())
        np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4, atol=1e-5, err_msg=variable.path)


def test_only_a_nearest_2x_upsampling_into_a_3x3_stride_1_convolution_is_replaced():
    import keras
    from keras import layers

    x = keras.Input((6, 6, 3))
    outputs = [layers.Conv2D(4, 3, padding="same")(layers.UpSampling2D(2, interpolation="bilinear")(x)),
               layers.Conv2D(4, 5, padding="same")(layers.UpSampling2D(2)(x)),
               layers.Conv2D(4, 3, padding="valid")(layers.UpSampling2D(2)(x)),
               layers.Conv2D(4, 3, strides=2, padding="same")(layers.UpSampling2D(2)(x)),
               layers.Conv2D(4, 3, padding="same")(layers.UpSampling2D(3)(x)),
               layers.Conv2D(4, 3, padding="same")(x)]
    model = keras.Model(x, outputs)
    assert faster(model) is model  # nothing replaced: the model itself trains


def test_a_batch_norm_in_one_kernel_normalizes_learns_and_keeps_statistics_as_keras_does():
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    x = keras.Input((6, 6, 4))
    y = layers.BatchNormalization(name="norm", momentum=0.9)(layers.Conv2D(8, 3, padding="same")(x))
    y = layers.BatchNormalization(name="plain", center=False, scale=False)(layers.ReLU()(y))
    frozen = layers.BatchNormalization(name="frozen")
    y = frozen(y)
    model = keras.Model(x, layers.Dense(3)(layers.GlobalAveragePooling2D()(y)))
    frozen.moving_mean.assign(np.full(8, 0.3, "float32"))
    frozen.trainable = False
    twin = faster(model)
    assert sorted(replaced(twin)) == ["frozen", "norm", "plain"]
    rng = np.random.default_rng(1)
    images, targets = rng.normal(2, 3, size=(16, 6, 6, 4)).astype("float32"), rng.normal(size=(16, 3)).astype("float32")

    start = [v.numpy() for v in model.non_trainable_weights]
    outputs, kept = {}, {}
    for name, m in (("keras", model), ("twin", twin)):
        for v, value in zip(model.non_trainable_weights, start):
            v.assign(value)
        outputs[name] = np.asarray(m(images, training=True))
        kept[name] = [v.numpy() for v in model.non_trainable_weights]
    np.testing.assert_allclose(outputs["twin"], outputs["keras"], rtol=1e-5, atol=1e-5)
    for a, b, v in zip(kept["twin"], kept["keras"], model.non_trainable_weights):  # the biased variance, as Keras
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=v.path)
    assert np.all(frozen.moving_mean.numpy() == np.float32(0.3))  # a frozen norm keeps its statistics
    assert not np.allclose(kept["twin"][0], start[0])  # (and a training one moved)
    np.testing.assert_allclose(twin(images, training=False), model(images, training=False), rtol=1e-5, atol=1e-5)
    close_gradients(model, twin, images, targets)

    norm = model.get_layer("norm")
    norm.momentum = 0.0  # as precise batch norm sets it: the moving statistics become the batch's
    twin(images, training=True)
    conv_out = model.layers[1](images)
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean(conv_out, axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), np.var(conv_out, axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_unets_twin_replaces_every_upsampled_convolution_and_batch_norm_and_trains_as_the_model():
    """MobileNetV2 with a U-Net at 64x64 (weights null): the twin replaces each decoder stage's first
    convolution and every batch norm, holds the model's variables, and two SGD steps on the twin
    leave the weights that two steps on the model leave, to float noise."""
    import keras

    spec = spec_from_data({"task": "segmentation", "input": {"shape": [64, 64, 3]},
                           "backbone": {"type": "mobilenet_v2", "weights": None}, "freeze": "all",
                           "head": {"type": "unet", "classes": 3, "decoder_filters": [32, 16, 16, 8, 8]}})
    model = tlc.compile(spec)
    twin = faster(model)
    norms = [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert sorted(replaced(twin)) == sorted(norms + [f"decoder_stage{i}a_conv" for i in range(5)])
    assert [id(v) for v in sorted(twin.weights, key=id)] == [id(v) for v in sorted(model.weights, key=id)]
    assert twin.count_params() == model.count_params()

    rng = np.random.default_rng(2)
    images = rng.uniform(size=(8, 64, 64, 3)).astype("float32")
    masks = rng.integers(0, 3, size=(8, 64, 64))
    start = [v.numpy() for v in model.weights]
    after = {}
    for name, m in (("keras", model), ("twin", twin)):
        for v, value in zip(model.weights, start):
            v.assign(value)
        keras.utils.set_random_seed(0)
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
        m.fit(images, masks, batch_size=4, epochs=1, shuffle=False, verbose=0)
        after[name] = [v.numpy() for v in model.weights]
    moved = 0
    for a, b, s, v in zip(after["twin"], after["keras"], start, model.weights):
        if np.array_equal(b, s):  # frozen: untouched by both
            np.testing.assert_array_equal(a, s, err_msg=v.path)
            continue
        # Each update equal to 2% (ten batch norms in training mode amplify float32 rounding: Keras's
        # own gradients here are ~0.5% from a float64 computation of the same model).
        change, expected = a - s, b - s
        assert np.linalg.norm(change - expected) <= 0.02 * np.linalg.norm(expected), v.path
        moved += 1
    assert moved == 5 * 2 * 5 + 2  # the decoder: 2 convolutions, 2x gamma, beta, mean, variance a stage; the last
