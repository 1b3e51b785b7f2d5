"""Training progress for logs: one line every ``log_every`` steps instead of a progress bar.

Keras' progress bar redraws itself with carriage returns on every step; in a log file (a run
under ``nohup``, a batch scheduler, CI) that is megabytes of half-drawn bars. ``mnc-train``
shows the bar only when stdout is a terminal (:func:`keras_verbosity`) and otherwise adds
:class:`StepLogger`, which logs::

    step 200/2400 (epoch 1/8): loss 1.2345 | box_loss 0.0812 ... | 31.2 images/s
"""

from __future__ import annotations

import logging
import sys
import time

import keras

logger = logging.getLogger("mnc_tf.training")


def keras_verbosity(setting="auto", stream=None) -> int:
    """Keras ``fit(verbose=...)`` for ``train.verbose``: "auto" → the progress bar (1) on a
    terminal, nothing (0) otherwise; "0"/"1"/"2" (or ints) as Keras defines them."""
    if setting != "auto":
        return int(setting)
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 0
    except (AttributeError, ValueError):  # closed or replaced stream
        return 0


class StepLogger(keras.callbacks.Callback):
    """Logs the global step, the running losses of the epoch and the throughput.

    Args:
      log_every: log when the global step (``optimizer.iterations``, so resumed runs count
        on) is a multiple of this; 0 turns the callback off.
      total_steps: the run's length (shown as ``step/total``).
      global_batch: images per step, for images/s (None: not shown).
      steps_per_epoch: for the epoch shown next to the step (None: not shown).
    """

    def __init__(self, log_every, total_steps, global_batch=None, steps_per_epoch=None):
        super().__init__()
        self.log_every = int(log_every)
        self.total_steps = int(total_steps)
        self.global_batch = global_batch
        self.steps_per_epoch = steps_per_epoch
        self.lines = 0
        self._mark = None

    def on_train_begin(self, logs=None):
        self._mark = (self._step(), time.perf_counter())

    def on_epoch_begin(self, epoch, logs=None):
        # Throughput of training steps only: evaluation and checkpoints run between epochs.
        self._mark = (self._step(), time.perf_counter())

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        if self.log_every <= 0:
            return
        step = self._step()
        if step % self.log_every:
            return
        now = time.perf_counter()
        parts = [f"step {step}/{self.total_steps}"]
        if self.steps_per_epoch:
            epochs = -(-self.total_steps // self.steps_per_epoch)
            parts[0] += f" (epoch {(step - 1) // self.steps_per_epoch + 1}/{epochs})"
        logs = dict(logs or {})
        line = parts[0] + ":"
        if "loss" in logs:
            line += f" loss {float(logs.pop('loss')):.4f}"
        terms = " ".join(f"{k} {float(v):.4f}" for k, v in sorted(logs.items()) if _scalar(v))
        if terms:
            line += f" | {terms}"
        if self.global_batch and self._mark is not None and now > self._mark[1]:
            rate = (step - self._mark[0]) * self.global_batch / (now - self._mark[1])
            line += f" | {rate:.1f} images/s"
        self._mark = (step, now)
        logger.info("%s", line)
        self.lines += 1


def _scalar(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
