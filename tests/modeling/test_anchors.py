"""Stage-1 anchors vs hand-computed values; their order matches the RPN head's outputs."""

import math

import numpy as np
import tensorflow as tf

from mnc_tf.modeling.anchors import AnchorGenerator, cell_anchors, grid_anchors
from mnc_tf.modeling.stage1_rpn.head import RPNHead


def test_cell_anchors_hand_computed():
    a = cell_anchors(16, (0.5, 1.0, 2.0), (8, 16, 32))
    assert a.shape == (9, 4)
    # ratio 0.5 (h/w), scale 8: side 128 → h = 128·√0.5 = 90.5097, w = 128/√0.5 = 181.0193.
    np.testing.assert_allclose(a[0], [-45.254834, -90.50967, 45.254834, 90.50967], rtol=1e-6)
    # ratio 1, scale 16: a 256 × 256 square.
    np.testing.assert_allclose(a[4], [-128, -128, 128, 128])
    # ratio 2, scale 32: h = 512·√2 = 724.077, w = 362.039.
    np.testing.assert_allclose(a[8], [-362.03867, -181.01933, 362.03867, 181.01933], rtol=1e-6)
    # Every anchor of a scale has the same area (base · scale)².
    areas = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    np.testing.assert_allclose(areas.reshape(3, 3), [[128.0**2, 256.0**2, 512.0**2]] * 3, rtol=1e-5)


def test_grid_anchors_centres_and_order():
    base = cell_anchors(8, (1.0,), (2, 4))  # 16 px and 32 px squares
    a = grid_anchors(2, 3, 8, base).numpy()
    assert a.shape == (2 * 3 * 2, 4)
    # Cell (y=1, x=2), second anchor: row-major cell index 5 → rows 10, 11.
    np.testing.assert_allclose(a[5 * 2 + 0], [12 - 8, 20 - 8, 12 + 8, 20 + 8])
    np.testing.assert_allclose(a[5 * 2 + 1], [12 - 16, 20 - 16, 12 + 16, 20 + 16])
    np.testing.assert_allclose(a[0], [4 - 8, 4 - 8, 4 + 8, 4 + 8])


def test_anchor_order_matches_rpn_head_layout():
    gen = AnchorGenerator(16, (0.5, 1, 2), (8,), stride=16)
    head = RPNHead(gen.num_anchors, filters=4)
    features = tf.random.normal([1, 3, 5, 6])
    logits, deltas = head(features)
    anchors = gen(features)
    assert logits.shape == (1, 3 * 5 * 3) and deltas.shape == (1, 3 * 5 * 3, 4)
    assert anchors.shape == (3 * 5 * 3, 4)
    # The raw cls conv output at cell (2, 4), anchor 1 is flat index (2·5 + 4)·3 + 1.
    raw = head.cls(head.conv(features))[0, 2, 4, 1]
    idx = (2 * 5 + 4) * 3 + 1
    np.testing.assert_allclose(logits[0, idx], raw, rtol=1e-6)
    centre = (anchors[idx, :2] + anchors[idx, 2:]) / 2
    np.testing.assert_allclose(centre, [2.5 * 16, 4.5 * 16])
    h = anchors[idx, 2] - anchors[idx, 0]
    np.testing.assert_allclose(h, 128.0 * math.sqrt(1.0), rtol=1e-6)
