"""The export in TensorFlow's Session loader — the loader TF Serving uses — with no Python.

``tools/saved_model_session_loader.c`` is compiled here against the TensorFlow wheel's C API
and run as a separate process: ``TF_LoadSessionFromSavedModel(tags={"serve"})``, tensor names
from the MetaGraphDef's signature defs, ``TF_SessionRun``. Its outputs are compared with
Python's ``tf.saved_model.load`` on the same export, and with the model itself.
"""

import os
import pathlib
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from export_testutil import encode_jpeg, encode_png, scene, tf_example

from mnc_tf.export import session_loader

SIGNATURES = ("serving_default", "serving_image_tensor", "serving_tf_example")
INPUT_KEYS = {"serving_default": "images", "serving_image_tensor": "images",
              "serving_tf_example": "examples"}  # fmt: skip
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "detection_masks",
           "num_detections", "image_info")  # fmt: skip


@pytest.fixture(scope="session")
def checker(tmp_path_factory):
    return session_loader.build(str(tmp_path_factory.mktemp("loader_check")))


def _png_0x0():
    """A PNG whose IHDR says 0 × 0 (valid signature and CRCs)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + \
        chunk(b"IEND", b"")  # fmt: skip


def _bmp_0x0():
    """A 24-bit BMP with a BITMAPINFOHEADER saying 0 × 0."""
    info = struct.pack("<IiiHHIIiiII", 40, 0, 0, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def _python_outputs(loaded, signature, value):
    fn = loaded.signatures[signature]
    out = fn(**{INPUT_KEYS[signature]: tf.constant(value) if isinstance(value, list) else value})
    return {k: v.numpy() for k, v in out.items()}


def _assert_same(c_outputs, py_outputs, what):
    assert sorted(c_outputs) == sorted(OUTPUTS), what
    for key in OUTPUTS:
        c, py = c_outputs[key], py_outputs[key]
        assert c.shape == py.shape and c.dtype == py.dtype, (what, key, c.shape, py.shape)
        if key in ("detection_classes", "num_detections"):
            np.testing.assert_array_equal(c, py, err_msg=f"{what} {key}")
        else:
            np.testing.assert_allclose(c, py, rtol=0, atol=1e-4, err_msg=f"{what} {key}")


# --------------------------------------------------------------------------- good requests


def test_checker_is_a_c_process_without_python(checker):
    proc = subprocess.run(["ldd", checker], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip("ldd is not available")
    assert "libtensorflow_cc.so.2" in proc.stdout
    assert "libpython" not in proc.stdout


def test_every_signature_runs_in_the_session_loader_like_in_python(
    checker, export_base, loaded_export, tiny_model, tmp_path
):
    """Same outputs as Python's loader; the detections are the model's own (not empty)."""
    big, small = scene(90, 150, seed=1), scene(60, 100, seed=4)
    jpeg = encode_jpeg(big)
    pixels = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    requests = [
        ("serving_default", "images", [jpeg]),
        ("serving_default", "images", [encode_png(small), jpeg]),  # mixed sizes: padded batch
        ("serving_image_tensor", "images", pixels[None]),
        ("serving_tf_example", "examples", [tf_example(jpeg), tf_example(encode_png(small))]),
    ]
    report, proc = session_loader.run(checker, export_base / "1", requests, str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["loaded"]

    # The signature defs the C side read from the MetaGraphDef are the Python loader's.
    for signature in SIGNATURES:
        fn = loaded_export.signatures[signature]
        c_sig = report["signatures"][signature]
        assert sorted(c_sig["inputs"]) == sorted(fn.structured_input_signature[1])
        assert sorted(c_sig["outputs"]) == sorted(OUTPUTS)
    assert report["signatures"]["serving_default"]["inputs"]["images"][1] == "string"
    assert report["signatures"]["serving_image_tensor"]["inputs"]["images"][1] == "uint8"

    for (signature, _, value), result in zip(requests, report["requests"], strict=True):
        assert result["signature"] == signature
        assert result["ok"], result
        py = _python_outputs(loaded_export, signature, value)
        _assert_same(result["outputs"], py, f"{signature} {len(value)} image(s)")
    # All three signatures agree with each other on the same picture...
    first = report["requests"][0]["outputs"]
    for index in (2, 3):
        other = report["requests"][index]["outputs"]
        for key in OUTPUTS:
            np.testing.assert_allclose(other[key][:1], first[key], atol=1e-4, err_msg=key)
    # ...and with the Keras model on the same resized pixels.
    from export_testutil import CATEGORY_IDS, MAX_SIDE, SHORT_SIDE

    from mnc_tf.data.preprocess import resize_image

    resized, info = resize_image(pixels, SHORT_SIDE, MAX_SIDE)
    pred = tiny_model.predict(
        {"images": resized[None].numpy(), "image_info": info[None].numpy()}, verbose=0
    )
    n = int(pred["num_detections"][0])
    assert n > 0 and int(first["num_detections"][0]) == n
    np.testing.assert_allclose(first["detection_scores"][0, :n], pred["scores"][0, :n], atol=1e-4)
    np.testing.assert_array_equal(
        first["detection_classes"][0, :n], np.array(CATEGORY_IDS)[pred["classes"][0, :n] - 1]
    )
    np.testing.assert_allclose(first["detection_masks"][0, :n], pred["masks"][0, :n], atol=1e-3)


def test_checker_fails_on_an_export_that_tracks_keras_variables(
    checker, tiny_model, export_base, tmp_path
):
    """Positive control: the pre-fix export (a tf.Module holding the Keras variables) loads
    in Python but not in the Session loader, and the checker reports it."""
    from mnc_tf.export.serving import build_serving_functions
    from mnc_tf.ops import roi_warp_implementation

    fn = build_serving_functions(tiny_model)["serving_image_tensor"]
    module = tf.Module()
    module.model_variables = list(tiny_model.variables)
    saved = tmp_path / "keras_variables"
    with roi_warp_implementation("reference"):
        tf.saved_model.save(module, str(saved), signatures={"serving_image_tensor": fn})
    image = scene(40, 70, seed=2)[None]
    python = tf.saved_model.load(str(saved)).signatures["serving_image_tensor"](images=image)
    assert int(python["num_detections"][0]) > 0  # Python's loader hides the problem

    requests = [("serving_image_tensor", "images", image)]
    report, proc = session_loader.run(checker, saved, requests, str(tmp_path))
    assert proc.returncode == 0 and report["loaded"], proc.stdout + proc.stderr[-2000:]
    (result,) = report["requests"]
    assert not result["ok"]
    assert result["code"] == "FAILED_PRECONDITION"
    assert "Could not find variable" in result["message"]
    # The real export of the same model runs the same request.
    report, proc = session_loader.run(checker, export_base / "1", requests, str(tmp_path / "ok"))
    assert report["requests"][0]["ok"], report


# --------------------------------------------------------------------------- bad requests


def _bad_requests():
    """(signature, value, element index or None, words the message must contain)."""
    good = encode_jpeg(scene(40, 70, seed=5))
    truncated = good[: len(good) // 2]
    return [
        ("serving_default", [truncated], 0, ["could not be decoded", "JPEG", "truncated"]),
        ("serving_default", [good, _png_0x0()], 1, ["zero-size", "PNG"]),
        ("serving_default", [_bmp_0x0()], 0, ["zero-size", "BMP"]),
        ("serving_default", [good, good, b""], 2, ["empty string"]),
        ("serving_default", [b"\xff\xfe\x80\x81 not utf-8, not an image"], 0, ["not an encoded"]),
        ("serving_default", [], None, ["empty batch"]),
        ("serving_image_tensor", np.zeros((1, 16, 16, 4), np.uint8), 0, ["4", "channels"]),
        ("serving_image_tensor", np.zeros((2, 16, 16, 1), np.uint8), 0, ["1", "channels"]),
        ("serving_image_tensor", np.zeros((1, 0, 16, 3), np.uint8), 0, ["zero-size"]),
        ("serving_image_tensor", np.zeros((0, 16, 16, 3), np.uint8), None, ["empty batch"]),
        ("serving_tf_example", [tf_example(good), b"\xff\xfe\x80garbage"], 1, ["tf.train.Example"]),
        ("serving_tf_example", [b"not a proto at all"], 0, ["tf.train.Example"]),
        ("serving_tf_example", [tf_example(good), b""], 1, ["empty string (or missing)"]),
        ("serving_tf_example", [tf_example(truncated)], 0, ["could not be decoded", "JPEG"]),
        ("serving_tf_example", [], None, ["empty batch"]),
    ]


def _check_message(message, signature, index, words):
    input_key = INPUT_KEYS[signature]
    assert f"{signature} input {input_key}" in message, message
    if index is not None:
        assert re.search(rf"element\]? \[?{index}\b", message), (index, message)
    for word in words:
        assert word in message, (word, message)


def test_bad_requests_fail_clearly_in_the_session_loader_and_it_keeps_serving(
    checker, export_base, tmp_path
):
    bad = _bad_requests()
    good = ("serving_default", "images", [encode_jpeg(scene(40, 70, seed=6))])
    requests = [good] + [(s, INPUT_KEYS[s], v) for s, v, _, _ in bad] + [good]
    report, proc = session_loader.run(checker, export_base / "1", requests, str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = report["requests"]
    assert len(results) == len(requests)
    for (signature, _, index, words), result in zip(bad, results[1:-1], strict=True):
        assert not result["ok"], (signature, index, words)
        assert result["code"] == "INVALID_ARGUMENT", result
        _check_message(result["message"], signature, index, words)
    assert results[0]["ok"] and results[-1]["ok"]
    for key in OUTPUTS:
        np.testing.assert_array_equal(results[-1]["outputs"][key], results[0]["outputs"][key])


def _documented_messages():
    """The "message contains" column of docs/serving.md's bad-request table, as regexes."""
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    table = doc.split("| request | the message contains", 1)[1].split("\n\n", 1)[0]
    patterns = []
    for row in table.splitlines()[2:]:
        text = row.rsplit("| `", 1)[1].rsplit("` |", 1)[0]
        patterns.append(re.escape(text).replace(re.escape("[i]"), r"\[\d+\]"))
    assert len(patterns) >= 9, table
    return patterns


