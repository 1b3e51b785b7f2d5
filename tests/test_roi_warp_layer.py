"""mnc_tf.layers.RoIWarp: Keras integration, serialization, implementation switch."""

import importlib
import logging
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnc_tf.layers import RoIWarp
from mnc_tf.ops import (
    get_roi_warp_implementation,
    load_library,
    roi_warp,
    roi_warp_implementation,
    roi_warp_reference,
)

load_library()  # fails loudly (not a skip) when the op library is missing

# The module, not the function mnc_tf.ops.roi_warp that shadows it as a package attribute.
roi_warp_module = importlib.import_module("mnc_tf.ops.roi_warp")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W, C = 6, 7, 5


def inputs(seed=0, batch=2, num_boxes=5):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((batch, H, W, C)).astype(np.float32)
    y = np.sort(rng.uniform(-10, 16 * H, (num_boxes, 2)), axis=1)
    x = np.sort(rng.uniform(-10, 16 * W, (num_boxes, 2)), axis=1)
    boxes = np.stack([y[:, 0], x[:, 0], y[:, 1], x[:, 1]], axis=1).astype(np.float32)
    box_indices = rng.integers(0, batch, num_boxes).astype(np.int32)
    return features, boxes, box_indices


def functional_model(layer):
    features = keras.Input((H, W, C), name="features")
    boxes = keras.Input((4,), name="boxes")
    box_indices = keras.Input((), dtype="int32", name="box_indices")
    warped = layer(features, boxes, box_indices)
    return keras.Model([features, boxes, box_indices], warped)


def ops_in(fn, *args):
    graph = tf.function(fn).get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("implementation", ["auto", "custom", "reference"])
def test_layer_matches_op(implementation):
    features, boxes, box_indices = inputs()
    layer = RoIWarp(crop_size=8, pooled_size=4, implementation=implementation)
    out = layer(features, boxes, box_indices)
    assert out.shape == (5, 4, 4, C)
    np.testing.assert_allclose(out, roi_warp(features, boxes, box_indices, 8, 4), atol=1e-5)
    assert layer.supports_jit is False


def test_get_config_round_trip():
    layer = RoIWarp(crop_size=12, pooled_size=6, spatial_scale=1 / 8, implementation="reference")
    config = layer.get_config()
    assert config["crop_size"] == 12 and config["pooled_size"] == 6
    assert config["spatial_scale"] == 0.125 and config["implementation"] == "reference"
    clone = RoIWarp.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, RoIWarp) and restored.get_config() == config


