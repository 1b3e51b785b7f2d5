"""RoI warping as the model uses it: cell-centre sampling, batched over images, box gradients."""

import numpy as np
import tensorflow as tf

from mnc_tf.modeling.stage2_mask.roi_features import build_roi_warp, warp_rois


def _coordinate_features(batch, size):
    """Features whose channels hold their own (row, column) index, + 100 · image index."""
    idx = np.arange(size, dtype=np.float32)
    rows = np.broadcast_to(idx[:, None], (size, size))
    cols = np.broadcast_to(idx[None, :], (size, size))
    f = (
        np.stack([rows, cols], -1)[None]
        + 100.0 * np.arange(batch, dtype=np.float32)[:, None, None, None]
    )
    return tf.constant(f)


def test_warp_samples_cell_centres_of_each_image():
    feats = _coordinate_features(2, 16)
    warp = build_roi_warp(4, 4, 1 / 8)  # no pooling: see every sample
    rois = tf.constant([[[16.0, 24.0, 48.0, 56.0]], [[8.0, 0.0, 40.0, 64.0]]])
    out = warp_rois(warp, feats, rois).numpy()
    assert out.shape == (2, 4, 4, 2)
    # Sample i of [16, 48) reads pixel 16 + (i + 0.5)·8, i.e. feature index that/8 - 0.5 = 2 + i.
    np.testing.assert_allclose(out[0, :, 0, 0], [2, 3, 4, 5], atol=1e-5)
    np.testing.assert_allclose(out[0, 0, :, 1], [3, 4, 5, 6], atol=1e-5)
    # Second box, second image (+100): rows 1..4, columns 0.5, 2.5, 4.5, 6.5.
    np.testing.assert_allclose(out[1, :, 0, 0], [101, 102, 103, 104], atol=1e-5)
    np.testing.assert_allclose(out[1, 0, :, 1], [100.5, 102.5, 104.5, 106.5], atol=1e-5)


def test_warp_pools_and_passes_box_gradients():
    feats = tf.random.stateless_normal([1, 10, 10, 3], seed=[1, 2])
    warp = build_roi_warp(8, 4, 1 / 4)
    rois = tf.Variable([[[3.3, 5.1, 27.7, 30.2], [10.4, 2.2, 20.9, 17.5]]])
    with tf.GradientTape() as tape:
        out = warp_rois(warp, feats, rois)
        loss = tf.reduce_sum(out * out)
    assert out.shape == (2, 4, 4, 3)
    g = tape.gradient(loss, rois).numpy()
    assert np.all(np.isfinite(g)) and np.all(np.abs(g).sum(-1) > 0)