def test_bad_requests_fail_clearly_in_python_and_it_keeps_serving(loaded_export):
    good = [encode_jpeg(scene(40, 70, seed=6))]
    before = _python_outputs(loaded_export, "serving_default", good)
    messages = []
    for signature, value, index, words in _bad_requests():
        if isinstance(value, list):
            value = tf.constant(value, tf.string)
        fn = loaded_export.signatures[signature]
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            fn(**{INPUT_KEYS[signature]: value})
        _check_message(info.value.message, signature, index, words)
        messages.append(info.value.message)
    after = _python_outputs(loaded_export, "serving_default", good)
    for key in OUTPUTS:
        np.testing.assert_array_equal(after[key], before[key])
    # Every message docs/serving.md shows is one the export really gives.
    for pattern in _documented_messages():
        assert any(re.search(pattern, m) for m in messages), pattern


# --------------------------------------------------------------------------- saved_model_cli


def test_saved_model_cli_run_serving_default(export_base, loaded_export, tmp_path):
    """``saved_model_cli run`` (the Session loader, from Python) on serving_default."""
    jpeg = encode_jpeg(scene(90, 150, seed=1))
    np.save(tmp_path / "images.npy", np.array([jpeg], dtype=object), allow_pickle=True)
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
         "--dir", str(export_base / "1"), "--tag_set", "serve",
         "--signature_def", "serving_default",
         "--inputs", f"images={tmp_path / 'images.npy'}", "--outdir", str(out_dir)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    py = _python_outputs(loaded_export, "serving_default", [jpeg])
    assert int(py["num_detections"][0]) > 0
    _assert_same({k: np.load(out_dir / f"{k}.npy") for k in OUTPUTS}, py, "saved_model_cli")


