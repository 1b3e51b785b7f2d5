"""A quiet console: TensorFlow's start-up banner filtered, one log line per log_every steps off a
terminal, no Keras / pycocotools noise; the tools run as subprocesses, as a user runs them."""

import io
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mnc_tf import console
from mnc_tf.training.progress import StepLogger, keras_verbosity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TensorFlow and friends printed before (issue 13): none of it may reach the console.
NOISE = (
    "absl::InitializeLog",
    "oneDNN custom operations",
    "cuda drivers",
    "cuInit",
    "cpu_feature_guard",
    "PredictCost",
    "shuffle=True",
    "Loading and preparing results",
    "Average Precision",
    "\r",
    "━",
)


def _env(**extra):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # conftest sets it; the tools set their own
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "line, noise",
    [
        ("WARNING: All log messages before absl::InitializeLog() is called are written", True),
        ("I0000 00:00:17961.06 5813 port.cc:153] oneDNN custom operations are on.", True),
        ("I0000 00:00:17961.06 5813 cudart_stub.cc:31] Could not find cuda drivers", True),
        ("W0000 00:00:17961.90 7170 op_level_cost_estimator.cc:699] Error in PredictCost()", True),
        ("E0000 00:00:17961.67 5813 cuda_platform.cc:52] failed call to cuInit: INTERNAL", True),
        ("To enable the following instructions: AVX2 FMA, in other operations, rebuild", True),
        ("E0000 00:00:17961.67 5813 some_op.cc:52] a real error", False),
        ("Traceback (most recent call last):", False),
        ("mnc-train: error: model.backbone: expected one of ...", False),
    ],
)  # fmt: skip
def test_startup_noise_classification(line, noise):
    assert console.is_startup_noise(line) is noise


def _python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(**env), timeout=300
    )


def test_quiet_tensorflow_hides_the_banner_and_keeps_real_errors():
    code = (
        "import os, sys\n"
        "from mnc_tf import console\n"
        "console.quiet_tensorflow()\n"
        "import tensorflow as tf\n"
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], float(tf.constant(2.0) * 2))\n"
        "sys.stderr.write('own line\\n')\n"
    )
    quiet = _python(code)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.split() == ["2", "4.0"]
    assert quiet.stderr == "own line\n"  # nothing else: the banner was filtered
    # Without the filter, this TensorFlow does print a banner (so the check above can fail).
    loud = _python("import tensorflow as tf\nprint(float(tf.constant(1.0)))")
    if not any(text in loud.stderr for text in NOISE):
        pytest.skip("this TensorFlow prints no start-up banner")


def test_quiet_tensorflow_silences_tf_python_info_under_basic_config():
    """The examples call logging.basicConfig(level=INFO): TensorFlow's own INFO lines (one
    'Sharding callback duration' per checkpoint) and the SavedModel renaming warning stay off
    the console, real warnings and our lines do not."""
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
        "from mnc_tf import console\n"
        "console.quiet_tensorflow()\n"
        "import tensorflow as tf\n"
        "from absl import logging as absl_logging\n"
        "absl_logging.info('Sharding callback duration: 5 microseconds')\n"
        "tf.get_logger().info('Assets written to: x')\n"
        "tf.get_logger().warning('Function f contains input name(s) resource with unsupported'\n"
        "                        ' characters which will be renamed to r in the SavedModel.')\n"
        "tf.get_logger().warning('a real warning')\n"
        "logging.getLogger('mnc_tf.test').info('our line')\n"
    )
    quiet = _python(code)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == ["tensorflow: a real warning", "mnc_tf.test: our line"]
    loud = _python(code.replace("console.quiet_tensorflow()", "pass"))
    assert "Sharding callback duration" in loud.stderr  # the check above can fail


def test_users_tf_cpp_min_log_level_and_verbose_are_respected():
    code = (
        "import os, sys\n"
        "from mnc_tf import console\n"
        "print(console.quiet_tensorflow(verbose=len(sys.argv) > 1))\n"
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"
    )
    user = _python(code, TF_CPP_MIN_LOG_LEVEL="0")
    assert user.stdout.split() == ["False", "0"]
    verbose = subprocess.run(
        [sys.executable, "-c", code, "--verbose"], capture_output=True, text=True, env=_env()
    )
    assert verbose.stdout.split() == ["False", "None"]


def test_keras_verbosity_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert keras_verbosity("auto", Tty()) == 1
    assert keras_verbosity("auto", io.StringIO()) == 0
    assert keras_verbosity("2", Tty()) == 2


def test_step_logger_one_line_per_log_every_steps(caplog):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((40, 3), np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4).repeat()
    logger = StepLogger(log_every=3, total_steps=10, global_batch=4, steps_per_epoch=5)
    with caplog.at_level(logging.INFO, logger="mnc_tf.training"):
        model.fit(data, epochs=2, steps_per_epoch=5, callbacks=[logger], verbose=0, shuffle=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "mnc_tf.training"]
    assert [line.split(":")[0] for line in lines] == [
        "step 3/10 (epoch 1/2)",
        "step 6/10 (epoch 2/2)",
        "step 9/10 (epoch 2/2)",
    ]
    assert all(" loss " in line and line.endswith("images/s") for line in lines)