def test_functional_model_save_and_load(tmp_path):
    model = functional_model(RoIWarp(crop_size=8, pooled_size=4))
    assert model.output_shape == (None, 4, 4, C)
    features, boxes, box_indices = inputs(seed=1)
    expected = model([features, boxes, box_indices])
    path = str(tmp_path / "roi_warp.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded([features, boxes, box_indices]), expected, atol=1e-6)
    assert isinstance(loaded.layers[-1], RoIWarp)


def test_inside_tf_function_and_gradients_reach_boxes():
    layer = RoIWarp(crop_size=8, pooled_size=4)
    features, boxes, box_indices = inputs(seed=2)
    offset = tf.Variable(tf.zeros([4]))

    @tf.function
    def step(features, boxes):
        with tf.GradientTape() as tape:
            out = layer(features, boxes + offset, box_indices)
            loss = tf.reduce_sum(out**2)
        return out, tape.gradient(loss, offset)

    out, grad_offset = step(tf.constant(features), tf.constant(boxes))
    np.testing.assert_allclose(out, roi_warp(features, boxes, box_indices, 8, 4), atol=1e-5)
    assert np.abs(grad_offset.numpy()).max() > 0


def test_fit_two_steps():
    features_in = keras.Input((H, W, C))
    boxes_in = keras.Input((4,))
    indices_in = keras.Input((), dtype="int32")
    projected = keras.layers.Conv2D(3, 1)(features_in)
    warped = RoIWarp(crop_size=4, pooled_size=2)(projected, boxes_in, indices_in)
    score = keras.layers.Dense(1)(keras.layers.Flatten()(warped))
    model = keras.Model([features_in, boxes_in, indices_in], score)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    features, boxes, box_indices = inputs(seed=3)
    # One whole batch per step: boxes and features have different leading sizes.
    data = tf.data.Dataset.from_tensors(
        ((features, boxes, box_indices), np.ones([5, 1], np.float32))
    ).repeat()
    kernel_before = model.layers[1].get_weights()[0].copy()
    history = model.fit(data, steps_per_epoch=2, epochs=1, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.allclose(model.layers[1].get_weights()[0], kernel_before)


def test_float16_inputs():
    features, boxes, box_indices = inputs(seed=4)
    expected = roi_warp(features, boxes, box_indices, 8, 4)
    half = features.astype(np.float16)
    out32 = RoIWarp(crop_size=8, pooled_size=4)(half, boxes, box_indices)
    assert out32.dtype == "float32"
    np.testing.assert_allclose(out32, expected, atol=1e-2)
    mixed = RoIWarp(crop_size=8, pooled_size=4, dtype="mixed_float16")
    out16 = mixed(half, boxes, box_indices)
    assert out16.dtype == "float16"
    np.testing.assert_allclose(tf.cast(out16, tf.float32), expected, atol=1e-2)


def test_implementation_override_controls_the_traced_graph():
    layer = RoIWarp(crop_size=8, pooled_size=4, implementation="custom")
    args = inputs(seed=5)
    assert get_roi_warp_implementation() == "auto"
    assert "MncRoiWarp" in ops_in(layer, *args)
    with roi_warp_implementation("reference"):
        assert get_roi_warp_implementation() == "reference"
        traced = ops_in(layer, *args)
        assert "MncRoiWarp" not in traced and "CropAndResize" in traced
    assert get_roi_warp_implementation() == "auto"
    with roi_warp_implementation("custom"):
        reference_layer = RoIWarp(crop_size=8, pooled_size=4, implementation="reference")
        assert "MncRoiWarp" in ops_in(reference_layer, *args)


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(roi_warp_module, "library_available", lambda: False)
    monkeypatch.setattr(roi_warp_module, "_warned_fallback", False)
    layer = RoIWarp(crop_size=8, pooled_size=4)
    args = inputs(seed=6)
    with caplog.at_level(logging.WARNING, logger=roi_warp_module.__name__):
        assert "MncRoiWarp" not in ops_in(layer, *args)
        out = layer(*args)
    np.testing.assert_allclose(out, roi_warp_reference(*args, 8, 4), atol=1e-6)
    warnings = [r for r in caplog.records if "op library not built" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"implementation": "fast"}, "implementation must be one of"),
        ({"crop_size": 7, "pooled_size": 2}, "RoIWarp.roi_pooled_size must be a divisor of"),
        ({"pooled_size": 0}, "RoIWarp.roi_pooled_size must be an int >= 1"),
        ({"spatial_scale": 0}, "spatial_scale must be finite and > 0"),
    ],
)
def test_bad_layer_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        RoIWarp(**kwargs)
    with pytest.raises(ValueError, match="one of"):
        with roi_warp_implementation("fast"):
            pass


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mnc_tf.layers import RoIWarp
    from mnc_tf.ops import roi_warp
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    features = tf.constant(rng.standard_normal((1, 6, 7, 5)), tf.float32)
    boxes = tf.constant([[0, 0, 80, 90], [10, 5, 60, 100]], tf.float32)
    box_indices = tf.constant([0, 0])
    with strategy.scope():
        layer = RoIWarp(crop_size=8, pooled_size=4)
        offset = tf.Variable(tf.zeros([4]))

    @tf.function
    def step():
        def replica_fn():
            with tf.GradientTape() as tape:
                out = layer(features, boxes + offset, box_indices)
                loss = tf.reduce_sum(out ** 2)
            return tape.gradient(loss, offset)
        per_replica = strategy.run(replica_fn)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    grad = step().numpy()
    with tf.GradientTape() as tape:
        tape.watch(boxes)
        loss = tf.reduce_sum(roi_warp(features, boxes, box_indices, 8, 4) ** 2)
    expected = 2 * tf.reduce_sum(tape.gradient(loss, boxes), axis=0).numpy()
    assert strategy.num_replicas_in_sync == 2
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)
    print("MIRRORED_OK")
    """
)


def test_mirrored_strategy_two_logical_cpus():
    # Own process: logical devices must be configured before TensorFlow initialises.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and "MIRRORED_OK" in result.stdout, result.stderr[-3000:]
