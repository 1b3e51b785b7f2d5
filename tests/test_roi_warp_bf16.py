"""MncRoiWarp on bfloat16 / float16 features (CPU kernels), against float32 references.

Two references, both independent of the 16-bit code path:

* the float32 op on the exactly widened features, rounded by ``tf.cast`` (TensorFlow's
  float → bfloat16 / float16 conversion): the 16-bit kernels must equal it bit for bit,
  since they widen, compute in float32 and round once;
* ``tf.image.crop_and_resize`` + ``max_pool2d`` in float32: within the 16-bit format's
  rounding (relative 2^-8 for bfloat16, 2^-11 for float16).
"""

import numpy as np
import pytest
import tensorflow as tf

from mnc_tf.ops import load_library, roi_warp, roi_warp_reference

OPS = load_library()
DTYPES = [tf.bfloat16, tf.float16]
# Half a unit in the last place of the 16-bit format, relative.
REL = {tf.bfloat16: 2.0**-8, tf.float16: 2.0**-11}

pytestmark = pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")),
    reason="16-bit features run natively on the CPU kernels only (GPU: cast to float32)",
)


def inputs(seed=0, batch=2, height=9, width=11, channels=13, wide_range=False):
    """Features, boxes (inside, partly outside, flipped, zero-size) and image indices."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((batch, height, width, channels))
    if wide_range:
        # From float16 subnormals up to near its largest finite value (65504).
        features *= 10.0 ** rng.uniform(-7, 4.6, features.shape)
    ih, iw = (height - 1) * 16, (width - 1) * 16
    y = rng.uniform(-0.3 * ih, 1.3 * ih, (12, 2))
    x = rng.uniform(-0.3 * iw, 1.3 * iw, (12, 2))
    y[:8].sort(axis=1)
    x[:8].sort(axis=1)  # the last 4 stay unsorted: flipped boxes
    boxes = np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1)
    boxes[0] = [16, 16, 16, 16]  # zero size
    box_indices = rng.integers(0, batch, len(boxes)).astype(np.int32)
    return features.astype(np.float32), boxes.astype(np.float32), box_indices


def bits(x):
    return np.asarray(x).view(np.uint16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("crop_size,pooled_size", [(28, 14), (9, 3), (4, 4)])
@pytest.mark.parametrize("wide_range", [False, True])
def test_forward_is_the_float32_op_rounded_once(dtype, crop_size, pooled_size, wide_range):
    f, boxes, idx = inputs(wide_range=wide_range)
    f16 = tf.cast(f, dtype)
    kw = dict(crop_size=crop_size, pooled_size=pooled_size, spatial_scale=1 / 16)
    out, argmax = OPS.mnc_roi_warp(f16, boxes, idx, **kw)
    ref, ref_argmax = OPS.mnc_roi_warp(tf.cast(f16, tf.float32), boxes, idx, **kw)
    assert out.dtype == dtype
    np.testing.assert_array_equal(bits(out), bits(tf.cast(ref, dtype)))
    np.testing.assert_array_equal(argmax, ref_argmax)


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_crop_and_resize_within_16bit_rounding(dtype):
    f, boxes, idx = inputs(seed=3)
    out = roi_warp(tf.cast(f, dtype), boxes, idx, 28, 14, 1 / 16)
    assert out.dtype == dtype
    # The float32 reference on the float32 features: the error is the input's and the
    # output's rounding (each <= REL relative), and interpolation is a convex combination.
    expected = roi_warp_reference(f, boxes, idx, 28, 14, 1 / 16).numpy()
    scale = np.abs(f).max()
    np.testing.assert_allclose(
        tf.cast(out, tf.float32), expected, rtol=2.5 * REL[dtype], atol=2 * REL[dtype] * scale
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_are_the_float32_gradients(dtype):
    """Feature gradient: the float32 op's (accumulated in float32), rounded once; box
    gradient (float32): the float32 op's, bit for bit."""
    f, boxes, idx = inputs(seed=5)
    rng = np.random.default_rng(6)
    upstream = rng.standard_normal((len(boxes), 4, 4, f.shape[-1])).astype(np.float32)
    f16 = tf.cast(f, dtype)
    up16 = tf.cast(upstream, dtype)

    def grads(features, up):
        b = tf.constant(boxes)
        with tf.GradientTape() as tape:
            tape.watch([features, b])
            out = roi_warp(features, b, idx, 8, 4, 1 / 16)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) * tf.cast(up, tf.float32))
        return tape.gradient(loss, [features, b])

    g_f, g_b = grads(f16, up16)
    r_f, r_b = grads(tf.cast(f16, tf.float32), tf.cast(up16, tf.float32))
    assert g_f.dtype == dtype and g_b.dtype == tf.float32
    np.testing.assert_array_equal(bits(g_f), bits(tf.cast(r_f, dtype)))
    np.testing.assert_array_equal(g_b.numpy(), r_b.numpy())
    # And against crop_and_resize's own gradients on the widened features (the same
    # pooling maxima), within the rounding of the upstream gradient and of the result.
    with tf.GradientTape() as tape:
        ff, bb = tf.cast(f16, tf.float32), tf.constant(boxes)
        tape.watch([ff, bb])
        ref = roi_warp_reference(ff, bb, idx, 8, 4, 1 / 16)
        loss = tf.reduce_sum(ref * upstream)
    e_f = tape.gradient(loss, ff)
    np.testing.assert_allclose(
        tf.cast(g_f, tf.float32), e_f, rtol=0, atol=8 * REL[dtype] * np.abs(e_f).max()
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_keeps_the_compute_dtype(dtype):
    from mnc_tf.layers import RoIWarp

    f, boxes, idx = inputs(seed=7)
    layer = RoIWarp(8, 4, 1 / 16, dtype={tf.bfloat16: "bfloat16", tf.float16: "float16"}[dtype])
    out = layer(tf.constant(f), boxes, idx)
    assert out.dtype == dtype
    ref = roi_warp(tf.cast(tf.cast(f, dtype), tf.float32), boxes, idx, 8, 4, 1 / 16)
    np.testing.assert_array_equal(bits(out), bits(tf.cast(ref, dtype)))
