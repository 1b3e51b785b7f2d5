"""tf.distribute: MirroredStrategy == one device; MultiWorkerMirroredStrategy on 127.0.0.1.

Both run in child processes: the CPU must be split into logical devices, and a multi-worker
strategy created, before TensorFlow initialises.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from training_testutil import HERE, REPO, subprocess_env, tiny_experiment, write_yaml

from mnc_tf.data import make_shapes_dataset


@pytest.mark.timeout(420)
def test_mirrored_two_cpus_matches_one_device(tmp_path):
    data = make_shapes_dataset(
        tmp_path / "shapes", 2, seed=3, image_size=64, num_classes=2, max_shapes=2, split="train"
    )
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "mirrored_worker.py"),
            data.annotation_file,
            data.image_dir,
            str(out),
        ],
        env=subprocess_env(PYTHONPATH=REPO + os.pathsep + HERE),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert len(r["devices"]) == 2 and r["steps"] == [2, 2]
    # Every trainable variable is mirrored on both devices, and the copies agree exactly.
    assert r["mirrored_variables"] > 0 and r["replica_gap"] == 0.0
    # Same loss (each term) for the global batch of 2 images, whether computed on one device or
    # as 1 + 1 images on two replicas. Tolerance: float32 re-association of the reductions.
    assert set(r["loss_one"]) == set(r["loss_two"]) and "mask_loss" in r["loss_one"]
    for name, value in r["loss_one"].items():
        assert r["loss_two"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # Same weights after 2 SGD steps (momentum, weight decay): |diff| <= 1e-6 (weights are
    # O(1)), while the steps moved some weight by far more than that.
    assert r["max_weight_diff"] <= 1e-6
    assert r["max_update"] > 1e-3


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.timeout(480)
def test_multi_worker_two_processes(tmp_path):
    cfg = tiny_experiment(
        tmp_path / "shapes",
        model={"total_steps": 4},
        train={"steps_per_epoch": 2, "checkpoint_every": 2, "strategy": "multi_worker"},
    )
    config = write_yaml(tmp_path / "cfg.yaml", cfg)
    model_dir = tmp_path / "run"
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    procs, logs = [], []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115 - closed below
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.join(HERE, "multi_worker_worker.py"),
                    config,
                    str(model_dir),
                    str(tmp_path / f"out{index}"),
                ],
                env=subprocess_env(
                    PYTHONPATH=REPO + os.pathsep + HERE, TF_CONFIG=json.dumps(tf_config)
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(tmp_path),
            )
        )
    deadline = time.time() + 420
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pytest.fail("multi-worker training did not finish in 420 s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    for index, p in enumerate(procs):
        text = (tmp_path / f"worker{index}.log").read_text()
        assert p.returncode == 0, f"worker {index} failed:\n{text[-3000:]}"

    infos = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    for info in infos:
        assert info["replicas"] == 2 and info["global_batch"] == 4
        assert info["iterations"] == 4 and info["final_step"] == 4 and info["steps_run"] == 4
        # Linear scaling: base 0.01 at reference batch 2 -> 0.02 at global batch 4.
        assert info["learning_rate"] == pytest.approx(0.02)
    assert "(chief)" in infos[0]["strategy"] and "(chief)" not in infos[1]["strategy"]

    weights = [np.load(tmp_path / f"out{i}.npz") for i in range(2)]
    assert len(weights[0].files) == len(weights[1].files) > 10
    for key in weights[0].files:
        np.testing.assert_allclose(weights[0][key], weights[1][key], rtol=0, atol=1e-6)

    # Only the chief wrote checkpoints and outputs; the other worker's scratch copies are gone.
    ckpts = model_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("ckpt-*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    assert not (ckpts / ".scratch").exists() or not any((ckpts / ".scratch").iterdir())
    assert (model_dir / "final.keras").is_file()


@pytest.mark.timeout(420)
def test_mnc_train_on_two_cpu_devices(tmp_path):
    """The whole driver under MirroredStrategy: sharded input, lr scaling, eval, checkpoints."""
    cfg = tiny_experiment(
        tmp_path / "shapes",
        model={"total_steps": 4},
        train={
            "steps_per_epoch": 2,
            "checkpoint_every": 2,
            "eval_every_epochs": 2,
            "tensorboard_images": 1,
        },
    )
    config = write_yaml(tmp_path / "cfg.yaml", cfg)
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnc_tf.cli.train",
            "--config",
            config,
            "--model-dir",
            str(run),
            "--cpu-devices",
            "2",
        ],
        env=subprocess_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # auto picks MirroredStrategy over the 2 logical CPUs; 2 per replica -> global batch 4.
    assert "MirroredStrategy: 2 replica(s)" in proc.stderr
    assert "learning rate 0.02 (base 0.01 at batch 2, linear scaling)" in proc.stderr
    info = json.loads((run / "run_info.json").read_text())
    assert info["replicas"] == 2 and info["global_batch"] == 4 and info["final_step"] == 4
    history = json.loads((run / "history.json").read_text())
    assert "mAP_r@0.5" in history and "segm/AP" in history
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.index")) == [
        "ckpt-2.index",
        "ckpt-4.index",
    ]
