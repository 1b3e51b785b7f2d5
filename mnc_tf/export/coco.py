"""Detections → COCO results format (``loadRes`` / ``COCOeval`` input) with RLE masks."""

import numpy as np
from pycocotools import mask as mask_utils


def encode_rle(mask):
    """Binary ``[H, W]`` mask → COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_results(image_id, boxes, scores, classes, masks=None, *, score_threshold=0.0):
    """One image's detections as a list of COCO result dicts.

    Args:
      image_id: the COCO ``image_id`` (int).
      boxes: ``[N, 4]`` ``y1, x1, y2, x2`` in original-image pixels (only valid rows).
      scores: ``[N]``; classes: ``[N]`` dataset category ids (what the export's
        ``detection_classes`` holds).
      masks: optional binary full-image masks ``[N, H, W]`` (e.g. from
        :func:`mnc_tf.visualize.full_image_masks`); adds ``segmentation`` as RLE.
      score_threshold: detections scoring below it are left out.

    Returns:
      ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"[, "segmentation"]}]``.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    n = boxes.shape[0]
    if scores.shape[0] != n or classes.shape[0] != n:
        raise ValueError(
            f"scores/classes: expected {n} values (one per box), got {scores.shape[0]} scores "
            f"and {classes.shape[0]} classes"
        )
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[0] != n:
            raise ValueError(f"masks: expected [N, H, W] with N = {n}, got shape {masks.shape}")
    results = []
    for i in range(n):
        if scores[i] < score_threshold:
            continue
        y1, x1, y2, x2 = boxes[i]
        entry = {
            "image_id": int(image_id),
            "category_id": int(classes[i]),
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(scores[i]),
        }
        if masks is not None:
            entry["segmentation"] = encode_rle(masks[i])
        results.append(entry)
    return results
