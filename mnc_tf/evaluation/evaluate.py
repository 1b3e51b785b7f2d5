"""Run a model over a dataset and feed evaluators."""

from __future__ import annotations

import logging
import time

import keras
import numpy as np

from mnc_tf.config import PostprocessConfig
from mnc_tf.evaluation.coco_evaluator import COCOEvaluator
from mnc_tf.evaluation.detections import outputs_to_original
from mnc_tf.evaluation.voc_evaluator import VOCEvaluator

logger = logging.getLogger("mnc_tf.evaluation")


def model_preprocessing(model):
    """What a model was trained with and its consumers must use: ``{"short_side", "max_side",
    "mask_threshold", "score_threshold"}`` from its :class:`~mnc_tf.preprocessing.Preprocessing`
    layer (``model.preprocessing``) and ``model.config.postprocess`` (an :class:`mnc_tf.MNC` or
    a loaded ``.keras`` file carries both). Entries the model does not define are ``None``.
    """
    pre = getattr(model, "preprocessing", None)
    post = getattr(getattr(model, "config", None), "postprocess", None)

    def get(obj, name, cast):
        value = getattr(obj, name, None)
        return None if value is None else cast(value)

    return {
        "short_side": get(pre, "short_side", int),
        "max_side": get(pre, "max_side", int),
        "mask_threshold": get(post, "mask_threshold", float),
        "score_threshold": get(post, "predict_score_threshold", float),
    }


def _check_input_size(model, image_info, warned):
    """Warn once if the dataset resizes images differently from the model's training."""
    sizes = model_preprocessing(model)
    short_side, max_side = sizes["short_side"], sizes["max_side"]
    if warned or short_side is None or max_side is None:
        return warned
    (h0, w0), (h1, w1) = (float(v) for v in image_info[0]), (float(v) for v in image_info[1])
    if min(h0, w0) <= 0:
        return warned
    scale = min(short_side / min(h0, w0), max_side / max(h0, w0))
    expected = (h0 * scale, w0 * scale)
    if abs(expected[0] - h1) > 1.5 or abs(expected[1] - w1) > 1.5:
        logger.warning(
            "evaluate_model: the dataset resizes a %dx%d image to %dx%d, but the model was "
            "trained with short_side=%d, max_side=%d (%dx%d); build the dataset with the "
            "model's sizes (mnc_tf.evaluation.model_preprocessing(model)) or the metrics "
            "will not be the model's",
            round(h0),
            round(w0),
            round(h1),
            round(w1),
            short_side,
            max_side,
            round(expected[0]),
            round(expected[1]),
        )
        return True
    return warned


def summary_table(metrics, images=None, seconds=None):
    """One compact text table of evaluation ``metrics`` (COCO rows bbox/segm, then the rest)."""
    lines = []
    if images is not None:
        lines.append(
            f"evaluated {images} images" + ("" if seconds is None else f" in {seconds:.1f} s")
        )
    columns = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    rest = dict(metrics)
    rows = []
    for kind in ("bbox", "segm"):
        if any(f"{kind}/{c}" in metrics for c in columns):
            rows.append((kind, [rest.pop(f"{kind}/{c}", None) for c in columns]))
    if rows:
        lines.append("      " + " ".join(f"{c:>6}" for c in columns))
        for kind, values in rows:
            lines.append(f"{kind:<5} " + " ".join(_cell(v) for v in values))
    # The other COCO numbers (AR1, ARs, ...) are in the returned dict and the JSON outputs.
    others = [f"{name} {_cell(value).strip()}" for name, value in rest.items() if "/" not in name]
    if others:
        lines.append("  ".join(others))
    return "\n".join(lines)


def _cell(value):
    if value is None:
        return "     -"
    value = float(value)
    return "   n/a" if value != value else f"{value:6.3f}"


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
    model,
    dataset,
    evaluators,
    info=None,
    mask_threshold=None,
    max_batches=None,
    reset=True,
    log_summary=True,
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
      mask_threshold: binarisation threshold when pasting; ``None``: the model's
        (``config.postprocess.mask_threshold``, released MNC code 0.4).
      max_batches: stop after this many batches (quick checks).
      reset: reset the evaluators first.
      log_summary: log one summary table of the metrics (INFO, logger
        ``mnc_tf.evaluation``; pycocotools' own tables are logged at DEBUG).

    The dataset should resize images as the model was trained
    (:func:`model_preprocessing`); a dataset that does not is reported by a warning.

    Returns:
      The merged ``evaluate()`` dicts of all evaluators.
    """
    if not evaluators:
        raise ValueError("evaluators must hold at least one evaluator")
    if mask_threshold is None:
        mask_threshold = model_preprocessing(model)["mask_threshold"]
        if mask_threshold is None:
            mask_threshold = PostprocessConfig().mask_threshold
    info = info if info is not None else getattr(dataset, "info", None)
    bind_evaluators(evaluators, info)
    if reset:
        for ev in evaluators:
            ev.reset()
    start, images, warned = time.perf_counter(), 0, False
    for step, element in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        features = element[0] if isinstance(element, (tuple, list)) else element
        outputs = _predict(model, features)
        image_info = np.asarray(features["image_info"])
        image_ids = np.asarray(features["image_id"]).reshape(-1)
        if len(image_ids):
            warned = _check_input_size(model, image_info[0], warned)
        for b, image_id in enumerate(image_ids):
            detections = outputs_to_original(outputs, b, image_info[b], mask_threshold)
            for ev in evaluators:
                ev.add_image(int(image_id), detections)
        images += len(image_ids)
    seconds = time.perf_counter() - start
    metrics = {}
    for ev in evaluators:
        metrics.update(ev.evaluate())
    if log_summary:
        logger.info("%s", summary_table(metrics, images, seconds))
    return metrics
