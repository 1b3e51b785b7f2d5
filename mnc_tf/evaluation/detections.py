"""Model outputs (docs/CONTRACTS.md) → per-image detections in original-image pixels.

The evaluators take one image at a time as a dict of NumPy arrays::

  boxes   float32 [K, 4]  y1, x1, y2, x2 in ORIGINAL image pixels
  scores  float32 [K]
  classes int     [K]     contiguous labels 1..C (0 = padding, ignored)
  masks   uint8   [K, H, W] full-image binary masks (H, W = original size), or
          float   [K, m, m] box-relative soft masks (pasted at the boxes)
  num_detections  int     optional: only the first rows are valid
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mnc_tf.config import PostprocessConfig
from mnc_tf.core import box_ops
from mnc_tf.core.masks import paste_masks


def _numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def normalize_detections(detections, image_size, mask_threshold=None):
    """Validate one image's detections and bring masks to full-image binary form.

    Args:
      detections: dict as in the module docstring.
      image_size: original ``(H, W)``.
      mask_threshold: binarisation threshold for soft masks; None: the model default
        ``MNCConfig().postprocess.mask_threshold`` (0.4, released MNC code). Pass the model's
        (``mnc_tf.evaluation.model_preprocessing(model)["mask_threshold"]``).

    Returns:
      dict ``boxes [n, 4]``, ``scores [n]``, ``classes int32 [n]`` and ``masks uint8
      [n, H, W]`` (``None`` when the detections have no masks), padding rows removed.
    """
    if mask_threshold is None:
        mask_threshold = PostprocessConfig.mask_threshold
    for key in ("boxes", "scores", "classes"):
        if key not in detections:
            raise ValueError(f"detections lacks {key!r} (keys: {sorted(detections)})")
    boxes = _numpy(detections["boxes"]).astype(np.float32).reshape(-1, 4)
    scores = _numpy(detections["scores"]).astype(np.float32).reshape(-1)
    classes = _numpy(detections["classes"]).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(
            "detections boxes/scores/classes disagree in length: "
            f"{len(boxes)}, {len(scores)}, {len(classes)}"
        )
    n = len(scores)
    if detections.get("num_detections") is not None:
        n = min(int(_numpy(detections["num_detections"]).reshape(())), n)
    valid = np.zeros(len(scores), bool)
    valid[:n] = classes[:n] > 0
    masks = detections.get("masks")
    height, width = int(image_size[0]), int(image_size[1])
    if masks is not None:
        masks = _numpy(masks)
        if masks.ndim != 3 or len(masks) != len(scores):
            raise ValueError(
                f"detections masks must be [K, H, W] or [K, m, m] with K={len(scores)}, "
                f"got shape {masks.shape}"
            )
        masks = masks[valid]
        if masks.shape[1:] == (height, width):
            if masks.dtype != np.uint8 and masks.dtype != bool:
                masks = masks >= mask_threshold
            masks = masks.astype(np.uint8)
        elif len(masks):
            masks = paste_masks(masks, boxes[valid], (height, width), mask_threshold).numpy()
        else:
            masks = np.zeros((0, height, width), np.uint8)
    return {
        "boxes": boxes[valid],
        "scores": scores[valid],
        "classes": classes[valid].astype(np.int32),
        "masks": masks,
    }


def outputs_to_original(outputs, index, image_info, mask_threshold=None):
    """One image of a model's batched outputs → detections in original pixels.

    Args:
      outputs: model output dict (``boxes [B, K, 4]`` in resized-image pixels, ``scores``,
        ``classes``, ``masks [B, K, m, m]``, ``num_detections [B]``).
      index: which image of the batch.
      image_info: that image's ``[4, 2]`` (original size, resized size, scale, offset).
      mask_threshold: for pasting the soft masks (None: see :func:`normalize_detections`).

    Returns:
      :func:`normalize_detections` output with boxes ``÷ image_info[2]``, clipped to the
      original image, and masks pasted at the original resolution.
    """
    image_info = _numpy(image_info).astype(np.float32)
    height, width = int(round(image_info[0, 0])), int(round(image_info[0, 1]))
    sy, sx = image_info[2]
    boxes = _numpy(outputs["boxes"][index]).astype(np.float32) / np.array(
        [sy, sx, sy, sx], np.float32
    )
    boxes = box_ops.clip(tf.constant(boxes), tf.constant([height, width])).numpy()
    detections = {
        "boxes": boxes,
        "scores": outputs["scores"][index],
        "classes": outputs["classes"][index],
        "masks": outputs["masks"][index] if "masks" in outputs else None,
    }
    if "num_detections" in outputs:
        detections["num_detections"] = outputs["num_detections"][index]
    return normalize_detections(detections, (height, width), mask_threshold)
