"""SavedModel export: stock ops only, runs without mnc_tf, matches model.predict."""

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from export_testutil import (
    CATEGORY_IDS,
    CLASS_NAMES,
    MAX_SIDE,
    SHORT_SIDE,
    encode_jpeg,
    encode_png,
    scene,
)
from PIL import Image

SIGNATURES = ("serving_default", "serving_image_tensor", "serving_tf_example")
OUTPUTS = (
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "detection_masks",
    "num_detections",
    "image_info",
)


def _expected_resize(height, width):
    """Resized size and per-axis scale, computed here independently of mnc_tf."""
    s = min(SHORT_SIDE / min(height, width), MAX_SIDE / max(height, width))
    new_h, new_w = max(int(np.floor(height * s + 0.5)), 1), max(int(np.floor(width * s + 0.5)), 1)
    return (new_h, new_w), (new_h / height, new_w / width)


def _reference(model, image):
    """``model.predict`` on the resized image, boxes mapped back with an independent scale."""
    from mnc_tf.data.preprocess import resize_image

    resized, info = resize_image(image, SHORT_SIDE, MAX_SIDE)
    (new_h, new_w), (sy, sx) = _expected_resize(*image.shape[:2])
    assert tuple(resized.shape[:2]) == (new_h, new_w)
    pred = model.predict(
        {"images": resized[None].numpy(), "image_info": info[None].numpy()}, verbose=0
    )
    n = int(pred["num_detections"][0])
    return {
        "n": n,
        "boxes": pred["boxes"][0, :n] / np.array([sy, sx, sy, sx], np.float32),
        "scores": pred["scores"][0, :n],
        "classes": np.array(CATEGORY_IDS)[pred["classes"][0, :n] - 1],
        "masks": pred["masks"][0, :n],
        "image_info": np.array([image.shape[:2], (new_h, new_w), (sy, sx), (0, 0)], np.float32),
    }


def _assert_matches(out, ref, index=0, box_atol=1e-2):
    n = int(out["num_detections"][index])
    assert n == ref["n"]
    assert n > 0, "the tiny model should detect something (detection_score_threshold = 0)"
    np.testing.assert_allclose(out["image_info"][index], ref["image_info"], rtol=1e-5)
    np.testing.assert_allclose(out["detection_boxes"][index, :n], ref["boxes"], atol=box_atol)
    np.testing.assert_allclose(out["detection_scores"][index, :n], ref["scores"], atol=1e-4)
    np.testing.assert_array_equal(out["detection_classes"][index, :n], ref["classes"])
    np.testing.assert_allclose(out["detection_masks"][index, :n], ref["masks"], atol=1e-3)


def _run(loaded, signature, value):
    key = "examples" if signature == "serving_tf_example" else "images"
    return {k: v.numpy() for k, v in loaded.signatures[signature](**{key: value}).items()}


# --------------------------------------------------------------------------- layout


def test_layout_labels_and_info(export_base):
    version = export_base / "1"
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables" / "variables.index").is_file()
    lines = (version / "assets" / "labels.txt").read_text().splitlines()
    assert lines == [f"{i}\t{n}" for i, n in zip(CATEGORY_IDS, CLASS_NAMES, strict=True)]
    info = json.loads((version / "assets" / "export_info.json").read_text())
    assert (info["short_side"], info["max_side"]) == (SHORT_SIDE, MAX_SIDE)
    assert info["category_ids"] == CATEGORY_IDS and info["class_names"] == CLASS_NAMES
    # No staging leftovers that TF Serving could trip over.
    assert sorted(os.listdir(export_base)) == ["1"]


def test_existing_version_and_bad_version_are_refused(tiny_model, export_base):
    from mnc_tf.export import export_serving

    with pytest.raises(FileExistsError, match="already exists"):
        export_serving(tiny_model, export_base, version=1)
    for bad in (0, -1, "2", 1.0, True):
        with pytest.raises(ValueError, match="version"):
            export_serving(tiny_model, export_base, version=bad)


# --------------------------------------------------------------------------- stock ops


def _op_types(saved_model_dir):
    """Every op type in the SavedModel: graph nodes and the bodies of all library functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    ops = set()
    for meta in proto.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return ops


def test_saved_graph_has_only_stock_ops(export_base):
    ops = _op_types(export_base / "1")
    assert {"DecodeImage", "ResizeBilinear", "Conv2D"} <= ops  # the whole pipeline is inside
    assert not [op for op in ops if op.startswith("Mnc")]
    assert b"MncRoiWarp" not in (export_base / "1" / "saved_model.pb").read_bytes()
    # Stock TensorFlow knows every op type (the fresh-process test below shows it loads and
    # runs where the mnc_tf op library was never loaded).
    from tensorflow.python.framework import op_def_registry

    assert not [op for op in ops if op_def_registry.get(op) is None]


def test_op_check_sees_the_custom_op(tmp_path):
    """Positive control: a graph that does use the custom op is caught by the same checks."""
    import mnc_tf.ops
    from mnc_tf.export.serving import custom_ops_in_saved_model
    from mnc_tf.layers import RoIWarp

    if not mnc_tf.ops.library_available():
        pytest.skip("the custom op library is not built here")
    layer = RoIWarp(4, 2, 1.0)
    specs = [tf.TensorSpec([1, 8, 8, 2]), tf.TensorSpec([1, 4]), tf.TensorSpec([1], tf.int32)]
    warp = tf.function(lambda f, b, i: layer(f, b, i), input_signature=specs)
    with mnc_tf.ops.roi_warp_implementation("custom"):
        concrete = warp.get_concrete_function()
    tf.saved_model.save(tf.Module(), str(tmp_path), signatures={"serving_default": concrete})
    assert any(op.startswith("MncRoiWarp") for op in _op_types(tmp_path))
    assert b"MncRoiWarp" in (tmp_path / "saved_model.pb").read_bytes()
    assert custom_ops_in_saved_model(str(tmp_path))


# --------------------------------------------------------------------------- fresh process

_FRESH_SCRIPT = r"""
import json, os, sys
import numpy as np
import tensorflow as tf

