"""MncRoiWarp / MncRoiWarpGrad against independent stock-op references.

The op library must be built (`python custom_ops/build.py`); without it this module fails
at import with the message of mnc_tf.ops.OpLibraryNotFoundError, on purpose: CI builds it.
"""

import numpy as np
import pytest
import tensorflow as tf

from mnc_tf.ops import OpLibraryNotFoundError, _loader, load_library, roi_warp, roi_warp_reference
from mnc_tf.ops.roi_warp import check_roi_sizes

OPS = load_library()  # fails loudly (not a skip) when the library is missing


def crop_and_pool(features, boxes, box_indices, crop_size, pooled_size, spatial_scale):
    """The documented convention, written out with crop_and_resize + max_pool2d (H, W > 1)."""
    h, w = features.shape[1:3]
    extent = np.array([h - 1, w - 1, h - 1, w - 1], np.float32)
    boxes_n = np.asarray(boxes, np.float32) * np.float32(spatial_scale) / extent
    crops = tf.image.crop_and_resize(
        features, boxes_n, box_indices, [crop_size, crop_size], extrapolation_value=0.0
    )
    k = crop_size // pooled_size
    return tf.nn.max_pool2d(crops, k, k, "VALID")


def random_boxes(rng, num, height, width, spatial_scale, kind):
    """Boxes [num, 4] in image pixels for a feature map [height, width]."""
    ih, iw = (height - 1) / spatial_scale, (width - 1) / spatial_scale
    if kind == "inside":
        y = np.sort(rng.uniform(0, ih, (num, 2)), axis=1)
        x = np.sort(rng.uniform(0, iw, (num, 2)), axis=1)
    elif kind == "partly_outside":
        y = np.sort(rng.uniform(-0.5 * ih, 1.5 * ih, (num, 2)), axis=1)
        x = np.sort(rng.uniform(-0.5 * iw, 1.5 * iw, (num, 2)), axis=1)
    elif kind == "fully_outside":
        y = np.sort(rng.uniform(1.05 * ih, 2 * ih, (num, 2)), axis=1)
        x = np.sort(rng.uniform(-iw, -0.05 * iw, (num, 2)), axis=1)
    elif kind == "flipped":
        y = -np.sort(-rng.uniform(-0.2 * ih, 1.2 * ih, (num, 2)), axis=1)
        x = -np.sort(-rng.uniform(-0.2 * iw, 1.2 * iw, (num, 2)), axis=1)
    elif kind == "zero_size":
        y = np.repeat(rng.uniform(0, ih, (num, 1)), 2, axis=1)
        x = np.repeat(rng.uniform(0, iw, (num, 1)), 2, axis=1)
    elif kind == "single_pixel":
        y0 = rng.integers(0, height - 1, (num, 1)) / spatial_scale
        x0 = rng.integers(0, width - 1, (num, 1)) / spatial_scale
        y = np.concatenate([y0, y0 + 1 / spatial_scale], axis=1)
        x = np.concatenate([x0, x0 + 1 / spatial_scale], axis=1)
    else:
        raise ValueError(kind)
    return np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1).astype(np.float32)


BOX_KINDS = ["inside", "partly_outside", "fully_outside", "flipped", "zero_size", "single_pixel"]


