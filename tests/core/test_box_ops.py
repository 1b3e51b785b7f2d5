"""mnc_tf.core.box_ops against straightforward NumPy references."""

import numpy as np
import tensorflow as tf

from mnc_tf.core import box_ops


def _np_iou(a, b):
    out = np.zeros((len(a), len(b)), np.float32)
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = ih * iw
            ua = max(p[2] - p[0], 0) * max(p[3] - p[1], 0) + max(q[2] - q[0], 0) * max(
                q[3] - q[1], 0
            )
            out[i, j] = inter / (ua - inter) if ua - inter > 0 else 0.0
    return out


def _random_boxes(rng, n, size=100.0):
    p = rng.uniform(0, size, (n, 2, 2))
    lo, hi = p.min(1), p.max(1)
    return np.concatenate([lo, hi], axis=1).astype(np.float32)


def test_iou_matches_numpy_including_empty_boxes():
    rng = np.random.default_rng(0)
    a = _random_boxes(rng, 7)
    b = _random_boxes(rng, 5)
    b[0] = [10, 10, 10, 30]  # zero height
    b[1] = a[2]  # identical
    got = box_ops.iou(tf.constant(a), tf.constant(b)).numpy()
    np.testing.assert_allclose(got, _np_iou(a, b), atol=1e-6)
    assert got[2, 1] == 1.0 and np.all(got[:, 0] == 0.0)


def test_iou_batched():
    rng = np.random.default_rng(1)
    a = np.stack([_random_boxes(rng, 4) for _ in range(3)])
    b = np.stack([_random_boxes(rng, 6) for _ in range(3)])
    got = box_ops.iou(tf.constant(a), tf.constant(b)).numpy()
    for i in range(3):
        np.testing.assert_allclose(got[i], _np_iou(a[i], b[i]), atol=1e-6)


def test_encode_decode_round_trip_and_known_value():
    rng = np.random.default_rng(2)
    anchors = _random_boxes(rng, 50) + np.array([0, 0, 1, 1], np.float32)
    boxes = _random_boxes(rng, 50) + np.array([0, 0, 1, 1], np.float32)
    for w in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        d = box_ops.encode(tf.constant(boxes), tf.constant(anchors), w)
        back = box_ops.decode(d, tf.constant(anchors), w).numpy()
        np.testing.assert_allclose(back, boxes, atol=1e-3)
    # Anchor 0,0,10,10 -> box 5,0,25,10: centre moves 10 (= 1 height) in y, height doubles.
    d = box_ops.encode(tf.constant([[5.0, 0, 25, 10]]), tf.constant([[0.0, 0, 10, 10]]))
    np.testing.assert_allclose(d.numpy(), [[1.0, 0.0, np.log(2.0), 0.0]], atol=1e-6)


def test_decode_is_differentiable_in_deltas_and_anchors():
    anchors = tf.constant([[0.0, 0, 10, 10]])
    deltas = tf.constant([[0.1, -0.2, 0.3, 0.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([anchors, deltas])
        out = tf.reduce_sum(box_ops.decode(deltas, anchors))
    assert np.all(np.isfinite(tape.gradient(out, deltas).numpy()))
    assert np.any(tape.gradient(out, deltas).numpy() != 0)
    assert np.any(tape.gradient(out, anchors).numpy() != 0)


def test_clip_per_image_sizes():
    boxes = tf.constant([[[-5.0, -5, 50, 70]], [[-5.0, -5, 50, 70]]])
    got = box_ops.clip(boxes, tf.constant([[40.0, 60.0], [100.0, 100.0]])).numpy()
    np.testing.assert_array_equal(got[0, 0], [0, 0, 40, 60])
    np.testing.assert_array_equal(got[1, 0], [0, 0, 50, 70])


def test_valid_mask_min_size():
    boxes = tf.constant([[0.0, 0, 10, 20], [0, 0, 0, 5], [3, 3, 2, 9]])
    np.testing.assert_array_equal(box_ops.valid_mask(boxes).numpy(), [True, False, False])
    np.testing.assert_array_equal(box_ops.valid_mask(boxes, 16.0).numpy(), [False] * 3)
    assert box_ops.area(boxes).numpy().tolist() == [200.0, 0.0, 0.0]
