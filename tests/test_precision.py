"""Precision option: MNC(dtype_policy=...), with_precision, and the CLI flags.

What stays float32 whatever the precision (docs/precision.md) is asserted on the tensors
themselves: the model's outputs, the RoI warp boxes, the heads' logits / deltas.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnc_tf.config import MNCConfig
from mnc_tf.modeling.mnc import MNC
from mnc_tf.precision import PRECISIONS, check_precision, with_precision


def tiny(**kwargs):
    keras.utils.set_random_seed(0)
    return MNC(3, backbone="tiny", num_stages=5, config=MNCConfig.tiny_shapes(), **kwargs)


def images(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, 96, 128, 3)).astype(np.float32)


def test_dtype_policy_builds_every_part_and_restores_the_global_policy():
    before = keras.mixed_precision.global_policy().name
    model = tiny(dtype_policy="mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == before
    assert model.dtype_policy.name == "mixed_bfloat16"
    for layer in (model.backbone, model.rpn_head, model.mask_head, model.class_head):
        assert layer.dtype_policy.name == "mixed_bfloat16", layer.name
    assert model.roi_warp.compute_dtype == "bfloat16"
    assert model.mask_head.fc.kernel.dtype == "float32"  # mixed: float32 weights
    assert model.preprocessing.compute_dtype == "float32"  # pixels stay float32
    # Saved and restored with its policy.
    clone = MNC.from_config(model.get_config())
    assert clone.dtype_policy.name == "mixed_bfloat16"
    assert clone.class_head.dtype_policy.name == "mixed_bfloat16"


def test_dtype_and_dtype_policy_must_agree():
    with pytest.raises(ValueError, match="dtype or dtype_policy"):
        tiny(dtype="float32", dtype_policy="mixed_bfloat16")


def test_check_precision_names_the_argument():
    assert check_precision("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match=r"--precision: expected one of float32, bfloat16"):
        check_precision("bf16", "--precision")


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_with_precision_stores_weights_in_that_dtype_and_matches_the_mixed_policy(precision):
    """The converted model's weights are the float32 weights rounded; it computes exactly
    what Keras' mixed policy computes with the float32 weights (which rounds them per call),
    and its outputs keep their float32 / int32 dtypes."""
    model = tiny()
    x = images()
    converted = with_precision(model, precision)
    assert converted is not model and converted.dtype_policy.name == precision
    for ours, theirs in zip(converted.weights, model.weights, strict=True):
        assert ours.dtype == precision
        np.testing.assert_array_equal(
            np.asarray(ours.numpy(), np.float32),
            np.asarray(tf.cast(tf.cast(theirs, precision), tf.float32)),
        )
    mixed = tiny(dtype_policy=f"mixed_{precision}")
    mixed.set_weights(model.get_weights())
    out, ref = converted(x), mixed(x)
    expected_dtypes = {
        "boxes": tf.float32,
        "scores": tf.float32,
        "classes": tf.int32,
        "masks": tf.float32,
        "num_detections": tf.int32,
    }
    for key, dtype in expected_dtypes.items():
        assert out[key].dtype == dtype, key
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-6, atol=1e-6, err_msg=key)
    assert with_precision(converted, precision) is converted
    assert with_precision(model, "float32") is model


def test_with_precision_rejects_other_models():
    with pytest.raises(ValueError, match="model: expected an mnc_tf.MNC"):
        with_precision(keras.Sequential([keras.layers.Dense(2)]), "bfloat16")


def test_heads_keep_float32_outputs_and_boxes_under_bfloat16():
    model = with_precision(tiny(), "bfloat16")
    x = images(1)
    features, logits, deltas, _ = model._features(tf.constant(x), False)
    assert features.dtype == tf.bfloat16
    assert logits.dtype == tf.float32 and deltas.dtype == tf.float32
    rois = tf.constant([[[8.0, 8.0, 60.0, 90.0], [20.0, 4.0, 50.0, 30.0]]])
    warped, mask_logits = model.cascade._mask_logits(features, rois, False)
    assert warped.dtype == tf.bfloat16 and mask_logits.dtype == tf.float32
    cls_logits, box_deltas = model.cascade._classify(warped, mask_logits, 1, False)
    assert cls_logits.dtype == tf.float32 and box_deltas.dtype == tf.float32


def test_mixed_bfloat16_training_step_reaches_boxes_and_every_head():
    """One fit step in mixed_bfloat16: finite losses, and the RoI warp box gradient (via the
    bfloat16 op) and every head's weights get a gradient."""
    model = tiny(dtype_policy="mixed_bfloat16")
    x = images(2)
    boxes = np.array([[[10, 12, 60, 70], [30, 50, 90, 120]]], np.float32)
    masks = np.zeros((1, 2, 96, 128), np.uint8)
    masks[0, 0, 10:60, 12:70] = 1
    masks[0, 1, 30:90, 50:120] = 1
    targets = {"boxes": boxes, "labels": np.array([[1, 2]], np.int32), "masks": masks}
    with tf.GradientTape() as tape:
        terms = model.compute_losses({"images": x}, targets, training=True)
    names = [w.path for w in model.trainable_weights]
    grads = tape.gradient(terms["loss"], model.trainable_weights)
    assert all(np.isfinite(float(v)) for v in terms.values())
    for head in ("rpn_head", "mask_head", "class_head"):
        got = [g for n, g in zip(names, grads, strict=True) if f"{head}/" in n]
        assert got and all(g is not None for g in got), head
        assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in got), head
    assert PRECISIONS == ("float32", "bfloat16", "float16")


def test_mnc_predict_precision_flag(tmp_path, capsys):
    """mnc-predict --precision bfloat16 runs a .keras model in bfloat16 (same detections'
    scores as the bfloat16 copy within rounding); on a SavedModel the flag is a usage error."""
    from PIL import Image

    from mnc_tf.cli import predict

    model = tiny(class_names=["a", "b", "c"])
    path = tmp_path / "model.keras"
    model.save(path)
    image = (np.random.default_rng(3).uniform(0, 255, (96, 128, 3))).astype(np.uint8)
    image_path = tmp_path / "img.png"
    Image.fromarray(image).save(image_path)
    out = tmp_path / "out"
    assert predict.main([str(image_path), "--model", str(path), "--out", str(out),
                         "--precision", "bfloat16", "--threshold", "0"]) == 0  # fmt: skip
    import json

    with open(out / "results.json") as f:
        results = json.load(f)
    expected = with_precision(model, "bfloat16")(image[None].astype(np.float32))
    n = int(expected["num_detections"][0])
    assert len(results) == n > 0
    np.testing.assert_allclose(
        sorted(r["score"] for r in results), np.sort(expected["scores"][0, :n]), atol=1e-3
    )
    capsys.readouterr()
    saved = tmp_path / "saved"
    saved.mkdir()
    code = predict.main([str(image_path), "--model", str(saved), "--out", str(tmp_path / "o2"),
                         "--precision", "bfloat16"])  # fmt: skip
    assert code == 2
    assert "--precision: applies to a .keras model" in capsys.readouterr().err


def test_head_dense_transposed_kernel_matches_the_kernel():
    from mnc_tf.layers import HeadDense

    rng = np.random.default_rng(4)
    layer = HeadDense(7, activation="relu")
    layer.build((None, 11))
    x = rng.standard_normal((5, 11)).astype(np.float32)
    expected = np.maximum(x @ layer.kernel.numpy() + layer.bias.numpy(), 0)
    layer.use_transposed_kernel()
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-6)
    assert len(layer.weights) == 2  # the copy is not a Keras weight (saving unchanged)
