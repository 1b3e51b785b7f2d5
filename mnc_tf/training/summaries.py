"""TensorBoard logging keyed on the global step, so a resumed run continues its curves.

Keras's own ``TensorBoard`` callback counts batches from 0 in every ``fit`` call; after a
resume its curves would restart at step 0 and overlap. :class:`TrainingSummaries` writes
under ``log_dir``:

* ``train/<term>`` every ``log_every`` steps: every number in the batch logs (each loss term
  the model reports, as Keras's running mean over the epoch so far) and ``train/learning_rate``;
* ``epoch/<key>`` at each epoch end: all epoch logs, including validation and the evaluation
  metrics that an evaluation callback placed earlier in the callback list added;
* ``predictions``: a few held-out images with their predicted instances drawn (masks, boxes,
  class names, scores), at each epoch end.

Only the chief writes (in multi-worker training the other workers' callbacks are no-ops).

TensorFlow 2.21 no longer depends on the ``tensorboard`` package, whose ``tf.summary.scalar`` /
``image`` implementations it forwards to. Training must not need it, so the summaries are
written with TensorFlow's core ``tf.summary.write`` and the plugin metadata TensorBoard's
scalar and image dashboards read (``pip install tensorboard`` only to *view* the logs).
"""

from __future__ import annotations

import logging
import math
import numbers

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from mnc_tf.training import strategy as strategy_lib
from mnc_tf.training.checkpoints import global_step

logger = logging.getLogger("mnc_tf.training")


# Plugin metadata as tensorboard.summary.{scalar,image} write it, so that the events are
# TensorBoard scalars and images without the tensorboard package (``tf.summary.write`` takes
# the proto; mnc_tf.evaluation.callback uses the scalar one too).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)
_IMAGE_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
    data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
)


def write_scalar(tag, value, step):
    """A TensorBoard scalar at ``step`` into the default writer (core ops only)."""
    value = tf.constant(float(value), tf.float32)
    return tf.summary.write(tag, value, step=step, metadata=_SCALAR_METADATA)


def write_images(tag, images, step):
    """TensorBoard images from uint8 ``[n, H, W, 3]`` (``tf.summary.image``'s encoding:
    ``[width, height, png_0, ..., png_n-1]`` strings)."""
    images = np.asarray(images, np.uint8)
    encoded = [tf.io.encode_png(im) for im in images]
    h, w = images.shape[1:3]
    tensor = tf.stack([tf.constant(str(w)), tf.constant(str(h)), *encoded])
    return tf.summary.write(tag, tensor, step=step, metadata=_IMAGE_METADATA)


def current_learning_rate(optimizer) -> float:
    """The learning rate the optimizer applies at its current iteration (schedules evaluated)."""
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def _scalars(logs):
    for key, value in (logs or {}).items():
        try:
            v = float(np.asarray(value))
        except (TypeError, ValueError):
            continue
        if isinstance(value, numbers.Number) or np.ndim(value) == 0:
            if math.isfinite(v):
                yield key, v


class TrainingSummaries(keras.callbacks.Callback):
    """Write scalars and prediction images to TensorBoard (see module docstring).

    Args:
      log_dir: event-file directory (``model_dir/logs``).
      log_every: write the batch logs every this many global steps (0: never).
      images: optional float32 ``[n, H, W, 3]`` 0..255 held-out images to draw predictions on
        (``None``: no images).
      image_info: optional ``[n, 4, 2]`` image_info of ``images`` (valid region to crop).
      class_names: names of labels ``1..num_classes`` for the drawings.
      score_threshold: instances drawn when their score is at least this (``None``: the
        model's ``config.postprocess.predict_score_threshold``).
      mask_threshold: binarisation of the drawn soft masks (``None``: the model's
        ``config.postprocess.mask_threshold``).
    """

    def __init__(
        self,
        log_dir,
        log_every=20,
        images=None,
        image_info=None,
        class_names=None,
        score_threshold=None,
        mask_threshold=None,
    ):
        super().__init__()
        self.log_dir = str(log_dir)
        self.log_every = int(log_every)
        self.images = None if images is None else np.asarray(images, np.float32)
        self.image_info = None if image_info is None else np.asarray(image_info, np.float32)
        self.class_names = list(class_names) if class_names else None
        self.score_threshold = None if score_threshold is None else float(score_threshold)
        self.mask_threshold = None if mask_threshold is None else float(mask_threshold)
        self._writer = None
        self._predict = None

    def _active(self):
        return strategy_lib.is_chief(self.model.distribute_strategy)

    def on_train_begin(self, logs=None):
        if self._active() and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        if self._writer is None or not self.log_every:
            return
        step = global_step(self.model)
        if step % self.log_every:
            return
        with self._writer.as_default(step=step):
            for key, value in _scalars(logs):
                write_scalar(f"train/{key}", value, step)
            write_scalar("train/learning_rate", current_learning_rate(self.model.optimizer), step)

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        step = global_step(self.model)
        with self._writer.as_default(step=step):
            for key, value in _scalars(logs):
                write_scalar(f"epoch/{key}", value, step)
            write_scalar("epoch/learning_rate", current_learning_rate(self.model.optimizer), step)
            if self.images is not None and len(self.images):
                try:
                    write_images("predictions", self.render(), step)
                except Exception as e:  # noqa: BLE001 - a drawing failure must not stop training
                    logger.warning("could not draw predictions for TensorBoard: %s", e)
        self._writer.flush()

    def render(self) -> np.ndarray:
        """uint8 ``[n, H, W, 3]``: the images with the current model's instances drawn."""
        from mnc_tf import visualize

        if self._predict is None:
            # Plain (non-distributed) inference on this worker: no collective ops involved.
            self._predict = tf.function(lambda x: self.model(x, training=False))
        out = self._predict(tf.constant(self.images))
        out = {k: np.asarray(v) for k, v in out.items()}
        config = self.model.config
        score_threshold = self.score_threshold
        if score_threshold is None:
            score_threshold = config.postprocess.predict_score_threshold
        mask_threshold = self.mask_threshold
        if mask_threshold is None:
            mask_threshold = config.postprocess.mask_threshold
        pictures = []
        for i, image in enumerate(self.images):
            h, w = image.shape[:2]
            if self.image_info is not None:
                h, w = (int(round(v)) for v in self.image_info[i, 1])
            n = int(out["num_detections"][i])
            pictures.append(
                visualize.draw_instances(
                    image[:h, :w],
                    out["boxes"][i, :n],
                    out["masks"][i, :n],  # box-relative; draw_instances pastes them
                    out["classes"][i, :n],
                    out["scores"][i, :n],
                    self.class_names,
                    score_threshold=score_threshold,
                    mask_threshold=mask_threshold,
                )
            )
        # Pictures of one batch share the padded size; pad the cropped ones back.
        hmax = max(p.shape[0] for p in pictures)
        wmax = max(p.shape[1] for p in pictures)
        batch = np.zeros((len(pictures), hmax, wmax, 3), np.uint8)
        for i, p in enumerate(pictures):
            batch[i, : p.shape[0], : p.shape[1]] = p[..., :3]
        return batch

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
