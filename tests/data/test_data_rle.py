"""Our NumPy RLE decoder against pycocotools (the reference implementation)."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mnc_tf.data.coco import decode_rles, rle_counts


@pytest.mark.parametrize("shape", [(37, 53), (1, 1), (5, 1), (1, 7), (300, 200)])
def test_decode_rles_matches_pycocotools(shape):
    h, w = shape
    rng = np.random.default_rng(h * 1000 + w)
    masks = (rng.random((5, h, w)) > rng.random()).astype(np.uint8)
    masks[0] = 0  # empty
    masks[1] = 1  # full
    masks[2] = 0
    masks[2, h // 4 : h - h // 4, w // 3 : w - 1] = 1  # long runs: multi-character counts
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    expected = mask_utils.decode(rles).transpose(2, 0, 1)
    np.testing.assert_array_equal(decode_rles(rles, h, w), expected)
    as_str = [{"size": r["size"], "counts": r["counts"].decode()} for r in rles]
    np.testing.assert_array_equal(decode_rles(as_str, h, w), expected)


def test_polygon_rles_match_pycocotools():
    polygon = [[10.5, 5.0, 250.0, 40.0, 120.0, 290.0, 3.0, 200.0]]
    rle = mask_utils.merge(mask_utils.frPyObjects(polygon, 300, 260))
    np.testing.assert_array_equal(decode_rles([rle], 300, 260)[0], mask_utils.decode(rle))


def test_bad_rles_raise():
    with pytest.raises(ValueError, match="does not cover"):
        decode_rles([mask_utils.encode(np.asfortranarray(np.ones((4, 5), np.uint8)))], 5, 5)
    with pytest.raises(ValueError, match="truncated"):
        rle_counts(b"1l")  # 'l' (60) has the continuation bit set


def test_no_rles():
    assert decode_rles([], 3, 4).shape == (0, 3, 4)
