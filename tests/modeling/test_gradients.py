"""The per-image gradient clamps of the end-to-end box paths."""

import numpy as np
import tensorflow as tf

from mnc_tf.modeling.gradients import clip_gradient


def test_clip_gradient_is_identity_forward_and_clamps_backward():
    x = tf.constant([[0.5, -2.0, 3.0]])
    w = tf.constant([[10.0, -0.001, -10.0]])
    for scale in (1.0, 0.25, 1024.0):  # batch mean / loss scale change the raw gradient
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = clip_gradient(x, 0.5, tf.constant(scale))
            loss = tf.reduce_sum(y * w) * scale
        np.testing.assert_array_equal(y, x)
        g = tape.gradient(loss, x).numpy() / scale  # the per-image gradient
        np.testing.assert_allclose(g, [[0.5, -0.001, -0.5]], rtol=1e-6)


def test_clip_gradient_none_is_a_no_op():
    x = tf.constant([1.0, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(clip_gradient(x, None, 1.0) * 100.0)
    np.testing.assert_allclose(tape.gradient(loss, x), [100.0, 100.0])
