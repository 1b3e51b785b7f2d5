"""Run a model over a dataset and feed evaluators."""

from __future__ import annotations

import logging
import time

import keras
import numpy as np

from mnc_tf.evaluation.coco_evaluator import COCOEvaluator
from mnc_tf.evaluation.detections import outputs_to_original
from mnc_tf.evaluation.voc_evaluator import VOCEvaluator

logger = logging.getLogger("mnc_tf.evaluation")


def _predict(model, features):
    if isinstance(model, keras.Model):
        outputs = model.predict_on_batch(features)
    else:  # any callable with the MNC signature
        outputs = model(features, training=False)
    return {k: np.asarray(v) for k, v in outputs.items()}


def bind_evaluators(evaluators, info):
    """Give evaluators what only the dataset knows (ground truth, label ↔ category ids).

    A :class:`VOCEvaluator` without ground truth gets ``info.coco``; a
    :class:`COCOEvaluator` whose label mapping differs from the dataset's is an error
    (every class would be scored against the wrong category).
    """
    for ev in evaluators:
        if isinstance(ev, VOCEvaluator) and ev.ground_truth is None:
            if info is None or info.coco is None:
                raise ValueError(
                    "evaluators: a VOCEvaluator without ground_truth needs a dataset with "
                    ".info (pass info= or VOCEvaluator(ground_truth=...))"
                )
            ev.set_ground_truth(info.coco, info.category_ids)
        if isinstance(ev, COCOEvaluator) and info is not None:
            if list(ev.category_ids) != list(info.category_ids):
                raise ValueError(
                    f"evaluators: COCOEvaluator.category_ids {ev.category_ids} differ from the "
                    f"dataset's {info.category_ids}"
                )


def evaluate_model(
    model, dataset, evaluators, info=None, mask_threshold=0.4, max_batches=None, reset=True
):
    """Predict every batch of ``dataset`` and score the detections.

    For each batch, ``model.predict_on_batch(features)`` (or ``model(features,
    training=False)`` for a plain callable) must return the docs/CONTRACTS.md outputs
    (``boxes [B, K, 4]`` in resized-image pixels, ``scores``, ``classes``, ``masks
    [B, K, m, m]``, ``num_detections``). Boxes are mapped to original pixels
    (``÷ image_info[:, 2]``, clipped) and masks pasted at the original resolution with
    :func:`mnc_tf.core.masks.paste_masks`; then every evaluator's ``add_image(image_id,
    detections)`` is called.

    Args:
      model: a ``keras.Model`` or callable.
      dataset: iterable of ``(features, targets)`` or ``features`` (a dataset of
        :func:`mnc_tf.data.coco_dataset`).
      evaluators: :class:`COCOEvaluator` / :class:`VOCEvaluator` objects (or anything with
        ``reset``, ``add_image`` and ``evaluate``).
      info: the dataset's :class:`mnc_tf.data.DatasetInfo` (default ``dataset.info``).
      mask_threshold: binarisation threshold when pasting (released MNC code: 0.4).
      max_batches: stop after this many batches (quick checks).
      reset: reset the evaluators first.

    Returns:
      The merged ``evaluate()`` dicts of all evaluators.
    """
    if not evaluators:
        raise ValueError("evaluators must hold at least one evaluator")
    info = info if info is not None else getattr(dataset, "info", None)
    bind_evaluators(evaluators, info)
    if reset:
        for ev in evaluators:
            ev.reset()
    start, images = time.perf_counter(), 0
    for step, element in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        features = element[0] if isinstance(element, (tuple, list)) else element
        outputs = _predict(model, features)
        image_info = np.asarray(features["image_info"])
        image_ids = np.asarray(features["image_id"]).reshape(-1)
        for b, image_id in enumerate(image_ids):
            detections = outputs_to_original(outputs, b, image_info[b], mask_threshold)
            for ev in evaluators:
                ev.add_image(int(image_id), detections)
        images += len(image_ids)
    logger.info("evaluated %d images in %.1f s", images, time.perf_counter() - start)
    metrics = {}
    for ev in evaluators:
        metrics.update(ev.evaluate())
    return metrics
