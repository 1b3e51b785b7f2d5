"""mnc-train end to end: SIGKILL and resume, and a short run whose model mnc-eval/-predict take."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from training_testutil import REPO, subprocess_env, tiny_experiment, write_yaml

from mnc_tf.training.checkpoints import latest_step

TOTAL = 30


def _assert_all_checkpoints_readable(directory):
    """Every checkpoint the state file lists loads completely (no truncated shard)."""
    state = tf.train.get_checkpoint_state(str(directory))
    assert state is not None and state.all_model_checkpoint_paths
    for path in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(path)
        dtypes = reader.get_variable_to_dtype_map()
        names = list(dtypes)
        assert "iterator/.ATTRIBUTES/ITERATOR_STATE" in names  # the input position
        for name in names:
            if dtypes[name] != tf.variant:  # (the iterator state has no NumPy form)
                reader.get_tensor(name)
        (step_key,) = [n for n in names if n.startswith("optimizer/_iterations")]
        assert int(reader.get_tensor(step_key)) == int(path.rsplit("-", 1)[1])
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]


@pytest.mark.timeout(600)
def test_sigkill_then_same_command_resumes(tmp_path):
    cfg = tiny_experiment(
        tmp_path / "shapes",
        model={"total_steps": TOTAL},
        train={"steps_per_epoch": 10, "checkpoint_every": 3, "keep_checkpoints": 20},
    )
    config = write_yaml(tmp_path / "tiny.yaml", cfg)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mnc_tf.cli.train", "--config", config, "--model-dir", str(run)]
    env = subprocess_env()
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 360
        try:
            while time.time() < deadline and first.poll() is None:
                if (latest_step(run / "checkpoints") or 0) >= 3:
                    break
                time.sleep(0.05)
            assert first.poll() is None, "the run ended before it could be killed"
            os.kill(first.pid, signal.SIGKILL)  # no chance to clean up, as with a lost machine
        finally:
            if first.poll() is None:
                first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL
    killed_at = latest_step(run / "checkpoints")
    assert 3 <= killed_at < TOTAL and killed_at % 3 == 0
    assert killed_at in _assert_all_checkpoints_readable(run / "checkpoints")

    second = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=420)
    assert second.returncode == 0, second.stderr[-3000:]
    restored = f"checkpoints/ckpt-{killed_at} (step {killed_at}, input pipeline position included)"
    assert restored in second.stderr
    info = json.loads((run / "run_info.json").read_text())
    assert info["restored_step"] == killed_at
    assert info["final_step"] == TOTAL
    assert info["steps_run"] == TOTAL - killed_at  # continued, did not start over
    steps = _assert_all_checkpoints_readable(run / "checkpoints")
    assert max(steps) == TOTAL and killed_at in steps
    assert (run / "final.keras").is_file()


def _events(log_dir):
    """``{tag: [(step, plugin_name, value)]}`` read back from the event files."""
    out = {}
    for name in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for v in event.summary.value:
                tensor = tf.make_ndarray(v.tensor)
                out.setdefault(v.tag, []).append(
                    (event.step, v.metadata.plugin_data.plugin_name, tensor)
                )
    return out


@pytest.mark.timeout(600)
def test_short_run_produces_a_model_that_eval_and_predict_accept(tmp_path, capsys):
    from mnc_tf.cli.evaluate import main as eval_main
    from mnc_tf.cli.predict import main as predict_main
    from mnc_tf.cli.train import main as train_main

    cfg = tiny_experiment(
        tmp_path / "shapes",
        model={"total_steps": 6},
        train={
            "steps_per_epoch": 3,
            "checkpoint_every": 3,
            "eval_every_epochs": 1,
            "tensorboard_images": 2,
            "log_every": 2,
            "export_saved_model": True,
        },
    )
    config = write_yaml(tmp_path / "tiny.yaml", cfg)
    run = tmp_path / "run"
    assert train_main(["--config", config, "--model-dir", str(run)]) == 0

    for name in ("final.keras", "best.keras", "best.keras.json", "config.yaml", "train.log"):
        assert (run / name).is_file(), name
    assert (run / "export" / "1" / "saved_model.pb").is_file()
    history = json.loads((run / "history.json").read_text())
    assert len(history["loss"]) == 2 and "mAP_r@0.5" in history and "segm/AP" in history
    best = json.loads((run / "best.keras.json").read_text())
    assert best["monitor"] == "mAP_r@0.5" and best["step"] in (3, 6)

    events = _events(run / "logs")
    for tag in ("train/loss", "train/mask_loss", "train/rpn_cls_loss", "train/learning_rate"):
        assert [s for s, _, _ in events[tag]] == [2, 4, 6], tag
        assert {p for _, p, _ in events[tag]} == {"scalars"}
    assert [s for s, _, _ in events["epoch/mAP_r@0.5"]] == [3, 6]
    assert "epoch/segm/AP" in events and "epoch/bbox/AP" in events
    # lr at step 2 of the schedule: warm-up off, no drop before 80% of 6 steps.
    assert float(events["train/learning_rate"][0][2]) == pytest.approx(0.01)
    step, plugin, image = events["predictions"][-1]
    assert step == 6 and plugin == "images"
    assert image[:2].tolist() == [b"64", b"64"] and len(image) == 4  # w, h, 2 PNGs
    assert tf.io.decode_png(image[2]).shape == (64, 64, 3)

    shapes = tmp_path / "shapes" / "val"
    metrics = tmp_path / "metrics.json"
    rc = eval_main(
        [
            "--model",
            str(run / "final.keras"),
            "--annotations",
            str(shapes / "annotations.json"),
            "--images",
            str(shapes / "images"),
            "--short-side",
            "64",
            "--max-side",
            "64",
            "--voc",
            "--out",
            str(metrics),
        ]
    )
    assert rc == 0
    scores = json.loads(metrics.read_text())
    assert "segm/AP" in json.dumps(scores) and "mAP_r@0.5" in json.dumps(scores)

    image = sorted((shapes / "images").iterdir())[0]
    out = tmp_path / "pred"
    assert predict_main([str(image), "--model", str(run / "best.keras"), "--out", str(out)]) == 0
    assert (out / f"{image.stem}.png").is_file()
    assert isinstance(json.loads((out / "results.json").read_text()), list)
    capsys.readouterr()
