"""Keras callback: evaluate every N epochs, write metrics into the history and TensorBoard."""

from __future__ import annotations

import keras
import tensorflow as tf

from mnc_tf.evaluation.evaluate import evaluate_model
from mnc_tf.training.summaries import _SCALAR_METADATA


def write_scalars(writer, metrics, step):
    """Write ``{name: float}`` as TensorBoard scalars at ``step``."""
    with writer.as_default():
        for name, value in metrics.items():
            tf.summary.write(
                name,
                tf.constant(float(value), tf.float32),
                step=step,
                metadata=_SCALAR_METADATA.SerializeToString(),
            )
    writer.flush()


class EvaluationCallback(keras.callbacks.Callback):
    """Run :func:`mnc_tf.evaluation.evaluate_model` at the end of every N-th epoch.

    The metrics (``prefix + name``, e.g. ``"segm/AP"``, ``"mAP_r@0.5"``) are added to the
    epoch's ``logs``, so they appear in ``model.fit(...).history`` (only for evaluated
    epochs), in the progress bar, and are visible to later callbacks such as
    ``ModelCheckpoint(monitor="segm/AP", mode="max")`` — put this callback before them.

    Args:
      dataset: evaluation dataset (``coco_dataset(..., training=False)``).
      evaluators: evaluator objects; reset before each evaluation.
      every_n_epochs: evaluate when ``(epoch + 1) % every_n_epochs == 0``.
      log_dir: if given, TensorBoard scalars are written there (or pass ``writer``).
      writer: a ``tf.summary`` writer to use instead of ``log_dir``.
      prefix: prepended to every metric name.
      info, mask_threshold, max_batches: passed to ``evaluate_model`` (``mask_threshold``
        None: the model's ``config.postprocess.mask_threshold``).
    """

    def __init__(
        self,
        dataset,
        evaluators,
        every_n_epochs=1,
        log_dir=None,
        writer=None,
        prefix="",
        info=None,
        mask_threshold=None,
        max_batches=None,
    ):
        super().__init__()
        if isinstance(every_n_epochs, bool) or int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs!r}")
        self.dataset = dataset
        self.evaluators = list(evaluators)
        self.every_n_epochs = int(every_n_epochs)
        self.log_dir = log_dir
        self._writer = writer
        self.prefix = prefix
        self.info = info
        self.mask_threshold = mask_threshold
        self.max_batches = max_batches
        self.results = {}  # epoch -> metrics

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        metrics = evaluate_model(
            self.model,
            self.dataset,
            self.evaluators,
            info=self.info,
            mask_threshold=self.mask_threshold,
            max_batches=self.max_batches,
        )
        metrics = {self.prefix + k: v for k, v in metrics.items()}
        self.results[epoch] = metrics
        if logs is not None:
            logs.update(metrics)
        if self._writer is None and self.log_dir:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        if self._writer is not None:
            write_scalars(self._writer, metrics, step=epoch)
