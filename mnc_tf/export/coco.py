"""Detections → COCO results format (``loadRes`` / ``COCOeval`` input) with RLE masks.

The functions live in :mod:`mnc_tf.data.annotations` (beside the COCO ground truth, so the
evaluators need nothing from ``export``); re-exported here for ``mnc_tf.export``'s users.
"""

from mnc_tf.data.annotations import coco_results, encode_rle

__all__ = ["coco_results", "encode_rle"]
