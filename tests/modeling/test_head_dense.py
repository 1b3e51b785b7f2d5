"""HeadDense against keras.layers.Dense (TF's own MatMul and its autodiff gradient)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnc_tf.layers import HeadDense


@pytest.mark.parametrize("activation", [None, "relu"])
def test_values_and_gradients_equal_dense(activation):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((7, 33)), tf.float32)
    ours = HeadDense(5, activation=activation)
    ref = keras.layers.Dense(5, activation=activation)
    ours.build((None, 33))
    ref.build((None, 33))
    ref.set_weights([w + 0.1 for w in ours.get_weights()])  # non-zero bias
    ours.set_weights(ref.get_weights())
    upstream = tf.constant(rng.standard_normal((7, 5)), tf.float32)
    results = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        grads = tape.gradient(y, [x, layer.kernel, layer.bias], output_gradients=upstream)
        results.append([y] + grads)
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_other_ranks_fall_back_to_dense():
    layer = HeadDense(4)
    x = tf.random.normal([2, 3, 6])
    y = layer(x)
    expected = tf.einsum("abk,kn->abn", x, layer.kernel) + layer.bias
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_serializes():
    layer = HeadDense(3, activation="relu", name="fc")
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(again, HeadDense) and again.units == 3