def mixed_inputs(seed=0, batch=3, height=9, width=11, channels=13, per_kind=6, scale=1 / 16):
    """Features [B, H, W, C] and boxes of every kind spread over the images."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((batch, height, width, channels)).astype(np.float32)
    boxes = np.concatenate(
        [random_boxes(rng, per_kind, height, width, scale, kind) for kind in BOX_KINDS]
    )
    box_indices = rng.integers(0, batch, len(boxes)).astype(np.int32)
    return tf.constant(features), tf.constant(boxes), tf.constant(box_indices)


@pytest.mark.parametrize(
    "crop_size,pooled_size", [(28, 14), (8, 4), (9, 3), (6, 6), (4, 1), (1, 1)]
)
def test_forward_matches_crop_and_resize_then_max_pool(crop_size, pooled_size):
    features, boxes, box_indices = mixed_inputs()
    ours = roi_warp(features, boxes, box_indices, crop_size, pooled_size, 1 / 16)
    expected = crop_and_pool(features, boxes, box_indices, crop_size, pooled_size, 1 / 16)
    reference = roi_warp_reference(features, boxes, box_indices, crop_size, pooled_size, 1 / 16)
    assert ours.shape == (len(boxes), pooled_size, pooled_size, 13)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", BOX_KINDS)
def test_forward_each_box_kind(kind):
    rng = np.random.default_rng(1)
    features = tf.constant(rng.standard_normal((2, 7, 5, 3)), tf.float32)
    boxes = tf.constant(random_boxes(rng, 8, 7, 5, 0.5, kind))
    box_indices = tf.constant(rng.integers(0, 2, 8), tf.int32)
    ours = roi_warp(features, boxes, box_indices, 8, 4, 0.5)
    np.testing.assert_allclose(
        ours, crop_and_pool(features, boxes, box_indices, 8, 4, 0.5), rtol=0, atol=1e-5
    )
    if kind == "fully_outside":
        assert np.all(ours.numpy() == 0)


def test_hand_computed_values():
    # One image 3x3 with values 0..8, spatial_scale 1: the box covering the map samples the
    # grid points themselves; a box shifted by half a pixel averages neighbours.
    features = tf.reshape(tf.range(9, dtype=tf.float32), [1, 3, 3, 1])
    boxes = tf.constant([[0, 0, 2, 2], [0.5, 0.5, 1.5, 1.5], [0, 0, 2, 2]], tf.float32)
    out = roi_warp(features, boxes, [0, 0, 0], crop_size=3, pooled_size=3, spatial_scale=1.0)
    np.testing.assert_allclose(out[0, :, :, 0], [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    np.testing.assert_allclose(out[1, :, :, 0], [[2, 2.5, 3], [3.5, 4, 4.5], [5, 5.5, 6]])
    # 3x3 crop pooled to 1x1: the max of the window, argmax slot 8 (bottom right).
    pooled, argmax = OPS.mnc_roi_warp(features, boxes, [0, 0, 0], 3, 1, 1.0)
    np.testing.assert_allclose(pooled[:, 0, 0, 0], [8, 6, 8])
    np.testing.assert_array_equal(argmax[:, 0, 0, 0], [8, 8, 8])


def test_argmax_is_first_max_slot():
    features, boxes, box_indices = mixed_inputs(seed=3)
    _, argmax = OPS.mnc_roi_warp(features, boxes, box_indices, 8, 4, 1 / 16)
    assert argmax.dtype == tf.uint8
    assert int(tf.reduce_max(argmax)) < 4
    # Fully-outside boxes: every sample is 0, the tie keeps slot 0.
    outside = [i for i, kind in enumerate(np.repeat(BOX_KINDS, 6)) if kind == "fully_outside"]
    assert np.all(tf.gather(argmax, outside).numpy() == 0)


@pytest.mark.parametrize("crop_size,pooled_size,channels", [(28, 14, 21), (8, 4, 16), (9, 3, 9)])
def test_pooled_values_and_argmax_equal_numpy_over_reference_crops(
    crop_size, pooled_size, channels
):
    # The 2x2 window has its own kernel path (full channel groups, a tail group, boxes with
    # samples outside the map); compare every value and every slot with NumPy applied to
    # crop_and_resize's crops. Ties (all-zero windows outside the map) keep the first slot.
    features, boxes, box_indices = mixed_inputs(seed=11, channels=channels)
    pooled, argmax = OPS.mnc_roi_warp(features, boxes, box_indices, crop_size, pooled_size, 1 / 16)
    crops = crop_and_pool(features, boxes, box_indices, crop_size, crop_size, 1 / 16).numpy()
    k = crop_size // pooled_size
    windows = crops.reshape(len(crops), pooled_size, k, pooled_size, k, channels)
    windows = windows.transpose(0, 1, 3, 2, 4, 5).reshape(
        len(crops), pooled_size, pooled_size, k * k, channels
    )
    np.testing.assert_allclose(pooled, windows.max(axis=3), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(argmax.numpy(), windows.argmax(axis=3))


def test_no_boxes():
    features = tf.random.normal([2, 5, 6, 4])
    boxes = tf.zeros([0, 4])
    box_indices = tf.zeros([0], tf.int32)
    with tf.GradientTape() as tape:
        tape.watch([features, boxes])
        out = roi_warp(features, boxes, box_indices, 4, 2)
    assert out.shape == (0, 2, 2, 4)
    grad_features, grad_boxes = tape.gradient(out, [features, boxes])
    assert grad_boxes.shape == (0, 4)
    np.testing.assert_array_equal(grad_features, np.zeros([2, 5, 6, 4]))


@pytest.mark.parametrize("shape", [(2, 1, 6, 3), (2, 5, 1, 3), (1, 1, 1, 2)])
def test_unit_height_or_width_matches_reference(shape):
    # crop_and_resize's normalisation divides by H - 1 = 0 here; both implementations divide
    # by 1 instead, so that axis samples index 0 everywhere (documented convention).
    rng = np.random.default_rng(4)
    features = tf.constant(rng.standard_normal(shape), tf.float32)
    boxes = tf.constant(random_boxes(rng, 5, 4, 4, 1 / 16, "partly_outside"))
    box_indices = tf.constant(rng.integers(0, shape[0], 5), tf.int32)
    with tf.GradientTape() as tape:
        tape.watch([features, boxes])
        ours = roi_warp(features, boxes, box_indices, 4, 2)
    reference = roi_warp_reference(features, boxes, box_indices, 4, 2)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)
    ours_grads = tape.gradient(ours, [features, boxes])
    ref_grads = per_box_gradients(roi_warp_reference, features, boxes, box_indices, (4, 2))
    for a, b in zip(ours_grads, ref_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_large_finite_boxes_do_not_crash():
    features = tf.random.normal([1, 4, 4, 2])
    boxes = tf.constant([[-3e38, -3e38, 3e38, 3e38], [1e30, 1e30, -1e30, 5.0]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([features, boxes])
        out = roi_warp(features, boxes, [0, 0], 4, 2)
    assert np.all(np.isfinite(out.numpy()))
    grads = tape.gradient(out, [features, boxes])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


# Gradients ----------------------------------------------------------------------------


def test_gradients_equal_autodiff_of_reference_composite():
    features, boxes, box_indices = mixed_inputs(seed=5, channels=10)
    upstream = tf.random.stateless_normal([len(boxes), 4, 4, 10], seed=[1, 2])
    with tf.GradientTape() as tape:
        tape.watch([features, boxes])
        out = roi_warp(features, boxes, box_indices, 8, 4, 1 / 16)
    ours_f, ours_b = tape.gradient(out, [features, boxes], output_gradients=upstream)
    ref_f, ref_b = per_box_gradients(
        crop_and_pool_tensor, features, boxes, box_indices, (8, 4, 1 / 16), upstream
    )
    np.testing.assert_allclose(ours_f, ref_f, rtol=0, atol=1e-5 * max(1, np.abs(ref_f).max()))
    np.testing.assert_allclose(ours_b, ref_b, rtol=0, atol=1e-5 * max(1, np.abs(ref_b).max()))
    assert np.abs(ref_b.numpy()).max() > 0  # the box gradient is really exercised


def per_box_gradients(fn, features, boxes, box_indices, args, upstream=None):
    """Autodiff gradients of ``fn`` (a stock-op reference) w.r.t. features and boxes, one box
    per call, summed in box order.

    TF's CPU CropAndResizeGradImage shards boxes over the intra-op threads and adds them into
    the shared image gradient without synchronisation: with 4+ threads, boxes of the same image
    race and the result changes from run to run (measured: differences up to 2.1 on this
    test's inputs). One box per call leaves nothing to race, so the reference is exact.
    """
    grad_features = tf.zeros_like(features)
    grad_boxes = []
    for r in range(boxes.shape[0]):
        box = boxes[r : r + 1]
        with tf.GradientTape() as tape:
            tape.watch([features, box])
            out = fn(features, box, box_indices[r : r + 1], *args)
        up = None if upstream is None else upstream[r : r + 1]
        g_f, g_b = tape.gradient(out, [features, box], output_gradients=up)
        grad_features += g_f
        grad_boxes.append(g_b)
    return grad_features, tf.concat(grad_boxes, axis=0)


def crop_and_pool_tensor(features, boxes, box_indices, crop_size, pooled_size, spatial_scale):
    """crop_and_pool with the normalisation in TF ops, so boxes get an autodiff gradient."""
    h, w = features.shape[1:3]
    boxes_n = boxes * spatial_scale / tf.constant([h - 1, w - 1, h - 1, w - 1], tf.float32)
    crops = tf.image.crop_and_resize(
        features, boxes_n, box_indices, [crop_size, crop_size], extrapolation_value=0.0
    )
    k = crop_size // pooled_size
    return tf.nn.max_pool2d(crops, k, k, "VALID")


def _kink_free_inputs(crop_size=4, pooled_size=2, scale=0.25, margin=0.01, gap=0.03):
    """Small inputs whose sample positions sit away from grid lines and the map border, and
    whose pooling windows have a clear maximum, so finite differences (delta 1e-2: sample
    positions move by <= 2.5e-3, values by <= 1e-2) see a smooth function."""
    batch, height, width, channels = 2, 5, 6, 2
    for seed in range(200):
        rng = np.random.default_rng(seed)
        features = rng.uniform(-1, 1, (batch, height, width, channels)).astype(np.float32)
        lo = np.array([0.3, 0.3]) / scale
        hi = np.array([height - 1.3, width - 1.3]) / scale
        boxes = np.concatenate([rng.uniform(lo, hi, (3, 2)), rng.uniform(lo, hi, (3, 2))], 1)
        boxes = boxes[:, [0, 1, 2, 3]].astype(np.float32)
        boxes[2] = boxes[2, [2, 3, 0, 1]]  # one flipped box
        i = np.arange(crop_size)[None, :] / (crop_size - 1)
        pos = np.concatenate(
            [
                (boxes[:, [0]] + i * (boxes[:, [2]] - boxes[:, [0]])) * scale,
                (boxes[:, [1]] + i * (boxes[:, [3]] - boxes[:, [1]])) * scale,
            ]
        )
        if np.min(np.abs(pos - np.round(pos))) < margin:
            continue
        box_indices = np.array([0, 1, 1], np.int32)
        crops = crop_and_pool(features, boxes, box_indices, crop_size, crop_size, scale).numpy()
        k = crop_size // pooled_size
        windows = crops.reshape(3, pooled_size, k, pooled_size, k, channels)
        windows = np.sort(windows.transpose(0, 1, 3, 5, 2, 4).reshape(-1, k * k), axis=1)
        if np.min(windows[:, -1] - windows[:, -2]) < gap:
            continue
        return features, boxes, box_indices
    raise AssertionError("no kink-free sample found")


def test_numerical_gradient_features_and_boxes():
    features, boxes, box_indices = _kink_free_inputs()

    def f(features, boxes):
        return roi_warp(
            features, boxes, box_indices, crop_size=4, pooled_size=2, spatial_scale=0.25
        )

    theoretical, numerical = tf.test.compute_gradient(
        f, [tf.constant(features), tf.constant(boxes)], delta=1e-2
    )
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, rtol=0, atol=2e-3)
    # The box Jacobian is not trivially zero.
    assert np.abs(theoretical[1]).max() > 1e-2


def test_outside_samples_get_no_gradient():
    features = tf.random.normal([1, 4, 4, 2])
    boxes = tf.constant([[100.0, 100.0, 200.0, 200.0]])  # far outside the 4x4 map (scale 1/16)
    with tf.GradientTape() as tape:
        tape.watch([features, boxes])
        out = roi_warp(features, boxes, [0], 4, 2)
    grad_features, grad_boxes = tape.gradient(out, [features, boxes])
    assert np.all(grad_features.numpy() == 0) and np.all(grad_boxes.numpy() == 0)


def test_backward_is_deterministic():
    features, boxes, box_indices = mixed_inputs(seed=6, channels=40)

    def grads():
        with tf.GradientTape() as tape:
            tape.watch([features, boxes])
            out = roi_warp(features, boxes, box_indices, 8, 4)
        return [g.numpy() for g in tape.gradient(out, [features, boxes])]

    first, second = grads(), grads()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_works_inside_tf_function_with_unknown_shapes():
    spec = [
        tf.TensorSpec([None, None, None, 3]),
        tf.TensorSpec([None, 4]),
        tf.TensorSpec([None], tf.int32),
    ]

    @tf.function(input_signature=spec)
    def warp_and_grad(features, boxes, box_indices):
        with tf.GradientTape() as tape:
            tape.watch([features, boxes])
            out = roi_warp(features, boxes, box_indices, 4, 2)
        return out, tape.gradient(tf.reduce_sum(out), [features, boxes])

    features, boxes, box_indices = mixed_inputs(seed=7, channels=3)
    out, _ = warp_and_grad(features, boxes, box_indices)
    np.testing.assert_allclose(
        out, crop_and_pool(features, boxes, box_indices, 4, 2, 1 / 16), rtol=0, atol=1e-5
    )
    concrete = warp_and_grad.get_concrete_function()
    assert concrete.structured_outputs[0].shape.as_list() == [None, 2, 2, 3]


def test_half_precision_inputs_are_computed_in_float32():
    features, boxes, box_indices = mixed_inputs(seed=8)
    expected = roi_warp(features, boxes, box_indices, 8, 4)
    for dtype in (tf.float16, tf.bfloat16):
        out = roi_warp(tf.cast(features, dtype), boxes, box_indices, 8, 4)
        assert out.dtype == dtype
        np.testing.assert_allclose(tf.cast(out, tf.float32), expected, atol=0.05)


# Bad input ----------------------------------------------------------------------------

GOOD = dict(
    features=np.zeros([2, 4, 5, 3], np.float32),
    boxes=np.array([[0, 0, 16, 16], [8, 8, 40, 40]], np.float32),
    box_indices=np.array([0, 1], np.int32),
)


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        ({"features": np.zeros([4, 5, 3], np.float32)}, r"features must be rank 4.*\[4,5,3\]"),
        ({"features": np.zeros([2, 0, 5, 3], np.float32)}, r"features height and width"),
        ({"boxes": np.zeros([2, 3], np.float32)}, r"boxes must have shape \[R, 4\].*\[2,3\]"),
        ({"boxes": np.zeros([2, 4, 1], np.float32)}, r"boxes must have shape \[R, 4\]"),
        ({"box_indices": np.zeros([2, 1], np.int32)}, r"box_indices must have shape \[R\]"),
        ({"box_indices": np.zeros([3], np.int32)}, r"box_indices.*R = boxes.shape\[0\] = 2.*\[3\]"),
        ({"box_indices": np.array([0, 2], np.int32)}, r"box_indices must be in \[0, 2\).*= 2"),
        ({"box_indices": np.array([-1, 0], np.int32)}, r"box_indices must be in \[0, 2\).*= -1"),
        ({"boxes": np.array([[0, 0, 1, np.nan]] * 2, np.float32)}, r"boxes must be finite.*nan"),
        ({"boxes": np.array([[0, 0, 1, 1], [0, -np.inf, 1, 1]], np.float32)}, r"boxes\[1\]"),
        ({"crop_size": 7, "pooled_size": 2}, r"crop_size must be divisible by pooled_size.*7.*2"),
        ({"crop_size": 0}, r"crop_size and pooled_size must be >= 1"),
        ({"crop_size": 34, "pooled_size": 2}, r"crop_size / pooled_size must be <= 16.*17"),
        ({"spatial_scale": 0.0}, r"spatial_scale must be finite and > 0, got 0"),
        ({"spatial_scale": -1.0}, r"spatial_scale must be finite and > 0, got -1"),
        ({"spatial_scale": float("inf")}, r"spatial_scale must be finite and > 0, got inf"),
    ],
)
def test_bad_input_raises_invalid_argument(overrides, pattern):
    kwargs = dict(GOOD, crop_size=4, pooled_size=2, spatial_scale=1 / 16)
    kwargs.update(overrides)
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        roi_warp(**kwargs)


def test_static_bad_shapes_fail_at_trace_time():
    @tf.function
    def warp(features):
        return roi_warp(features, GOOD["boxes"], GOOD["box_indices"], 4, 2)

    with pytest.raises(
        (ValueError, tf.errors.InvalidArgumentError), match="features must be rank 4"
    ):
        warp(tf.zeros([4, 5, 3]))


def test_grad_op_checks_grads_shape():
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"grads must have shape \[2,2,2,3\]"):
        OPS.mnc_roi_warp_grad(
            tf.zeros([2, 3, 3, 3]),
            GOOD["features"],
            GOOD["boxes"],
            GOOD["box_indices"],
            tf.zeros([2, 2, 2, 3], tf.uint8),
            crop_size=4,
            pooled_size=2,
        )


def test_missing_library_error_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setattr(_loader, "LIBRARY_PATH", str(tmp_path / "_mnc_ops.so"))
    load_library.cache_clear()
    try:
        with pytest.raises(OpLibraryNotFoundError, match=r"python custom_ops/build\.py"):
            roi_warp(GOOD["features"], GOOD["boxes"], GOOD["box_indices"])
    finally:
        monkeypatch.undo()
        load_library.cache_clear()
    assert load_library() is not None


@pytest.mark.skipif(
    not tf.config.list_physical_devices("GPU"),
    reason="no GPU visible to TensorFlow: the CUDA kernels are compile-checked "
    "(tests/test_cuda_compile.py) and run emulated on the CPU (tests/test_cuda_emulation.py)",
)
def test_gpu_matches_cpu():
    features, boxes, box_indices = mixed_inputs(seed=9, channels=37)
    results = []
    for device in ("/CPU:0", "/GPU:0"):
        with tf.device(device), tf.GradientTape() as tape:
            tape.watch([features, boxes])
            out = roi_warp(features, boxes, box_indices, 28, 14)
            grads = tape.gradient(out, [features, boxes])
        results.append([out.numpy()] + [g.numpy() for g in grads])
        # Soft placement would run a missing GPU kernel on the CPU and compare CPU with CPU.
        assert out.device.endswith(device[1:]) and grads[0].device.endswith(device[1:]), (
            f"MncRoiWarp ran on {out.device}: op library built without CUDA (MNC_BUILD_CUDA=1)"
        )
    for cpu, gpu in zip(*results, strict=True):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-5 * max(1, np.abs(cpu).max()))


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"crop_size": 7, "pooled_size": 2}, r"x.roi_pooled_size must be a divisor of .*7.*got 2"),
        ({"crop_size": 0}, r"x.roi_crop_size must be an int >= 1, got 0"),
        ({"pooled_size": 2.0}, r"x.roi_pooled_size must be an int >= 1, got 2.0"),
        ({"crop_size": True}, r"x.roi_crop_size must be an int >= 1, got True"),
        ({"spatial_scale": float("nan")}, r"spatial_scale must be finite and > 0, got nan"),
    ],
)
def test_check_roi_sizes_rejects(kwargs, pattern):
    """The warp's arguments follow the config's one crop/pool rule."""
    args = {"crop_size": 4, "pooled_size": 2, "spatial_scale": 0.5, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        check_roi_sizes(where="x", **args)


def test_reference_uses_the_size_check():
    check_roi_sizes(np.int64(28), 14, 1 / 16, "x")  # NumPy integers are integers
    args = np.zeros([1, 4, 4, 1], np.float32), np.zeros([1, 4], np.float32), np.zeros([1], np.int32)
    with pytest.raises(ValueError, match=r"roi_warp_reference.roi_pooled_size must be a divisor"):
        roi_warp_reference(*args, crop_size=7, pooled_size=2)
    with pytest.raises(ValueError, match=r"roi_warp_reference.roi_pooled_size must be an int"):
        roi_warp_reference(*args, crop_size=4, pooled_size=0)
