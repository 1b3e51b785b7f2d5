"""paste_masks against OpenCV's resize of the mask into the box region."""

import cv2
import numpy as np
import tensorflow as tf

from mnc_tf.core.masks import paste_masks, paste_masks_batched


def test_constant_mask_fills_exactly_the_pixels_whose_centres_lie_in_the_box():
    boxes = np.array([[2.0, 3.0, 6.0, 9.0], [1.2, 0.0, 3.7, 2.6]], np.float32)
    got = paste_masks(tf.ones([2, 5, 5]), boxes, (8, 12)).numpy()
    rows = np.arange(8)[:, None] + 0.5
    cols = np.arange(12)[None, :] + 0.5
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        want = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
        np.testing.assert_array_equal(got[k], want.astype(np.uint8))


def test_integer_box_matches_opencv_bilinear_resize():
    rng = np.random.default_rng(0)
    m = rng.uniform(size=(7, 7)).astype(np.float32)
    y1, x1, h, w = 4, 6, 21, 14  # integer box, so OpenCV's pixel-centre resize is the reference
    soft = paste_masks(m[None], np.array([[y1, x1, y1 + h, x1 + w]], np.float32), (32, 32), None)
    want = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(soft.numpy()[0, y1 : y1 + h, x1 : x1 + w], want, atol=1e-5)
    assert soft.numpy()[0, :y1].sum() == 0 and soft.numpy()[0, :, x1 + w :].sum() == 0


def test_batched_zeroes_padding_rows():
    masks = tf.ones([2, 3, 4, 4])
    boxes = tf.constant([[[0.0, 0, 8, 8]] * 3, [[2.0, 2, 6, 6]] * 3])
    out = paste_masks_batched(masks, boxes, tf.constant([1, 3]), (8, 8)).numpy()
    assert out.shape == (2, 3, 8, 8) and out.dtype == np.uint8
    assert out[0, 0].sum() == 64 and out[0, 1:].sum() == 0
    assert all(out[1, k].sum() == 16 for k in range(3))
