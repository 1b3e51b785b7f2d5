"""Shared pieces of the training tests: a tiny MNC config, data, and subprocess helpers."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))

# A 5-stage MNC small enough for a test on a shared 2-core CPU (64 px images, stride 8).
TINY_MODEL = {
    "backbone": "tiny",
    "num_stages": 5,
    "short_side": 64,
    "max_side": 64,
    "max_instances": 4,
    "feature_stride": 8,
    "tiny_filters": [16, 32, 32],
    "tiny_convs_per_stage": 1,
    "tiny_out_channels": 32,
    "anchor_base_size": 8.0,
    "anchor_scales": [2.0, 4.0],
    "rpn_conv_filters": 32,
    "rpn_pre_nms_topk_train": 200,
    "rpn_post_nms_topk_train": 32,
    "rpn_pre_nms_topk_test": 200,
    "rpn_post_nms_topk_test": 32,
    "rpn_min_size": 2.0,
    "rpn_batch_size_per_image": 64,
    "rpn_allowed_border": -1.0,
    "roi_batch_size_per_image": 16,
    "roi_crop_size": 14,
    "roi_pooled_size": 7,
    "class_pool_size": 7,
    "mask_size": 14,
    "mask_fc_dim": 32,
    "fc_dim": 32,
    "max_detections": 10,
    "mask_voting_max_candidates": 4,
    "detection_pre_nms_topk": 100,
    "deterministic_sampling": True,
    "optimizer": "sgd",
    "learning_rate": 0.01,
    "weight_decay": 0.0005,
    "total_steps": 12,
}


def model_section(flat):
    """A flat model dict (``TINY_MODEL``'s names, which ``MNC(config=...)`` accepts) as the
    experiment file's ``model:`` tree (``short_side`` → ``input.short_side``, ...)."""
    from mnc_tf.config.model import LEGACY_KEYS

    tree = {}
    for key, value in flat.items():
        *sections, leaf = LEGACY_KEYS.get(key, key).split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = copy.deepcopy(value)
    return tree


def tiny_experiment(shapes_dir, **sections):
    """An experiment config dict: tiny model, 64 px shapes in ``shapes_dir``, short run.

    ``sections`` (``model=...``, ``data=...``, ``train=...``) update the defaults; ``model``
    takes flat names like ``TINY_MODEL`` (``{"total_steps": 4}``).
    """
    model = sections.pop("model", {})
    cfg = {
        "model": model_section({**TINY_MODEL, **model}),
        "data": {
            "format": "shapes",
            "shapes": {
                "dir": str(shapes_dir),
                "num_train_images": 12,
                "num_val_images": 4,
                "seed": 0,
                "image_size": 64,
                "num_classes": 2,
                "options": {"max_shapes": 2},
            },
            "per_replica_batch_size": 2,
            "flip": False,
        },
        "train": {
            "steps_per_epoch": 6,
            "reference_batch_size": 2,
            "checkpoint_every": 3,
            "eval_every_epochs": 0,
            "log_every": 3,
            "tensorboard_images": 0,
            "export_saved_model": False,
            "verbose": "2",
        },
    }
    for section, values in sections.items():
        cfg[section].update(values)
    return cfg


def write_yaml(path, cfg):
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


def subprocess_env(**extra):
    """Environment for child Python processes: the repo importable, quiet TF, few threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_python(args, timeout, env=None, cwd=None):
    """Run ``python args...``; returns the CompletedProcess (never raises on exit status)."""
    return subprocess.run(
        [sys.executable, *args],
        env=env or subprocess_env(),
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