def _write_photo(path):
    rng = np.random.default_rng(3)
    image = rng.integers(60, 120, (96, 128, 3), dtype=np.uint8)
    image[20:70, 30:80] = (220, 40, 40)
    Image.fromarray(image).save(path, quality=92)


def test_mnc_predict_prints_only_its_own_lines(tmp_path):
    import mnc_tf

    config = mnc_tf.MNCConfig.tiny_shapes(short_side=64, max_side=64, predict_score_threshold=0.0)
    model = mnc_tf.MNC(2, backbone="tiny", num_stages=3, config=config)
    model.save(tmp_path / "m.keras")
    photo = tmp_path / "photo.jpg"
    _write_photo(photo)
    result = subprocess.run(
        ["mnc-predict", str(photo), "--model", str(tmp_path / "m.keras"), "--out", "pred"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith(f"{photo}: ") and lines[1].endswith("pred/results.json")
    assert (tmp_path / "pred" / "photo.png").is_file()


def test_mnc_train_log_is_lines_not_progress_bars(tmp_path):
    """A short run with its output going to a pipe (not a terminal), evaluating twice."""
    config = os.path.join(ROOT, "configs", "shapes_tiny_mnc5.yaml")
    sets = {
        "data.shapes.dir": tmp_path / "data",
        "data.shapes.num_train_images": 8,
        "data.shapes.num_val_images": 2,
        "data.shapes.image_size": 64,
        "data.per_replica_batch_size": 2,
        "model.input.short_side": 64,
        "model.input.max_side": 64,
        "model.optimizer.total_steps": 4,
        "model.optimizer.warmup_steps": 1,
        "train.steps_per_epoch": 2,
        "train.eval_every_epochs": 1,
        "train.log_every": 1,
        "train.checkpoint_every": 2,
        "train.tensorboard_images": 0,
        "train.export_saved_model": "false",
    }
    args = ["mnc-train", "--config", config, "--model-dir", str(tmp_path / "run")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = subprocess.run(
        args, capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for text in NOISE:
        assert text not in output, text
    for step in range(1, 5):
        assert f"step {step}/4 (epoch {(step + 1) // 2}/2): loss " in output
    # One summary table per evaluation (2 epochs, evaluated after each).
    assert output.count("evaluated 2 images in") == 2
    assert output.count("\nbbox ") == 2 and output.count("\nsegm ") == 2
    # Everything printed is a log record (or a continuation line of a summary table).
    lines = [line for line in output.splitlines() if line.strip()]
    assert all(" mnc_tf." in line or not line[:4].isdigit() for line in lines)
    # pycocotools' tables went to train.log (DEBUG) instead.
    assert "Average Precision" in (tmp_path / "run" / "train.log").read_text()


def test_mnc_fit_on_a_dataset_does_not_warn_about_shuffle(tmp_path):
    """Keras' fit(shuffle=True) default warns for every tf.data dataset; MNC.fit does not."""
    import warnings

    import mnc_tf
    from mnc_tf.data import coco_dataset, make_shapes_dataset

    shapes = make_shapes_dataset(tmp_path / "s", num_images=2, seed=0, image_size=64)
    ds = coco_dataset(
        shapes.annotation_file, shapes.image_dir, batch_size=1, training=True, short_side=64,
        max_side=64, max_instances=8, repeat=True,
    )  # fmt: skip
    config = mnc_tf.MNCConfig.tiny_shapes(short_side=64, max_side=64)
    model = mnc_tf.MNC(3, backbone="tiny", num_stages=3, config=config)
    model.compile()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)
    assert not [w for w in caught if "shuffle" in str(w.message)]


def test_best_model_metric_line_only_when_an_evaluation_lacks_it(tmp_path, caplog):
    from mnc_tf.training.best_model import BestModelCheckpoint

    best = BestModelCheckpoint(str(tmp_path / "best.keras"), monitor="mAP_r@0.5", mode="max")
    with caplog.at_level(logging.DEBUG, logger="mnc_tf.training"):
        for epoch in range(3):  # epochs without evaluation: nothing to say
            best.on_epoch_end(epoch, {"loss": 1.0, "mask_loss": 0.5})
    assert not caplog.records
    misspelt = BestModelCheckpoint(str(tmp_path / "b.keras"), monitor="mAP_r@0.55", mode="max")
    with caplog.at_level(logging.DEBUG, logger="mnc_tf.training"):
        for epoch in range(3):
            misspelt.on_epoch_end(epoch, {"loss": 1.0, "mAP_r@0.5": 0.5, "segm/AP": 0.4})
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "'mAP_r@0.55' not in the evaluation's metrics" in caplog.records[0].getMessage()
