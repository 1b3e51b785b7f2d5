"""Stage-1 proposals: box coding round trip, NMS vs tf.image.non_max_suppression, gradients."""

import numpy as np
import tensorflow as tf

from mnc_tf.core import box_ops, nms
from mnc_tf.modeling.stage1_rpn.proposals import generate_proposals


def _random_boxes(rng, n, size):
    y1 = rng.uniform(0, size * 0.8, n)
    x1 = rng.uniform(0, size * 0.8, n)
    h = rng.uniform(4, size * 0.4, n)
    w = rng.uniform(4, size * 0.4, n)
    return np.stack([y1, x1, y1 + h, x1 + w], -1).astype(np.float32)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    anchors = _random_boxes(rng, 50, 100)
    boxes = _random_boxes(rng, 50, 100)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        deltas = box_ops.encode(boxes, anchors, weights)
        np.testing.assert_allclose(box_ops.decode(deltas, anchors, weights), boxes, atol=1e-3)
    # A hand-checked case: anchor centred at (10, 10), 20 px; box shifted by 5 px, 40 px tall.
    d = box_ops.encode(tf.constant([[-5.0, 0.0, 35.0, 20.0]]), tf.constant([[0.0, 0, 20, 20]]))
    np.testing.assert_allclose(d, [[0.25, 0.0, np.log(2.0), 0.0]], atol=1e-6)


def test_batched_nms_matches_tf_nms():
    rng = np.random.default_rng(1)
    boxes = np.stack([_random_boxes(rng, 200, 64) for _ in range(3)])
    scores = rng.uniform(size=(3, 200)).astype(np.float32)
    idx, valid = nms.batched_nms(boxes, scores, 40, 0.5, score_threshold=0.2)
    assert idx.shape == (3, 40) and valid.shape == (3, 40)
    for b in range(3):
        ref = tf.image.non_max_suppression(boxes[b], scores[b], 40, 0.5, 0.2).numpy()
        n = int(np.sum(valid[b]))
        assert n == len(ref)
        np.testing.assert_array_equal(idx[b, :n], ref)
        assert not np.any(valid[b, n:])


def _np_decode(deltas, anchors):
    ah, aw = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cy, cx = anchors[:, 0] + ah / 2 + deltas[:, 0] * ah, anchors[:, 1] + aw / 2 + deltas[:, 1] * aw
    h, w = ah * np.exp(deltas[:, 2]), aw * np.exp(deltas[:, 3])
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)


def test_generate_proposals_matches_reference():
    rng = np.random.default_rng(2)
    a = 300
    anchors = _random_boxes(rng, a, 64)
    logits = rng.normal(size=(2, a)).astype(np.float32)
    deltas = rng.normal(scale=0.2, size=(2, a, 4)).astype(np.float32)
    image_size = np.array([[64, 64], [48, 56]], np.float32)
    boxes, scores, valid = generate_proposals(
        logits,
        deltas,
        anchors,
        image_size,
        pre_nms_topk=150,
        post_nms_topk=60,
        nms_iou=0.7,
        min_size=6.0,
    )
    assert boxes.shape == (2, 60, 4) and scores.shape == (2, 60) and valid.dtype == tf.bool
    for b in range(2):
        order = np.argsort(-logits[b], kind="stable")[:150]
        dec = _np_decode(deltas[b][order], anchors[order])
        h, w = image_size[b]
        dec = np.stack(
            [
                np.clip(dec[:, 0], 0, h),
                np.clip(dec[:, 1], 0, w),
                np.clip(dec[:, 2], 0, h),
                np.clip(dec[:, 3], 0, w),
            ],
            -1,
        )
        ok = ((dec[:, 2] - dec[:, 0]) >= 6) & ((dec[:, 3] - dec[:, 1]) >= 6)
        prob = 1 / (1 + np.exp(-logits[b][order]))
        keep = tf.image.non_max_suppression(dec[ok], prob[ok], 60, 0.7).numpy()
        n = int(np.sum(valid[b]))
        assert n == len(keep)
        np.testing.assert_allclose(boxes[b, :n], dec[ok][keep], atol=1e-3)
        np.testing.assert_allclose(scores[b, :n], prob[ok][keep], atol=1e-5)
        assert np.all(boxes[b, n:] == 0)


def test_proposals_are_differentiable_wrt_deltas():
    rng = np.random.default_rng(3)
    anchors = _random_boxes(rng, 100, 64)
    logits = rng.normal(size=(1, 100)).astype(np.float32)
    deltas = tf.Variable(rng.normal(scale=0.1, size=(1, 100, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        boxes, _, valid = generate_proposals(
            logits, deltas, anchors, np.array([[200.0, 200.0]], np.float32), 100, 10, 0.7, 0.0
        )
        total = tf.reduce_sum(boxes)
    grad = tape.gradient(total, deltas).numpy()[0]
    used = np.abs(grad).sum(-1) > 0
    # Exactly the anchors that survived NMS receive gradient.
    assert used.sum() == int(np.sum(valid))
