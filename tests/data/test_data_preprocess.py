"""Pure-TF preprocessing: resize (vs OpenCV), flip, pad conventions, argument checks."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from mnc_tf.data import preprocess


def test_resize_image_sizes_info_and_pixels_match_opencv():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    resized, info = preprocess.resize_image(image, short_side=60, max_side=100)
    # shorter side 40 -> 60 (x1.5); longer 60 -> 90 <= 100
    assert resized.shape == (60, 90, 3) and resized.dtype == tf.float32
    np.testing.assert_allclose(info.numpy(), [[40, 60], [60, 90], [1.5, 1.5], [0, 0]])
    reference = cv2.resize(image.astype(np.float32), (90, 60), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resized.numpy(), reference, atol=1e-3)
    # the longer side caps the scale: 100x50 -> shorter 50*1.2 = 60 would make 120 > 100
    resized, info = preprocess.resize_image(np.zeros((100, 50, 3), np.uint8), 60, 100)
    assert resized.shape == (100, 50, 3)
    np.testing.assert_allclose(info.numpy()[2], [1.0, 1.0])


def test_resize_image_rounds_and_reports_the_actual_scale():
    _, info = preprocess.resize_image(np.zeros((33, 47, 3), np.uint8), 50, 1000)
    # 47 * 50/33 = 71.2 -> 71; scale row is resized / original per axis
    np.testing.assert_allclose(info.numpy(), [[33, 47], [50, 71], [50 / 33, 71 / 47], [0, 0]])


def test_resize_image_traces_with_unknown_shape_and_converts_channels():
    fn = tf.function(
        lambda im: preprocess.resize_image(im, 32, 64),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
    )
    out, _ = fn(tf.zeros([16, 20, 3], tf.uint8))
    assert out.shape == (32, 40, 3)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    out, _ = preprocess.resize_image(gray, 3, 4)
    np.testing.assert_array_equal(out.numpy(), np.repeat(gray, 3, axis=2))
    rgba = np.ones((3, 4, 4), np.uint8)
    assert preprocess.resize_image(rgba, 3, 4)[0].shape == (3, 4, 3)
    with pytest.raises(ValueError, match="image must be"):
        preprocess.resize_image(np.zeros((1, 3, 4, 3), np.uint8), 3, 4)
    with pytest.raises(ValueError, match="channels"):
        preprocess.resize_image(np.zeros((3, 4, 2), np.uint8), 3, 4)


def test_scaled_size_respects_the_cap():
    h, w = preprocess.scaled_size(100, 200, 600, 1000, max_size=(320, 320))
    assert (int(h), int(w)) == (160, 320)


def test_flipped_mask_equals_the_mask_of_the_flipped_box():
    height, width = 20, 30
    boxes = np.array([[2.0, 3.0, 9.0, 12.0], [10.0, 0.0, 20.0, 7.0]], np.float32)
    masks = np.zeros((2, height, width), np.uint8)
    for k, (y1, x1, y2, x2) in enumerate(boxes.astype(int)):
        masks[k, y1:y2, x1:x2] = 1
    image = np.random.default_rng(1).integers(0, 255, (height, width, 3)).astype(np.float32)
    f_image, f_boxes, f_masks = preprocess.flip_left_right(image, boxes, masks)
    np.testing.assert_array_equal(f_image.numpy(), image[:, ::-1])
    np.testing.assert_allclose(f_boxes.numpy(), [[2, 18, 9, 27], [10, 23, 20, 30]])
    for k, (y1, x1, y2, x2) in enumerate(f_boxes.numpy().astype(int)):
        expected = np.zeros((height, width), np.uint8)
        expected[y1:y2, x1:x2] = 1
        np.testing.assert_array_equal(f_masks[k].numpy(), expected)
    # flipping twice is the identity
    back = preprocess.flip_left_right(f_image, f_boxes, f_masks)
    np.testing.assert_allclose(back[1].numpy(), boxes)


def test_flip_coin_is_a_function_of_the_seed_and_both_outcomes_occur():
    outcomes = [bool(preprocess.flip_coin(tf.constant(s, tf.int64))) for s in range(16)]
    again = [bool(preprocess.flip_coin(tf.constant(s, tf.int64))) for s in range(16)]
    assert outcomes == again and set(outcomes) == {True, False}


def test_flip_boxes_mirrors_about_the_width():
    boxes = np.array([[2.0, 3.0, 9.0, 12.0], [10.0, 0.0, 20.0, 7.5]], np.float32)
    np.testing.assert_array_equal(
        preprocess.flip_boxes(boxes, 30).numpy(), [[2, 18, 9, 27], [10, 22.5, 20, 30]]
    )


@pytest.mark.parametrize("decision", [False, True])
def test_augment_example_applies_the_given_flip_decision(decision):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (20, 30, 3)).astype(np.uint8)
    boxes = np.array([[2.0, 3.0, 9.0, 12.0]], np.float32)
    masks = np.zeros((1, 20, 30), np.uint8)
    masks[0, 2:9, 3:12] = 1
    kwargs = dict(short_side=20, max_side=30)
    plain = preprocess.augment_example(image, boxes, [1], masks, **kwargs)
    out = preprocess.augment_example(image, boxes, [1], masks, flip=tf.constant(decision), **kwargs)
    image_, boxes_, masks_ = (np.asarray(out[k]) for k in (0, 2, 4))
    if decision:
        np.testing.assert_array_equal(image_, image[:, ::-1])
        np.testing.assert_array_equal(masks_, masks[:, :, ::-1])
        np.testing.assert_array_equal(boxes_, [[2, 18, 9, 27]])
    else:
        for a, b in zip(out, plain, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="seed is required"):
        preprocess.augment_example(image, boxes, [1], masks, scale_jitter=(0.5, 1.5), **kwargs)