def test_command_line_check_of_an_export(checker, export_base, tmp_path, capsys):
    """``python -m mnc_tf.export.session_loader EXPORT IMAGE``: the user-facing check."""
    path = tmp_path / "scene.jpg"
    path.write_bytes(encode_jpeg(scene(90, 150, seed=1)))
    assert session_loader.main([str(export_base), str(path), "--checker", checker]) == 0
    out = capsys.readouterr().out
    assert "loaded" in out and "tags=serve" in out
    for signature in SIGNATURES:
        assert re.search(rf"request \d+ {signature} OK", out), out
    assert "OK: 3 requests" in out


def test_command_line_check_prints_only_its_own_lines(checker, export_base, tmp_path):
    """Run as a user runs it, in a fresh process: no TensorFlow banner, no grappler
    'PredictCost' warnings (mnc_tf.export imports TensorFlow lazily, so the command can quiet
    it first); --verbose brings TensorFlow's lines back."""
    path = tmp_path / "scene.jpg"
    path.write_bytes(encode_jpeg(scene(90, 150, seed=1)))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "mnc_tf.export.session_loader", str(export_base), str(path)]
    command += ["--checker", checker]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "OK: 3 requests" in quiet.stdout
    assert quiet.stderr == "", quiet.stderr[-2000:]
    loud = subprocess.run([*command, "--verbose"], capture_output=True, text=True, env=env)
    assert loud.returncode == 0 and loud.stderr != ""  # the check above can fail
