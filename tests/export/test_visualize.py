"""mnc_tf.visualize: drawing instances and writing pictures."""

import numpy as np
import pytest
from PIL import Image

from mnc_tf import visualize
from mnc_tf.core.masks import paste_masks


def _scene():
    """A 64×96 gray image with two rectangular instances (boxes and binary masks)."""
    image = np.full((64, 96, 3), 100, np.uint8)
    boxes = np.array([[8, 10, 40, 50], [30, 60, 60, 90]], np.float32)
    masks = np.zeros((2, 64, 96), np.uint8)
    masks[0, 12:36, 14:46] = 1
    masks[1, 34:56, 64:86] = 1
    return image, boxes, masks


def test_masks_are_tinted_in_distinct_colours_and_the_rest_is_untouched():
    image, boxes, masks = _scene()
    out = visualize.draw_instances(image, boxes, masks, show_boxes=False, show_labels=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    colors = visualize.instance_colors(2)
    assert not np.array_equal(colors[0], colors[1])
    for i in range(2):
        inner = out[masks[i].astype(bool)]
        # Interior pixels (contours aside) are the alpha blend of gray and the instance colour.
        expected = np.round(0.55 * 100 + 0.45 * colors[i].astype(np.float64))
        assert np.mean(np.all(np.abs(inner - expected) <= 1, axis=-1)) > 0.8
    background = ~(masks.any(axis=0).astype(bool))
    np.testing.assert_array_equal(out[background], image[background])
    # The input is not modified in place.
    assert np.all(image == 100)


def test_box_outline_and_label_are_drawn():
    image, boxes, _ = _scene()
    out = visualize.draw_instances(
        image, boxes[:1], None, [2], [0.9], class_names=["cat", "dog"], colors=[[255, 0, 0]]
    )
    # Left edge of box [8, 10, 40, 50] at column 10, rows inside the box: pure red.
    np.testing.assert_array_equal(out[20:38, 10], np.tile([255, 0, 0], (18, 1)))
    # Far from the box, nothing changes.
    np.testing.assert_array_equal(out[50:, :40], image[50:, :40])
    # A label (text on a box filled with the instance colour) at the box's top-left corner.
    no_label = visualize.draw_instances(
        image, boxes[:1], None, [2], [0.9], colors=[[255, 0, 0]], show_labels=False
    )
    red = lambda picture: np.sum(np.all(picture[:24, 10:60] == [255, 0, 0], axis=-1))
    assert red(out) > red(no_label) + 50


def test_box_relative_masks_are_pasted_like_paste_masks():
    image, boxes, _ = _scene()
    rng = np.random.default_rng(0)
    soft = rng.uniform(size=(2, 14, 14)).astype(np.float32)
    full = np.asarray(paste_masks(soft, boxes, (64, 96), threshold=0.4))
    a = visualize.draw_instances(image, boxes, soft, show_boxes=False, show_labels=False)
    b = visualize.draw_instances(image, boxes, full, show_boxes=False, show_labels=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(visualize.full_image_masks(soft, boxes, (64, 96)), full)


def test_defaults_are_a_default_config_s_and_a_given_mask_threshold_is_used():
    from mnc_tf.config import MNCConfig

    assert visualize.DEFAULT_MASK_THRESHOLD == MNCConfig().postprocess.mask_threshold
    assert visualize.DEFAULT_SCORE_THRESHOLD == MNCConfig().postprocess.predict_score_threshold
    image, boxes, _ = _scene()
    soft = np.random.default_rng(1).uniform(size=(2, 14, 14)).astype(np.float32)
    for threshold in (0.2, 0.7):
        full = np.asarray(paste_masks(soft, boxes, (64, 96), threshold=threshold))
        np.testing.assert_array_equal(
            visualize.full_image_masks(soft, boxes, (64, 96), threshold=threshold), full
        )
        a = visualize.draw_instances(
            image, boxes, soft, mask_threshold=threshold, show_boxes=False, show_labels=False
        )
        b = visualize.draw_instances(image, boxes, full, show_boxes=False, show_labels=False)
        np.testing.assert_array_equal(a, b)


def test_score_threshold_hides_instances():
    image, boxes, masks = _scene()
    out = visualize.draw_instances(image, boxes, masks, [1, 1], [0.2, 0.3], score_threshold=0.5)
    np.testing.assert_array_equal(out, image)


def test_save_visualization_writes_a_png_of_the_image_size(tmp_path):
    image, boxes, masks = _scene()
    path = tmp_path / "sub" / "pred.png"
    visualize.save_visualization(path, image, boxes, masks, [1, 2], [0.9, 0.8], {1: "a", 2: "b"})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (96, 64) and png.mode == "RGB"
        written = np.asarray(png)
    expected = visualize.draw_instances(image, boxes, masks, [1, 2], [0.9, 0.8], {1: "a", 2: "b"})
    np.testing.assert_array_equal(written, expected)


def test_grayscale_float_image_and_no_instances():
    gray = np.linspace(0, 255, 32 * 48).reshape(32, 48)
    out = visualize.draw_instances(gray, np.zeros((0, 4)), np.zeros((0, 32, 48)))
    assert out.shape == (32, 48, 3)
    np.testing.assert_array_equal(out[..., 0], np.round(gray).astype(np.uint8))
    assert visualize.full_image_masks(np.zeros((0, 7, 7)), np.zeros((0, 4)), (5, 6)).shape == (
        0,
        5,
        6,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": np.zeros((4, 4, 2))}, "image"),
        ({"boxes": np.zeros((2, 3))}, "boxes"),
        ({"masks": np.zeros((3, 64, 96))}, "masks"),
        ({"classes": [1]}, "classes"),
        ({"scores": [0.1, 0.2, 0.3]}, "scores"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    image, boxes, masks = _scene()
    args = {"image": image, "boxes": boxes, "masks": masks, "classes": [1, 2], "scores": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        visualize.draw_instances(**args)


def test_save_visualization_unknown_extension(tmp_path):
    image, _, _ = _scene()
    with pytest.raises(OSError, match="path"):
        visualize.save_visualization(tmp_path / "x.notanimage", image)
