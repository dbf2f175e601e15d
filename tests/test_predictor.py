"""The one predictor: [0, 1] images in, probabilities out, the same whatever the batches."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _model(activation: str, last: str = "dense"):
    import keras

    inputs = keras.Input((6, 6, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    if last == "activation":  # MobileNet's include_top ends in Activation("softmax")
        return keras.Model(inputs, keras.layers.Activation(activation, name="predictions")(keras.layers.Dense(3)(x)))
    return keras.Model(inputs, keras.layers.Dense(3, activation=activation, name="predictions")(x))


def test_logits_become_probabilities_once_and_batches_do_not_change_answers():
    from tlc.use.predictor import Predictor

    model = _model("linear")
    predictor = Predictor(model, preprocess=lambda x: x * 2.0 - 1.0, classes=["a", "b", "c"])
    images = np.random.default_rng(0).random((7, 6, 6, 1), dtype=np.float32)
    logits = np.asarray(model(images * 2.0 - 1.0, training=False))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    together = predictor.probabilities(images)
    np.testing.assert_allclose(together, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictor.probabilities(images, batch_size=3), together, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([predictor(images[i:i + 1]) for i in range(7)]), together,
                               rtol=1e-5, atol=1e-6)
    assert predictor._call.experimental_get_tracing_count() == 1  # batches of 7, 3, 1: one trace, nothing padded
    top = predictor.answers(together[:1], 2)[0]["top"]
    assert [t["index"] for t in top] == list(np.argsort(-together[0])[:2])
    assert [t["class"] for t in top] == [["a", "b", "c"][t["index"]] for t in top]


@pytest.mark.parametrize("last", ["dense", "activation"])
def test_a_classifier_is_recognised_by_its_last_layer(last):
    from tlc.errors import RunError
    from tlc.build.serving import output_activation
    from tlc.use.predictor import Predictor

    assert output_activation(_model("softmax", last)) == "softmax"
    Predictor(_model("softmax", last)).require_classifier()
    import keras

    inputs = keras.Input((6, 6, 1))
    features = Predictor(keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs)))
    with pytest.raises(RunError, match=r"outputs \(4, 4, 4\) features per image .* use tlc extract"):
        features.require_classifier()
    assert features(np.zeros((2, 6, 6, 1), np.float32)).shape == (2, 4, 4, 4)


def test_flip_averages_each_image_with_its_mirror_image_in_one_call():
    from tlc.use.predictor import Predictor

    model = _model("softmax")
    predictor = Predictor(model)
    images = np.random.default_rng(1).random((5, 6, 6, 1), dtype=np.float32)
    plain = np.asarray(model(images, training=False))
    mirrored = np.asarray(model(images[:, :, ::-1], training=False))
    np.testing.assert_allclose(predictor(images, "flip"), (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    views = predictor.probabilities(images, batch_size=2, tta="flip")
    np.testing.assert_allclose(views, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    kept = predictor.over([images[:3], images[3:]], "flip", per_view=True)
    assert kept.shape == (2, 5, 3)
    np.testing.assert_allclose(kept[0], plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kept[1], mirrored, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain, mirrored, atol=1e-4)  # the flip is not a no-op here