export_dir, jpeg_path, out_path = sys.argv[1:4]
loaded = tf.saved_model.load(export_dir)
encoded = open(jpeg_path, "rb").read()
pixels = tf.io.decode_jpeg(encoded, channels=3)
feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
example = tf.train.Example(features=tf.train.Features(feature={"image/encoded": feature}))
outputs = {
    "serving_default": loaded.signatures["serving_default"](images=tf.constant([encoded])),
    "serving_image_tensor": loaded.signatures["serving_image_tensor"](images=pixels[None]),
    "serving_tf_example": loaded.signatures["serving_tf_example"](
        examples=tf.constant([example.SerializeToString()])),
}
arrays = {f"{s}/{k}": v.numpy() for s, out in outputs.items() for k, v in out.items()}
try:
    loaded.signatures["serving_default"](images=tf.constant([b"definitely not an image"]))
    bad = None
except tf.errors.InvalidArgumentError as e:
    bad = e.message
again = loaded.signatures["serving_default"](images=tf.constant([encoded]))
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
np.savez(out_path, **arrays)
print(json.dumps({
    "mnc_tf_modules": sorted(m for m in sys.modules if m.split(".")[0] == "mnc_tf"),
    "op_library_mapped": "_mnc_ops" in maps,
    "bad_input_error": bad,
    "still_serving": bool(np.array_equal(again["detection_scores"].numpy(),
                                         arrays["serving_default/detection_scores"])),
}))
"""


def test_fresh_process_without_mnc_tf_runs_every_signature(tiny_model, export_base, tmp_path):
    image = scene(90, 150, seed=1)  # non-square, downscaled to 64 × 107
    jpeg = tmp_path / "scene.jpg"
    jpeg.write_bytes(encode_jpeg(image))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_SCRIPT, str(export_base / "1"), str(jpeg), "out.npz"],
        cwd=tmp_path,  # not the repository: `import mnc_tf` would need an installed package
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["mnc_tf_modules"] == []
    assert report["op_library_mapped"] is False
    assert report["bad_input_error"] and "not an encoded JPEG, PNG" in report["bad_input_error"]
    assert report["still_serving"]

    arrays = np.load(tmp_path / "out.npz")
    # The same decoder as the SavedModel, so both sides see identical pixels.
    pixels = tf.io.decode_jpeg(jpeg.read_bytes(), channels=3).numpy()
    ref = _reference(tiny_model, pixels)
    for signature in SIGNATURES:
        out = {k: arrays[f"{signature}/{k}"] for k in OUTPUTS}
        assert out["detection_boxes"].dtype == np.float32
        assert out["detection_classes"].dtype == np.int32
        assert out["num_detections"].dtype == np.int32
        _assert_matches(out, ref)


def test_saved_model_cli_lists_the_three_signatures(export_base):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorflow.python.tools.saved_model_cli",
            "show",
            "--all",
            "--dir",
            str(export_base / "1"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # "signature_def['name']:" blocks of "inputs/outputs['key'] tensor_info: dtype: … shape: …".
    blocks = re.split(r"signature_def\['([^']+)'\]:", proc.stdout)
    sigs = dict(zip(blocks[1::2], blocks[2::2], strict=True))
    assert set(SIGNATURES) <= set(sigs)
    k, m = 20, 28  # max_detections and mask_size of the tiny model
    expected_outputs = {
        ("outputs", "detection_boxes"): ("DT_FLOAT", f"(-1, {k}, 4)"),
        ("outputs", "detection_scores"): ("DT_FLOAT", f"(-1, {k})"),
        ("outputs", "detection_classes"): ("DT_INT32", f"(-1, {k})"),
        ("outputs", "detection_masks"): ("DT_FLOAT", f"(-1, {k}, {m}, {m})"),
        ("outputs", "num_detections"): ("DT_INT32", "(-1)"),
        ("outputs", "image_info"): ("DT_FLOAT", "(-1, 4, 2)"),
    }
    expected_inputs = {
        "serving_default": {("inputs", "images"): ("DT_STRING", "(-1)")},
        # Channels are checked in the graph (a server does not check fed shapes).
        "serving_image_tensor": {("inputs", "images"): ("DT_UINT8", "(-1, -1, -1, -1)")},
        "serving_tf_example": {("inputs", "examples"): ("DT_STRING", "(-1)")},
    }
    pattern = r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)"
    for name, inputs in expected_inputs.items():
        found = {(io, key): (dtype, shape.strip()) for io, key, dtype, shape in
                 re.findall(pattern, sigs[name])}  # fmt: skip
        assert found == {**inputs, **expected_outputs}, sigs[name]
        assert "Method name is: tensorflow/serving/predict" in sigs[name]


# --------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize(
    "size",
    [(40, 70), (150, 90), (64, 64), (50, 200)],
    ids=["upscaled", "downscaled-portrait", "unscaled", "max-side-limited"],
)
def test_boxes_map_back_to_original_pixels(tiny_model, loaded_export, size):
    image = scene(*size, seed=sum(size))
    out = _run(loaded_export, "serving_image_tensor", image[None])
    ref = _reference(tiny_model, image)
    _assert_matches(out, ref)
    n = ref["n"]
    boxes = out["detection_boxes"][0, :n]
    height, width = size
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= height + 1e-3)
    assert np.all(boxes[:, [1, 3]] <= width + 1e-3)


def test_mixed_size_batch_is_padded(tiny_model, loaded_export):
    big = scene(40, 70, seed=3)  # → 64 × 112: the batch's padded size
    small = scene(60, 100, seed=4)  # → 64 × 107: padded on the right
    out = _run(loaded_export, "serving_default", tf.constant([encode_png(big), encode_png(small)]))
    _assert_matches(out, _reference(tiny_model, big), index=0)
    alone = _run(loaded_export, "serving_default", tf.constant([encode_png(small)]))
    np.testing.assert_allclose(out["image_info"][1], alone["image_info"][0])
    n = int(out["num_detections"][1])
    assert np.all(out["detection_boxes"][1, :n, [0, 2]] <= 60 + 1e-3)
    assert np.all(out["detection_boxes"][1, :n, [1, 3]] <= 100 + 1e-3)


def test_grayscale_rgba_and_webp_are_converted(loaded_export):
    gray = scene(48, 80, seed=5)[..., 0]
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    rgba_src = scene(48, 80, seed=6)
    rgba = np.concatenate([rgba_src, np.full((48, 80, 1), 77, np.uint8)], axis=-1)
    webp_src = scene(48, 80, seed=7)
    buffer = io.BytesIO()
    Image.fromarray(webp_src).save(buffer, format="WEBP", lossless=True)
    cases = [
        (encode_png(gray, "L"), rgb),
        (encode_png(rgba, "RGBA"), rgba_src),
        (buffer.getvalue(), webp_src),
    ]
    for encoded, pixels in cases:
        out = _run(loaded_export, "serving_default", tf.constant([encoded]))
        ref = _run(loaded_export, "serving_image_tensor", pixels[None])
        for key in OUTPUTS:
            np.testing.assert_allclose(out[key], ref[key], atol=1e-5, err_msg=key)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "signature, value, pattern",
    [
        (
            "serving_default",
            [b"definitely not an image"],
            r"images.*element\] \[0\].*not an encoded",
        ),
        ("serving_default", [b""], r"images.*element\] \[0\] \[is an empty string"),
        ("serving_default", [b"ab"], r"images.*element\] \[0\].*not an encoded"),
        ("serving_default", [], r"images.*empty batch"),
        (
            "serving_default",
            [b"\xff\xd8\xff\xe0 truncated jpeg"],
            r"images.*element\] \[0\] \[could not be decoded.*JPEG",
        ),
        ("serving_image_tensor", np.zeros((1, 0, 5, 3), np.uint8), r"images.*zero-size"),
        ("serving_image_tensor", np.zeros((0, 8, 8, 3), np.uint8), r"images.*empty batch"),
        ("serving_tf_example", [b"\x0a\x00"], r"image/encoded.*empty string \(or missing\)"),
        (
            "serving_tf_example",
            [b"garbage that is not a proto"],
            r"examples.*element\] \[0\] \[is not a serialized tf.train.Example",
        ),
    ],
    ids=[
        "not-an-image",
        "empty-string",
        "two-bytes",
        "empty-batch",
        "truncated-jpeg",
        "zero-size",
        "empty-tensor-batch",
        "example-without-image",
        "not-an-example",
    ],
)
def test_bad_input_raises_invalid_argument_and_serving_continues(
    loaded_export, signature, value, pattern
):
    if signature != "serving_image_tensor":
        value = tf.constant(value, tf.string)
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        _run(loaded_export, signature, value)
    ok = _run(loaded_export, "serving_image_tensor", scene(40, 70)[None])
    assert ok["num_detections"].shape == (1,)


def test_zero_size_png_is_rejected(loaded_export):
    # A PNG can't have zero width; a GIF header can say 0×0 → the size check must catch it
    # (or the decoder refuses it); either way an InvalidArgumentError, never a crash.
    gif = b"GIF89a\x00\x00\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00;"
    with pytest.raises(tf.errors.InvalidArgumentError):
        _run(loaded_export, "serving_default", tf.constant([gif]))
