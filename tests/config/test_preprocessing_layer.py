"""mnc_tf.preprocessing: the resize and normalisation every consumer of a model shares."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnc_tf.preprocessing import CAFFE_BGR_MEANS, Preprocessing, resize_image


@pytest.mark.parametrize(
    "shape, sides, expected",
    [
        ((100, 200, 3), (50, 1000), (50, 100)),  # shorter side → 50
        ((100, 400, 3), (50, 120), (30, 120)),  # longer side capped at 120
        ((64, 64, 1), (128, 128), (128, 128)),  # grey tiled to RGB, upscaled
        ((33, 47, 4), (20, 1000), (20, 28)),  # alpha dropped; round(47 * 20 / 33) = 28
    ],
)
def test_resize_matches_tf_image_resize(shape, sides, expected):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, shape).astype(np.uint8)
    layer = Preprocessing(*sides)
    out, info = layer.resize(image)
    rgb = np.tile(image, (1, 1, 3)) if shape[2] == 1 else image[..., :3]
    reference = tf.image.resize(rgb.astype(np.float32), expected).numpy()
    np.testing.assert_array_equal(out.numpy(), reference)
    np.testing.assert_allclose(
        info.numpy(),
        [shape[:2], expected, np.divide(expected, shape[:2]), [0, 0]],
        rtol=1e-6,
    )
    # resize_image is the same function at the same sides
    np.testing.assert_array_equal(resize_image(image, *sides)[0].numpy(), out.numpy())


def test_normalization_modes_against_numpy():
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    caffe = Preprocessing(normalization="caffe")(x).numpy()
    np.testing.assert_array_equal(caffe, x[..., ::-1] - np.array(CAFFE_BGR_MEANS, np.float32))
    np.testing.assert_allclose(Preprocessing(normalization="scale")(x), x / 127.5 - 1, rtol=1e-6)
    np.testing.assert_array_equal(Preprocessing(normalization="none")(x).numpy(), x)
    assert Preprocessing(normalization="none")(x.astype(np.uint8)).dtype == tf.float32


def test_serializes_with_its_sides():
    layer = Preprocessing(128, 256, "scale", name="pre")
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(again, Preprocessing)
    assert (again.short_side, again.max_side, again.normalization) == (128, 256, "scale")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(normalization="bgr"), "normalization"),
        (dict(short_side=600, max_side=500), "short_side <= max_side"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Preprocessing(**kwargs)


def test_rejects_a_batch_in_resize():
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        Preprocessing().resize(np.zeros((2, 8, 8, 3), np.uint8))
