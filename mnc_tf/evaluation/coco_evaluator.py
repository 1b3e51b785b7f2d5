"""COCO box and mask AP/AR via pycocotools ``COCOeval``."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math

from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from mnc_tf.data.annotations import (
    clean_segmentation,
    coco_results,
    load_coco,
    segmentation_to_rle,
)
from mnc_tf.data.info import category_of_labels
from mnc_tf.evaluation.detections import normalize_detections

logger = logging.getLogger("mnc_tf.evaluation")

# Order of COCOeval.stats.
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


class COCOEvaluator:
    """Accumulates detections image by image, then runs ``COCOeval`` for bbox and segm.

    Crowd regions (``iscrowd=1``) are handled by pycocotools: a detection on a crowd region
    is neither a true nor a false positive. Only images passed to :meth:`update` are
    evaluated (so a subset or a partial epoch gives meaningful numbers).

    Metrics (:meth:`evaluate`): ``"bbox/AP"``, ``"bbox/AP50"``, …, ``"segm/ARl"`` (names in
    :data:`STAT_NAMES`); ``NaN`` where COCO reports −1 (no ground truth in that area range).
    With ``per_class=True`` also ``"segm/AP/<class name>"``.

    Args:
      annotation_file: COCO instances JSON path, dict, or ``pycocotools.coco.COCO``.
      category_ids: ``[C]``: label ``l`` ↔ ``category_ids[l - 1]``; default the sorted
        category ids of the file (what :func:`mnc_tf.data.coco_dataset` uses).
      iou_types: any of ``"bbox"``, ``"segm"``.
      mask_threshold: binarisation threshold for soft masks (None: ``MNCConfig`` default,
        0.4; pass the model's, ``model_preprocessing(model)['mask_threshold']``).
      per_class: also report per-class AP.
    """

    def __init__(
        self,
        annotation_file,
        category_ids=None,
        iou_types=("bbox", "segm"),
        mask_threshold=None,
        per_class=False,
    ):
        self.coco_gt, _ = load_coco(annotation_file)
        gt_ids = sorted(int(c) for c in self.coco_gt.cats)
        if category_ids is None:
            category_ids = gt_ids
        category_ids = [int(c) for c in category_ids]
        unknown = [c for c in category_ids if c not in self.coco_gt.cats]
        if unknown:
            raise ValueError(f"category_ids {unknown} are not categories of the annotations")
        for t in iou_types:
            if t not in ("bbox", "segm"):
                raise ValueError(f"iou_types entries must be 'bbox' or 'segm', got {t!r}")
        self.category_ids = category_ids
        self.iou_types = tuple(iou_types)
        self.mask_threshold = mask_threshold
        self.per_class = per_class
        self.skipped_gt = 0
        self._gt_cache = {}  # iou_type -> COCO ground truth COCOeval can digest
        self.reset()

    def reset(self):
        """Forget all detections."""
        self._results = []
        self._image_ids = set()

    def update(self, image_id, detections):
        """Add one image's detections (original pixels; see ``mnc_tf.evaluation.detections``).

        Args:
          image_id: the COCO image id.
          detections: ``boxes [K, 4]`` yxyx, ``scores [K]``, ``classes [K]`` (1..C, 0 =
            padding), optional ``masks`` (full-image ``[K, H, W]`` or box-relative
            ``[K, m, m]``) and ``num_detections``.
        """
        image_id = int(image_id)
        if image_id not in self.coco_gt.imgs:
            raise ValueError(f"image_id {image_id} is not in the ground-truth annotations")
        img = self.coco_gt.imgs[image_id]
        det = normalize_detections(detections, (img["height"], img["width"]), self.mask_threshold)
        classes = det["classes"]
        if len(classes) and classes.max() > len(self.category_ids):
            raise ValueError(
                f"detections classes must be in 1..{len(self.category_ids)}, "
                f"got max {classes.max()}"
            )
        self._image_ids.add(image_id)
        category_ids = category_of_labels(classes, self.category_ids)
        self._results.extend(
            coco_results(image_id, det["boxes"], det["scores"], category_ids, det["masks"])
        )

    add_image = update

    def write_results(self, path):
        """Write the standard COCO results JSON (xywh boxes, RLE masks, category ids)."""
        with open(path, "w") as f:
            json.dump(self._results, f)

    def evaluate(self):
        """Run ``COCOeval``; returns ``{"bbox/AP": ..., "segm/AP": ..., ...}`` floats."""
        metrics = {}
        for iou_type in self.iou_types:
            metrics.update(self._evaluate(iou_type))
        return metrics

    def _evaluate(self, iou_type):
        if iou_type == "segm":
            if any("segmentation" not in r for r in self._results):
                logger.warning("segm evaluation skipped: some detections have no masks")
                return {}
            # Without the bbox, pycocotools takes the mask area for APs/m/l (as Detectron2).
            results = [{k: v for k, v in r.items() if k != "bbox"} for r in self._results]
            coco_gt = self._ground_truth("segm")
        else:
            results = [{k: v for k, v in r.items() if k != "segmentation"} for r in self._results]
            coco_gt = self._ground_truth("bbox")
        names = [f"{iou_type}/{s}" for s in STAT_NAMES]
        if not results:
            # loadRes cannot take an empty list; no detection means AP = AR = 0.
            return dict.fromkeys(names, 0.0)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
            coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
            coco_eval.params.imgIds = sorted(self._image_ids)
            coco_eval.params.catIds = sorted(self.category_ids)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        # pycocotools' progress prints and 12-line table: kept for --verbose / train.log;
        # evaluate_model logs one summary table per evaluation.
        logger.debug("COCOeval %s:\n%s", iou_type, out.getvalue().rstrip())
        metrics = {n: _nan_if_missing(v) for n, v in zip(names, coco_eval.stats, strict=True)}
        if self.per_class:
            precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
            for k, cat_id in enumerate(coco_eval.params.catIds):
                p = precision[:, :, k, 0, -1]
                name = self.coco_gt.cats[cat_id].get("name", str(cat_id))
                metrics[f"{iou_type}/AP/{name}"] = (
                    float(p[p > -1].mean()) if (p > -1).any() else math.nan
                )
        return metrics

    def _ground_truth(self, iou_type):
        """GT that ``COCOeval`` can digest without crashing.

        User files (annotation-tool exports) may lack ``area``/``bbox`` or hold polygons
        with fewer than 3 points. Missing fields are filled from the mask; for segm, an
        annotation whose segmentation cannot be rasterised is left out (logged, counted in
        ``self.skipped_gt``). A clean file is used as is.
        """
        if iou_type in self._gt_cache:
            return self._gt_cache[iou_type]
        dataset = self.coco_gt.dataset
        anns, dropped, changed = [], 0, False
        for ann in dataset["annotations"]:
            img = self.coco_gt.imgs.get(ann.get("image_id"))
            if img is None:  # never evaluated: COCOeval only looks at known images
                anns.append(ann)
                continue
            height, width = int(img["height"]), int(img["width"])
            segm, _, _ = clean_segmentation(ann.get("segmentation"), height, width)
            if segm is None and iou_type == "segm":
                dropped += 1
                changed = True
                continue
            fixed = {}
            if segm is not None and segm != ann.get("segmentation"):
                fixed["segmentation"] = segm
            if "area" not in ann or "bbox" not in ann:
                if segm is not None:
                    rle = segmentation_to_rle(segm, height, width)
                    fixed.setdefault("area", float(mask_utils.area(rle)))
                    fixed.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])
                else:
                    bbox = [float(v) for v in ann.get("bbox", [0.0, 0.0, 0.0, 0.0])]
                    fixed.setdefault("area", bbox[2] * bbox[3])
                    fixed.setdefault("bbox", bbox)
            if fixed:
                ann = dict(
                    ann, **{k: v for k, v in fixed.items() if k not in ann or k == "segmentation"}
                )
                changed = True
            anns.append(ann)
        if dropped:
            logger.warning(
                "COCOEvaluator: %d ground-truth annotations without a usable segmentation are "
                "left out of segm evaluation",
                dropped,
            )
            self.skipped_gt = dropped
        gt = load_coco(dict(dataset, annotations=anns))[0] if changed else self.coco_gt
        self._gt_cache[iou_type] = gt
        return gt


def _nan_if_missing(value):
    return math.nan if value < 0 else float(value)
