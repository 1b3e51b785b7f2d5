"""RLE helpers against pycocotools (the reference implementation): the run-length parser that
validates annotations when parsing, and the evaluators' ground-truth mask decoding."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mnc_tf.data.annotations import clean_segmentation, decode_masks, rle_counts


def _runs(mask):
    """Column-major run lengths of a binary mask, 0s first (NumPy, independent of ours)."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds)
    return np.concatenate([[0], runs]) if flat.size and flat[0] else runs


@pytest.mark.parametrize("shape", [(37, 53), (1, 1), (5, 1), (1, 7), (300, 200)])
def test_rle_counts_and_decode_masks_match_pycocotools(shape):
    h, w = shape
    rng = np.random.default_rng(h * 1000 + w)
    masks = (rng.random((5, h, w)) > rng.random()).astype(np.uint8)
    masks[0] = 0  # empty
    masks[1] = 1  # full
    masks[2] = 0
    masks[2, h // 4 : h - h // 4, w // 3 : w - 1] = 1  # long runs: multi-character counts
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for k, rle in enumerate(rles):
        np.testing.assert_array_equal(rle_counts(rle["counts"]), _runs(masks[k]))
        np.testing.assert_array_equal(rle_counts(rle["counts"].decode()), _runs(masks[k]))
    np.testing.assert_array_equal(decode_masks(rles, h, w), masks)
    as_str = [{"size": r["size"], "counts": r["counts"].decode()} for r in rles]
    np.testing.assert_array_equal(decode_masks(as_str, h, w), masks)


def test_polygon_rle_counts_match_pycocotools():
    polygon = [[10.5, 5.0, 250.0, 40.0, 120.0, 290.0, 3.0, 200.0]]
    rle = mask_utils.merge(mask_utils.frPyObjects(polygon, 300, 260))
    np.testing.assert_array_equal(rle_counts(rle["counts"]), _runs(mask_utils.decode(rle)))


def test_bad_rles_are_rejected_when_cleaning():
    with pytest.raises(ValueError, match="truncated"):
        rle_counts(b"1l")  # 'l' (60) has the continuation bit set
    with pytest.raises(ValueError, match="invalid character"):
        rle_counts(b"0\x01")
    rle = mask_utils.encode(np.asfortranarray(np.ones((4, 5), np.uint8)))
    ok = {"size": [4, 5], "counts": rle["counts"].decode()}
    assert clean_segmentation(ok, 4, 5)[0] is ok
    # runs covering 20 pixels do not cover a 5 x 5 image: the size is checked first ...
    assert clean_segmentation(dict(ok, size=[5, 5]), 5, 5)[1] == "invalid_rle"
    assert clean_segmentation(ok, 5, 5)[1] == "missing_segmentation"


def test_no_rles():
    assert decode_masks([], 3, 4).shape == (0, 3, 4)
