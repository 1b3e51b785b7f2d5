"""export_serving(precision="bfloat16"): a stock-op SavedModel computing in bfloat16, run in
TensorFlow's Session loader (the one TF Serving uses), against the bfloat16 Keras model."""

import json

import numpy as np
import pytest
import tensorflow as tf
from export_testutil import CATEGORY_IDS, MAX_SIDE, SHORT_SIDE, scene

from mnc_tf.export import session_loader
from mnc_tf.export.serving import custom_ops_in_saved_model, export_serving
from mnc_tf.precision import with_precision


@pytest.fixture(scope="module")
def bf16_export(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("export_bf16")
    return export_serving(tiny_model, base, version=1, precision="bfloat16")


def test_bfloat16_export_is_stock_ops_with_bfloat16_weights(bf16_export):
    import os

    assert custom_ops_in_saved_model(bf16_export) == set()
    reader = tf.train.load_checkpoint(os.path.join(bf16_export, "variables", "variables"))
    dtypes = {
        name: dtype
        for name, dtype in reader.get_variable_to_dtype_map().items()
        if "VARIABLE_VALUE" in name
    }
    assert dtypes and all(d == tf.bfloat16 for d in dtypes.values()), dtypes
    with open(os.path.join(bf16_export, "assets", "export_info.json")) as f:
        assert json.load(f)["precision"] == "bfloat16"


def test_bad_precision_is_named(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="precision: expected one of float32, bfloat16"):
        export_serving(tiny_model, tmp_path, precision="bf16")


def test_bfloat16_export_in_the_session_loader_matches_the_bfloat16_model(
    bf16_export, tiny_model, tmp_path
):
    binary = session_loader.build(str(tmp_path))
    pixels = scene(90, 150, seed=1)
    report, proc = session_loader.run(
        binary, bf16_export, [("serving_image_tensor", "images", pixels[None])], str(tmp_path)
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = report["requests"][0]
    assert result["ok"], result
    out = result["outputs"]
    assert out["detection_boxes"].dtype == np.float32
    assert out["detection_masks"].dtype == np.float32
    assert out["detection_scores"].dtype == np.float32

    from mnc_tf.data.preprocess import resize_image

    resized, info = resize_image(pixels, SHORT_SIDE, MAX_SIDE)
    model16 = with_precision(tiny_model, "bfloat16")
    pred = model16.predict(
        {"images": resized[None].numpy(), "image_info": info[None].numpy()}, verbose=0
    )
    n = int(pred["num_detections"][0])
    assert n > 0 and int(out["num_detections"][0]) == n
    # The export warps RoIs with stock ops (float32 crop_and_resize on the widened features,
    # rounded to bfloat16) and the model with the op's bfloat16 kernels (the same values up
    # to float32 round-off before the rounding): equal up to a bfloat16 step.
    np.testing.assert_allclose(out["detection_scores"][0, :n], pred["scores"][0, :n], atol=2e-2)
    np.testing.assert_array_equal(
        out["detection_classes"][0, :n], np.array(CATEGORY_IDS)[pred["classes"][0, :n] - 1]
    )
    np.testing.assert_allclose(out["detection_masks"][0, :n], pred["masks"][0, :n], atol=2e-2)
