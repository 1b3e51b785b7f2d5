"""mAP^r (SDS / VOC instance-segmentation protocol) at several mask-IoU thresholds.

Protocol (Hariharan et al. SDS, used by the MNC paper): per class, all detections of the
dataset are sorted by score; each takes the ground-truth instance of its class in its image
with the highest **mask** IoU. It is a true positive when that IoU ≥ the threshold and the
instance was not taken by a higher-scoring detection; otherwise a false positive (so a
duplicate is a false positive even if a second, unmatched instance overlaps it less — the
VOC devkit rule). A detection that reaches the threshold with an instance marked ``ignore``
(crowd / difficult) counts as neither. AP per class is the VOC07 11-point interpolated AP
(``mAP_r``) and the area under the monotone precision envelope (``mAP_r_auc``, VOC2010+);
the mean runs over the classes with at least one non-ignored ground-truth instance.

The best match and its IoU do not depend on the threshold, so :meth:`VOCEvaluator.update`
stores one ``(score, IoU, instance)`` triple per detection and every threshold is evaluated
from those.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from pycocotools import mask as mask_utils

from mnc_tf.data.annotations import ground_truth_instances, load_coco
from mnc_tf.evaluation.detections import normalize_detections

logger = logging.getLogger("mnc_tf.evaluation")


def mask_iou(masks_a, masks_b):
    """Pairwise IoU of binary masks ``[A, H, W]`` × ``[B, H, W]`` → float64 ``[A, B]``.

    Run-length encoded first (pycocotools), which is far lighter than a dense
    ``[A, H·W] @ [H·W, B]`` product at full image resolution.
    """
    if len(masks_a) == 0 or len(masks_b) == 0:
        return np.zeros((len(masks_a), len(masks_b)))

    def rle(m):
        return mask_utils.encode(np.asfortranarray(np.asarray(m, np.uint8).transpose(1, 2, 0)))

    return np.asarray(mask_utils.iou(rle(masks_a), rle(masks_b), [0] * len(masks_b)))


def voc_ap(recall, precision, use_07_metric=True):
    """AP from recall/precision arrays ordered by decreasing score.

    ``use_07_metric``: mean of the best precision at recall ≥ 0, 0.1, …, 1 (VOC07);
    otherwise the area under the monotone precision envelope (VOC2010+).
    """
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = precision[recall >= t]
            ap += (above.max() if above.size else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


class VOCEvaluator:
    """mAP^r at mask IoU thresholds (default 0.5 and 0.7, as the MNC paper reports).

    Use :meth:`update` with ground truth and predictions of one image (all masks at the same
    resolution), or :meth:`add_image` with detections only when ``ground_truth`` (a COCO
    file/dict/object, e.g. ``dataset.info.coco``) is set; ``mnc_tf.evaluation.evaluate_model``
    sets it from the dataset.

    Metrics: ``"mAP_r@0.5"``, ``"mAP_r@0.7"`` (VOC07 11-point), ``"mAP_r_auc@0.5"``, …;
    with ``class_names`` also ``"AP_r@0.5/<name>"`` per class.

    Args:
      num_classes: ``C``; labels are 1..C.
      iou_thresholds: mask-IoU thresholds.
      class_names: optional ``[C]`` names for per-class metrics.
      ground_truth: optional COCO ground truth for :meth:`add_image`.
      category_ids: ``[C]`` category id of each label in ``ground_truth`` (default sorted).
      mask_threshold: binarisation threshold for soft predicted masks (None: ``MNCConfig``
        default, 0.4; pass the model's, ``model_preprocessing(model)['mask_threshold']``).
    """

    def __init__(
        self,
        num_classes,
        iou_thresholds=(0.5, 0.7),
        class_names=None,
        ground_truth=None,
        category_ids=None,
        mask_threshold=None,
    ):
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        for t in iou_thresholds:
            if not 0 < t <= 1:
                raise ValueError(f"iou_thresholds must be in (0, 1], got {iou_thresholds}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names must have num_classes={num_classes} entries, got {len(class_names)}"
            )
        self.num_classes = int(num_classes)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.class_names = list(class_names) if class_names is not None else None
        self.mask_threshold = mask_threshold
        self.ground_truth = None
        self.category_ids = category_ids
        if ground_truth is not None:
            self.set_ground_truth(ground_truth, category_ids)
        self.reset()

    def set_ground_truth(self, ground_truth, category_ids=None):
        """Use COCO ``ground_truth`` (path/dict/COCO) for :meth:`add_image`."""
        self.ground_truth, _ = load_coco(ground_truth)
        if category_ids is None:
            category_ids = sorted(int(c) for c in self.ground_truth.cats)
        if len(category_ids) != self.num_classes:
            raise ValueError(
                f"category_ids has {len(category_ids)} entries but num_classes={self.num_classes}"
            )
        self.category_ids = [int(c) for c in category_ids]

    def reset(self):
        """Forget everything accumulated."""
        self._scores = [[] for _ in range(self.num_classes + 1)]
        self._ious = [[] for _ in range(self.num_classes + 1)]
        self._gt_keys = [[] for _ in range(self.num_classes + 1)]  # -1: class has no GT here
        self._ignored = [[] for _ in range(self.num_classes + 1)]
        self._npos = np.zeros(self.num_classes + 1, np.int64)
        self._num_images = 0
        self._next_gt_key = 0

    def update(self, gt_masks, gt_labels, pred_masks, pred_labels, pred_scores, gt_ignore=None):
        """Accumulate one image.

        Args:
          gt_masks: binary ``[G, H, W]``; gt_labels: ``[G]`` in 1..C.
          pred_masks: binary ``[K, H, W]`` (same ``H, W``); pred_labels: ``[K]`` in 1..C
            (0 = padding, ignored); pred_scores: ``[K]``.
          gt_ignore: optional bool ``[G]`` (crowd / difficult instances).
        """
        gt_masks = np.asarray(gt_masks)
        pred_masks = np.asarray(pred_masks)
        gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
        pred_labels = np.asarray(pred_labels, np.int64).reshape(-1)
        pred_scores = np.asarray(pred_scores, np.float64).reshape(-1)
        gt_ignore = (
            np.zeros(len(gt_labels), bool)
            if gt_ignore is None
            else np.asarray(gt_ignore, bool).reshape(-1)
        )
        if (
            gt_masks.ndim != 3
            or len(gt_masks) != len(gt_labels)
            or len(gt_ignore) != len(gt_labels)
        ):
            raise ValueError(
                f"gt_masks must be [G, H, W] with G = len(gt_labels) = len(gt_ignore); got "
                f"{gt_masks.shape}, {gt_labels.shape}, {gt_ignore.shape}"
            )
        if pred_masks.ndim != 3 or not len(pred_masks) == len(pred_labels) == len(pred_scores):
            raise ValueError(
                f"pred_masks must be [K, H, W] with K = len(pred_labels) = len(pred_scores); "
                f"got {pred_masks.shape}, {pred_labels.shape}, {pred_scores.shape}"
            )
        if len(gt_masks) and len(pred_masks) and gt_masks.shape[1:] != pred_masks.shape[1:]:
            raise ValueError(
                f"pred_masks size {pred_masks.shape[1:]} differs from gt_masks size "
                f"{gt_masks.shape[1:]}"
            )
        for name, labels in (("gt_labels", gt_labels), ("pred_labels", pred_labels)):
            low = 1 if name == "gt_labels" else 0
            if labels.size and (labels.min() < low or labels.max() > self.num_classes):
                raise ValueError(
                    f"{name} must be in {low}..{self.num_classes}, got {labels.min()}.."
                    f"{labels.max()}"
                )
        keep = pred_labels > 0
        pred_masks, pred_labels, pred_scores = (
            pred_masks[keep],
            pred_labels[keep],
            pred_scores[keep],
        )
        for c in np.union1d(np.unique(gt_labels), np.unique(pred_labels)):
            g = np.flatnonzero(gt_labels == c)
            p = np.flatnonzero(pred_labels == c)
            self._npos[c] += int((~gt_ignore[g]).sum())
            if not len(p):
                continue
            if len(g):
                ious = mask_iou(pred_masks[p], gt_masks[g])
                best = ious.argmax(axis=1)
                best_iou = ious[np.arange(len(p)), best]
                keys = self._next_gt_key + best
                ignored = gt_ignore[g][best]
            else:
                best_iou = np.zeros(len(p))
                keys = np.full(len(p), -1)
                ignored = np.zeros(len(p), bool)
            self._scores[c].append(pred_scores[p])
            self._ious[c].append(best_iou)
            self._gt_keys[c].append(keys)
            self._ignored[c].append(ignored)
            self._next_gt_key += len(g)
        self._num_images += 1

    def add_image(self, image_id, detections):
        """Accumulate one image's detections against ``self.ground_truth``.

        Args:
          image_id: image id in the ground truth.
          detections: original-pixel detections (see ``mnc_tf.evaluation.detections``).
        """
        if self.ground_truth is None:
            raise ValueError(
                "VOCEvaluator.add_image needs ground_truth (pass ground_truth= or call "
                "set_ground_truth)"
            )
        image_id = int(image_id)
        if image_id not in self.ground_truth.imgs:
            raise ValueError(f"image_id {image_id} is not in the ground truth")
        gt = ground_truth_instances(self.ground_truth, image_id, self.category_ids)
        height, width = gt["masks"].shape[1:]
        det = normalize_detections(detections, (height, width), self.mask_threshold)
        if det["masks"] is None:
            raise ValueError("VOCEvaluator needs detections['masks']")
        self.update(
            gt["masks"],
            gt["labels"],
            det["masks"],
            det["classes"],
            det["scores"],
            gt_ignore=gt["crowd"],
        )

    def class_ap(self, iou_threshold, use_07_metric=True):
        """``[C + 1]`` AP per label (index 0 unused); NaN for classes without ground truth."""
        aps = np.full(self.num_classes + 1, math.nan)
        for c in range(1, self.num_classes + 1):
            if self._npos[c] == 0:
                continue
            if not self._scores[c]:
                aps[c] = 0.0
                continue
            scores = np.concatenate(self._scores[c])
            ious = np.concatenate(self._ious[c])
            keys = np.concatenate(self._gt_keys[c])
            ignored = np.concatenate(self._ignored[c])
            order = np.argsort(-scores, kind="stable")
            hit = ious[order] >= iou_threshold
            keys = keys[order]
            ignore = hit & ignored[order]
            # A hit is a TP only for the first (highest-scoring) detection of its instance.
            first = np.zeros(len(order), bool)
            _, first_index = np.unique(np.where(hit & ~ignore, keys, -1), return_index=True)
            first[first_index] = True
            tp = hit & ~ignore & first & (keys >= 0)
            fp = ~tp & ~ignore
            tp_c = np.cumsum(tp[~ignore])
            fp_c = np.cumsum(fp[~ignore])
            recall = tp_c / self._npos[c]
            precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
            aps[c] = voc_ap(recall, precision, use_07_metric)
        return aps

    def evaluate(self):
        """``{"mAP_r@t": .., "mAP_r_auc@t": ..}`` for every threshold ``t`` (+ per class)."""
        metrics = {}
        present = self._npos[1:] > 0
        if not present.any():
            logger.warning("VOCEvaluator: no ground-truth instance seen; mAP_r reported as 0")
        for t in self.iou_thresholds:
            for suffix, use_07 in (("", True), ("_auc", False)):
                aps = self.class_ap(t, use_07)
                metrics[f"mAP_r{suffix}@{t:g}"] = (
                    float(np.nanmean(aps[1:])) if present.any() else 0.0
                )
                if self.class_names and use_07:
                    for c, name in enumerate(self.class_names, start=1):
                        metrics[f"AP_r@{t:g}/{name}"] = float(aps[c])
        return metrics
