"""Bad input to the command-line tools, run as a user runs them (subprocesses): exit status 2,
one line on stderr naming the argument / key / file with what was expected and what was found,
no traceback, and nothing generated or written."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CONFIG = os.path.join(ROOT, "configs", "shapes_tiny_mnc5.yaml")


def _command(tool):
    script = shutil.which(tool)
    if script:
        return [script]
    module = {"mnc-train": "train", "mnc-eval": "evaluate", "mnc-predict": "predict"}
    return [sys.executable, "-m", f"mnc_tf.cli.{module.get(tool, 'export')}"]


def run_cli(tool, *args, cwd=None):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the tools' own default applies
    return subprocess.run(
        [*_command(tool), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def assert_one_line_error(result, tool, *fragments):
    """Exit 2, exactly one non-empty stderr line 'tool: error: ...' holding ``fragments``."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"{tool}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A text file, a directory, a non-zip .keras, a plain Keras model, a photo, a tiny MNC."""
    import keras

    import mnc_tf

    root = tmp_path_factory.mktemp("cli_errors")
    (root / "notes.txt").write_text("hello, not an image\n")
    (root / "a_dir").mkdir()
    (root / "notzip.keras").write_bytes(b"this is not a zip archive")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(root / "plain.keras")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "photo.jpg")
    config = mnc_tf.MNCConfig.tiny_shapes(short_side=64, max_side=64)
    mnc = mnc_tf.MNC(2, backbone="tiny", num_stages=3, config=config)
    mnc.save(root / "mnc.keras")
    annotations = {
        "images": [{"id": 1, "file_name": "photo.jpg", "height": 48, "width": 64}],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (root / "val.json").write_text(json.dumps(annotations))
    return root


# ---------------------------------------------------------------------------------- mnc-train
def _yaml(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, fragments",
    [
        (
            "model:\n  optimizer:\n    learning_rate: fast\n",
            ["model.optimizer.learning_rate", "a number", "'fast'"],
        ),
        ("model:\n  rpn:\n    anchor_scales: 4.0\n", ["model.rpn.anchor_scales", "a list", "4.0"]),
        (
            "model:\n  total_steps: 100\n",
            ["model.total_steps", "is now", "model.optimizer.total_steps"],
        ),
        ("model:\n  backbone: resnet9000\n", ["model.backbone", "tiny", "'resnet9000'"]),
        ("model:\n  backbone: [tiny\n", ["not valid YAML", "expected ',' or ']'", "line 3"]),
    ],
)
def test_train_bad_yaml_values_name_the_file_and_key(tmp_path, text, fragments):
    config = _yaml(tmp_path, text)
    result = run_cli("mnc-train", "--config", config, "--model-dir", tmp_path / "run")
    assert_one_line_error(result, "mnc-train", str(config), *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("model.rpn.anchor_scales=[4,8", ["--set model.rpn.anchor_scales", "'[4,8'", "a list"]),
        ("model.backbone=resnet9000", ["model.backbone", "vgg16", "'resnet9000'"]),
        ("model.num_stages=4", ["model.num_stages", "odd number >= 3", "4"]),
        (
            "model.optimizer.learning_rate=fast",
            ["--set model.optimizer.learning_rate", "a number", "'fast'"],
        ),
    ],
)
def test_train_bad_overrides_fail_before_any_data_or_file(tmp_path, override, fragments):
    """Config validation, not a failure after generating the dataset (or --print-config)."""
    data = tmp_path / "data"
    args = ["--config", SHAPES_CONFIG, "--set", f"data.shapes.dir={data}", "--set", override]
    for extra in ([], ["--print-config"]):
        result = run_cli("mnc-train", *args, "--model-dir", tmp_path / "run", *extra)
        assert_one_line_error(result, "mnc-train", *fragments)
    assert not data.exists() and not (tmp_path / "run").exists()


def test_train_config_that_is_a_directory_and_bad_set_syntax(tmp_path):
    result = run_cli("mnc-train", "--config", tmp_path)
    assert_one_line_error(result, "mnc-train", "--config", "expected a YAML file", "directory")
    result = run_cli("mnc-train", "--config", SHAPES_CONFIG, "--set", "modl.x=3")
    assert_one_line_error(result, "mnc-train", "--set modl.x", "Did you mean 'model'?")


def test_train_model_dir_that_is_a_file(tmp_path):
    target = tmp_path / "run"
    target.write_text("x")
    result = run_cli("mnc-train", "--config", SHAPES_CONFIG, "--model-dir", target)
    assert_one_line_error(result, "mnc-train", "--model-dir", "expected a directory", str(target))


# ---------------------------------------------------------------------------------- mnc-eval
def _eval_args(files, model, *extra):
    return [
        "--model",
        model,
        "--annotations",
        files / "val.json",
        "--images",
        files,
        *extra,
    ]


def test_eval_mask_threshold_out_of_range(files):
    result = run_cli("mnc-eval", *_eval_args(files, files / "mnc.keras", "--mask-threshold", "1.5"))
    assert_one_line_error(result, "mnc-eval", "--mask-threshold", "(0, 1)", "1.5")


def test_eval_model_is_a_directory_or_not_a_zip(files):
    result = run_cli("mnc-eval", *_eval_args(files, files / "a_dir"))
    # A directory is taken as an mnc-export directory
    assert_one_line_error(result, "mnc-eval", "--model", "not a SavedModel directory", "a_dir")
    result = run_cli("mnc-eval", *_eval_args(files, files / "notzip.keras"))
    assert_one_line_error(result, "mnc-eval", "--model", "not a zip archive", "notzip.keras")


def test_eval_out_is_a_directory(files):
    result = run_cli("mnc-eval", *_eval_args(files, files / "mnc.keras", "--out", files / "a_dir"))
    assert_one_line_error(result, "mnc-eval", "--out", "expected a file name", "a_dir")


def test_eval_plain_keras_model(files):
    result = run_cli("mnc-eval", *_eval_args(files, files / "plain.keras"))
    assert_one_line_error(result, "mnc-eval", "--model", "expected an MNC model", "Sequential")


# ---------------------------------------------------------------------------------- mnc-predict
def test_predict_text_file_and_directory_as_image(files, tmp_path):
    out = tmp_path / "pred"
    result = run_cli(
        "mnc-predict", files / "notes.txt", "--model", files / "mnc.keras", "--out", out
    )
    assert_one_line_error(
        result, "mnc-predict", "IMAGE", "expected a JPEG, PNG", "notes.txt", "b'hello, no"
    )
    result = run_cli("mnc-predict", files / "a_dir", "--model", files / "mnc.keras", "--out", out)
    assert_one_line_error(result, "mnc-predict", "IMAGE", "expected an image file", "directory")
    assert not out.exists()


def test_predict_out_is_a_file_and_thresholds_out_of_range(files):
    photo, model = files / "photo.jpg", files / "mnc.keras"
    result = run_cli("mnc-predict", photo, "--model", model, "--out", files / "notes.txt")
    assert_one_line_error(result, "mnc-predict", "--out", "expected a directory", "notes.txt")
    result = run_cli(
        "mnc-predict", photo, "--model", model, "--out", files / "o", "--threshold", "2"
    )
    assert_one_line_error(result, "mnc-predict", "--threshold", "[0, 1]", "2.0")
    result = run_cli(
        "mnc-predict", photo, "--model", model, "--out", files / "o", "--mask-threshold", "1.5"
    )
    assert_one_line_error(result, "mnc-predict", "--mask-threshold", "(0, 1)", "1.5")
    result = run_cli("mnc-predict", photo, "--model", files / "notzip.keras", "--out", files / "o")
    assert_one_line_error(result, "mnc-predict", "--model", "not a zip archive")
    result = run_cli("mnc-predict", photo, "--model", files / "plain.keras", "--out", files / "o")
    assert_one_line_error(result, "mnc-predict", "--model", "expected an MNC model", "Sequential")
    assert not (files / "o").exists()


# ---------------------------------------------------------------------------------- mnc-export
def _unwritable_out(tmp_path):
    """A directory this process cannot create (root ignores permission bits: use /sys)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked / "export"
    target = "/sys/mnc_tf_cli_test/export"
    try:
        os.makedirs(target)
    except OSError:
        return target
    shutil.rmtree("/sys/mnc_tf_cli_test", ignore_errors=True)
    pytest.skip("no directory here that root cannot create")


def test_export_out_unwritable_or_a_file_and_plain_model(files, tmp_path):
    result = run_cli("mnc-export", "--model", files / "mnc.keras", "--out", files / "notes.txt")
    assert_one_line_error(result, "mnc-export", "--out", "expected a directory", "notes.txt")
    result = run_cli("mnc-export", "--model", files / "a_dir", "--out", tmp_path / "e")
    assert_one_line_error(result, "mnc-export", "--model", "expected a .keras file", "directory")
    out = _unwritable_out(tmp_path)
    result = run_cli("mnc-export", "--model", files / "mnc.keras", "--out", out)
    assert_one_line_error(result, "mnc-export", "--out", "mnc_tf_cli_test" if "/sys" in out else "")
    result = run_cli("mnc-export", "--model", files / "plain.keras", "--out", tmp_path / "e")
    assert_one_line_error(result, "mnc-export", "--model", "expected an MNC model", "Sequential")
    assert not (tmp_path / "e").exists()
