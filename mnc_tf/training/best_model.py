"""The best model so far and the final model as ``.keras`` files, written atomically.

:func:`atomic_save_model` is ``model.save`` through a temporary file renamed into place
(:mod:`mnc_tf.io_utils`); :class:`BestModelCheckpoint` saves ``best.keras`` (and
``best.keras.json``: metric, epoch, step) whenever the monitored metric improves.
"""

from __future__ import annotations

import json
import logging
import math
import os

import keras

from mnc_tf.io_utils import atomic_path, atomic_write_json
from mnc_tf.training import strategy as strategy_lib
from mnc_tf.training.checkpoints import global_step

logger = logging.getLogger("mnc_tf.training")


def atomic_save_model(model: keras.Model, path: str):
    """``model.save(path)`` through a temporary file and ``os.replace``.

    A kill during the save leaves either the previous file or the new one, never a partial one.
    """
    if not str(path).endswith(".keras"):
        raise ValueError(f"path must end in '.keras', got {path!r}.")
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, suffix=".keras") as tmp:  # model.save wants the .keras suffix
        model.save(tmp)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the model as ``.keras`` (atomically) whenever ``monitor`` improves; chief only.

    Next to the model, ``<path>.json`` records the metric value, epoch and global step.
    A missing ``monitor`` in an epoch's logs (e.g. no evaluation that epoch) is skipped.

    Args:
      filepath: ``.../best.keras``.
      monitor: a key of the epoch logs (e.g. ``"mAP_r@0.5"``, ``"val_loss"``, ``"loss"``).
      mode: ``"max"`` or ``"min"``.
    """

    def __init__(self, filepath, monitor="loss", mode="min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
        if not str(filepath).endswith(".keras"):
            raise ValueError(f"filepath must end in '.keras', got {filepath!r}.")
        self.filepath = str(filepath)
        self.monitor = monitor
        self.mode = mode
        self.best = None
        self._warned = False
        meta = self.filepath + ".json"
        if os.path.exists(meta):
            # A resumed run must beat the best of the run it resumes.
            with open(meta) as f:
                self.best = json.load(f).get("value")

    def _improved(self, value):
        if self.best is None or not math.isfinite(self.best):
            return math.isfinite(value)
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            # Normal on epochs without evaluation (only losses in the logs); on an evaluated
            # epoch it means train.best_metric names no metric: say so, once.
            evaluated = any("/" in k or k.startswith("mAP") for k in logs)
            if evaluated and not self._warned:
                logger.warning(
                    "best-model metric %r not in the evaluation's metrics (have: %s); "
                    "best.keras is not updated",
                    self.monitor,
                    ", ".join(sorted(logs)),
                )
                self._warned = True
            return
        value = float(logs[self.monitor])
        if not self._improved(value):
            return
        self.best = value
        if not strategy_lib.is_chief(self.model.distribute_strategy):
            return
        atomic_save_model(self.model, self.filepath)
        meta = {
            "monitor": self.monitor,
            "mode": self.mode,
            "value": value,
            "epoch": epoch + 1,
            "step": global_step(self.model),
        }
        atomic_write_json(self.filepath + ".json", meta)
        logger.info("new best %s = %.4f, saved %s", self.monitor, value, self.filepath)
