"""COCO annotations: loading, cleaning, RLE, the evaluators' ground truth, and results.

Shared by the input pipeline (:mod:`mnc_tf.data.coco_source` checks every annotation with
:func:`clean_segmentation` and turns it into RLE with :func:`segmentation_to_rle`) and the
evaluators (:func:`ground_truth_instances` is the one place their original-resolution ground
truth comes from). Labels follow :func:`mnc_tf.data.info.label_of_category`. Detections go
the other way with :func:`coco_results` (the COCO results format that ``loadRes`` /
``COCOeval`` read; used by the COCO evaluator and ``mnc-predict``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mnc_tf.data.info import label_of_category


def load_coco(annotation):
    """Ground truth as a ``pycocotools.coco.COCO``.

    Args:
      annotation: path of a COCO instances JSON, an already-parsed dict, or a ``COCO``.

    Returns:
      ``(coco, path_or_None)``.

    Raises:
      ValueError: the file is missing, not JSON, or lacks ``images`` / ``categories``.
    """
    if isinstance(annotation, COCO):
        return annotation, None
    path = None
    if isinstance(annotation, (str, os.PathLike)):
        path = os.fspath(annotation)
        if not os.path.isfile(path):
            raise ValueError(f"annotation_file {path!r} does not exist")
        try:
            with open(path) as f:
                annotation = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"annotation_file {path!r} is not readable JSON: {e}") from None
    if not isinstance(annotation, dict):
        raise ValueError(
            f"annotation_file must be a path, dict or COCO, got {type(annotation).__name__}"
        )
    missing = [k for k in ("images", "categories") if k not in annotation]
    if missing:
        raise ValueError(f"annotation_file lacks COCO keys {missing} (source: {path or 'dict'})")
    annotation.setdefault("annotations", [])
    coco = COCO()
    coco.dataset = annotation
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco, path


def clean_segmentation(segmentation, height, width):
    """Check a COCO ``segmentation`` without rasterising it.

    Returns:
      ``(segmentation_or_None, skip_reason_or_None, fix_reason_or_None)``: polygons with
      fewer than 3 points (< 6 numbers) are dropped (``fix 'polygon_dropped'``), and if none
      is left the annotation is skipped (``'invalid_polygon'``); an RLE whose ``size`` is not
      the image's, or anything else, is ``'missing_segmentation'``.
    """
    if isinstance(segmentation, list):
        polys = [
            [float(v) for v in p]
            for p in segmentation
            if isinstance(p, (list, tuple))
            and len(p) >= 6
            and len(p) % 2 == 0
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)
        ]
        if not polys:
            return None, ("invalid_polygon" if segmentation else "missing_segmentation"), None
        return polys, None, ("polygon_dropped" if len(polys) < len(segmentation) else None)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(s) for s in segmentation["size"]] != [height, width]:
            return None, "missing_segmentation", None
        if not _rle_covers(segmentation["counts"], height * width):
            return None, "invalid_rle", None
        return segmentation, None, None
    return None, "missing_segmentation", None


def _rle_covers(counts, num_pixels):
    """True if RLE ``counts`` (a list of run lengths or a compressed string) parses, has no
    negative run and covers exactly ``num_pixels`` (checked once, when parsing, so the
    per-element decoder never meets a malformed string)."""
    try:
        if isinstance(counts, list):
            runs = np.asarray(counts)
            if runs.size and runs.dtype.kind not in "iu":
                return False
        elif isinstance(counts, (str, bytes)):
            runs = rle_counts(counts)
        else:
            return False
    except (ValueError, UnicodeEncodeError):
        return False
    return runs.size == 0 or (runs.min() >= 0 and int(runs.sum()) == num_pixels)


def segmentation_to_rle(segmentation, height, width):
    """A cleaned segmentation (polygons, compressed or uncompressed RLE) → compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def rle_counts(counts):
    """COCO compressed RLE ``counts`` (bytes/str) → run lengths, int64 (NumPy, vectorised).

    The inverse of pycocotools' ``rleToString``: each run is a little-endian sequence of
    5-bit groups in characters ``48 + g`` (bit 5 set while more groups follow, bit 4 of the
    last group the sign), and from the fourth run on each value is stored as its difference
    to the run two places before.
    """
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("invalid character in RLE string (outside '0'..'o')")
    ends = np.flatnonzero((c & 0x20) == 0)
    if ends.size == 0 or ends[-1] != c.size - 1:
        raise ValueError("truncated RLE string (last character continues a number)")
    starts = np.concatenate([[0], ends[:-1] + 1])
    length = ends - starts + 1
    shift = 5 * (np.arange(c.size) - np.repeat(starts, length))
    values = np.add.reduceat((c & 0x1F) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << (5 * length)), values)
    values[1::2] = np.cumsum(values[1::2])  # x[i] += x[i - 2] for i > 2
    values[2::2] = np.cumsum(values[2::2])
    return values


def decode_masks(rles, height, width):
    """Compressed RLEs → uint8 ``[k, H, W]`` masks (C order), decoded by pycocotools."""
    if not rles:
        return np.zeros((0, height, width), np.uint8)
    return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))


def ground_truth_instances(coco, image_id, category_ids):
    """Original-resolution ground truth of one image, for evaluators.

    Args:
      coco: ``COCO`` ground truth; image_id: its id; category_ids: ``[C]``, label ``l`` is
        ``category_ids[l - 1]``.

    Returns:
      dict with ``masks`` uint8 ``[G, H, W]``, ``labels`` int32 ``[G]`` (1..C), ``crowd``
      bool ``[G]``. Annotations of unknown categories or without a usable segmentation
      are left out (they could not be matched by mask anyway).
    """
    img = coco.imgs[image_id]
    height, width = int(img["height"]), int(img["width"])
    label_of = label_of_category(category_ids)
    rles, labels, crowd = [], [], []
    for ann in coco.imgToAnns.get(image_id, []):
        label = label_of.get(int(ann.get("category_id", -1)))
        segm, _, _ = clean_segmentation(ann.get("segmentation"), height, width)
        if label is None or segm is None:
            continue
        rles.append(segmentation_to_rle(segm, height, width))
        labels.append(label)
        crowd.append(bool(ann.get("iscrowd", 0)))
    return {
        "masks": decode_masks(rles, height, width),
        "labels": np.asarray(labels, np.int32),
        "crowd": np.asarray(crowd, bool),
    }


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
